"""`flowerkit server start | status | stop`, and a seed run that reports to that server (real processes)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SEED_FLAGS


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def flowerkit(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowerkit", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.prefect_server
@pytest.mark.slow
def test_runs_use_the_started_server_until_it_stops(prefect_database: Path, flowers_root: Path,
                                                    tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # A home whose database is already migrated, as after a user's first start: the server's own migrations
    # cost 8 s of CPU here and are what the session's servers start from (tests/servers.py).
    (tmp_path / "prefect").mkdir()
    shutil.copyfile(prefect_database, tmp_path / "prefect" / "prefect.db")
    assert flowerkit(["server", "status"], env, tmp_path).returncode == 1
    started = flowerkit(["server", "start", "--port", str(free_port())], env, tmp_path)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads((tmp_path / "prefect" / "flowerkit-server.json").read_text())
        status = flowerkit(["server", "status"], env, tmp_path)
        assert status.returncode == 0 and "answering" in status.stdout

        run = flowerkit(["train", "--name", "served", "--dataset", "flower102", "--data_root", str(flowers_root),
                         *SEED_FLAGS, "--output_dir", "output", "--quiet"], env, tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Starting temporary server" not in run.stdout + run.stderr  # no ephemeral server this time
        record = json.loads((tmp_path / "output" / "served" / "run_record.json").read_text())
        url = f"http://127.0.0.1:{state['port']}/api/flow_runs/{record['flow_run_id']}"
        with DIRECT.open(url, timeout=10) as response:
            assert json.loads(response.read())["state"]["type"] == "COMPLETED"
    finally:
        stopped = flowerkit(["server", "stop"], env, tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "prefect" / "flowerkit-server.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
    assert flowerkit(["server", "status"], env, tmp_path).returncode == 1


def test_a_busy_recorded_server_is_still_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server too busy to answer a health request within a second is still the one to report to: falling back
    to an ephemeral server cost seconds and hid the run from the UI."""
    from flowerkit.flows.orchestration import local_server

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as busy:  # listens, never accepts: requests wait, as on a saturated server
        busy.bind(("127.0.0.1", 0))
        busy.listen(8)
        port = busy.getsockname()[1]
        (tmp_path / "flowerkit-server.json").write_text(json.dumps({"pid": os.getpid(), "port": port, "log": "x"}))
        assert not local_server.healthy(local_server.recorded(), timeout_s=0.5)
        assert local_server.use_local_server() == f"http://127.0.0.1:{port}/api"
        assert os.environ["PREFECT_API_URL"] == f"http://127.0.0.1:{port}/api"
    monkeypatch.delenv("PREFECT_API_URL")
    assert local_server.use_local_server() is None  # nothing listens there any more: ephemeral mode


def test_a_server_in_prefects_own_settings_is_used_not_a_temporary_one(prefect_harness,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A team's `prefect config set PREFECT_API_URL=...` (a profile) names their server: the run reports there
    and no temporary server is started; a profile's server that does not answer is exit 3 before the run."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flowerkit.flows.orchestration.prefect_env import start_ephemeral_server
    from flowerkit.errors import MissingInputError

    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # only Prefect's settings name the server
    start_ephemeral_server()
    assert not any(server.running for server in SubprocessASGIServer._instances.values())

    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
        with pytest.raises(MissingInputError) as refused:
            start_ephemeral_server()
    assert refused.value.exit_code == 3 and "prefect config view" in refused.value.message
