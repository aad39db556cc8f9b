"""A `flowerkit train` killed with SIGKILL: its flow run ends Crashed by itself (a real Prefect server, a real
process), with no other flowerkit command run; a run that ends normally leaves no watcher behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SEED_FLAGS
from tests.servers import DIRECT
from tests.servers import PrefectServer as Server

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]
CRASHED_WITHIN_S = 60  # the spec: a dead run's flow run is Crashed within a minute of the death


@pytest.fixture(scope="module")
def server(prefect_server: Server) -> Server:
    """The session's real Prefect server (tests/servers.py)."""
    return prefect_server


def flow_run_state(server_: Server, flow_run_id: str) -> dict:
    with DIRECT.open(f"{server_.url}/flow_runs/{flow_run_id}", timeout=10) as response:
        return json.loads(response.read())["state"]


def watchers_of(flow_run_id: str) -> list[int]:
    """Pids of live processes whose command line names this flow run (the watcher's does)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"flowerkit.flows.orchestration.watcher" in cmdline and flow_run_id.encode() in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"not within {timeout_s} s: {what}")


def train_cmd(flowers_root: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "flowerkit", "train", "--name", name, "--dataset", "flower102", "--data_root",
            str(flowers_root), *SEED_FLAGS, "--output_dir", "output", "--quiet", *extra]


def record_of(workdir: Path, name: str) -> dict:
    try:
        return json.loads((workdir / "output" / name / "run_record.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the watcher through /proc")
def test_a_killed_train_ends_crashed_by_itself(server: Server, flowers_root: Path, tmp_path: Path) -> None:
    # Long enough to be killed mid-training (evaluations far apart keep it in the train task).
    proc = subprocess.Popen(train_cmd(flowers_root, "killed", "--num_steps", "2000", "--eval_every", "1000"),
                            env=server.env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        metrics = tmp_path / "output" / "killed" / "metrics.jsonl"
        wait_for(lambda: metrics.is_file() and metrics.stat().st_size > 0 or proc.poll() is not None, 240,
                 "the run's first logged step")
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        flow_run_id = record_of(tmp_path, "killed")["flow_run_id"]
        assert flow_run_state(server, flow_run_id)["type"] == "RUNNING"
        assert len(watchers_of(flow_run_id)) == 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = time.monotonic()
    # Nothing else runs: no `runs list`, no dashboard, no --resume. Only the watcher can mark it.
    state = wait_for(lambda: (s := flow_run_state(server, flow_run_id))["type"] == "CRASHED" and s,
                     CRASHED_WITHIN_S - (time.monotonic() - killed_at), "the flow run of the killed run Crashed")
    assert "found by its watcher" in state["message"] and "--resume" in state["message"]
    wait_for(lambda: not watchers_of(flow_run_id), 30, "the watcher's exit after marking the flow run")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the watcher through /proc")
def test_a_run_that_ends_normally_leaves_no_watcher(server: Server, flowers_root: Path, tmp_path: Path) -> None:
    done = subprocess.run(train_cmd(flowers_root, "normal"), env=server.env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    flow_run_id = record_of(tmp_path, "normal")["flow_run_id"]
    assert flow_run_state(server, flow_run_id)["type"] == "COMPLETED"
    wait_for(lambda: not watchers_of(flow_run_id), 30, "the watcher's exit once its flow run completed")


def test_no_watcher_without_a_real_server() -> None:
    from flowerkit.flows.orchestration.watcher import watch

    assert watch("6f1c3c52-3a43-4e0a-9d7a-2f2f4d1c9a10", "x", "train", None) is None  # ephemeral mode
    assert watch(None, "x", "train", "http://127.0.0.1:9/api") is None  # no flow run


def test_a_flow_run_that_ended_before_its_process_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's process exits within a state poll of its flow run's end: the watcher asks once more before it
    imports Prefect (a second of CPU for every run) to mark a flow run that is not final."""
    from flowerkit.flows.orchestration import crashed_runs, watcher

    monkeypatch.setattr(watcher, "flow_run_state", lambda api_url, flow_run_id: "COMPLETED")
    monkeypatch.setattr(crashed_runs, "mark_crashed", lambda *args: pytest.fail("a completed flow run was marked"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert watcher.watch_until_done(gone.pid, None, "http://127.0.0.1:9/api", "a-flow-run", "died") == \
        "the flow run ended"
