"""Two or more runs side by side: final metrics in columns, loss curves on one plot."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from flowerkit.tui.formatting import number, steps
from flowerkit.tui.plots import MetricPlot
from flowerkit.tui.runs_reader import MetricsTail, RunDetail, metrics_tail, read_detail

# (row label, how to read it from a run); final metrics come from the record, else the last logged rows.
METRIC_ROWS = [
    ("flow", lambda d: d.summary.flow),
    ("status", lambda d: d.summary.status),
    ("device", lambda d: d.summary.device),
    ("steps", lambda d: steps(d.summary.step, d.summary.total_steps)),
    ("final train loss", lambda d: number(d.train_rows[-1].get("loss")) if d.train_rows else "-"),
    ("accuracy", lambda d: number(final(d, "accuracy"))),
    ("top-5 accuracy", lambda d: number(final(d, "top5_accuracy"))),
    ("macro F1", lambda d: number(final(d, "macro_f1"))),
    ("eval loss", lambda d: number(final(d, "loss"))),
]


def final(detail: RunDetail, key: str) -> float | None:
    value = detail.summary.metrics.get(key)
    if value is None and detail.eval_rows:
        value = detail.eval_rows[-1].get(key)
    return None if value is None else float(value)


class CompareScreen(Screen):
    CSS_PATH = "compare.tcss"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("r", "refresh", "Refresh")]

    def __init__(self, run_dirs: list[Path]) -> None:
        super().__init__()
        self.run_dirs = [Path(p) for p in run_dirs]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="metrics", cursor_type="none", zebra_stripes=True)
        yield MetricPlot("train loss", id="loss-compare")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "compare " + ", ".join(p.name for p in self.run_dirs)
        self.action_refresh()

    def action_refresh(self) -> None:
        self._read()

    @work(thread=True, exclusive=True, group="compare")
    def _read(self) -> None:
        details = [read_detail(p, metrics_tail(p)) for p in self.run_dirs if p.is_dir()]
        self.app.call_from_thread(self._show, details)

    def _show(self, details: list[RunDetail]) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        table.add_column("metric")
        for detail in details:
            table.add_column(detail.summary.name)
        for label, read in METRIC_ROWS:
            table.add_row(label, *[read(detail) for detail in details])
        self.query_one(MetricPlot).set_series(
            [(d.summary.name, [r["step"] for r in d.train_rows], [r.get("loss", 0.0) for r in d.train_rows])
             for d in details])
