"""The runs list: every run under the output directory, re-read in a worker thread every refresh period.

A sweep's trials are listed together under a row naming the sweep; ``w`` (or ``enter`` on that row) narrows
the list to one sweep, its trials ranked by their monitored validation value as ``flowerkit runs list --sweep``
ranks them, and ``c`` there compares them side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from flowerkit.columns import fit_columns, shorten_middle
from flowerkit.tui.formatting import NAME_MIN, number, short_time, status_text, steps
from flowerkit.tui.runs_reader import RunsIndex, RunSummary

COLUMNS = [("mark", " "), ("name", "name"), ("flow", "flow"), ("status", "status"), ("device", "device"),
           ("step", "step"), ("loss", "loss"), ("acc", "acc"), ("started", "started UTC")]
# Left out in this order when the list is wider than the screen, as `flowerkit runs list` leaves out its own
# (flowerkit.columns): the run view says when and where a run started; mark, name, status, step and acc stay.
DROP_ORDER = ("started", "device", "flow", "loss")
SWEEP_KEY = "sweep:"  # row key prefix of a sweep's row; run names never hold ':', so keys never collide


@dataclass(frozen=True)
class SweepHeader:
    """A sweep's row above its trials: its name and how many of its trials are complete."""

    name: str
    trials: int
    complete: int

    @property
    def key(self) -> str:
        return SWEEP_KEY + self.name


@dataclass(frozen=True)
class Ranking:
    """One sweep's trials best first (``flowerkit.sweep.read_results``), and what they are ranked by."""

    sweep: str
    trials: list[str]
    monitor: str | None


Row = RunSummary | SweepHeader


def row_key(row: Row) -> str:
    return row.key if isinstance(row, SweepHeader) else row.name


def shown(column: str, cell: str | Text, name_width: int) -> str | Text:
    """A cell as the table shows it: a name longer than its column keeps its start and end."""
    if column != "name":
        return cell
    if isinstance(cell, Text):
        return Text(shorten_middle(cell.plain, name_width), style=cell.style)
    return shorten_middle(cell, name_width)


Layout = tuple[tuple[str, ...], int]  # the columns shown and the name column's width


class RunsTable(DataTable):
    """One row per run, keyed by run name (a sweep's row by ``sweep:NAME``); rows update in place so the
    cursor stays on its run. Columns that do not fit the width are left out, long names shortened."""

    _rows: list[Row] = []
    _marked: set[str] = set()
    _layout: Layout | None = None

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True

    def on_resize(self) -> None:
        self.show(self._rows, self._marked)  # fit the new width

    def show(self, rows: list[Row], marked: set[str]) -> None:
        self._rows, self._marked = rows, marked
        cells = {row_key(row): dict(zip((key for key, _ in COLUMNS), self._cells(row, marked))) for row in rows}
        layout = self._fit(list(cells.values()))
        if layout != self._layout or list(cells) != [str(key.value) for key in self.rows]:
            self._rebuild(cells, layout)
            return
        columns, name_width = layout
        for key, row in cells.items():
            for column in columns:
                cell = shown(column, row[column], name_width)
                if self.get_cell(key, column) != cell:
                    self.update_cell(key, column, cell, update_width=True)

    def _fit(self, rows: list[dict[str, str | Text]]) -> Layout:
        """The columns that fit the table's width, by ``DROP_ORDER``, and the width left for names."""
        pad = 2 * self.cell_padding
        natural = {key: max([cell_len(label), *(cell_len(str(row[key])) for row in rows)]) + pad
                   for key, label in COLUMNS}
        room = self.size.width - self.styles.scrollbar_size_vertical  # a long list's scrollbar hides nothing
        name_min = min(natural["name"], NAME_MIN + pad)

        def others(kept: list[str]) -> int:
            return sum(natural[key] for key in kept if key != "name")

        kept, _ = fit_columns([key for key, _ in COLUMNS], DROP_ORDER, lambda kept: others(kept) + name_min <= room)
        return tuple(kept), min(natural["name"], max(name_min, room - others(kept))) - pad

    def _rebuild(self, cells: dict[str, dict[str, str | Text]], layout: Layout) -> None:
        current = self.selected_name()
        columns, name_width = layout
        self.clear(columns=True)
        for key, label in COLUMNS:
            if key in columns:
                self.add_column(label, key=key, width=name_width if key == "name" else None)
        for key, row in cells.items():
            self.add_row(*(shown(column, row[column], name_width) for column in columns), key=key)
        self._layout = layout
        keys = list(cells)
        if current in keys:
            self.move_cursor(row=keys.index(current))

    @staticmethod
    def _cells(row: Row, marked: set[str]) -> list[str | Text]:
        if isinstance(row, SweepHeader):
            return [" ", Text(row.name, style="bold"), "sweep", f"{row.complete}/{row.trials} done", "", "", "",
                    "", ""]
        return ["*" if row.name in marked else " ", row.name, row.flow, status_text(row.status), row.device,
                steps(row.step, row.total_steps), number(row.loss), number(row.accuracy, 3),
                short_time(row.started_utc)]

    def selected_name(self) -> str | None:
        """The row key under the cursor: a run name, or ``sweep:NAME`` on a sweep's row."""
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)


class RunsScreen(Screen):
    """The dashboard's home: the runs list, refreshed on its own, all runs or one sweep's trials."""

    CSS_PATH = "runs_list.tcss"
    BINDINGS = [
        Binding("enter", "open_run", "Open"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("w", "next_sweep", "Sweeps"),
        Binding("escape", "all_runs", "All runs", show=False),  # the hint says it: the footer is full at 80
        Binding("n", "launch", "New run"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.marked: set[str] = set()
        self.runs: list[RunSummary] = []
        self.sweeps: dict[str, list[str]] = {}  # each sweep's trials, in trial order
        self.sweep: str | None = None  # the list shows only this sweep's trials
        self.ranking: Ranking | None = None
        self.rows: list[Row] = []
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

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "all_runs":
            return self.sweep is not None  # only a filtered list has somewhere to go back to
        return True

    def action_refresh(self) -> None:
        self._scan(self.sweep)

    @work(thread=True, exclusive=True, group="scan")
    def _scan(self, sweep: str | None) -> None:
        from flowerkit.run.runs import sweep_trials
        from flowerkit.flows.orchestration.crashed_runs import reconcile_all

        assert self._index is not None
        runs = self._index.scan()
        reconcile_all(runs)  # a run whose process died: mark its flow run Crashed on the server too
        sweeps = sweep_trials(self.app.output_dir)
        ranking = rank_sweep(self.app.output_dir, sweep) if sweep in sweeps else None
        self.app.call_from_thread(self._show, runs, sweeps, ranking)

    def _show(self, runs: list[RunSummary], sweeps: dict[str, list[str]], ranking: Ranking | None) -> None:
        self.runs = self.app.with_launched(runs)
        self.sweeps = sweeps
        if self.sweep is not None and self.sweep not in sweeps:
            self._filter(None)  # the sweep's folder was removed
        if ranking is not None and ranking.sweep == self.sweep:  # not a scan started before the filter changed
            self.ranking = ranking
        self.marked &= {run.name for run in self.runs}
        self._display()

    def _display(self) -> None:
        self.rows = self._rows()
        self.query_one(RunsTable).show(self.rows, self.marked)
        self.query_one("#hint", Static).update(self._hint())

    def _rows(self) -> list[Row]:
        by_name = {run.name: run for run in self.runs}
        if self.sweep is not None:
            ranked = self.ranking.trials if self.ranking and self.ranking.sweep == self.sweep else []
            order = ranked or self.sweeps.get(self.sweep, [])
            return [by_name[name] for name in order if name in by_name]
        in_sweeps = {name for trials in self.sweeps.values() for name in trials}
        rows: list[Row] = [run for run in self.runs if run.name not in in_sweeps]
        for sweep, trials in self.sweeps.items():  # each sweep's trials together, under its own row
            present = [by_name[name] for name in trials if name in by_name]
            rows.append(SweepHeader(sweep, len(trials), sum(run.status == "complete" for run in present)))
            rows += present
        return rows

    def _hint(self) -> str:
        if self.sweep is not None:
            shown = sum(isinstance(row, RunSummary) for row in self.rows)
            by = self.ranking.monitor if self.ranking and self.ranking.monitor else "monitored value"
            return (f"sweep {self.sweep}: {shown}/{len(self.sweeps.get(self.sweep, []))} trials, best {by} first; "
                    "c compares, esc all runs.")
        if not self.runs and not self.sweeps:
            return f"No runs under {self.app.output_dir} yet: press n to start one."
        hint = f"{len(self.runs)} run(s): enter opens, space marks ({len(self.marked)} marked), c compares"
        return hint + (", w picks a sweep." if self.sweeps else ".")

    def _selected(self) -> RunSummary | None:
        name = self.query_one(RunsTable).selected_name()
        return next((run for run in self.runs if run.name == name), None)

    def _filter(self, sweep: str | None) -> None:
        self.sweep, self.ranking = sweep, None
        self.sub_title = str(self.app.output_dir) + (f" (sweep {sweep})" if sweep else "")
        self.refresh_bindings()

    def action_next_sweep(self) -> None:
        """All runs -> each sweep in turn -> all runs."""
        if not self.sweeps:
            self.notify(f"No sweeps under {self.app.output_dir}: `flowerkit sweep SWEEP.yaml` starts one.",
                        severity="warning")
            return
        names = list(self.sweeps)
        position = names.index(self.sweep) + 1 if self.sweep in names else 0
        self._show_sweep(names[position] if position < len(names) else None)

    def action_all_runs(self) -> None:
        self._show_sweep(None)

    def _show_sweep(self, sweep: str | None) -> None:
        self._filter(sweep)
        self._display()  # at once, in trial order; the scan brings the ranking
        self.query_one(RunsTable).move_cursor(row=0)
        self.action_refresh()

    def action_open_run(self) -> None:
        from flowerkit.tui.run_view import RunScreen

        key = self.query_one(RunsTable).selected_name()
        if key is not None and key.startswith(SWEEP_KEY):
            self._show_sweep(key.removeprefix(SWEEP_KEY))
            return
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
            self._display()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    def action_compare(self) -> None:
        from flowerkit.tui.compare import CompareScreen

        shown = [row for row in self.rows if isinstance(row, RunSummary)]
        chosen = [run for run in shown if run.name in self.marked]
        if self.sweep is not None and len(chosen) < 2:
            chosen = shown  # a sweep's trials: all of them, best first, unless some are marked
        if len(chosen) < 2:
            self.notify("Mark two or more runs with space, then press c." if self.sweep is None
                        else f"Sweep {self.sweep} has fewer than two trials to compare yet.", severity="warning")
            return
        names = {run.name for run in chosen}
        sweep = next((name for name, trials in self.sweeps.items() if names <= set(trials)), None)
        self.app.push_screen(CompareScreen([run.path for run in chosen], sweep=sweep))

    def action_launch(self) -> None:
        from flowerkit.tui.launch import LaunchScreen

        self.app.push_screen(LaunchScreen(), callback=lambda _: self.action_refresh())


def rank_sweep(output_dir: Path, sweep: str) -> Ranking | None:
    """The sweep's trials ranked as ``flowerkit runs list --sweep`` ranks them; None if its folder is gone."""
    from flowerkit.errors import FlowerkitError
    from flowerkit.sweep import read_results

    try:
        rows = read_results(output_dir, sweep)
    except FlowerkitError:
        return None
    monitor = next((row["monitor"] for row in rows if row["monitor"]), None)
    return Ranking(sweep, [row["trial"] for row in rows], monitor)
