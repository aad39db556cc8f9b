"""``flowerkit runs show``: a run record rendered as rich tables, section by section (not raw JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from flowerkit.run.layout import RunLayout
from flowerkit.run.runs import describe_processes, describe_selection, last_train_row, run_progress, run_status

IDENTITY = [("run id", "run_id"), ("flow", "flow"), ("Prefect flow run", "flow_run_id"), ("device", "device"),
            ("stage", "stage"), ("started (UTC)", "started_utc"), ("ended (UTC)", "ended_utc"),
            ("config hash", "config_hash"), ("resumed", "resumed")]
METRIC_ORDER = ("accuracy", "top5_accuracy", "macro_f1", "loss", "num_samples", "split", "step")


def _pairs(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, title_style="bold")
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, "-" if value in (None, "") else str(value))
    return table


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def identity(layout: RunLayout, record: dict[str, Any]) -> Table:
    step, total = run_progress(record, last_train_row(layout.metrics_jsonl))
    owner = record.get("owner") or {}
    rows = [("status", run_status(record)), ("step", f"{step}/{total}")]
    rows += [(label, record.get(key)) for label, key in IDENTITY if key in record]
    if owner:
        rows.append(("process", f"pid {owner.get('pid')} on {owner.get('host')}"))
    processes = describe_processes(record.get("distributed") or {})
    if processes:
        rows.append(("processes", processes))
    return _pairs(f"run '{layout.name}'", rows)


def tasks(record: dict[str, Any]) -> Table:
    table = Table("task", "state", "attempt", "updated (UTC)", title="tasks", title_justify="left",
                  title_style="bold")
    for name, entry in (record.get("tasks") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        table.add_row(name, str(entry.get("state", "-")), str(entry.get("attempt", "-")),
                      str(entry.get("updated_utc", "-")))
    return table


def metrics(record: dict[str, Any]) -> Table:
    found = record.get("metrics") or {}
    rows = [(key, _number(found[key])) for key in METRIC_ORDER if key in found]
    selection = record.get("selection") or {}
    selected = describe_selection(selection)
    if selected:  # a train run reports the checkpoint selected on validation, not its last step
        rows.insert(0, ("selected step", selected[0]))
        rows.insert(1, ("monitored", selected[1] + ("  (stopped early)" if selection.get("stopped_early") else "")))
    worst = found.get("worst_classes") or []
    if worst:
        rows.append(("worst classes", ", ".join(f"{w.get('class_name')} ({w.get('f1', 0):.2f})" for w in worst[:5])))
    return _pairs("metrics", rows or [("(none yet)", "")])


def _in_run(layout: RunLayout, path: Path) -> Path:
    """A path inside the run directory relative to it (at 80 columns a whole one wraps mid-name), any other
    one whole, so that the two never read alike."""
    return path.relative_to(layout.run_dir) if path.is_relative_to(layout.run_dir) else path.absolute()


def files(layout: RunLayout, record: dict[str, Any]) -> Table:
    index = record.get("artifact_index") or []
    best = layout.best_checkpoint if layout.best_checkpoint.exists() else None
    return _pairs("files (relative paths are inside the run directory)", [
        ("run directory", layout.run_dir.absolute()), ("TensorBoard", _in_run(layout, layout.tb_dir)),
        ("FiftyOne", _in_run(layout, layout.fiftyone_dir)), ("checkpoint", _in_run(layout, layout.checkpoint)),
        ("selected checkpoint", best and _in_run(layout, best)),
        ("indexed files", f"{len(index)} with sha256 (flowerkit runs verify {layout.name})")])


def configuration(layout: RunLayout) -> RenderableType:
    try:
        values = yaml.safe_load(layout.config.read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: bytes that are not UTF-8 (a damaged file)
        return Text(f"configuration: {layout.config} is missing or unreadable", style="yellow")
    return _pairs(f"configuration ({_in_run(layout, layout.config)})",
                  [(f"--{key}", value) for key, value in values.items()])


def render_run(layout: RunLayout, record: dict[str, Any]) -> list[RenderableType]:
    """The sections of ``flowerkit runs show``, in reading order."""
    sections: list[RenderableType] = [identity(layout, record), tasks(record), metrics(record)]
    error = record.get("error")
    if isinstance(error, dict):
        sections.append(Text(f"error: {error.get('type')}: {error.get('message')}", style="bold red"))
    return sections + [files(layout, record), configuration(layout)]
