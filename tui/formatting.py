"""How numbers, times and states read in the dashboard (one place, so every screen agrees)."""

from __future__ import annotations

from rich.text import Text

STATUS_STYLES = {"running": "bold cyan", "retrying": "bold yellow", "complete": "green", "failed": "bold red",
                 "diverged": "bold red italic",
                 "crashed": "bold magenta", "starting": "cyan", "completed": "green", "pending": "dim",
                 "damaged": "bold red reverse", "unknown": "dim"}
NAME_MIN = 16  # cells a long run name keeps (start and end) before a column or a field gives way


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def short_time(iso_utc: str) -> str:
    """``2026-11-23T12:36:42Z`` -> ``11-23 12:36`` (UTC): a start time that fits an 80-column list."""
    if len(iso_utc) < 16:
        return iso_utc or "-"
    return f"{iso_utc[5:10]} {iso_utc[11:16]}"


def steps(step: int, total: int) -> str:
    return f"{step}/{total}" if total else str(step)
