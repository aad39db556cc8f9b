"""Finding, checking and pruning runs under an output directory (``flowerkit runs ...``)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flowerkit.artifacts.files import sha256_file
from flowerkit.artifacts.record import RECORD_NAME, read_record, run_files
from flowerkit.artifacts.retention import read_expiry
from flowerkit.errors import MissingInputError


@dataclass(frozen=True)
class RunSummary:
    name: str
    flow: str
    status: str
    device: str
    step: int
    total_steps: int
    accuracy: float | None
    started_utc: str
    run_dir: Path

    def age(self, now: datetime | None = None) -> str:
        try:
            started = datetime.fromisoformat(self.started_utc.replace("Z", "+00:00"))
        except ValueError:
            return "?"
        seconds = int(((now or datetime.now(timezone.utc)) - started).total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{max(seconds, 0)}s"


def summarize(record: dict[str, Any], run_dir: Path) -> RunSummary:
    progress = record.get("progress") or {}
    return RunSummary(
        name=record.get("name", run_dir.name), flow=record.get("flow", "?"),
        status=record.get("stage_status", "?"), device=record.get("device") or "-",
        step=int(progress.get("step", 0)), total_steps=int(progress.get("total_steps", 0)),
        accuracy=(record.get("metrics") or {}).get("accuracy"), started_utc=record.get("started_utc") or "",
        run_dir=run_dir)


def find_runs(output_dir: Path) -> list[RunSummary]:
    """Every run directory under ``output_dir`` with a readable record, oldest first."""
    runs = []
    for record_path in sorted(Path(output_dir).glob(f"*/{RECORD_NAME}")):
        try:
            runs.append(summarize(read_record(record_path.parent), record_path.parent))
        except (OSError, json.JSONDecodeError):
            continue  # a run being created or removed right now
    return sorted(runs, key=lambda r: (r.started_utc, r.name))


def run_dir_of(output_dir: Path, name: str) -> Path:
    run_dir = Path(output_dir) / name
    if not (run_dir / RECORD_NAME).is_file():
        known = ", ".join(r.name for r in find_runs(output_dir)) or "none"
        raise MissingInputError(f"No run named '{name}' under {output_dir} (no {run_dir / RECORD_NAME}). "
                                f"Runs there: {known}. Pass --output-dir if the runs live elsewhere.")
    return run_dir


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unlisted)


def verify_run(output_dir: Path, name: str) -> VerifyReport:
    """Recompute every sha256 of the artifact index; report files missing, changed or not in the index."""
    run_dir = run_dir_of(output_dir, name)
    record = read_record(run_dir)
    report = VerifyReport()
    listed = set()
    for entry in record.get("artifact_index", []):
        path = Path(output_dir) / entry["relative_path"]
        listed.add(path.resolve())
        report.checked += 1
        if not path.is_file():
            report.missing.append(entry["relative_path"])
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            report.changed.append(entry["relative_path"])
    tb_dir = Path(output_dir) / "tb" / name
    for path in run_files(run_dir, tb_dir):
        if path.resolve() not in listed:
            report.unlisted.append(path.resolve().relative_to(Path(output_dir).resolve()).as_posix())
    return report


@dataclass(frozen=True)
class PruneCandidate:
    name: str
    expires_utc: datetime
    paths: tuple[Path, ...]


def expired_runs(output_dir: Path, now: datetime | None = None) -> list[PruneCandidate]:
    """Runs whose RETENTION.txt expiry has passed; a run without one is never pruned."""
    now = now or datetime.now(timezone.utc)
    candidates = []
    for run in find_runs(output_dir):
        retention = run.run_dir / "RETENTION.txt"
        expires = read_expiry(retention) if retention.is_file() else None
        if expires is not None and expires <= now:
            tb_dir = Path(output_dir) / "tb" / run.name
            paths = (run.run_dir, tb_dir) if tb_dir.exists() else (run.run_dir,)
            candidates.append(PruneCandidate(run.name, expires, paths))
    return candidates


def delete_run(candidate: PruneCandidate) -> None:
    for path in candidate.paths:
        shutil.rmtree(path)
