"""The deployments of prefect.yaml on a real Prefect server, run by a real process worker.

One server of the module's own (its own PREFECT_HOME and SQLite database under tmp: a work pool and the
train deployment change what `flowerkit sweep` does against a server, so the session's shared server never
sees them), one `prefect deploy --all` and one worker serve the whole module: each costs seconds to start. Each flow run is a fresh worker subprocess that
imports torch (~5 s here), so the module starts few runs, and at once where it can: three concurrent
train runs (two of them with the same run name), then one eval run, and one predict run of the seed run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from flowerkit.artifacts.record import read_record
from tests.servers import PrefectServer, drain_prefect_workers, start as _start, stop as _stop, tail as _tail

REPO = Path(__file__).resolve().parents[1]
PREFECT = [sys.executable, "-m", "prefect"]  # this environment's Prefect, whether or not its script is installed
POOL = "flowerkit-process"
FLOWERKIT = [sys.executable, "-m", "flowerkit"]
TRAIN, EVAL = "train/flowerkit-train", "eval/flowerkit-eval"
PREDICT = "predict/flowerkit-predict"
SERVED = ("train/flowerkit-train-serve", "eval/flowerkit-eval-serve")
SEED_PARAMS = dict(dataset="flower102", model_type="testing", img_size=64, num_steps=10, eval_every=5,
                   train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
                   tiny_infer_subset="flower102_tiny", prefer_mps=True)
RUN_TIMEOUT_S = 180
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never through a proxy


@pytest.fixture(scope="module")
def server(prefect_database: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server for this module alone (tests/servers.py): it gets a work pool, deployments and a
    worker, which other modules' sweeps, running at the same time on another pytest-xdist worker, must not
    find."""
    server = PrefectServer.start(tmp_path_factory.mktemp("prefect-server-deployments"), prefect_database)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(server: PrefectServer) -> Iterator[str]:
    """Point this test process's Prefect client at the module's server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        yield server.url
        drain_prefect_workers()


@pytest.fixture(scope="module")
def worker(server: PrefectServer, api: str) -> Iterator[None]:
    """The documented work-pool path: create the process pool, `prefect deploy --all`, start a worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:  # what `prefect work-pool create --type process` does
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
    log = server.logs / "worker.log"
    # Started as a team starts it, without the setting flowerkit's CLI makes: what reaches a flow run's logs
    # must come from the deployment (prefect.yaml's job variables).
    env = {key: value for key, value in server.env.items() if key != "PREFECT_LOGGING_EXTRA_LOGGERS"}
    proc = _start([*PREFECT, "worker", "start", "--pool", POOL], env, log, server.logs)
    try:
        # Deploy while the worker starts: prefect.yaml exactly as committed, from the repo root.
        deployed = subprocess.run([*PREFECT, "--no-prompt", "deploy", "--all"], cwd=REPO, env=server.env,
                                  capture_output=True, text=True, timeout=240)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        yield
    finally:
        _stop(proc)
        print(f"worker log tail:\n{_tail(log)}")


def _deployment(name: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def _wait_deployed(names: tuple[str, ...], proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    for name in names:
        while True:
            assert proc.poll() is None, f"flowerkit serve exited with {proc.returncode}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"{name} not served after {timeout_s} s:\n{_tail(log)}"
            try:
                _deployment(name)
                break
            except ObjectNotFound:
                time.sleep(0.5)


@pytest.fixture(scope="module")
def served(worker, server: PrefectServer) -> dict[str, Any]:
    """`flowerkit serve` on the same server after `prefect deploy --all`, then stopped with Ctrl-C.

    Returns the work-pool deployments as they were before serve started; the train runs below then go
    through those deployments, so they also show that serving did not break them.
    """
    before = {name: _deployment(name) for name in (TRAIN, EVAL)}
    log = server.logs / "serve.log"
    proc = _start([*FLOWERKIT, "serve"], server.env, log, server.logs)
    try:
        _wait_deployed(SERVED, proc, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: serve's own shutdown, which pauses what it served
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _stop(proc)
    return before


def _start_run(deployment: str, config: dict) -> UUID:
    from prefect.deployments import run_deployment

    return run_deployment(deployment, parameters={"config": config}, timeout=0).id


def _wait_final(run_ids: list[UUID]) -> dict[UUID, Any]:
    """The final state of each flow run (Completed, Failed, Crashed ...)."""
    from prefect.client.orchestration import get_client

    deadline, final = time.monotonic() + RUN_TIMEOUT_S, {}
    with get_client(sync_client=True) as client:
        while len(final) < len(run_ids):
            assert time.monotonic() < deadline, f"flow runs not finished after {RUN_TIMEOUT_S} s"
            for run_id in set(run_ids) - set(final):
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    final[run_id] = state
            time.sleep(0.5)
    return final


def _artifacts(run_id: UUID) -> dict[str, Any]:
    """The run's flowerkit artifacts by kind (Prefect links others of its own, such as results)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run_id])))
    return {kind: artifact for artifact in found for kind in ("summary", "per-class", "progress")
            if (artifact.key or "").endswith(f"-{kind}")}


def _flowerkit_lines(run_id: UUID, last: str, timeout_s: float = 30) -> list[str]:
    """The flow run's log lines in the API from flowerkit's own loggers, once one holding ``last`` is there: the
    run's process sends its last lines as it exits, just after its final state."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            lines = [log.message for log in logs if log.name.startswith("flowerkit")]
            if any(last in line for line in lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.5)


def _flow_run(run_id: UUID) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _assert_intact(run_dir: Path) -> dict:
    """Complete, and every file the run indexed still has the sha256 it was indexed with."""
    record = read_record(run_dir)
    assert record["stage_status"] == "complete", record.get("error")
    for entry in record["artifact_index"]:
        path = run_dir.parent / entry["relative_path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
    return record


def test_progress_updates_are_throttled(prefect_harness) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    from flowerkit.engine.progress import Progress
    from flowerkit.tasks.reporting import ProgressArtifact

    @flow
    def ten_steps() -> tuple[list[int], UUID]:
        now, sent = [0.0], []
        progress = ProgressArtifact("train", "throttled", min_interval_s=2.0, clock=lambda: now[0])
        for step in range(1, 11):
            now[0] += 0.5
            before = progress.updates
            last_eval = {"step": 5, "accuracy": 0.25, "loss": 4.5} if step >= 5 else None
            progress(Progress(step, 10, 120.0, last_eval))
            sent += [step] if progress.updates > before else []
        return sent, progress.artifact_id

    sent, artifact_id = ten_steps()
    assert sent == [4, 8, 10]  # two seconds apart, and the last step always
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    assert artifact.key == "flowerkit-train-throttled-progress" and float(artifact.data) == 100.0
    # The same facts as the CLI's display: steps, rate, ETA (0.5 s a step here) and the latest evaluation.
    assert artifact.description == ("flowerkit train run 'throttled': step 10/10 (100%), 120.0 img/s, ETA 0:00, "
                                    "eval at step 5: acc 0.250, loss 4.5000")


@dataclass
class TrainRuns:
    output_dir: Path
    ids: dict[str, list[UUID]]  # run name -> flow-run ids started with it
    states: dict[UUID, Any]


@pytest.fixture(scope="module")
def train_runs(worker, served, flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainRuns:
    """Three train runs started at once: 'trained' and twice 'twin' (the same run name)."""
    output_dir = tmp_path_factory.mktemp("server-runs")
    config = SEED_PARAMS | {"data_root": str(flowers_root), "output_dir": str(output_dir)}
    ids = {name: [_start_run(TRAIN, config | {"name": name}) for _ in range(count)]
           for name, count in (("trained", 1), ("twin", 2))}
    return TrainRuns(output_dir, ids, _wait_final([i for run_ids in ids.values() for i in run_ids]))


@pytest.mark.prefect_server
def test_train_run_leaves_its_files_and_prefect_artifacts(train_runs: TrainRuns) -> None:
    (run_id,) = train_runs.ids["trained"]
    assert train_runs.states[run_id].is_completed()
    run_dir = train_runs.output_dir / "trained"
    record = _assert_intact(run_dir)
    assert record["flow_run_id"] == str(run_id)
    assert record["progress"] == {"step": 10, "total_steps": 10}
    checkpoint = run_dir / "checkpoints" / "ckpt.bin"
    assert checkpoint.is_file() and (train_runs.output_dir / "tb" / "trained").is_dir()

    shown = _artifacts(run_id)
    assert set(shown) == {"summary", "per-class", "progress"}
    summary = shown["summary"].data
    assert record["config_hash"] in summary and str(checkpoint) in summary and "- device: `cpu`" in summary
    assert f"| accuracy | {round(record['metrics']['accuracy'], 4)} |" in summary
    rows = json.loads(shown["per-class"].data)
    assert len(rows) == 102 and {"class_name", "precision", "recall", "f1", "support"} <= set(rows[0])
    assert sum(row["support"] for row in rows) == record["metrics"]["num_samples"]
    assert float(shown["progress"].data) == 100.0


@pytest.mark.prefect_server
def test_a_worker_run_is_named_tagged_and_logged_like_a_cli_run(train_runs: TrainRuns) -> None:
    """The deployment's flow run carries the run's name and tags, and flowerkit's own lines are in its logs:
    the worker's process gets PREFECT_LOGGING_EXTRA_LOGGERS from prefect.yaml's job variables."""
    (run_id,) = train_runs.ids["trained"]
    flow_run = _flow_run(run_id)
    assert flow_run.name == "trained"
    assert {"flowerkit", "train", "model:testing", "dataset:flower102"} <= set(flow_run.tags)
    assert not any(tag.startswith("sweep:") for tag in flow_run.tags)
    lines = _flowerkit_lines(run_id, "train run 'trained': val split")
    assert any(line.startswith("step 10/10 ") for line in lines), lines
    assert any(line.startswith("eval at step 10: accuracy") for line in lines), lines
    assert any(line.startswith("train run 'trained': val split (4 samples): accuracy") for line in lines), lines
    # The refused twin is named after its run too.
    assert {_flow_run(i).name for i in train_runs.ids["twin"]} == {"twin"}


@pytest.mark.prefect_server
def test_eval_run_of_the_trained_checkpoint(train_runs: TrainRuns, flowers_root: Path) -> None:
    checkpoint = train_runs.output_dir / "trained" / "checkpoints" / "ckpt.bin"
    assert checkpoint.is_file()
    run_id = _start_run(EVAL, {"name": "evaluated", "checkpoint": str(checkpoint), "dataset": "flower102",
                               "data_root": str(flowers_root), "tiny_infer_subset": "flower102_tiny",
                               "eval_batch_size": 2, "output_dir": str(train_runs.output_dir)})
    assert _wait_final([run_id])[run_id].is_completed()
    run_dir = train_runs.output_dir / "evaluated"
    record = _assert_intact(run_dir)
    assert record["flow"] == "eval" and record["flow_run_id"] == str(run_id)
    assert len((run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()) == 4
    shown = _artifacts(run_id)
    assert set(shown) == {"summary", "per-class"}
    assert f"evaluated checkpoint: `{checkpoint}`" in shown["summary"].data
    assert record["config_hash"] in shown["summary"].data


@pytest.mark.prefect_server
def test_predict_deployment_scores_a_folder_with_a_run(worker, tiny_run: Path, flowers_root: Path,
                                                        tmp_path: Path) -> None:
    """The form a team fills in: a folder and a run (and the new run's name); the run has the contract."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted((flowers_root / "jpg").glob("*.jpg"))[:3]:
        shutil.copy(image, folder)
    run_id = _start_run(PREDICT, {"name": "scored-folder", "inputs": [str(folder)], "run": tiny_run.name,
                                  "output_dir": str(tiny_run.parent)})
    assert _wait_final([run_id])[run_id].is_completed()
    run_dir = tiny_run.parent / "scored-folder"
    record = _assert_intact(run_dir)
    assert record["flow"] == "predict" and record["flow_run_id"] == str(run_id)
    assert len((run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()) == 3
    indexed = {entry["relative_path"] for entry in record["artifact_index"]}
    assert {"scored-folder/env_stamp.json", "scored-folder/RETENTION.txt", "scored-folder/labelmap.json"} <= indexed
    # In the Prefect UI: the run's name and tags, its counts in its logs, and a summary naming the rows' path.
    flow_run = _flow_run(run_id)
    assert flow_run.name == "scored-folder"
    assert {"flowerkit", "predict", "model:testing"} <= set(flow_run.tags)
    lines = _flowerkit_lines(run_id, "image(s) predicted")
    assert any(line.startswith("3 of 3 image(s) predicted, 0 could not be") for line in lines), lines
    summary = _artifacts(run_id)["summary"]
    assert summary.key == "flowerkit-predict-scored-folder-summary"
    assert f"- rows: `{run_dir / 'fiftyone' / 'predictions.jsonl'}`" in summary.data
    assert f"run `{tiny_run.name}`: `{tiny_run / 'checkpoints' / 'best.bin'}`" in summary.data
    assert "| predicted | 3 |" in summary.data and "| errors | 0 |" in summary.data


@pytest.mark.prefect_server
def test_concurrent_runs_get_their_own_directory_or_a_refusal(train_runs: TrainRuns) -> None:
    """Different names: both complete. The same name: one runs, the other is refused (exit 4's error)."""
    (trained,) = train_runs.ids["trained"]
    assert train_runs.states[trained].is_completed()
    twins = {i: train_runs.states[i] for i in train_runs.ids["twin"]}
    assert sorted(state.type.value for state in twins.values()) == ["COMPLETED", "FAILED"]
    winner = next(i for i, state in twins.items() if state.is_completed())
    refused = next(state for state in twins.values() if state.is_failed())
    assert "RunExistsError" in refused.message
    # Neither damaged the other's files: each record names its own flow run, every indexed file is intact.
    assert _assert_intact(train_runs.output_dir / "twin")["flow_run_id"] == str(winner)
    assert _assert_intact(train_runs.output_dir / "trained")["flow_run_id"] == str(trained)
    assert {p.name for p in (train_runs.output_dir / "tb").iterdir()} >= {"trained", "twin"}


@pytest.mark.prefect_server
def test_serve_and_the_work_pool_coexist_on_one_server(served: dict[str, Any]) -> None:
    """Serving after `prefect deploy --all` adds its own deployments and leaves the work pool's as deployed."""
    from flowerkit.cli.serve_cmd import served_deployments

    for name, before in served.items():
        after = _deployment(name)
        assert after.id == before.id and after.work_pool_name == POOL and not after.paused
        assert after.pull_steps == before.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
            "directory": str(REPO)}}]
        assert (after.entrypoint, after.path) == (before.entrypoint, before.path)
    for served_one, name in zip(served_deployments(), (TRAIN, EVAL)):
        deployed = _deployment(f"{served_one.flow_name}/{served_one.name}")
        assert deployed.id != served[name].id and deployed.work_pool_name is None
        # Same parameter form both ways.
        assert deployed.parameter_openapi_schema == served[name].parameter_openapi_schema


def test_serve_refuses_without_a_server() -> None:
    import typer
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from flowerkit.cli.serve_cmd import serve

    app = typer.Typer()
    app.command()(serve)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, [])
    assert result.exit_code == 3
    assert "PREFECT_API_URL" in result.output


def _most_at_once(runs: list[Any]) -> int:
    """The largest number of flow runs that were running at one moment (an end before a start at a tie)."""
    events = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def _most_unfinished_at_creation(runs: list[Any]) -> int:
    """For each flow run, how many flow runs (itself included) existed unfinished when it was created; the most."""
    return max(sum(1 for other in runs if other.created <= run.created and
                   (other.end_time is None or other.end_time > run.created)) for run in runs)


@pytest.mark.prefect_server
def test_a_sweep_runs_on_the_work_pool_within_max_parallel(worker, server: PrefectServer, flowers_root: Path,
                                                           tmp_path_factory: pytest.TempPathFactory,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Three trials submitted as flowerkit-train runs: at most max_parallel (2) at once (the sweep's concurrency
    limit), every trial an intact run, each reported as submitted, started and finished with its flow run's
    link; the same sweep again submits nothing."""
    import logging

    import yaml
    from prefect.client.orchestration import get_client

    from flowerkit.flows.sweep import concurrency_limit_name, sweep_flow

    folder = tmp_path_factory.mktemp("pool-sweep")
    base = SEED_PARAMS | {"data_root": str(flowers_root), "output_dir": str(folder / "out"), "img_size": 32,
                          "num_steps": 2, "eval_every": 2}
    path = folder / "pooled.yaml"
    path.write_text(yaml.safe_dump({"name": "pooled", "base": base,
                                    "grid": {"learning_rate": [0.01, 0.02, 0.03]}}))
    caplog.set_level(logging.INFO, logger="flowerkit.sweep")
    rows = sweep_flow(str(path), max_parallel=2, backend="pool")
    assert [row["status"] for row in rows] == ["complete"] * 3 and {row["action"] for row in rows} == {"run"}
    said = [r.getMessage() for r in caplog.records if r.name == "flowerkit.sweep"]
    assert said[0] == "sweep 'pooled': 3 trial(s) to run, 2 at once"
    ui = server.url.removesuffix("/api")  # the UI's address, derived from PREFECT_API_URL
    for row in rows:
        link = f"/runs/flow-run/{row['flow_run_id']})"
        events = [line for line in said if line.startswith(f"trial {row['trial']} ")]
        assert [line.split()[2] for line in events] == ["submitted", "started", "finished"], said
        assert all(line.endswith(link) for line in events), events
        assert "val_accuracy" in events[-1] and all(f"({ui}/runs/flow-run/" in line for line in events)
    assert sum("[3/3, ETA 0:00]" in line for line in said) == 1
    assert [row["rank"] for row in rows] == [1, 2, 3]
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(UUID(row["flow_run_id"])) for row in rows]
        assert client.read_global_concurrency_limit_by_name(concurrency_limit_name("pooled")).limit == 2
        assert {run.deployment_id for run in runs} == {client.read_deployment_by_name(TRAIN).id}
    assert sorted(run.name for run in runs) == [f"pooled-{i:03d}" for i in range(3)]
    assert all({"train", "sweep:pooled", "model:testing", "dataset:flower102"} <= set(run.tags) for run in runs)
    assert any(line.startswith("step 2/2 ") for line in _flowerkit_lines(runs[0].id, "train run 'pooled-"))
    # The sweep holds one of the limit's slots per trial from submission to its final state: no trial is even
    # created while two are unfinished, and so never more than two run at once. (How many actually overlap
    # depends on how fast the worker starts them, so it is not asserted.)
    assert _most_unfinished_at_creation(runs) <= 2 and 1 <= _most_at_once(runs) <= 2
    for row, run in zip(rows, runs):
        assert _assert_intact(folder / "out" / row["trial"])["flow_run_id"] == str(run.id)

    again = sweep_flow(str(path), max_parallel=2, backend="pool")
    assert {row["action"] for row in again} == {"skip"}
    assert [row["flow_run_id"] for row in again] == [row["flow_run_id"] for row in rows]
