"""The runs list: every run under the output directory, re-read in a worker thread every refresh period."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from flowerkit.tui.formatting import number, short_time, status_text, steps
from flowerkit.tui.runs_reader import RunsIndex, RunSummary

COLUMNS = [("mark", " "), ("name", "name"), ("flow", "flow"), ("status", "status"), ("device", "device"),
           ("step", "step"), ("loss", "loss"), ("acc", "acc"), ("started", "started UTC")]


class RunsTable(DataTable):
    """One row per run, keyed by run name; rows update in place so the cursor stays on its run."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, runs: list[RunSummary], marked: set[str]) -> None:
        names = [run.name for run in runs]
        if names != [str(key.value) for key in self.rows]:
            self._rebuild(runs, marked)
            return
        for run in runs:
            for key, cell in zip((k for k, _ in COLUMNS), self._cells(run, marked)):
                if self.get_cell(run.name, key) != cell:
                    self.update_cell(run.name, key, cell, update_width=True)

    def _rebuild(self, runs: list[RunSummary], marked: set[str]) -> None:
        current = self.selected_name()
        self.clear()
        for run in runs:
            self.add_row(*self._cells(run, marked), key=run.name)
        names = [run.name for run in runs]
        if current in names:
            self.move_cursor(row=names.index(current))

    @staticmethod
    def _cells(run: RunSummary, marked: set[str]) -> list:
        return ["*" if run.name in marked else " ", run.name, run.flow, status_text(run.status), run.device,
                steps(run.step, run.total_steps), number(run.loss), number(run.accuracy, 3),
                short_time(run.started_utc)]

    def selected_name(self) -> str | None:
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)


class RunsScreen(Screen):
    """The dashboard's home: the runs list, refreshed on its own."""

    CSS_PATH = "runs_list.tcss"
    BINDINGS = [
        Binding("enter", "open_run", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare marked"),
        Binding("n", "launch", "New run"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.marked: set[str] = set()
        self.runs: list[RunSummary] = []
        self._index: RunsIndex | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunsTable(id="runs")
        yield Static(id="hint")
        yield Footer()

    def on_mount(self) -> None:
        self._index = RunsIndex(self.app.output_dir)
        self.sub_title = str(self.app.output_dir)
        self.action_refresh()
        self.set_interval(self.app.refresh_s, self.action_refresh)

    def action_refresh(self) -> None:
        self._scan()

    @work(thread=True, exclusive=True, group="scan")
    def _scan(self) -> None:
        from flowerkit.tasks.crashed_runs import reconcile_all

        assert self._index is not None
        runs = self._index.scan()
        reconcile_all(runs)  # a run whose process died: mark its flow run Crashed on the server too
        self.app.call_from_thread(self._show, runs)

    def _show(self, runs: list[RunSummary]) -> None:
        self.runs = self.app.with_launched(runs)
        self.marked &= {run.name for run in self.runs}
        self.query_one(RunsTable).show(self.runs, self.marked)
        hint = (f"No runs under {self.app.output_dir} yet: press n to start one." if not self.runs
                else f"{len(self.runs)} run(s): enter opens, space marks ({len(self.marked)} marked), c compares.")
        self.query_one("#hint", Static).update(hint)

    def _selected(self) -> RunSummary | None:
        name = self.query_one(RunsTable).selected_name()
        return next((run for run in self.runs if run.name == name), None)

    def action_open_run(self) -> None:
        from flowerkit.tui.run_view import RunScreen

        run = self._selected()
        if run is None:
            return
        if run.path.is_dir():
            self.app.push_screen(RunScreen(run.path))
        elif run.name in self.app.launched:  # launched here, no run directory yet
            launched = self.app.launched[run.name]
            state = "is starting" if run.status == "starting" else "failed before writing its run directory"
            self.notify(f"{run.name} {state}; its output is in {launched.log_path}",
                        severity="information" if run.status == "starting" else "error")

    def action_mark(self) -> None:
        run = self._selected()
        if run is not None:
            self.marked ^= {run.name}
            self.query_one(RunsTable).show(self.runs, self.marked)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    def action_compare(self) -> None:
        from flowerkit.tui.compare import CompareScreen

        chosen = [run.path for run in self.runs if run.name in self.marked]
        if len(chosen) < 2:
            self.notify("Mark two or more runs with space, then press c.", severity="warning")
            return
        self.app.push_screen(CompareScreen(chosen))

    def action_launch(self) -> None:
        from flowerkit.tui.launch import LaunchScreen

        self.app.push_screen(LaunchScreen(), callback=lambda _: self.action_refresh())
