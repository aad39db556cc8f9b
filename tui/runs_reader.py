"""Plain-Python reader of run directories (no Textual): what the dashboard shows, read defensively.

Finding runs and summarising them from their files is ``flowerkit.run.runs``' job; this module adds the live parts
(a metrics tail for progress and loss, the run view's detail). Runs are written by other processes while we read
them, so every reader here tolerates a missing file, a run directory that vanishes, and a torn last line of
``metrics.jsonl`` (formats: docs/artifacts.md).
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

from flowerkit.run.layout import RunLayout
from flowerkit.tasks import recorded_tasks
from flowerkit.run.runs import RunSummary, as_float, find_run_dirs, read_config, read_json_or_none
from flowerkit.run.runs import summarize as summarize_files
from flowerkit.tracking import mlflow_line

PREDICTED_SHOWN = 1000  # a predict run's rows the run view lists; the file holds them all


def layout_of(run_dir: Path) -> RunLayout:
    """Where an existing run's files are (its record names moved folders)."""
    record = read_json_or_none(RunLayout.for_run(run_dir).record)
    return RunLayout.for_run(run_dir, record if isinstance(record, dict) else None)


def metrics_tail(run_dir: Path) -> MetricsTail:
    return MetricsTail(RunLayout.for_run(run_dir).metrics_jsonl)


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


def summarize(run_dir: Path, tail: MetricsTail) -> RunSummary:
    """The list row of one run: its files' summary (progress from ``flowerkit.run.runs.run_progress``, fed this tail's
    last train row), with the latest loss, and the latest evaluation's accuracy until the run has final metrics."""
    tail.poll()
    train_rows, eval_rows = tail.rows("train"), tail.rows("eval")
    summary = summarize_files(run_dir, train_rows[-1] if train_rows else None)
    loss, accuracy = (as_float(train_rows[-1].get("loss")) if train_rows else None), summary.accuracy
    if accuracy is None and eval_rows:  # the record has no final metrics until the run evaluates
        accuracy = as_float(eval_rows[-1].get("accuracy"))
    return replace(summary, loss=loss, accuracy=accuracy)


class RunsIndex:
    """Every run under OUTPUT_DIR, re-read on each ``scan()`` (a metrics tail is kept per run)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self._tails: dict[Path, MetricsTail] = {}

    def scan(self) -> list[RunSummary]:
        dirs = find_run_dirs(self.output_dir)
        self._tails = {d: self._tails.get(d) or metrics_tail(d) for d in dirs}  # forget vanished runs
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
    mlflow: str | None = None  # "MLflow: <run link>" line, when the run is tracked in MLflow
    predicted: list[dict[str, Any]] = field(default_factory=list)  # a predict run's rows, the first PREDICTED_SHOWN
    config: dict[str, Any] = field(default_factory=dict)  # config_resolved.yaml: the recipe compare diffs


def task_states(record: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(task, state, attempt) from the record, the flow's tasks not reached yet as pending."""
    known = record.get("tasks") or {}
    names = recorded_tasks(str(record.get("flow")))
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


def per_class_rows(layout: RunLayout) -> list[dict[str, Any]]:
    data = read_json_or_none(layout.per_class) or {}
    classes = data.get("classes") if isinstance(data, dict) else None
    return [c for c in classes or [] if isinstance(c, dict)]


def prediction_rows(layout: RunLayout) -> Iterator[dict[str, Any]]:
    """The rows of ``fiftyone/predictions.jsonl``; a corrupt line is skipped, a missing file has none."""
    try:
        with open(layout.predictions) as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    yield row
    except OSError:
        return


def worst_predictions(layout: RunLayout, limit: int = 50) -> list[dict[str, Any]]:
    """Wrong predictions, the most confident first: where the model is sure and wrong."""
    # A predict run's rows have no label (and error rows no prediction): nothing to call wrong.
    wrong = [row for row in prediction_rows(layout) if "label" in row and row.get("label") != row.get("prediction")]
    wrong.sort(key=lambda r: (-float(r.get("confidence") or 0.0), str(r.get("sample_id"))))
    return wrong[:limit]


def read_detail(run_dir: Path, tail: MetricsTail) -> RunDetail:
    """The run view's data; files that do not exist yet give empty sections."""
    layout = layout_of(run_dir)
    record = read_json_or_none(layout.record) or {}
    summary = summarize(run_dir, tail)
    return RunDetail(summary=summary, train_rows=tail.rows("train"), eval_rows=tail.rows("eval"),
                     tasks=task_states(record), log_tail=log_tail(layout.run_log),
                     per_class=per_class_rows(layout), worst=worst_predictions(layout),
                     error=record.get("error") if isinstance(record.get("error"), dict) else None,
                     mlflow=mlflow_line(record), config=read_config(run_dir),
                     predicted=list(islice(prediction_rows(layout), PREDICTED_SHOWN)) if summary.flow == "predict"
                     else [])


def flow_run_id(run_dir: Path) -> str | None:
    record = read_json_or_none(RunLayout.for_run(Path(run_dir)).record) or {}
    return record.get("flow_run_id")
