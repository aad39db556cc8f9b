"""A run whose process was killed: the front ends mark its Prefect flow run Crashed (a real Prefect server)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from typer.testing import CliRunner

from flowerkit.cli import app


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def killed_run(output: Path, name: str, flow_run_id: str | None) -> Path:
    """A run directory as a killed `flowerkit train` leaves it: started, owned by a process that is gone."""
    run = output / name
    run.mkdir(parents=True)
    record = {"schema_version": 1, "run_id": f"{name}-1", "name": name, "flow": "train", "flow_run_id": flow_run_id,
              "stage_status": "started", "started_utc": "2026-01-15T09:30:00Z", "progress": {"step": 3,
              "total_steps": 10}, "owner": {"host": socket.gethostname(), "pid": dead_pid()}, "tasks": {},
              "metrics": {}, "artifact_index": []}
    (run / "run_record.json").write_text(json.dumps(record))
    return run


def running_flow_run() -> UUID:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    @flow(name="killed-train")
    def killed() -> None: ...

    with get_client(sync_client=True) as client:
        return client.create_flow_run(killed, state=Running()).id


def state_of(flow_run_id: UUID) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state.type.value


def test_runs_list_marks_the_flow_run_of_a_killed_run_crashed(prefect_harness, tmp_path: Path) -> None:
    flow_run_id = running_flow_run()
    killed_run(tmp_path, "killed", str(flow_run_id))
    result = CliRunner().invoke(app, ["runs", "list", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "crashed" in result.output and "marked Crashed" in result.output
    assert state_of(flow_run_id) == "CRASHED"
    again = CliRunner().invoke(app, ["runs", "list", "--output-dir", str(tmp_path)])
    assert "marked Crashed" not in again.output  # settled once; a final state is left alone


def test_an_unreachable_server_leaves_the_run_listed_as_crashed(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    killed_run(tmp_path, "orphan", "6f1c3c52-3a43-4e0a-9d7a-2f2f4d1c9a10")
    with temporary_settings(updates={PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        result = CliRunner().invoke(app, ["runs", "list", "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "crashed" in result.output and "did not answer" in result.output


@pytest.mark.anyio
async def test_the_dashboard_marks_it_too(prefect_harness, tmp_path: Path) -> None:
    from flowerkit.tui.app import DashboardApp

    flow_run_id = running_flow_run()
    killed_run(tmp_path, "killed", str(flow_run_id))
    app_ = DashboardApp(tmp_path, refresh_s=0.2)
    async with app_.run_test(size=(80, 24)) as pilot:
        for _ in range(100):
            if state_of(flow_run_id) == "CRASHED":
                break
            await pilot.pause(0.1)
    assert state_of(flow_run_id) == "CRASHED"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_watched_runs_leave_prefects_heartbeats_to_the_watcher_unless_the_user_set_them() -> None:
    """The engine waits up to a second for its heartbeat thread at every flow run's end; the watcher already
    reports a dead process. A frequency the user chose is theirs."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, Settings, get_current_settings,
                                  temporary_settings)

    from flowerkit.flows.orchestration import watcher

    # The settings a new process reads (environment, profile, defaults), not those of the session's
    # prefect_harness, which turns the heartbeats of the flows it runs off.
    with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
        default = get_current_settings().flows.heartbeat_frequency
        assert default is not None  # Prefect's default: on
        with watcher.watching():
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency == default
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}), watcher.watching():
            assert get_current_settings().flows.heartbeat_frequency == 45
    chosen = subprocess.run(  # the way a user sets it: the environment (or a profile) of a new process
        [sys.executable, "-c", "from prefect.settings import get_current_settings as s\n"
         "from flowerkit.flows.orchestration.watcher import watching\n"
         "with watching(): print(s().flows.heartbeat_frequency)"],
        env=os.environ | {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "45"}, capture_output=True, text=True, timeout=120)
    assert chosen.stdout.strip() == "45", chosen.stderr[-2000:]
