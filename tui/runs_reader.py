"""Plain-Python reader of run directories (no Textual): what the dashboard shows, read defensively.

Runs are written by other processes while we read them, so every reader here tolerates a missing file, a
run directory that vanishes, and a torn last line of ``metrics.jsonl`` (formats: docs/artifacts.md).
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECORD = "run_record.json"
STAMP = "env_stamp.json"
METRICS = "metrics.jsonl"
SKIPPED_DIRS = {"tb"}  # the TensorBoard root; dot-folders (the dashboard's launch logs) are skipped too

# The tasks each flow runs, in order: the ones a run has not reached yet are shown as pending.
FLOW_TASKS = {
    "train": ["detect_device", "load_subset", "train", "evaluate", "export_predictions", "write_stamp",
              "write_retention"],
    "eval": ["detect_device", "load_subset", "evaluate", "export_predictions", "write_stamp", "write_retention"],
}


def read_json_or_none(path: Path) -> Any:
    """The parsed file, or None when it is absent, unreadable or half-written."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class MetricsTail:
    """Incremental reader of one ``metrics.jsonl``: each ``poll()`` reads only the bytes appended since.

    An incomplete last line (the writer is mid-append) stays buffered until its newline arrives; a file that
    shrinks or is replaced is read again from the start. Rows are kept last-wins per (kind, step), because a
    resumed run logs again the steps after its last checkpoint.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}

    def poll(self) -> bool:
        """Read what was appended; True when rows changed."""
        try:
            with open(self.path, "rb") as fh:
                stat = os.fstat(fh.fileno())
                if stat.st_ino != self._inode or stat.st_size < self._offset:
                    self._reset(stat.st_ino)
                if stat.st_size == self._offset:
                    return False
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return False
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        return any([self._add(line) for line in lines])

    def _reset(self, inode: int) -> None:
        self._inode, self._offset, self._partial, self._rows = inode, 0, b"", {}

    def _add(self, line: bytes) -> bool:
        try:
            row = json.loads(line)
            key = (str(row["kind"]), int(row["step"]))
        except (ValueError, KeyError, TypeError):
            return False  # a blank or corrupt line is skipped, never fatal
        self._rows[key] = row
        return True

    def rows(self, kind: str) -> list[dict[str, Any]]:
        """Rows of one kind (``train`` or ``eval``), by step."""
        return [row for (k, _), row in sorted(self._rows.items(), key=lambda item: item[0][1]) if k == kind]


@dataclass
class RunSummary:
    """One row of the runs list."""

    name: str
    path: Path
    flow: str = "?"
    status: str = "unknown"
    device: str = "-"
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    accuracy: float | None = None
    started_utc: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def run_status(record: dict[str, Any]) -> str:
    """running / retrying / complete / failed, from the record's stage status and task states."""
    stage = record.get("stage_status")
    if stage in ("complete", "failed"):
        return str(stage)
    tasks = record.get("tasks") or {}
    if any(isinstance(t, dict) and t.get("state") == "retrying" for t in tasks.values()):
        return "retrying"
    return "running"


def find_run_dirs(output_dir: Path) -> list[Path]:
    """Folders of OUTPUT_DIR holding a run record or an env stamp, by name."""
    try:
        entries = list(Path(output_dir).iterdir())
    except OSError:
        return []
    found = [p for p in entries if p.name not in SKIPPED_DIRS and not p.name.startswith(".")
             and ((p / RECORD).is_file() or (p / STAMP).is_file())]
    return sorted(found, key=lambda p: p.name)


def summarize(run_dir: Path, tail: MetricsTail) -> RunSummary:
    """The list row of one run: record first, env stamp for what the record lacks, metrics rows for progress."""
    record = read_json_or_none(run_dir / RECORD) or {}
    stamp = read_json_or_none(run_dir / STAMP) or {}
    summary = RunSummary(name=run_dir.name, path=run_dir)
    summary.flow = str(record.get("flow") or "?")
    summary.status = run_status(record) if record else ("complete" if stamp else "unknown")
    summary.device = str(record.get("device") or stamp.get("device") or "-")
    summary.started_utc = str(record.get("started_utc") or stamp.get("timestamp") or "")
    summary.metrics = record.get("metrics") or {}
    progress = record.get("progress") or {}
    summary.step, summary.total_steps = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    tail.poll()
    train_rows, eval_rows = tail.rows("train"), tail.rows("eval")
    if train_rows:
        last = train_rows[-1]
        summary.step = max(summary.step, int(last["step"]))
        summary.total_steps = summary.total_steps or int(last.get("total_steps") or 0)
        summary.loss = _float(last.get("loss"))
    accuracy = summary.metrics.get("accuracy")
    summary.accuracy = _float(accuracy) if accuracy is not None else (
        _float(eval_rows[-1].get("accuracy")) if eval_rows else None)
    return summary


class RunsIndex:
    """Every run under OUTPUT_DIR, re-read on each ``scan()`` (a metrics tail is kept per run)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self._tails: dict[Path, MetricsTail] = {}

    def scan(self) -> list[RunSummary]:
        dirs = find_run_dirs(self.output_dir)
        self._tails = {d: self._tails.get(d) or MetricsTail(d / METRICS) for d in dirs}  # forget vanished runs
        return [summarize(d, self._tails[d]) for d in dirs]


@dataclass
class RunDetail:
    """Everything the run view shows about one run."""

    summary: RunSummary
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    tasks: list[tuple[str, str, int]]  # (task, state, attempt)
    log_tail: list[str]
    per_class: list[dict[str, Any]]
    worst: list[dict[str, Any]]
    error: dict[str, Any] | None = None


def task_states(record: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(task, state, attempt) from the record, the flow's tasks not reached yet as pending."""
    known = record.get("tasks") or {}
    names = list(FLOW_TASKS.get(str(record.get("flow")), []))
    names += [n for n in known if n not in names]
    states = []
    for name in names:
        entry = known.get(name) if isinstance(known.get(name), dict) else {}
        states.append((name, str(entry.get("state", "pending")), int(entry.get("attempt", 0) or 0)))
    return states


def log_tail(path: Path, lines: int = 200) -> list[str]:
    try:
        with open(path, errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


def per_class_rows(run_dir: Path) -> list[dict[str, Any]]:
    data = read_json_or_none(run_dir / "fiftyone" / "per_class_metrics.json") or {}
    classes = data.get("classes") if isinstance(data, dict) else None
    return [c for c in classes or [] if isinstance(c, dict)]


def worst_predictions(run_dir: Path, limit: int = 50) -> list[dict[str, Any]]:
    """Wrong predictions, the most confident first: where the model is sure and wrong."""
    wrong = []
    try:
        with open(run_dir / "fiftyone" / "predictions.jsonl") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get("label") != row.get("prediction"):
                    wrong.append(row)
    except OSError:
        return []
    wrong.sort(key=lambda r: (-float(r.get("confidence") or 0.0), str(r.get("sample_id"))))
    return wrong[:limit]


def read_detail(run_dir: Path, tail: MetricsTail) -> RunDetail:
    """The run view's data; files that do not exist yet give empty sections."""
    record = read_json_or_none(run_dir / RECORD) or {}
    summary = summarize(run_dir, tail)
    return RunDetail(summary=summary, train_rows=tail.rows("train"), eval_rows=tail.rows("eval"),
                     tasks=task_states(record), log_tail=log_tail(run_dir / "run.log"),
                     per_class=per_class_rows(run_dir), worst=worst_predictions(run_dir),
                     error=record.get("error") if isinstance(record.get("error"), dict) else None)


def flow_run_id(run_dir: Path) -> str | None:
    record = read_json_or_none(Path(run_dir) / RECORD) or {}
    return record.get("flow_run_id")


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
