"""The deployments of prefect.yaml on a real Prefect server, run by a real process worker.

One server (its own PREFECT_HOME and SQLite database under tmp), one `prefect deploy --all` and one worker
serve the whole module: each costs seconds to start. Each flow run is a fresh worker subprocess that
imports torch (~5 s here), so the module starts as few runs as the checks need: train, eval, and three
concurrent runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from flowerkit.artifacts.record import read_record

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
POOL = "flowerkit-process"
TRAIN, EVAL = "train/flowerkit-train", "eval/flowerkit-eval"
SEED_PARAMS = dict(dataset="flower102", model_type="testing", img_size=64, num_steps=10, eval_every=5,
                   train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
                   tiny_infer_subset="flower102_tiny", prefer_mps=True)
RUN_TIMEOUT_S = 180


@dataclass
class Server:
    url: str
    env: dict[str, str]  # for clients of this server: the CLI, the worker and its flow-run subprocesses
    logs: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    # A session of its own, so that stopping it also stops its children (the worker's flow-run processes).
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prefect server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"prefect server not healthy after {timeout_s} s:\n{_tail(log)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`prefect server start` on a free port of 127.0.0.1, with its own home and database."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base |= {"PREFECT_HOME": str(root / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_LOGGING_EXTRA_LOGGERS": "flowerkit"}
    server_env = base | {"PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
                         "PREFECT_UI_ENABLED": "false"}
    log = root / "server.log"
    proc = _start([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env, log, root)
    try:
        _wait_healthy(url, proc, log)
        # The worker polls every second instead of every 10 s.
        yield Server(url, base | {"PREFECT_API_URL": url, "PREFECT_WORKER_QUERY_SECONDS": "1"}, root)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[str]:
    """Point this test process's Prefect client at the module's server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        yield server.url


@pytest.fixture(scope="module")
def worker(server: Server, api: str) -> Iterator[None]:
    """The documented work-pool path: create the process pool, `prefect deploy --all`, start a worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:  # what `prefect work-pool create --type process` does
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
    log = server.logs / "worker.log"
    proc = _start([PREFECT, "worker", "start", "--pool", POOL], server.env, log, server.logs)
    try:
        # Deploy while the worker starts: prefect.yaml exactly as committed, from the repo root.
        deployed = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], cwd=REPO, env=server.env,
                                  capture_output=True, text=True, timeout=240)
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        yield
    finally:
        _stop(proc)
        print(f"worker log tail:\n{_tail(log)}")


def _start_run(deployment: str, config: dict) -> UUID:
    from prefect.deployments import run_deployment

    return run_deployment(deployment, parameters={"config": config}, timeout=0).id


def _wait_final(run_ids: list[UUID]) -> dict[UUID, object]:
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


def _artifacts(run_id: UUID) -> dict[str, object]:
    """The run's flowerkit artifacts by kind (Prefect links others of its own, such as results)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[run_id])))
    return {kind: artifact for artifact in found for kind in ("summary", "per-class", "progress")
            if (artifact.key or "").endswith(f"-{kind}")}


def _assert_intact(run_dir: Path) -> dict:
    """Complete, and every file the run indexed still has the sha256 it was indexed with."""
    record = read_record(run_dir)
    assert record["stage_status"] == "complete", record.get("error")
    for entry in record["artifact_index"]:
        path = run_dir.parent / entry["relative_path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], path
    return record


@pytest.mark.prefect_server
def test_train_then_eval_through_the_worker(worker, flowers_root: Path, tmp_path: Path) -> None:
    common = SEED_PARAMS | {"data_root": str(flowers_root), "output_dir": str(tmp_path)}
    train_id = _start_run(TRAIN, common | {"name": "srv-train"})
    assert _wait_final([train_id])[train_id].is_completed()

    run_dir = tmp_path / "srv-train"
    record = _assert_intact(run_dir)
    assert record["flow_run_id"] == str(train_id)
    assert record["progress"] == {"step": 10, "total_steps": 10}
    checkpoint = run_dir / "checkpoints" / "ckpt.bin"
    assert checkpoint.is_file() and (tmp_path / "tb" / "srv-train").is_dir()

    shown = _artifacts(train_id)
    assert set(shown) == {"summary", "per-class", "progress"}
    assert record["config_hash"] in shown["summary"].data and str(checkpoint) in shown["summary"].data
    assert f"| accuracy | {round(record['metrics']['accuracy'], 4)} |" in shown["summary"].data
    rows = json.loads(shown["per-class"].data) if isinstance(shown["per-class"].data, str) else shown["per-class"].data
    assert len(rows) == 102 and {"class_name", "precision", "recall", "f1", "support"} <= set(rows[0])
    assert float(shown["progress"].data) == 100.0

    eval_params = {k: v for k, v in common.items() if k in ("dataset", "data_root", "output_dir",
                                                            "tiny_infer_subset", "eval_batch_size")}
    eval_id = _start_run(EVAL, eval_params | {"name": "srv-eval", "checkpoint": str(checkpoint)})
    assert _wait_final([eval_id])[eval_id].is_completed()
    eval_record = _assert_intact(tmp_path / "srv-eval")
    assert eval_record["flow"] == "eval" and eval_record["flow_run_id"] == str(eval_id)
    assert (tmp_path / "srv-eval" / "fiftyone" / "predictions.jsonl").is_file()
    assert set(_artifacts(eval_id)) == {"summary", "per-class"}


@pytest.mark.prefect_server
def test_concurrent_runs_get_their_own_directory_or_a_refusal(worker, flowers_root: Path, tmp_path: Path) -> None:
    common = SEED_PARAMS | {"data_root": str(flowers_root), "output_dir": str(tmp_path)}
    names = ["par-a", "par-b", "par-b"]
    ids = [_start_run(TRAIN, common | {"name": name}) for name in names]
    states = _wait_final(ids)

    assert states[ids[0]].is_completed()
    same_name = [states[i] for i in ids[1:]]
    assert sorted(s.type.value for s in same_name) == ["COMPLETED", "FAILED"]
    refused = next(s for s in same_name if s.is_failed())
    assert "RunExistsError" in refused.message
    winner = next(i for i in ids[1:] if states[i].is_completed())
    assert _assert_intact(tmp_path / "par-a")["flow_run_id"] == str(ids[0])
    assert _assert_intact(tmp_path / "par-b")["flow_run_id"] == str(winner)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["par-a", "par-b", "tb"]


@pytest.mark.prefect_server
def test_served_deployments_take_the_same_parameters(worker) -> None:
    """`flowerkit serve` serves the same flows under the same names, with the same parameter form."""
    from prefect.client.orchestration import get_client

    from flowerkit.cli.serve_cmd import served_deployments

    with get_client(sync_client=True) as client:
        for served in served_deployments():
            deployed = client.read_deployment_by_name(f"{served.flow_name}/{served.name}")
            assert deployed.parameter_openapi_schema == served._parameter_openapi_schema
            assert deployed.pull_steps == [{"prefect.deployments.steps.set_working_directory": {
                "directory": str(REPO)}}]


def test_serve_refuses_without_a_server() -> None:
    import typer
    from typer.testing import CliRunner

    from flowerkit.cli.serve_cmd import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    app = typer.Typer()
    app.command()(serve)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, [])
    assert result.exit_code == 3
    assert "PREFECT_API_URL" in result.output
