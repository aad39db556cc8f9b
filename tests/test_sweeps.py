"""Sweeps: expansion and validation up front, a tiny 2x2 grid through the real train flow, resume, failures.

The trials run in-process as subflows on the session's Prefect test server, each a tiny train run (2 steps at
32 px); the work-pool path is in tests/test_prefect_server.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from flowerkit.errors import ConfigError
from flowerkit.sweep import read_results, read_sweep

TINY = dict(dataset="flower102", model_type="testing", img_size=32, num_steps=2, eval_every=2, train_batch_size=4,
            eval_batch_size=2, tiny_train_subset="flower102_tiny", tiny_infer_subset="flower102_tiny")


def write_sweep(folder: Path, spec: dict) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_expansion_is_deterministic_and_every_trial_is_validated(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optimizer: adamw\nweight_decay: 0.05\n")
    spec = {"name": "mixed", "base": {**TINY, "output_dir": str(tmp_path / "out")},
            "grid": {"seed": [1, 2], "config": ["recipe.yaml"]},  # a recipe file, relative to the sweep file
            "random": {"trials": 2, "seed": 7, "learning_rate": {"loguniform": [0.001, 0.1]},
                       "label_smoothing": {"uniform": [0.0, 0.2]}}}
    first = read_sweep(write_sweep(tmp_path, spec))
    again = read_sweep(write_sweep(tmp_path, spec))
    assert [t.name for t in first.trials] == [f"mixed-{i:03d}" for i in range(4)]
    assert [t.values for t in first.trials] == [t.values for t in again.trials]
    assert [t.config.config_hash() for t in first.trials] == [t.config.config_hash() for t in again.trials]
    assert len({t.config.learning_rate for t in first.trials}) == 2  # two draws, each grid point gets both
    assert all(0.001 <= t.config.learning_rate <= 0.1 and t.config.optimizer == "adamw" for t in first.trials)
    assert first.layout.sweep_dir == tmp_path / "out" / "sweeps" / "mixed"

    bad = {"name": "bad", "base": spec["base"], "grid": {"eval_batch_size": [2, -3]}}
    with pytest.raises(ConfigError, match=r"Sweep trial bad-001 \(eval_batch_size=-3\).*--eval_batch_size"):
        read_sweep(write_sweep(tmp_path, bad))
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_refuses_a_bad_trial_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowerkit.cli import app

    path = write_sweep(tmp_path, {"name": "bad", "base": TINY, "grid": {"learning_rate": [0.01, 0.0]}})
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry_run"])
    assert result.exit_code == 2, result.output
    assert "bad-001" in result.output and "--learning_rate" in result.output
    named = CliRunner().invoke(app, ["train", "--name", "sweeps", "--dry_run"])
    assert named.exit_code == 2 and "reserved" in named.output


@pytest.mark.parametrize("where", ["base", "grid", "random"])
def test_an_option_train_does_not_have_is_refused_as_train_refuses_it(tmp_path: Path, where: str) -> None:
    """It was dropped: the trials trained identically and the sweep exited 0."""
    from typer.testing import CliRunner

    from flowerkit.cli import app

    spec: dict = {"name": "typo", "base": TINY | {"output_dir": str(tmp_path / "out")}, "grid": {"seed": [1, 2]}}
    if where == "base":
        spec["base"]["lerning_rate"] = 0.1
    elif where == "grid":
        spec["grid"]["lerning_rate"] = [0.1, 0.2]
    else:
        spec["random"] = {"trials": 2, "lerning_rate": {"uniform": [0.1, 0.2]}}
    result = CliRunner().invoke(app, ["sweep", str(write_sweep(tmp_path, spec))])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"({where}) has unknown option(s): lerning_rate. Known options: name," in text
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lerning_rate: 0.1\n")
    train = CliRunner().invoke(app, ["train", "--name", "t", "--config", str(recipe), "--dry_run"])
    assert train.exit_code == 2 and "has unknown option(s): lerning_rate. Known options: name," in " ".join(
        train.output.split())  # the same words as train's
    assert not (tmp_path / "out").exists()  # refused before any trial


def test_a_sweep_file_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowerkit.cli import app

    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: s\ngrid: {seed: [1]}\n# caf\xe9\n")  # Latin-1, as an old editor saves it
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry_run"])
    assert result.exit_code == 2 and "is not UTF-8 text" in " ".join(result.output.split()), result.output


@pytest.fixture(scope="module")
def grid_sweep(prefect_harness, flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2x2 grid (seed x learning_rate) run once locally; returns its sweep file."""
    from flowerkit.flows.sweep import sweep_flow

    folder = tmp_path_factory.mktemp("grid-sweep")
    base = TINY | {"data_root": str(flowers_root), "output_dir": str(folder / "out")}
    path = write_sweep(folder, {"name": "grid", "base": base,
                                "grid": {"seed": [1, 2], "learning_rate": [0.01, 0.03]}})
    sweep_flow(str(path))
    return path


def test_a_2x2_grid_runs_locally_as_ordinary_runs(grid_sweep: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    from flowerkit.run.runs import find_runs

    sweep = read_sweep(grid_sweep)
    output_dir = sweep.trials[0].config.output_dir
    runs = find_runs(output_dir)
    assert [r.name for r in runs] == ["grid-000", "grid-001", "grid-002", "grid-003"]  # sweeps/ is no run
    assert all(r.status == "complete" and r.flow == "train" for r in runs)
    for trial in sweep.trials:
        record = json.loads(trial.config.layout.record.read_text())
        assert record["config_hash"] == trial.config.config_hash()
    results = json.loads(sweep.layout.results.read_text())["trials"]
    assert [row["rank"] for row in results] == [1, 2, 3, 4]
    values = [row["monitor_value"] for row in results]
    assert values == sorted(values, reverse=True) and all(row["monitor"] == "val_accuracy" for row in results)
    assert {row["trial"] for row in results} == {t.name for t in sweep.trials}
    assert "| 1 | " in sweep.layout.table.read_text()
    assert sweep.layout.spec.read_text() == grid_sweep.read_text()
    key = "flowerkit-sweep-grid-results"  # by key: other files' runs fill the session's server meanwhile
    with get_client(sync_client=True) as client:
        (table,) = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key])))
        trial_runs = [client.read_flow_run(json.loads(t.config.layout.record.read_text())["flow_run_id"])
                      for t in sweep.trials]
    assert [row["trial"] for row in json.loads(table.data)] == [row["trial"] for row in results]
    assert [run.name for run in trial_runs] == [t.name for t in sweep.trials]  # the subflows are the trials
    assert all({"flowerkit", "train", "sweep:grid"} <= set(run.tags) for run in trial_runs)


def test_rerunning_a_sweep_skips_completed_trials(grid_sweep: Path) -> None:
    from flowerkit.flows.sweep import sweep_flow

    sweep = read_sweep(grid_sweep)
    before = {t.name: t.config.layout.record.read_bytes() for t in sweep.trials}
    rows = sweep_flow(str(grid_sweep))
    assert {row["action"] for row in rows} == {"skip"}
    assert {t.name: t.config.layout.record.read_bytes() for t in sweep.trials} == before  # untouched


def test_a_changed_sweep_under_the_same_name_is_refused(grid_sweep: Path, tmp_path: Path) -> None:
    from flowerkit.sweep import check_same_sweep

    spec = yaml.safe_load(grid_sweep.read_text())
    spec["grid"]["seed"] = [1, 3]
    with pytest.raises(ConfigError, match="already exists .* with other trials"):
        check_same_sweep(read_sweep(write_sweep(tmp_path, spec)))


def test_runs_list_shows_a_sweeps_trials_ranked(grid_sweep: Path) -> None:
    from typer.testing import CliRunner

    from flowerkit.cli import app

    output_dir = read_sweep(grid_sweep).trials[0].config.output_dir
    result = CliRunner().invoke(app, ["runs", "list", "--sweep", "grid", "--output-dir", str(output_dir)],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    ranked = [row["trial"] for row in read_results(output_dir, "grid")]
    assert re.findall(r"grid-\d{3}", result.output) == ranked
    unknown = CliRunner().invoke(app, ["runs", "list", "--sweep", "nope", "--output-dir", str(output_dir)])
    assert unknown.exit_code == 3


def test_a_failing_trial_does_not_stop_the_others_and_a_rerun_finishes_it(
        prefect_harness, flowers_root: Path, tmp_path: Path) -> None:
    """One trial's train subset is a manifest that does not exist yet: it fails, the other completes; once the
    file exists, the same sweep skips the complete trial and runs the failed one."""
    from flowerkit.data.flowers102 import open_flowers102
    from flowerkit.flows.sweep import sweep_flow
    from flowerkit.sweep import SweepFailedError

    manifest = tmp_path / "later.json"
    base = TINY | {"data_root": str(flowers_root), "output_dir": str(tmp_path / "out")}
    path = write_sweep(tmp_path, {"name": "flaky", "base": base,
                                  "grid": {"tiny_train_subset": ["flower102_tiny", str(manifest)]}})
    with pytest.raises(SweepFailedError, match=r"1 of 2 trials did not complete: flaky-001 \(failed: .*later.json"):
        sweep_flow(str(path))
    rows = {row["trial"]: row for row in read_results(tmp_path / "out", "flaky")}
    assert rows["flaky-000"]["status"] == "complete" and rows["flaky-000"]["rank"] == 1
    assert rows["flaky-001"]["status"] == "failed" and "does not exist" in rows["flaky-001"]["error"]
    assert "## Not complete" in read_sweep(path).layout.table.read_text()

    data = open_flowers102(flowers_root)
    manifest.write_text(json.dumps({"train": data.splits["train"][:4].tolist()}))
    rows = {row["trial"]: row for row in sweep_flow(str(path))}
    assert rows["flaky-000"]["action"] == "skip" and rows["flaky-001"]["action"] == "run"
    assert rows["flaky-001"]["status"] == "complete"


def test_a_crashed_trial_is_resumed(grid_sweep: Path, tmp_path: Path) -> None:
    """A trial whose record says failed (a killed process leaves it so) is resumed, not started again."""
    from flowerkit.artifacts.record import update_record
    from flowerkit.flows.sweep import sweep_flow

    sweep = read_sweep(grid_sweep)
    crashed = sweep.trials[2].config.layout
    run_id = json.loads(crashed.record.read_text())["run_id"]
    update_record(crashed.run_dir, stage_status="failed", error={"type": "KeyboardInterrupt", "message": "killed"})
    rows = {row["trial"]: row for row in sweep_flow(str(grid_sweep))}
    assert rows[crashed.name]["action"] == "resume" and rows[crashed.name]["status"] == "complete"
    record = json.loads(crashed.record.read_text())
    assert record["run_id"] == run_id and record["resumed"] == 1
    assert {row["action"] for name, row in rows.items() if name != crashed.name} == {"skip"}


def test_the_same_sweep_started_twice_has_one_writer(prefect_harness, flowers_root: Path, tmp_path: Path) -> None:
    """Two real processes: the second exits 4 naming the first (pid) and touches no trial; before, both ran,
    one calling a trial the other completed 'not done' and the other exiting 0 past two RunExistsErrors."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    from flowerkit.sweep import SweepLock
    from tests.servers import default_sigint

    base = TINY | {"data_root": str(flowers_root), "output_dir": str(tmp_path / "out"), "num_steps": 400,
                   "eval_every": 200}
    path = write_sweep(tmp_path, {"name": "twice", "base": base, "grid": {"seed": [1]}})
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    with default_sigint():  # stopped below with Ctrl-C's signal
        first = subprocess.Popen([sys.executable, "-m", "flowerkit", "sweep", str(path)], env=env, cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    layout = read_sweep(path).layout
    deadline = time.monotonic() + 120
    while first.poll() is None and not SweepLock(layout).is_held_elsewhere():
        assert time.monotonic() < deadline, "the first sweep never took its lock"
        time.sleep(0.1)
    try:
        second = subprocess.run([sys.executable, "-m", "flowerkit", "sweep", str(path)], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 4, second.stderr[-3000:]
        text = " ".join(second.stderr.split())
        assert text.count("Error:") == 1 and "Traceback" not in text
        assert f"The sweep 'twice' is being run right now by pid {first.pid} on host" in text
        assert "Beginning flow run" not in second.stderr  # refused before any flow (and trial) started
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)


def test_a_trial_another_process_holds_is_reported_as_busy_not_failed(
        prefect_harness, flowers_root: Path, tmp_path: Path) -> None:
    """Someone runs `flowerkit train` on a trial's config while the sweep runs: the sweep leaves it alone, runs
    the others, and says so (exit 4, one writer per run), never that the trial failed."""
    from flowerkit.errors import RunExistsError
    from flowerkit.flows.sweep import sweep_flow
    from flowerkit.run.rundir import RunLock, claim_run_dir

    base = TINY | {"data_root": str(flowers_root), "output_dir": str(tmp_path / "out")}
    path = write_sweep(tmp_path, {"name": "held", "base": base, "grid": {"seed": [1, 2]}})
    held = read_sweep(path).trials[1].config
    lock = RunLock(held.layout)
    claim_run_dir(held, "train", False, None, held.num_steps, lock)  # another writer: its own lock file handle
    try:
        with pytest.raises(RunExistsError) as caught:
            sweep_flow(str(path))
    finally:
        lock.release()
    message = " ".join(caught.value.message.split())
    assert "held-001 is being run by another process right now (not failed" in message
    assert "did not complete" not in message
    rows = {row["trial"]: row for row in read_results(tmp_path / "out", "held")}
    assert rows["held-000"]["status"] == "complete" and rows["held-001"]["status"] == "running"


@pytest.mark.slow  # real processes, each importing torch
@pytest.mark.parametrize("max_parallel", [1, 2])
def test_sigterm_stops_a_sweep_with_exit_143_and_the_same_command_continues_it(
        prefect_harness, flowers_root: Path, tmp_path: Path, max_parallel: int) -> None:
    """A sweep has no --resume: the paragraph names what continues it, running the same sweep again. With
    --max_parallel 2 the trials are processes of their own: they are stopped too, never left running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from prefect.settings import PREFECT_API_URL

    from flowerkit.flows.sweep import sweep_flow

    base = TINY | {"data_root": str(flowers_root), "output_dir": str(tmp_path / "out"), "num_steps": 20,
                   "eval_every": 10}
    path = write_sweep(tmp_path, {"name": "stopped", "base": base, "grid": {"seed": list(range(max_parallel))}})
    trial = read_sweep(path).trials[0].config.layout
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "flowerkit", "sweep", str(path), "--max_parallel",
                             str(max_parallel)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while proc.poll() is None and not trial.checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)  # to the sweep's process alone, as a scheduler does
    _, stderr = proc.communicate(timeout=300)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, alive
    assert proc.returncode == 143, stderr[-3000:]
    text = " ".join(stderr.split())
    assert "Traceback" not in stderr and text.count("Error:") == 1, stderr[-3000:]
    assert "run the same sweep command again" in text and "--resume" not in text.split("Error:")[1]
    assert json.loads(trial.record.read_text())["stage_status"] == "failed"
    rows = {row["trial"]: row for row in sweep_flow(str(path))}
    assert rows["stopped-000"]["action"] == "resume" and rows["stopped-000"]["status"] == "complete"
    assert all(row["status"] == "complete" for row in rows.values())
