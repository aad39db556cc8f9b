"""What a person sees: a real `flowerkit train` in a real terminal (tmux), and `--quiet`.

tmux gives the command a pseudo-terminal, so the live progress bar runs exactly as in a user's shell, and
``capture-pane`` reads back the screen (with its scroll-back) as the user would see it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import SEED_FLAGS

pytestmark = pytest.mark.slow
STAMP = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")  # Prefect's console format: a log line starts with its time
BAR = "━"


def train_args(flowers_root: Path, name: str, *extra: str) -> list[str]:
    return ["train", "--name", name, "--dataset", "flower102", "--data_root", str(flowers_root), *SEED_FLAGS,
            "--output_dir", "output", *extra]


@pytest.fixture
def session_server_env(prefect_harness) -> dict[str, str]:
    """The CLI reports to the session's server: what is on the screen is the same, without a temporary
    server's start-up (tests/test_sweep_progress.py keeps a quiet run without one)."""
    return os.environ | {"PREFECT_API_URL": prefect_harness.url}


@pytest.fixture
def tmux(tmp_path: Path, session_server_env: dict[str, str]):
    """Run a command in a detached 100x40 tmux window of a server of its own; returns (run, screen)."""
    if shutil.which("tmux") is None:
        pytest.skip("terminal tests need tmux (apt-get install tmux, brew install tmux)")
    socket = f"flowerkit-test-{uuid.uuid4().hex[:8]}"
    base = ["tmux", "-L", socket]
    done = "__FLOWERKIT_DONE__"

    def run(args: list[str], timeout_s: float = 300) -> str:
        command = " ".join(f"'{a}'" for a in [sys.executable, "-m", "flowerkit", *args])
        # The shell stays after the command, so the screen can be read; history keeps every line.
        subprocess.run([*base, "-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "40", "-c", str(tmp_path),
                        f"{command}; echo {done} $?; sleep 600"], check=True, env=session_server_env | {"TERM": "xterm"})
        subprocess.run([*base, "set-option", "-g", "history-limit", "10000"], check=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = screen()
            if re.search(rf"^{done} \d+", text, re.M):
                return text
            time.sleep(1)
        pytest.fail(f"no end within {timeout_s} s:\n{screen()[-3000:]}")

    def screen() -> str:
        # -J joins lines the terminal wrapped, -S - starts at the beginning of the scroll-back.
        return subprocess.run([*base, "capture-pane", "-p", "-J", "-S", "-"], capture_output=True, text=True,
                              check=True).stdout

    try:
        yield run
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True)


def test_log_lines_go_above_the_live_bar_in_a_terminal(tmux, flowers_root: Path, tmp_path: Path) -> None:
    text = tmux(train_args(flowers_root, "live", "--num_steps", "40", "--eval_every", "10"))
    assert re.search(r"^__FLOWERKIT_DONE__ 0$", text, re.M), text[-3000:]
    lines = text.splitlines()
    logs = [line for line in lines if "| INFO" in line]
    assert len(logs) > 20, text[-3000:]  # steps, evaluations and Prefect's task states all showed
    # Each log line is whole, on a row of its own: none was printed onto the bar's row.
    assert all(STAMP.match(line) for line in logs), "\n".join(line for line in logs if not STAMP.match(line))
    assert not [line for line in lines if BAR in line and "|" in line]
    assert any(BAR in line and "40/40" in line for line in lines), text[-3000:]  # the bar, at its end
    assert "Task run 'load_subset[train]'" in text  # printed as text, never read as rich markup
    assert "run 'live' complete" in text


def test_quiet_prints_warnings_errors_and_the_summary_only(flowers_root: Path, tmp_path: Path,
                                                           session_server_env: dict[str, str]) -> None:
    # A --pretrained path that does not exist is a warning (random init): quiet must still show it.
    done = subprocess.run([sys.executable, "-m", "flowerkit", *train_args(flowers_root, "hushed", "--quiet",
                                                                           "--pretrained", "absent.npz")],
                          cwd=tmp_path, env=session_server_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shown = done.stdout + done.stderr
    assert "INFO" not in shown and "progress:" not in shown, shown[-3000:]
    assert "WARNING" in shown and "absent.npz" in shown, shown[-3000:]
    assert "flowerkit train: run 'hushed' complete" in shown
    run_log = (tmp_path / "output" / "hushed" / "run.log").read_text()
    assert "INFO flowerkit.engine.trainer: step 10/10" in run_log  # the run's own log keeps every line


def test_prefects_shutdown_notice_is_not_printed_but_its_other_warnings_are(
        caplog: pytest.LogCaptureFixture) -> None:
    """"Still processing items: N items remaining..." came after a quiet sweep's table whenever Prefect's event
    sender still had something queued at exit (common on a busy machine)."""
    import logging

    from flowerkit.cli.quiet import hide_shutdown_notices

    hide_shutdown_notices()
    with caplog.at_level(logging.WARNING):
        for name in ("EventsWorker", "APILogWorker"):
            logging.getLogger(name).warning("Still processing items: 1 items remaining...")
            logging.getLogger(name).warning("Failed to send %s", "events")
    assert [r.getMessage() for r in caplog.records] == ["Failed to send events"] * 2
