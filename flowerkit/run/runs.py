"""Finding, checking and pruning runs under an output directory (``flowerkit runs ...``)."""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from flowerkit.artifacts import run_index
from flowerkit.artifacts.files import sha256_file
from flowerkit.artifacts.record import read_record
from flowerkit.artifacts.retention import expiry_of
from flowerkit.run.layout import RECORD_NAME, STAMP_NAME, SWEEPS_ROOT, TB_ROOT, RunLayout, SweepLayout
from flowerkit.errors import ConfigError, MissingInputError

# The TensorBoard root and the sweeps' folder; dot-folders (the dashboard's launch logs) are skipped too.
SKIPPED_DIRS = {TB_ROOT, SWEEPS_ROOT}


@dataclass(frozen=True)
class RunSummary:
    """One run as its files describe it: a row of ``flowerkit runs list`` and of the dashboard."""

    name: str
    path: Path
    flow: str = "?"
    status: str = "unknown"
    device: str = "-"
    step: int = 0
    total_steps: int = 0
    loss: float | None = None  # the latest train loss: only readers that tail metrics.jsonl (the dashboard) set it
    accuracy: float | None = None
    started_utc: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    # The checkpoint a train run reports (the record's ``selection``): selected_step, selected_weights, monitor,
    # monitor_value, stopped_early, ...; empty until the run has selected one (and for eval runs).
    selection: dict[str, Any] = field(default_factory=dict)
    # The record's ``distributed``: world_size, backend, per_rank_batch, nnodes; empty for single-process runs
    # recorded before multi-process training existed.
    distributed: dict[str, Any] = field(default_factory=dict)

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


def read_json_or_none(path: Path) -> Any:
    """The parsed file, or None when it is absent, unreadable or half-written (another process writes runs)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


DIVERGED_ERROR = "NonFiniteLossError"  # the record's error type of a run that diverged


def run_status(record: dict[str, Any]) -> str:
    """running / retrying / complete / failed / diverged / crashed, from the record's stage status and task states.

    ``crashed``: the record says running, but the process that owns it (on this host) is gone, e.g. killed;
    ``flowerkit train --resume`` continues such a run, and ``flowerkit runs prune --crashed`` deletes a crashed
    predict run (which cannot be continued).
    """
    stage = record.get("stage_status")
    error = record.get("error")
    if stage == "failed" and isinstance(error, dict) and error.get("type") == DIVERGED_ERROR:
        return "diverged"  # failed, but not for the sweep or the user to retry as is: the recipe must change
    if stage in ("complete", "failed"):
        return str(stage)
    if _owner_is_gone(record.get("owner") or {}):
        return "crashed"
    tasks = record.get("tasks") or {}
    if any(isinstance(t, dict) and t.get("state") == "retrying" for t in tasks.values()):
        return "retrying"
    return "running"


def _owner_is_gone(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False  # another machine's run (a Prefect worker): its process cannot be checked from here
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def find_run_dirs(output_dir: Path) -> list[Path]:
    """Folders of ``output_dir`` holding a run record or an env stamp, by name."""
    try:
        entries = list(Path(output_dir).iterdir())
    except OSError:
        return []
    found = [p for p in entries if p.name not in SKIPPED_DIRS and not p.name.startswith(".")
             and ((p / RECORD_NAME).is_file() or (p / STAMP_NAME).is_file())]
    return sorted(found, key=lambda p: p.name)


TAIL_BYTES = 64 * 1024  # the end of metrics.jsonl read for its last train row (a row is a few hundred bytes)
_READ_FILE = object()


def last_train_row(path: Path) -> dict[str, Any] | None:
    """The last complete ``train`` row of a ``metrics.jsonl`` (read from its end only); None when there is none.

    A torn last line (the writer is mid-append) is skipped, as is anything that is not a JSON object.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - TAIL_BYTES))
            lines = fh.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") == "train" and isinstance(row.get("step"), int):
            return row
    return None


def run_progress(record: dict[str, Any], last_row: dict[str, Any] | None) -> tuple[int, int]:
    """(step, total_steps) of a run: the record's progress or metrics.jsonl's last train row, whichever is later.

    The one source of a run's progress for every front end (``runs list``, ``runs show``, the dashboard). The
    record is updated at most every few seconds and at evaluations, the metrics rows at every logged step, so a
    killed run's record can lag its last logged step; neither alone is the latest.
    """
    progress = record.get("progress") if isinstance(record.get("progress"), dict) else {}
    step, total = _int(progress.get("step")), _int(progress.get("total_steps"))
    if last_row:
        step = max(step, _int(last_row.get("step")))
        total = total or _int(last_row.get("total_steps"))
    return step, total


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def summarize(run_dir: Path, last_row: Any = _READ_FILE) -> RunSummary:
    """A run from its files: record first, env stamp for what the record lacks; a vanished run reads as unknown.

    ``last_row``: the run's last train row when the caller already reads ``metrics.jsonl`` (the dashboard's
    incremental tail); by default the end of the file is read here.
    """
    record = read_json_or_none(run_dir / RECORD_NAME)
    stamp = read_json_or_none(run_dir / STAMP_NAME) or {}
    if (run_dir / RECORD_NAME).is_file() and (
            not isinstance(record, dict) or run_index.check(run_dir.parent, run_dir.name, record).state == "altered"):
        return RunSummary(name=run_dir.name, path=run_dir, status="damaged",
                          started_utc=str(stamp.get("timestamp") or "") if isinstance(stamp, dict) else "")
    record = record or {}
    stamp = stamp if isinstance(stamp, dict) else {}
    if last_row is _READ_FILE:
        last_row = last_train_row(RunLayout.for_run(run_dir, record).metrics_jsonl)
    step, total_steps = run_progress(record, last_row)
    metrics = record.get("metrics") or {}
    distributed = record.get("distributed")
    return RunSummary(
        name=run_dir.name, path=run_dir, flow=str(record.get("flow") or "?"),
        status=run_status(record) if record else ("complete" if stamp else "unknown"),
        device=str(record.get("device") or stamp.get("device") or "-"),
        step=step, total_steps=total_steps,
        accuracy=as_float(metrics.get("accuracy")), metrics=metrics,
        started_utc=str(record.get("started_utc") or stamp.get("timestamp") or ""),
        selection=selection_of(record), distributed=distributed if isinstance(distributed, dict) else {})


SELECTION_KEYS = ("selected_step", "selected_checkpoint", "selected_weights", "monitor", "monitor_value",
                  "last_step", "stopped_early", "stop_reason")


def selection_of(record: dict[str, Any]) -> dict[str, Any]:
    """The record's ``selection``; else the same keys from its final metrics (metrics.json carries them too)."""
    selection = record.get("selection")
    if isinstance(selection, dict) and selection:
        return selection
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or "selected_step" not in metrics:
        return {}
    return {key: metrics[key] for key in SELECTION_KEYS if key in metrics}


def describe_selection(selection: dict[str, Any]) -> tuple[str, str] | None:
    """(``"400 (ema)"``, ``"val_accuracy 0.9812"``): the selected step and weights, the monitored value.

    Every front end (``runs list``, the dashboard) words a selection alike; None when nothing was selected.
    """
    if selection.get("selected_step") is None:
        return None
    step = f"{selection['selected_step']} ({selection.get('selected_weights') or 'raw'})"
    value = as_float(selection.get("monitor_value"))
    monitored = f"{selection.get('monitor') or 'monitor'} {'-' if value is None else f'{value:.4f}'}"
    return step, monitored


def describe_processes(distributed: dict[str, Any]) -> str | None:
    """``"2 x gloo, 8 per rank"`` (``", 2 nodes"`` across machines) for a multi-process run; None for one process
    (older records have no ``distributed``: they ran as one process)."""
    try:
        world = int(distributed.get("world_size") or 1)
    except (TypeError, ValueError):
        return None
    if world <= 1:
        return None
    text = f"{world} x {distributed.get('backend') or '?'}"
    if distributed.get("per_rank_batch") is not None:
        text += f", {distributed['per_rank_batch']} per rank"
    nodes = distributed.get("nnodes")
    if isinstance(nodes, int) and nodes > 1:
        text += f", {nodes} nodes"
    return text


def find_runs(output_dir: Path) -> list[RunSummary]:
    """Every run under ``output_dir``, oldest first."""
    runs = [summarize(run_dir) for run_dir in find_run_dirs(output_dir)]
    return sorted(runs, key=lambda r: (r.started_utc, r.name))


# Options that say where a run's files go or how it is tracked, not how it learns: never a recipe difference.
NOT_RECIPE_GROUPS = {"run", "output", "tracking"}


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config_resolved.yaml (every option as it ran); {} when absent or unreadable (a run starting)."""
    try:
        config = yaml.safe_load(RunLayout.for_run(Path(run_dir)).config.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: bytes that are not UTF-8 (a damaged file)
        return {}
    return config if isinstance(config, dict) else {}


def differing_options(configs: list[dict[str, Any]]) -> list[str]:
    """The options whose values differ between runs (an option one run lacks differs), in declaration order.

    Paths, names and tracking settings are left out (every run has its own), so what remains is the recipe:
    optimizer, learning rate, augmentation, EMA, seed, model, ... .
    """
    from flowerkit.run.config import CONFIG_CLASSES

    groups = {name: (info.json_schema_extra or {}).get("group") for cls in CONFIG_CLASSES.values()
              for name, info in cls.model_fields.items()}
    names = list(dict.fromkeys(key for config in configs for key in config))
    missing = object()
    return [name for name in names if groups.get(name) not in NOT_RECIPE_GROUPS
            and len({repr(config.get(name, missing)) for config in configs}) > 1]


def sweep_trials(output_dir: Path) -> dict[str, list[str]]:
    """Each sweep under ``output_dir`` (by name) with its trials' run names in trial order, from the sweep's
    trials.json (what ``flowerkit sweep`` expanded); a sweep folder without a readable one is skipped."""
    try:
        folders = sorted(p for p in (Path(output_dir) / SWEEPS_ROOT).iterdir() if p.is_dir())
    except OSError:
        return {}
    sweeps = {}
    for folder in folders:
        stored = read_json_or_none(SweepLayout(Path(output_dir), folder.name).trials)
        trials = stored.get("trials") if isinstance(stored, dict) else None
        if isinstance(trials, list):
            sweeps[folder.name] = [str(t["name"]) for t in trials if isinstance(t, dict) and "name" in t]
    return sweeps


def as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def run_dir_of(output_dir: Path, name: str) -> Path:
    run_dir = Path(output_dir) / name
    if not (run_dir / RECORD_NAME).is_file():
        known = ", ".join(r.name for r in find_runs(output_dir)) or "none"
        raise MissingInputError(f"No run named '{name}' under {output_dir} (no {run_dir / RECORD_NAME}). "
                                f"Runs there: {known}. Pass --output-dir if the runs live elsewhere.")
    if read_json_or_none(run_dir / RECORD_NAME) is None:
        raise ConfigError(f"{run_dir / RECORD_NAME} is not valid JSON. Records are written atomically, so the file "
                          "was damaged after the run; restore it from a backup before verifying this run.")
    return run_dir


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    record: run_index.RecordCheck = run_index.RecordCheck("ok")  # the record's own fields, against the index

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed or self.unlisted) and self.record.state != "altered"

    def describe(self) -> str:
        files = (f"{len(self.missing)} missing, {len(self.changed)} changed, {len(self.unlisted)} unlisted of "
                 f"{self.checked} indexed files")
        return files + (f"; {self.record.detail}" if self.record.state == "altered" else "")


def verify_run(output_dir: Path, name: str) -> VerifyReport:
    """Recompute every sha256 of the artifact index; report files missing, changed or not in the index."""
    run_dir = run_dir_of(output_dir, name)
    record = read_record(run_dir)
    report = VerifyReport(record=run_index.check(output_dir, name, record))
    listed = set()
    for entry in record.get("artifact_index", []):
        path = Path(output_dir) / entry["relative_path"]
        listed.add(path.resolve())
        report.checked += 1
        if not path.is_file():
            report.missing.append(entry["relative_path"])
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            report.changed.append(entry["relative_path"])
    layout = RunLayout.for_run(run_dir, record)
    for path in layout.files():
        if path.resolve() not in listed:
            report.unlisted.append(layout.relative(path))
    return report


@dataclass(frozen=True)
class PruneCandidate:
    """A run past its retention expiry; ``problem`` says why it is not safe to delete (None: it is)."""

    name: str
    expires_utc: datetime | None  # None: unknown or untrusted, so never deleted, not even with --force
    paths: tuple[Path, ...]
    problem: str | None = None
    output_dir: Path | None = None  # where its run-index entry lives


def retention_expiry(layout: RunLayout, record: dict[str, Any]) -> datetime:
    """created time + retention days from the run record (runs recorded before the record held retention_days
    take it from config_resolved.yaml, which the artifact index hashes). ValueError when neither says."""
    if "retention_days" not in record and layout.config.is_file():
        config = yaml.safe_load(layout.config.read_text(encoding="utf-8")) or {}
        record = {**record, "retention_days": config.get("retention_days")}
    return expiry_of(record)


def expired_runs(output_dir: Path, now: datetime | None = None) -> list[PruneCandidate]:
    """Runs whose record-derived expiry has passed, each verified; RETENTION.txt is never trusted for this.

    A run whose record is damaged or states no usable expiry is reported (never deleted); one whose files fail
    verification is reported with what failed and is deleted only by an explicit ``--force``.
    """
    now = now or datetime.now(timezone.utc)
    candidates = []
    for run_dir in find_run_dirs(output_dir):
        record = read_json_or_none(run_dir / RECORD_NAME)
        layout = RunLayout.for_run(run_dir, record if isinstance(record, dict) else None)
        paths = tuple(p for p in layout.roots() if p.exists())
        if not isinstance(record, dict):
            candidates.append(PruneCandidate(run_dir.name, None, paths, "its run_record.json is missing or damaged, "
                                             "so its expiry is unknown; it is kept"))
            continue
        indexed = run_index.check(output_dir, run_dir.name, record)
        if indexed.state == "altered":  # its dates may be the edit that made it look expired
            candidates.append(PruneCandidate(run_dir.name, None, paths, f"damaged: {indexed.detail}, so its expiry "
                                             "cannot be trusted; it is kept (restore the record, or delete the "
                                             "run by hand)", output_dir))
            continue
        try:
            expires = retention_expiry(layout, record)
        except (ValueError, OSError, yaml.YAMLError) as exc:
            candidates.append(PruneCandidate(run_dir.name, None, paths, f"its record states no usable expiry "
                                             f"({exc}); it is kept", output_dir))
            continue
        if expires > now:
            continue
        candidates.append(PruneCandidate(run_dir.name, expires, paths, _prune_problem(output_dir, run_dir.name,
                                                                                     indexed), output_dir))
    return candidates


def _prune_problem(output_dir: Path, name: str, indexed: run_index.RecordCheck) -> str | None:
    """Why an expired run is not safe to delete without --force (None: it is)."""
    report = verify_run(output_dir, name)
    if not report.ok:
        return f"its files do not match its record ({report.describe()}); deleting it needs --force"
    if indexed.state == "unindexed":
        return ("its record is not in the run index (a run from before flowerkit kept one, or its entry was "
                "removed), so nothing vouches for its start date; deleting it needs --force")
    return None


def delete_run(candidate: PruneCandidate) -> None:
    for path in candidate.paths:
        shutil.rmtree(path)
    if candidate.output_dir is not None:
        run_index.remove_entry(candidate.output_dir, candidate.name)


RESUMABLE_FLOWS = ("train", "eval")  # a predict run is short and has no checkpoint: it is never continued


@dataclass(frozen=True)
class CrashedRun:
    """A run whose process (on this host) died before it finished: ``flowerkit runs prune --crashed`` deletes it
    (``rundir.delete_crashed``) when it cannot be continued (a predict run), or with ``--force``."""

    name: str
    flow: str
    paths: tuple[Path, ...]
    output_dir: Path

    @property
    def resumable(self) -> bool:
        return self.flow in RESUMABLE_FLOWS


def crashed_runs(output_dir: Path) -> list[CrashedRun]:
    """Every run under ``output_dir`` whose status is ``crashed`` (``run_status``), by name."""
    found = []
    for run_dir in find_run_dirs(output_dir):
        record = read_json_or_none(run_dir / RECORD_NAME)
        if not isinstance(record, dict) or run_status(record) != "crashed":
            continue
        if run_index.check(output_dir, run_dir.name, record).state == "altered":
            continue  # an edited record may only look crashed: `runs list` shows it damaged, and it is kept
        layout = RunLayout.for_run(run_dir, record)
        found.append(CrashedRun(run_dir.name, str(record.get("flow") or "?"),
                                tuple(p for p in layout.roots() if p.exists()), Path(output_dir)))
    return found
