"""One run: progress, live plots, Prefect task states, log tail, per-class table and worst samples."""

from __future__ import annotations

import os
from pathlib import Path

from rich.cells import cell_len
from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    ProgressBar,
    RichLog,
    Static,
    TabbedContent,
    TabPane,
)

from flowerkit.columns import shorten_middle
from flowerkit.run.runs import describe_processes, describe_selection
from flowerkit.tui import prefect_states
from flowerkit.tui.live_screen import LiveScreen
from flowerkit.tui.formatting import NAME_MIN, number, short_time, status_text, steps
from flowerkit.tui.plots import MetricPlot
from flowerkit.tui.runs_reader import PREDICTED_SHOWN, RunDetail, flow_run_id, metrics_tail, read_detail


def summary_line(detail: RunDetail, width: int = 78) -> str:
    """Lines within ``width`` columns: who and where (a long name shortened in the middle, so the status stays
    in view), how it is doing and since when, then (once known) the checkpoint it reports and, for a
    multi-process run, its processes."""
    run = detail.summary
    train, evals = detail.train_rows, detail.eval_rows
    where = f" on {run.device}  step {steps(run.step, run.total_steps)}"
    name = shorten_middle(run.name, max(NAME_MIN, width - cell_len(f"  {run.flow} {run.status}{where}")))
    first = f"[b]{name}[/b]  {run.flow} {status_text(run.status).markup}{where}"
    second = [predict_counts(run.metrics)] if run.flow == "predict" and run.metrics else []
    if train:
        second.append(f"loss {number(train[-1].get('loss'))}  lr {number(train[-1].get('lr'), 5)}")
    if evals:
        second.append(f"eval acc {number(evals[-1].get('accuracy'), 3)} @ {evals[-1]['step']}")
    started = f"started {short_time(run.started_utc)} UTC"  # on this line, so that the first has room for the name
    lines = [first, "  ".join([*(second or ["no steps yet"]), started])]
    selected = describe_selection(run.selection)
    if selected:
        step, monitored = selected
        stopped = "  stopped early" if run.selection.get("stopped_early") else ""
        lines.append(escape(f"selected step {step}  {monitored}{stopped}"))  # record text, not markup
    processes = describe_processes(run.distributed)
    if processes:
        lines.append(escape(f"processes: {processes}"))
    if detail.mlflow:
        lines.append(escape(detail.mlflow))
    return "\n".join(lines)


def predict_counts(metrics: dict) -> str:
    """A predict run's record counts (``flows/predict.py``): images predicted, those that could not be, other
    files skipped (not in records older than that count) and guesses below ``--min_confidence``."""
    count = {key: int(metrics.get(key) or 0) for key in ("inputs", "predicted", "failed", "skipped", "unknown")}
    parts = [f"predicted {count['predicted']} of {count['inputs']}", f"errors {count['failed']}"]
    if "skipped" in metrics:
        parts.append(f"skipped {count['skipped']}")
    if count["unknown"]:
        parts.append(f"unknown {count['unknown']}")
    return "  ".join(parts)


NO_EVALUATION = "No evaluation yet."


class TasksTable(DataTable):
    """The flow's tasks with their state and attempt count (attempt > 1 means Prefect retried it)."""

    def on_mount(self) -> None:
        self.cursor_type = "none"
        self.add_columns("task", "state", "attempt")

    def show(self, tasks: list[tuple[str, str, int]]) -> None:
        self.clear()
        for name, state, attempt in tasks:  # Text: "load_subset[val]" is not markup
            self.add_row(Text(name), status_text(state), str(attempt) if attempt else "-")


class PerClassTable(DataTable):
    """Per-class precision, recall, F1 and support; sorted by F1 (press s to flip the order)."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for key in ("class", "precision", "recall", "f1", "support"):
            self.add_column(key, key=key)
        self.f1_descending = False  # worst classes first: those are the ones to look at

    def show(self, classes: list[dict]) -> None:
        self.clear()
        for row in classes:
            self.add_row(f"{row.get('class_id', '?')} {row.get('class_name', '')}", number(row.get("precision"), 3),
                         number(row.get("recall"), 3), number(row.get("f1"), 3), str(row.get("support", "-")))
        self.sort_f1()

    def sort_f1(self) -> None:
        """By F1, ties by class id as a number (2 before 16 before 100), whichever way F1 goes."""
        sign = -1 if self.f1_descending else 1

        def key(cells: tuple[str, str]) -> tuple[float, int]:
            f1, label = cells
            class_id = label.split(" ", 1)[0]
            return (sign * (float(f1) if f1 != "-" else -1.0), int(class_id) if class_id.isdigit() else -1)

        self.sort("f1", "class", key=key)


class WorstTable(DataTable):
    """Wrong predictions, the most confident first."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("sample", "true", "predicted", "conf")

    def show(self, worst: list[dict]) -> None:
        self.clear()
        for row in worst:
            self.add_row(str(row.get("sample_id")), str(row.get("label_name", row.get("label"))),
                         str(row.get("prediction_name", row.get("prediction"))), number(row.get("confidence"), 3))


class PredictedTable(DataTable):
    """A predict run's rows: each file (from the folder the files share), its top-1 class and confidence, or
    why it could not be predicted."""

    def on_mount(self) -> None:
        self.cursor_type = "row"

    def show(self, rows: list[dict], width: int) -> None:
        files = [str(row.get("filepath", row.get("sample_id"))) for row in rows]
        folder = os.path.commonpath([os.path.dirname(f) for f in files]) if files else ""
        files = [os.path.relpath(f, folder) if folder else f for f in files]  # a/rose.jpg and b/rose.jpg differ
        classes = [predicted_class(row) for row in rows]
        # Files first (shortened in the middle if they must be), then a class name whole; an error's sentence
        # takes what is left.
        room = width - len("conf") - 6 * self.cell_padding
        class_natural = max([len("class"), *(cell_len(label.plain) for label in classes)])
        file_room = max(NAME_MIN, room - min(class_natural, CLASS_WIDTH))
        file_width = min(max([len("file"), *map(cell_len, files)]), file_room)
        class_width = min(class_natural, max(len("class"), room - file_width))
        self.clear(columns=True)
        self.add_column("file", width=file_width)
        self.add_column("class", width=class_width)
        self.add_column("conf")
        for file, label, row in zip(files, classes, rows):
            label.truncate(class_width, overflow="ellipsis")  # an error's sentence, not a name
            self.add_row(shorten_middle(file, file_width), label, number(row.get("confidence"), 3))


CLASS_WIDTH = 26  # the longest Flowers-102 class name is 25 cells


def predicted_class(row: dict) -> Text:
    if "error" in row:
        return Text(str(row["error"]), style="bold red")
    name = str(row.get("prediction_name", row.get("prediction")))
    return Text(f"{name}?", style="dim") if row.get("unknown") else Text(name)  # below --min_confidence


class RunScreen(LiveScreen):
    """Re-read every refresh period in a worker; a run that disappears leaves the last view, marked as gone."""

    CSS_PATH = "run_view.tcss"
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("s", "sort_f1", "Sort F1"),
                Binding("r", "refresh", "Refresh"), Binding("p", "predict", "Predict a folder")]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self._tail = metrics_tail(self.run_dir)
        self._log_lines: list[str] = []
        self._shown_classes: list[dict] = []
        self._shown_predicted: tuple[list[dict], int] | None = None
        self._task_source = ""
        self.detail: RunDetail | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="summary")
        yield ProgressBar(id="progress", show_eta=False)
        with TabbedContent():
            with TabPane("Plots", id="plots"):
                with Horizontal():
                    yield MetricPlot("train loss", id="loss-plot")
                    with Vertical():
                        yield MetricPlot("learning rate", id="lr-plot")
                        yield MetricPlot("eval accuracy", id="acc-plot")
            with TabPane("Rows", id="rows"):
                yield Static(id="rows-source")
                yield PredictedTable()
            with TabPane("Tasks", id="tasks"):
                yield Static(id="tasks-source")
                yield TasksTable()
            with TabPane("Log", id="log"):
                # Wrapped, not clipped: log lines are longer than a narrow terminal.
                yield RichLog(id="log-view", wrap=True, markup=False, highlight=False, auto_scroll=True)
            with TabPane("Classes", id="classes"):
                yield Static(NO_EVALUATION, id="classes-empty")
                yield PerClassTable()
            with TabPane("Worst", id="worst"):
                yield Static(NO_EVALUATION, id="worst-empty")
                yield WorstTable()
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.run_dir.name
        self.query_one(TabbedContent).hide_tab("rows")
        self.action_refresh()
        self.set_interval(self.app.refresh_s, self.action_refresh)

    def action_refresh(self) -> None:
        self._read()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A predict run has no classes to sort and no model of its own: its footer leaves those keys out
        (False hides a binding; None would show it dimmed)."""
        is_predict = self.detail is not None and self.detail.summary.flow == "predict"
        return not (is_predict and action in ("sort_f1", "predict"))

    @work(thread=True, exclusive=True, group="run-view")
    def _read(self) -> None:
        if not self.run_dir.is_dir():
            self.app.call_from_thread(self._gone)
            return
        detail = read_detail(self.run_dir, self._tail)
        source = "run_record.json"
        run_id = flow_run_id(self.run_dir) if prefect_states.api_configured() else None
        if run_id:
            from_api = prefect_states.fetch_task_states(run_id)
            if from_api:
                detail.tasks, source = prefect_states.with_pending(from_api, detail.summary.flow), "Prefect API"
        self.app.call_from_thread(self._show, detail, source)

    def _gone(self) -> None:
        if not self.closed:  # escape while the read was in flight
            self.query_one("#summary", Static).update(f"{self.run_dir.name}: the run directory is gone.")

    def _show(self, detail: RunDetail, task_source: str) -> None:
        if self.closed:  # escape while the read was in flight: its widgets are going or gone
            return
        self.detail, self._task_source = detail, task_source
        run = detail.summary
        self.query_one("#summary", Static).update(summary_line(detail, self.size.width - 2))
        self.query_one(ProgressBar).update(total=max(run.total_steps, 1), progress=run.step)
        if run.flow == "predict":
            self._show_predicted(detail.predicted)
        else:
            self._plot(detail)
        self.query_one("#tasks-source", Static).update(f"task states from {task_source}" + (
            f"; error: {detail.error.get('type')}: {detail.error.get('message')}" if detail.error else ""))
        self.query_one(TasksTable).show(detail.tasks)
        if detail.log_tail != self._log_lines:
            self._log_lines = detail.log_tail
            log = self.query_one(RichLog)
            log.clear()
            for line in detail.log_tail:
                log.write(line)
        if detail.per_class != self._shown_classes:
            self._shown_classes = detail.per_class
            self.query_one(PerClassTable).show(detail.per_class)
            self.query_one(WorstTable).show(detail.worst)
        for placeholder in ("#classes-empty", "#worst-empty"):
            self.query_one(placeholder, Static).display = not detail.per_class

    def on_resize(self) -> None:
        if self.detail is not None:
            self._show(self.detail, self._task_source)  # fit the summary and the rows to the new width

    def _show_predicted(self, rows: list[dict]) -> None:
        """A predict run has rows, not training plots or labels to score: the Rows tab instead of those."""
        tabs = self.query_one(TabbedContent)
        if self._shown_predicted is None:
            tabs.show_tab("rows")
            tabs.active = "rows"
            for pane in ("plots", "classes", "worst"):
                tabs.hide_tab(pane)
            self.refresh_bindings()
        width = self.size.width - self.styles.scrollbar_size_vertical
        if self._shown_predicted != (rows, width):
            self._shown_predicted = (rows, width)
            self.query_one(PredictedTable).show(rows, width)
            capped = f", the first {len(rows)}" if len(rows) == PREDICTED_SHOWN else ""
            self.query_one("#rows-source", Static).update(
                f"{len(rows)} row(s) of fiftyone/predictions.jsonl{capped}: file, top-1 class, confidence")

    def _plot(self, detail: RunDetail) -> None:
        train, evals = detail.train_rows, detail.eval_rows
        xs = [row["step"] for row in train]
        self.query_one("#loss-plot", MetricPlot).set_series([("loss", xs, [row.get("loss", 0.0) for row in train])])
        self.query_one("#lr-plot", MetricPlot).set_series([("lr", xs, [row.get("lr", 0.0) for row in train])])
        self.query_one("#acc-plot", MetricPlot).set_series(
            [("accuracy", [row["step"] for row in evals], [row.get("accuracy", 0.0) for row in evals])])

    def action_predict(self) -> None:
        """The predict form, for a training run with a checkpoint; otherwise say why not."""
        from flowerkit.errors import FlowerkitError
        from flowerkit.predict.plan import selected_checkpoint
        from flowerkit.tui.predict_form import PredictScreen

        flow = self.detail.summary.flow if self.detail else None
        if flow != "train":
            self.notify(f"{self.run_dir.name} is a{'n' if flow == 'eval' else ''} {flow or 'unread'} run: only a "
                        "training run has a model to predict with. Open the run that trained it.", severity="warning")
            return
        try:
            selected_checkpoint(self.app.output_dir, self.run_dir.name)
        except FlowerkitError as exc:
            self.notify(exc.message, severity="warning", timeout=10)
            return
        self.app.push_screen(PredictScreen(self.run_dir.name))

    def action_sort_f1(self) -> None:
        table = self.query_one(PerClassTable)
        table.f1_descending = not table.f1_descending
        table.sort_f1()
