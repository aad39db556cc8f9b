"""The run index: each run's immutable record fields, kept outside its run folder so that editing them shows.

``runs verify`` hashes a run's files against the record's artifact index, but the record itself is not in
that index (it changes as the run goes on), and ``runs prune`` decides from its ``started_utc`` and
``retention_days``. So when a run is claimed, the fields that never change afterwards (``IMMUTABLE``) are
written, with their sha256, to ``OUTPUT_DIR/.flowerkit/run-index/NAME.json``; ``verify`` and ``prune``
compare the record with that entry. An edited ``started_utc`` (a run made prunable early) is caught unless the
index entry is edited too: this is tamper evidence against changes of a run folder, not a signature.

A run written before the index existed has no entry: ``check`` says ``unindexed``; such a run verifies (its
files are still hashed) but ``prune`` deletes it only with ``--force``, since nothing vouches for its dates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flowerkit.artifacts.files import atomic_write_json

INDEX_DIR = Path(".flowerkit") / "run-index"  # a dot folder: never taken for a run by `runs list`
IMMUTABLE = ("run_id", "name", "flow", "started_utc", "config_hash", "retention_days")


def immutable_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {key: record.get(key) for key in IMMUTABLE}


def digest(fields: dict[str, Any]) -> str:
    """sha256 of the fields as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def entry_path(output_dir: Path, name: str) -> Path:
    return Path(output_dir) / INDEX_DIR / f"{name}.json"


def write_entry(output_dir: Path, record: dict[str, Any]) -> None:
    """Index a run as it is claimed (a new run: a resume changes none of these fields)."""
    fields = immutable_fields(record)
    atomic_write_json(entry_path(output_dir, str(record["name"])), {"fields": fields, "digest": digest(fields)})


def remove_entry(output_dir: Path, name: str) -> None:
    entry_path(output_dir, name).unlink(missing_ok=True)


@dataclass(frozen=True)
class RecordCheck:
    """ok: the record's immutable fields are the indexed ones; unindexed: no entry (a run from before the
    index); altered: they differ (``detail`` names the fields), or the entry does not match its own digest."""

    state: Literal["ok", "unindexed", "altered"]
    detail: str = ""


def check(output_dir: Path, name: str, record: dict[str, Any]) -> RecordCheck:
    path = entry_path(output_dir, name)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RecordCheck("unindexed", f"no entry in {path.parent}")
    except (OSError, ValueError) as exc:
        return RecordCheck("altered", f"its index entry {path} cannot be read ({exc})")
    indexed = entry.get("fields") if isinstance(entry, dict) else None
    if not isinstance(indexed, dict) or entry.get("digest") != digest(indexed):
        return RecordCheck("altered", f"its index entry {path} does not match its own digest")
    now = immutable_fields(record)
    differing = [key for key in IMMUTABLE if now.get(key) != indexed.get(key)]
    if differing:
        shown = ", ".join(f"{key} {now.get(key)!r} (indexed: {indexed.get(key)!r})" for key in differing)
        return RecordCheck("altered", f"its run_record.json differs from the run index in {shown}")
    return RecordCheck("ok")
