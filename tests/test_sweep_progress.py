"""`flowerkit sweep` says what its trials do (a line per event, monitored value, ETA); --quiet keeps the table."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from prefect.states import Failed, State

from flowerkit.flows.sweep import run_subflow
from flowerkit.flows.sweep_progress import SweepProgress
from flowerkit.sweep import Outcome, read_sweep
from tests.test_sweeps import TINY, write_sweep


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_trial_event_is_a_line_and_the_eta_follows_the_steps(tmp_path: Path, caplog) -> None:
    """The ETA moves with every step the trials make, before any trial ends (it used to wait for one)."""
    caplog.set_level(logging.INFO, logger="flowerkit.sweep")
    sweep = read_sweep(write_sweep(tmp_path, {"name": "eta", "base": TINY | {"output_dir": str(tmp_path / "out"),
                                                                             "num_steps": 10},
                                              "grid": {"seed": [1, 2, 3, 4]}}))
    clock, steps = Clock(), {}
    progress = SweepProgress("eta", sweep.trials, 2, clock=clock, step_of=lambda trial: steps.get(trial.name, 0))
    first, second, third, _ = sweep.trials
    progress.started(first)
    progress.started(second)
    assert progress.eta_s() is None  # no step made: no basis for an estimate
    clock.now, steps[first.name] = 10.0, 5
    progress.poll()
    assert progress.steps() == (5, 40) and progress.eta_s() == 35 * 10.0 / 5  # mid-trial: 35 steps at 0.5 step/s
    clock.now, steps[first.name], steps[second.name] = 20.0, 8, 6
    progress.ended(first, Outcome("run", "FAILED", "exit 1:\n  disk full"))  # an ended trial has no steps left
    assert progress.steps() == (16, 40) and progress.eta_s() == 24 * 20.0 / 16
    progress.started(third)
    clock.now, steps[second.name] = 40.0, 10
    progress.ended(second, Outcome("run", "COMPLETED"))
    states = {state.name: state for state in progress.poll()}
    assert (states["eta-000"].status, states["eta-000"].step, states["eta-000"].took) == ("failed", 8, 20.0)
    assert (states["eta-001"].status, states["eta-001"].step, states["eta-001"].took) == ("completed", 10, 40.0)
    assert states["eta-002"].status == "running" and states["eta-003"].status == "waiting"
    lines = [r.getMessage() for r in caplog.records if r.name == "flowerkit.sweep"]
    assert lines == ["sweep 'eta': 4 trial(s) to run, 2 at once", "trial eta-000 started", "trial eta-001 started",
                     "trial eta-000 failed in 0:20: exit 1: disk full [1/4, ETA 0:30]", "trial eta-002 started",
                     "trial eta-001 finished in 0:40: no monitored value [2/4, ETA 0:40]"]
    assert [r.levelno for r in caplog.records if "failed" in r.getMessage()] == [logging.WARNING]


def test_the_live_table_shows_each_trial_and_the_overall_bar(tmp_path: Path) -> None:
    from rich.console import Console

    from flowerkit.cli.sweep_display import LiveTrials

    sweep = read_sweep(write_sweep(tmp_path, {"name": "live", "base": TINY | {"output_dir": str(tmp_path / "out"),
                                                                               "num_steps": 10},
                                              "grid": {"seed": [1, 2]}}))
    clock, steps = Clock(), {}
    progress = SweepProgress("live", sweep.trials, 1, clock=clock, step_of=lambda trial: steps.get(trial.name, 0))
    live = LiveTrials()
    live.follow(progress)
    progress.started(sweep.trials[0])
    clock.now, steps["live-000"] = 8.0, 4
    screen = Console(width=80, record=True, file=open(os.devnull, "w"))
    screen.print(live.render())
    text = screen.export_text()
    assert re.search(r"live-000 +seed=1 +running +4/10 +- +0:08", text), text
    assert re.search(r"live-001 +seed=2 +waiting +0/10 +- +-", text), text
    assert "4/20 steps, 0/2 trials, ETA 0:32" in text, text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_outside_a_sweep_nothing_is_reported(tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep flow makes its reporter and hands it to what runs its trials: a train run outside a sweep has
    none, and a trial's events reach the reporter it was given."""
    caplog.set_level(logging.INFO, logger="flowerkit.sweep")
    sweep = read_sweep(write_sweep(tmp_path, {"name": "none", "base": TINY | {"output_dir": str(tmp_path)},
                                              "grid": {"seed": [1]}}))

    class TrainFlow:  # the trial's train flow, without training
        def with_options(self, **_: object) -> TrainFlow:
            return self

        def __call__(self, *_: object, **__: object) -> State:
            return Failed(message="no training here")

    monkeypatch.setitem(sys.modules, "flowerkit.flows.train", SimpleNamespace(train_flow=TrainFlow()))
    monkeypatch.setattr("flowerkit.flows.sweep_progress.flow_run_url", lambda _: None)  # a session server's UI
    inside = SweepProgress("inside", sweep.trials, 1)
    assert [r.getMessage() for r in caplog.records] == ["sweep 'inside': 1 trial(s) to run, 1 at once"]
    assert run_subflow(sweep.trials[0], "run", inside).state == "FAILED"
    assert [r.getMessage() for r in caplog.records][1:] == [
        "trial none-000 started", "trial none-000 failed in 0:00: no training here [1/1, ETA 0:00]"]


@pytest.mark.slow
def test_a_2x2_sweep_prints_one_line_per_trial_event_and_the_ranking(prefect_harness, flowers_root: Path,
                                                                     tmp_path: Path) -> None:
    """Through the CLI, output captured (not a terminal): the sweep's own lines, once each, and the ranking as a
    table; no trial's step, task or MLflow line, no warning. --quiet keeps only the table."""
    path = write_sweep(tmp_path, {"name": "said", "base": TINY | {"data_root": str(flowers_root),
                                                                   "output_dir": str(tmp_path / "out")},
                                  "grid": {"seed": [1, 2], "learning_rate": [0.01, 0.03]}})
    cmd = [sys.executable, "-m", "flowerkit", "sweep", str(path)]
    on_server = os.environ | {"PREFECT_API_URL": prefect_harness.url}  # the session's: no temporary server
    done = subprocess.run(cmd, cwd=tmp_path, env=on_server, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [line for line in done.stderr.splitlines() if line.strip()]
    trials = [f"said-{index:03d}" for index in range(4)]
    assert len(logged) == 1 + 2 * len(trials), done.stderr  # the sweep's first line, then started and finished
    assert logged[0].endswith("sweep 'said': 4 trial(s) to run, 1 at once")
    for trial in trials:
        assert sum(f"trial {trial} started" in line for line in logged) == 1, done.stderr
        finished = [line for line in logged if f"trial {trial} finished" in line]
        assert len(finished) == 1 and re.search(r"finished in \d+:\d\d: val_accuracy \d\.\d{4} \[\d/4, ETA ",
                                                finished[0]), done.stderr
    assert "[4/4, ETA 0:00]" in logged[-1]
    table = done.stdout.splitlines()
    assert table[0].startswith("Sweep said") and re.match(r"rank +trial +status +values +val_accuracy", table[1])
    rows = [line.split() for line in table[3:] if line[:1].isdigit()]  # long values wrap onto a line of their own
    assert sorted(row[1] for row in rows) == trials and [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert "| rank |" not in done.stdout and "WARNING" not in done.stderr and "step " not in done.stderr

    # Without a server, as a new user runs it: the temporary server's lines are hidden too.
    alone = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    quiet = subprocess.run([*cmd, "--quiet"], cwd=tmp_path, env=alone, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr.strip() == "", quiet.stderr  # no Prefect lines, no trial lines (all complete: skipped)
    assert quiet.stdout.startswith("Sweep said") and quiet.stdout.replace(" ", "") == done.stdout.replace(" ", "")
