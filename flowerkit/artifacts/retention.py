"""``RETENTION.txt``: how long a run's artifacts are kept, until when, and where they are."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from flowerkit.artifacts.files import atomic_write_text
from flowerkit.run.layout import RunLayout

MIN_RETENTION_DAYS = 90
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def retention_text(name: str, run_id: str, created: datetime, days: int, layout: RunLayout) -> str:
    if days < MIN_RETENTION_DAYS:
        raise ValueError(f"retention must be at least {MIN_RETENTION_DAYS} days")
    expires = created + timedelta(days=days)
    fmt = TIME_FORMAT
    return "\n".join([
        f"run: {name}",
        f"run_id: {run_id}",
        f"created_utc: {created.strftime(fmt)}",
        f"retention_days: {days}",
        f"expires_utc: {expires.strftime(fmt)}",
        "storage:",
        f"  tensorboard: {layout.tb_dir}  (absolute: {layout.tb_dir.resolve()})",
        "    the documented override of the default OUTPUT/<run>/tb,",
        "    so `tensorboard --logdir OUTPUT/tb` shows all runs",
        f"  fiftyone: {layout.fiftyone_dir}  (absolute: {layout.fiftyone_dir.resolve()})",
        f"  checkpoints: {layout.checkpoints_dir}",
        f"  run_directory: {layout.run_dir}",
        "policy: keep every file listed above, unchanged, until expires_utc;",
        "  `flowerkit runs verify <run>` checks them against run_record.json, and",
        "  `flowerkit runs prune --older-than-retention` deletes only runs past their expiry.",
        "",
    ])


def write_retention(layout: RunLayout, run_id: str, days: int, created: datetime) -> Path:
    """``created`` is the run record's start time: expiry is decided from the record, not from this file."""
    return atomic_write_text(layout.retention, retention_text(layout.name, run_id, created, days, layout))


def parse_utc(text: str) -> datetime:
    """A ``...Z`` timestamp as the record and this file write it; ValueError for anything else."""
    return datetime.strptime(text.strip(), TIME_FORMAT).replace(tzinfo=timezone.utc)


def expiry_of(record: dict) -> datetime:
    """When a run expires, from its hashed run record: created time + retention days (RETENTION.txt only
    states it; an edited copy changes nothing). ValueError when the record lacks either."""
    days = record.get("retention_days")
    if not isinstance(days, int) or isinstance(days, bool) or days < MIN_RETENTION_DAYS:
        raise ValueError(f"retention_days {days!r} is missing or below {MIN_RETENTION_DAYS}")
    return parse_utc(str(record.get("started_utc"))) + timedelta(days=days)


def read_expiry(path: Path) -> datetime | None:
    """The expiry RETENTION.txt states (for display; pruning trusts ``expiry_of(record)``)."""
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("expires_utc:"):
            try:
                return parse_utc(line.split(":", 1)[1])
            except ValueError:
                return None
    return None
