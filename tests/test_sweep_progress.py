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


def test_each_trial_event_is_a_line_and_the_eta_follows_the_trials_so_far(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="flowerkit.sweep")
    sweep = read_sweep(write_sweep(tmp_path, {"name": "eta", "base": TINY | {"output_dir": str(tmp_path / "out")},
                                              "grid": {"seed": [1, 2, 3, 4, 5]}}))
    clock = Clock()
    progress = SweepProgress("eta", 5, 2, clock=clock)
    first, second, third = sweep.trials[:3]
    progress.started(first)
    progress.started(second)
    assert progress.eta_s() is None  # nothing finished: no basis for an estimate
    clock.now = 60.0
    progress.ended(first, Outcome("run", "FAILED", "exit 1:\n  disk full"))
    # 4 trials left, 2 at once: 2 more rounds of the 60 s seen so far.
    assert progress.eta_s() == 120.0
    clock.now = 100.0
    progress.started(third)
    progress.ended(second, Outcome("run", "COMPLETED"))
    assert progress.eta_s() == 80.0 * 2  # mean (60 + 100) / 2, 3 left in 2 rounds
    lines = [r.getMessage() for r in caplog.records if r.name == "flowerkit.sweep"]
    assert lines == ["sweep 'eta': 5 trial(s) to run, 2 at once", "trial eta-000 started", "trial eta-001 started",
                     "trial eta-000 failed in 1:00: exit 1: disk full [1/5, ETA 2:00]", "trial eta-002 started",
                     "trial eta-001 finished in 1:40: no monitored value [2/5, ETA 2:40]"]
    assert [r.levelno for r in caplog.records if "failed" in r.getMessage()] == [logging.WARNING]


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
    inside = SweepProgress("inside", 1, 1)
    assert [r.getMessage() for r in caplog.records] == ["sweep 'inside': 1 trial(s) to run, 1 at once"]
    assert run_subflow(sweep.trials[0], "run", inside).state == "FAILED"
    assert [r.getMessage() for r in caplog.records][1:] == [
        "trial none-000 started", "trial none-000 failed in 0:00: no training here [1/1, ETA 0:00]"]


@pytest.mark.slow
def test_cli_prints_a_line_per_trial_and_quiet_only_the_table(prefect_harness, flowers_root: Path,
                                                              tmp_path: Path) -> None:
    path = write_sweep(tmp_path, {"name": "said", "base": TINY | {"data_root": str(flowers_root),
                                                                   "output_dir": str(tmp_path / "out")},
                                  "grid": {"seed": [1, 2]}})
    cmd = [sys.executable, "-m", "flowerkit", "sweep", str(path)]
    on_server = os.environ | {"PREFECT_API_URL": prefect_harness.url}  # the session's: no temporary server
    done = subprocess.run(cmd, cwd=tmp_path, env=on_server, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "sweep 'said': 2 trial(s) to run, 1 at once" in said
    for trial in ("said-000", "said-001"):
        assert f"trial {trial} started" in said
        assert re.search(rf"trial {trial} finished in \d+:\d\d: val_accuracy \d\.\d{{4}} \[\d/2, ETA ", said), said
    assert "[2/2, ETA 0:00]" in said and "| rank | trial |" in said

    # Without a server, as a new user runs it: the temporary server's lines are hidden too.
    alone = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    quiet = subprocess.run([*cmd, "--quiet"], cwd=tmp_path, env=alone, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stderr.strip() == "", quiet.stderr  # no Prefect lines, no trial lines (all complete: skipped)
    assert quiet.stdout.lstrip().startswith("# Sweep said") and "| rank | trial |" in quiet.stdout
