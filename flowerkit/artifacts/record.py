"""``run_record.json``: the run's status, progress, task states and hashed artifact index.

The file is the source of truth (the dashboard and ``flowerkit runs`` read it from other processes), so
every change is a locked read-modify-write followed by an atomic replace.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flowerkit.artifacts.files import atomic_write_json, read_json, sha256_file, utc_now
from flowerkit.run.layout import RECORD_NAME, RunLayout

SCHEMA_VERSION = 1
_lock = threading.RLock()


def new_run_id(name: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{name}-{stamp}-{secrets.token_hex(3)}"


def owner() -> dict[str, Any]:
    """Which process runs the flow: lets readers tell a run in progress from one whose process died."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def new_record(name: str, flow: str, config_hash: str, flow_run_id: str | None, total_steps: int) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(name),
        "name": name,
        "flow": flow,
        "flow_run_id": flow_run_id,
        "owner": owner(),
        "stage_status": "started",
        "stage": None,
        "started_utc": utc_now(),
        "ended_utc": None,
        "config_hash": config_hash,
        "device": None,
        "progress": {"step": 0, "total_steps": total_steps},
        "tasks": {},
        "metrics": {},
        "determinism": {},
        "error": None,
        "artifact_index": [],
    }


def read_record(run_dir: Path) -> dict[str, Any]:
    return read_json(Path(run_dir) / RECORD_NAME)


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    with _lock:
        atomic_write_json(Path(run_dir) / RECORD_NAME, record)


def update_record(run_dir: Path, mutate: Callable[[dict[str, Any]], None] | None = None,
                  **fields: Any) -> dict[str, Any]:
    """Apply ``fields`` (and ``mutate``) to the record on disk; returns the new record."""
    with _lock:
        record = read_record(run_dir)
        record.update(fields)
        if mutate:
            mutate(record)
        write_record(run_dir, record)
        return record


def set_task_state(run_dir: Path, task: str, state: str, attempt: int) -> None:
    def mutate(record: dict[str, Any]) -> None:
        record["tasks"][task] = {"state": state, "attempt": attempt, "updated_utc": utc_now()}
        if state == "running":
            record["stage"] = task
            record["stage_status"] = "running"

    update_record(run_dir, mutate)


def add_phases(run_dir: Path, **seconds: float) -> None:
    """Add to the record's ``phases``, the seconds its loops took (a second evaluation adds to the first):
    with Prefect's task runs and the process's wall time, they split a run into its loops and its fixed cost."""
    def mutate(record: dict[str, Any]) -> None:
        phases = record.setdefault("phases", {})
        for name, value in seconds.items():
            phases[name] = round(phases.get(name, 0.0) + value, 3)

    update_record(run_dir, mutate)


def set_progress(run_dir: Path, step: int, total_steps: int, **detail: Any) -> None:
    """``detail``: what rank 0 of a distributed run adds (``images_per_second``, ``last_eval``) for the
    launching process, which shows the progress of training that runs in other processes."""
    update_record(run_dir, progress={"step": step, "total_steps": total_steps, **detail})


def artifact_entry(path: Path, layout: RunLayout) -> dict[str, Any]:
    stat = path.stat()
    return {
        "relative_path": layout.relative(path),
        "sha256": sha256_file(path),
        "bytes": stat.st_size,
        "created_utc": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        "mtime_ns": stat.st_mtime_ns,  # lets a refresh skip re-hashing unchanged files
    }


def index_artifacts(layout: RunLayout, paths: Iterable[Path]) -> None:
    """Add (or refresh) the index entries of ``paths``."""
    entries = [artifact_entry(Path(p), layout) for p in paths]

    def mutate(record: dict[str, Any]) -> None:
        by_path = {e["relative_path"]: e for e in record["artifact_index"]}
        by_path.update({e["relative_path"]: e for e in entries})
        record["artifact_index"] = sorted(by_path.values(), key=lambda e: e["relative_path"])

    update_record(layout.run_dir, mutate)


def refresh_artifact_index(run_dir: Path) -> None:
    """Index every file of the run that is new or changed since it was last indexed (never temporary files)."""
    record = read_record(run_dir)
    layout = RunLayout.for_run(run_dir, record)
    known = {e["relative_path"]: e for e in record["artifact_index"]}
    changed = []
    for path in layout.files():
        entry = known.get(layout.relative(path))
        stat = path.stat()
        if entry is None or entry["bytes"] != stat.st_size or entry.get("mtime_ns") != stat.st_mtime_ns:
            changed.append(path)
    if changed:
        index_artifacts(layout, changed)
