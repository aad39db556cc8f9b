"""``RETENTION.txt``: how long a run's artifacts are kept, until when, and where they are."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from flowerkit.artifacts.files import atomic_write_text

MIN_RETENTION_DAYS = 90


def retention_text(name: str, run_id: str, created: datetime, days: int, run_dir: Path, tb_dir: Path) -> str:
    if days < MIN_RETENTION_DAYS:
        raise ValueError(f"retention must be at least {MIN_RETENTION_DAYS} days")
    expires = created + timedelta(days=days)
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return "\n".join([
        f"run: {name}",
        f"run_id: {run_id}",
        f"created_utc: {created.strftime(fmt)}",
        f"retention_days: {days}",
        f"expires_utc: {expires.strftime(fmt)}",
        "storage:",
        f"  tensorboard: {tb_dir}  (absolute: {tb_dir.resolve()})",
        "    the documented override of the default OUTPUT/<run>/tb,",
        "    so `tensorboard --logdir OUTPUT/tb` shows all runs",
        f"  fiftyone: {run_dir / 'fiftyone'}  (absolute: {(run_dir / 'fiftyone').resolve()})",
        f"  checkpoints: {run_dir / 'checkpoints'}",
        f"  run_directory: {run_dir}",
        "policy: keep every file listed above, unchanged, until expires_utc;",
        "  `flowerkit runs verify <run>` checks them against run_record.json, and",
        "  `flowerkit runs prune --older-than-retention` deletes only runs past their expiry.",
        "",
    ])


def write_retention(path: Path, name: str, run_id: str, days: int, run_dir: Path, tb_dir: Path,
                    created: datetime | None = None) -> Path:
    created = created or datetime.now(timezone.utc)
    atomic_write_text(path, retention_text(name, run_id, created, days, run_dir, tb_dir))
    return path


def read_expiry(path: Path) -> datetime | None:
    for line in Path(path).read_text().splitlines():
        if line.startswith("expires_utc:"):
            return datetime.strptime(line.split(":", 1)[1].strip(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return None
