"""Two or more runs side by side: the checkpoint each selected and how well it did, the recipe options that
differ between them, and the loss curves on one plot. A sweep's trials come ranked, with the values each sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, TabbedContent, TabPane

from flowerkit.columns import shorten_middle
from flowerkit.run.runs import as_float, describe_selection, differing_options
from flowerkit.tui.live_screen import LiveScreen
from flowerkit.tui.formatting import NAME_MIN, number, status_text, steps
from flowerkit.tui.plots import MetricPlot
from flowerkit.tui.runs_reader import RunDetail, metrics_tail, read_detail

Row = tuple[str, Callable[[RunDetail], Any]]  # (row label, how to read it from a run)
WINNER = "bold green"  # the best monitored value: the recipe that won


def final(detail: RunDetail, key: str) -> float | None:
    """A final metric from the record, else (a run still training) from its last evaluation."""
    value = detail.summary.metrics.get(key)
    if value is None and detail.eval_rows:
        value = detail.eval_rows[-1].get(key)
    return as_float(value)


def split_accuracy(detail: RunDetail, split: str) -> float | None:
    """Accuracy on ``split``: a train run reports val (and test with --test_after); an eval run its --split."""
    metrics = detail.summary.metrics
    reported = metrics.get("split") or ("val" if detail.summary.flow == "train" else None)
    if reported == split:
        return final(detail, "accuracy")
    return as_float(metrics.get(f"{split}_accuracy"))


def selected(detail: RunDetail, part: int) -> str:
    described = describe_selection(detail.summary.selection)
    return described[part] if described else "-"


# What each run selected and how well it did come first (with the recipe rows right under them), so an
# 80x24 terminal shows who won and why without scrolling; the rest follows.
OUTCOME_ROWS: list[Row] = [
    ("status", lambda d: status_text(d.summary.status)),
    ("steps", lambda d: steps(d.summary.step, d.summary.total_steps)),
    ("selected step", lambda d: selected(d, 0)),
    ("monitor", lambda d: d.summary.selection.get("monitor") or "-"),
    ("monitored value", lambda d: number(as_float(d.summary.selection.get("monitor_value")))),
    ("val accuracy", lambda d: number(split_accuracy(d, "val"))),
    ("test accuracy", lambda d: number(split_accuracy(d, "test"))),
]
DETAIL_ROWS: list[Row] = [
    ("stopped early", lambda d: "-" if not d.summary.selection
     else ("yes" if d.summary.selection.get("stopped_early") else "no")),
    ("top-5 accuracy", lambda d: number(final(d, "top5_accuracy"))),
    ("macro F1", lambda d: number(final(d, "macro_f1"))),
    ("eval loss", lambda d: number(final(d, "loss"))),
    ("final train loss", lambda d: number(d.train_rows[-1].get("loss")) if d.train_rows else "-"),
    ("flow", lambda d: d.summary.flow),
    ("device", lambda d: d.summary.device),
]


def option_text(value: Any) -> str:
    """An option's value as a user would type it (``--mixup_alpha 0.8``); '-' where the run lacks it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def winner(details: list[RunDetail]) -> int | None:
    """The run whose selected checkpoint has the best monitored value, when all share one monitor (values on
    different metrics do not compare); ties keep the first."""
    from flowerkit.sweep import LOWER_IS_BETTER

    monitors = {d.summary.selection.get("monitor") for d in details}
    values = [as_float(d.summary.selection.get("monitor_value")) for d in details]
    if len(monitors) != 1 or None in monitors or all(v is None for v in values):
        return None
    sign = 1.0 if monitors.pop() in LOWER_IS_BETTER else -1.0
    scored = [(sign * v, i) for i, v in enumerate(values) if v is not None]
    return min(scored)[1]


def _width(header: str, cells: list[Any]) -> int:
    """A column's width: its widest cell or header, as shown (Text or plain value)."""
    return max(cell_len(str(cell)) for cell in [header, *cells])


class CompareTable(DataTable):
    """One column per run (keyed by run name), one row per measure or differing recipe option."""

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.zebra_stripes = True
        self.fixed_columns = 1  # the row labels stay put while many runs scroll sideways

    def show(self, details: list[RunDetail], ranks: dict[str, int | None] | None = None,
             swept: dict[str, dict[str, Any]] | None = None) -> None:
        """``ranks`` and ``swept`` (a sweep's trials): each trial's rank and the values the sweep set for it."""
        names = [detail.summary.name for detail in details]
        rows = self._rows(details, ranks, swept or {})
        if (names, rows) == self._shown:
            return  # a refresh that found nothing new: keep the table (and its scroll position) as it is
        self._shown = (names, rows)
        self.clear(columns=True)
        # Widths given up front: measured from the rows later, a snapshot (or a busy machine's first frame)
        # can show the columns at their headers' widths.
        self.add_column("run", key=":label", width=_width("run", [label for _, label, _ in rows]))
        for i, name in enumerate(names):
            column = [cells[i] for _, _, cells in rows]
            label = shorten_middle(name, max(NAME_MIN, _width("", column)))  # a long name keeps its start and end
            self.add_column(label, key=name, width=_width(label, column))
        for key, label, cells in rows:
            self.add_row(label, *cells, key=key)

    _shown: tuple[list[str], list] | None = None

    @staticmethod
    def _rows(details: list[RunDetail], ranks: dict[str, int | None] | None,
              swept: dict[str, dict[str, Any]]) -> list[tuple[str, Any, list[Any]]]:
        """(row key, label, one cell per run): the outcome, then the differing options, then the details."""
        rows: list[tuple[str, Any, list[Any]]] = []
        best = winner(details)
        if ranks is not None:
            rows.append(("rank", "rank", [str(ranks.get(d.summary.name) or "-") for d in details]))
        for label, read in OUTCOME_ROWS:
            cells = [read(detail) for detail in details]
            if label == "monitored value" and best is not None:
                cells[best] = Text(str(cells[best]), style=WINNER)
            rows.append((label, label, cells))
        # A sweep's options come as the sweep set them (a recipe file by its path); any other option that
        # differs between the runs (trials of different sweeps, or runs started by hand) from their configs.
        options = list(dict.fromkeys([o for values in swept.values() for o in values]
                                     + differing_options([d.config for d in details])))
        for option in options:
            cells = [option_text(swept[d.summary.name][option] if option in swept.get(d.summary.name, {})
                                 else d.config.get(option)) for d in details]
            rows.append((f"--{option}", Text(f"--{option}", style="bold"), cells))
        for label, read in DETAIL_ROWS:
            rows.append((label, label, [read(detail) for detail in details]))
        return rows


class CompareScreen(LiveScreen):
    CSS_PATH = "compare.tcss"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("r", "refresh", "Refresh")]

    def __init__(self, run_dirs: list[Path], sweep: str | None = None) -> None:
        super().__init__()
        self.run_dirs = [Path(p) for p in run_dirs]
        self.sweep = sweep  # the trials of this sweep: ranked by their monitored value, with its values

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent():
            with TabPane("Side by side", id="side-by-side"):
                yield CompareTable(id="metrics")
            with TabPane("Loss", id="loss"):
                yield MetricPlot("train loss", id="loss-compare")
        yield Footer()

    def on_mount(self) -> None:
        names = ", ".join(p.name for p in self.run_dirs)
        self.sub_title = f"sweep {self.sweep}: {len(self.run_dirs)} trials" if self.sweep else f"compare {names}"
        self.query_one(CompareTable).focus()  # arrow keys scroll the table (many runs scroll sideways)
        self.action_refresh()

    def action_refresh(self) -> None:
        self._read()

    @work(thread=True, exclusive=True, group="compare")
    def _read(self) -> None:
        details = [read_detail(p, metrics_tail(p)) for p in self.run_dirs if p.is_dir()]
        ranks, swept = self._sweep_rows() if self.sweep else (None, None)
        if ranks is not None:
            order = {name: position for position, name in enumerate(ranks)}  # best first
            details.sort(key=lambda d: order.get(d.summary.name, len(order)))
        self.app.call_from_thread(self._show, details, ranks, swept)

    def _sweep_rows(self) -> tuple[dict[str, int | None] | None, dict[str, dict[str, Any]] | None]:
        """Ranks and values from the sweep's own ranking (what `flowerkit runs list --sweep` prints)."""
        from flowerkit.errors import FlowerkitError
        from flowerkit.sweep import read_results

        try:
            rows = read_results(self.app.output_dir, self.sweep)
        except FlowerkitError:  # the sweep's folder went away: compare the runs as plain runs
            return None, None
        return ({row["trial"]: row["rank"] for row in rows},
                {row["trial"]: dict(row["values"]) for row in rows})

    def _show(self, details: list[RunDetail], ranks: dict[str, int | None] | None,
              swept: dict[str, dict[str, Any]] | None) -> None:
        if self.closed:  # escape while the read was in flight: its widgets are going or gone
            return
        self.query_one(CompareTable).show(details, ranks, swept)
        self.query_one(MetricPlot).set_series(
            [(d.summary.name, [r["step"] for r in d.train_rows], [r.get("loss", 0.0) for r in d.train_rows])
             for d in details])
