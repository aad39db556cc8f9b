"""The CLI's training progress display, fed the trainer's per-step reports."""

from __future__ import annotations

import io

from flowerkit.cli.progress import PlainProgress, progress_display
from flowerkit.engine.progress import Progress

EVAL = {"step": 20, "accuracy": 0.125, "loss": 4.25}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_come_every_interval_with_rate_eta_and_last_eval() -> None:
    out, now = io.StringIO(), [0.0]
    plain = PlainProgress(out, interval_s=10.0, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] += 1.0  # one step a second
        plain(Progress(step, 100, 64.0, EVAL if step >= 20 else None))
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # every 10 s, and the last step
    assert lines[0] == "progress: step 10/100 (10%), 64.0 img/s, ETA 1:30, no eval yet"
    assert lines[-1] == "progress: step 100/100 (100%), 64.0 img/s, ETA 0:00, eval at step 20: acc 0.125, loss 4.2500"


def test_a_terminal_gets_a_live_bar_and_quiet_gets_nothing() -> None:
    terminal = Terminal()
    with progress_display(quiet=False, stream=terminal) as show:
        for step in range(1, 4):
            show(Progress(step, 3, 32.0, EVAL))
    shown = terminal.getvalue()
    assert "3/3" in shown and "32 img/s" in shown and "ETA" in shown and "acc 0.125 @20" in shown
    assert "\x1b[" in shown  # drawn with terminal control codes, not plain lines

    quiet = Terminal()
    with progress_display(quiet=True, stream=quiet) as show:
        assert show is None  # nothing for the run to report to
    assert quiet.getvalue() == ""
