"""What ``flowerkit sweep`` shows: the sweep's own lines, a live table of its trials in a terminal, and the
final ranking as a table.

A trial's own log lines (steps, evaluations, its tasks' states) go to its ``run.log`` and its flow run's logs in
the Prefect UI, not to the sweep's console (``--verbose`` shows them). In a terminal a rich Live table follows
the trials (status, step, monitored value, duration) under an overall bar whose ETA moves with the steps; when
the output is not a terminal (CI, a pipe), the sweep prints its plain lines, one per trial event.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from flowerkit.flows.sweep_progress import SweepProgress, TrialState, duration
from flowerkit.sweep import RESULT_COLUMNS, Sweep, result_cells

SWEEP_LOGGER = "flowerkit.sweep"
SWEEP_FLOW = "sweep"


class _SweepLinesOnly(logging.Filter):
    """For the console's handlers: the sweep's own lines, and warnings and errors that are not a trial's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(SWEEP_LOGGER):
            return True
        return record.levelno >= logging.WARNING and not _from_a_trial(record)


def _from_a_trial(record: logging.LogRecord) -> bool:
    """Whether a trial's flow run logged it: Prefect's run loggers name their flow; other lines are judged by the
    flow run of the thread that logs them (a trial runs as a subflow, in this process)."""
    flow = getattr(record, "flow_name", None)
    if flow is None:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        flow = context.flow.name if context is not None and context.flow is not None else None
    if flow is None:  # a thread of no flow run: flowerkit's are a trial's (its tracker's), others Prefect's own
        return record.name.startswith("flowerkit")
    return flow != SWEEP_FLOW


def hide_trial_lines() -> None:
    """Keep a trial's lines off the console's handlers for the rest of this process (Prefect imported)."""
    from flowerkit.cli.quiet import console_handlers

    for handler in console_handlers():
        handler.addFilter(_SweepLinesOnly())


def is_terminal() -> bool:
    """Live redraws only where both outputs are a terminal: a pipe or CI log gets plain lines."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class LiveTrials:
    """The live table of a sweep's trials and its overall bar, redrawn twice a second on stderr."""

    def __init__(self) -> None:
        from rich.console import Console

        # Log records print through this console too (``logs_through``), as Prefect's handler made them.
        self.console = Console(file=sys.stderr, markup=False, emoji=False, highlight=False)
        self.progress: SweepProgress | None = None

    def follow(self, progress: SweepProgress) -> None:
        """The sweep flow's ``on_progress``: from now on the table shows these trials."""
        self.progress = progress

    @contextlib.contextmanager
    def showing(self) -> Iterator[LiveTrials]:
        from rich.live import Live

        from flowerkit.cli.progress import logs_through

        with Live(get_renderable=self.render, console=self.console, refresh_per_second=2), \
                logs_through(self.console):
            yield self

    def render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        if self.progress is None:
            return Text("Starting the sweep...")
        states = self.progress.poll()
        return Group(trials_table(states, self.progress.clock()), overall_bar(self.progress, states))


def trials_table(states: list[TrialState], now: float) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("trial", "values", "status", "step", "monitored", "time"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=30 if column == "values" else None)
    for state in states:
        took = state.took if state.ended else (now - state.began if state.began is not None else None)
        table.add_row(state.name, state.values, state.status, f"{state.step}/{state.total}", state.value or "-",
                      "-" if took is None else duration(took))
    return table


def overall_bar(progress: SweepProgress, states: list[TrialState]) -> Any:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    made, total = progress.steps(states)
    eta = progress.eta_s(states)
    ended = sum(state.ended for state in states)
    line = Table.grid(padding=(0, 1))
    line.add_row(ProgressBar(total=max(total, 1), completed=made, width=24),
                 f"{made}/{total} steps, {ended}/{len(states)} trials, ETA {'?' if eta is None else duration(eta)}")
    return line


@contextlib.contextmanager
def sweep_display(quiet: bool, verbose: bool) -> Iterator[LiveTrials | None]:
    """The sweep's console for the block: the display to hand the flow (None: plain lines), trial lines hidden
    unless ``verbose``."""
    if not verbose:
        hide_trial_lines()
    if quiet or not is_terminal():
        yield None
        return
    live = LiveTrials()
    with live.showing():
        yield live


def ranking_table(name: str, rows: list[dict[str, Any]]) -> Any:
    """The ranked trials (``results.json``'s rows) as a rich table, with results.md's columns; when every trial
    is ranked by the same monitor, it heads the value column instead of filling a column of its own."""
    from rich import box
    from rich.table import Table

    monitors = {row["monitor"] for row in rows if row["monitor"]}
    merged = RESULT_COLUMNS.index("monitor") if len(monitors) == 1 else None
    table = Table(title=f"Sweep {name}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, collapse_padding=True, header_style="bold")
    for index, column in enumerate(RESULT_COLUMNS):
        if index != merged:  # only the values wrap: every other cell stays whole at 80 columns
            heading = next(iter(monitors)) if merged is not None and column == "value" else column
            table.add_column(heading, no_wrap=column != "values")
    for row in rows:
        table.add_row(*[cell for index, cell in enumerate(result_cells(row)) if index != merged])
    return table


def print_ranking(sweep: Sweep) -> None:
    """The ranked trials from the sweep's results.json (written once the trials ended) as a table, on stdout."""
    from rich.console import Console

    from flowerkit.run.runs import read_json_or_none

    results = read_json_or_none(sweep.layout.results)
    if isinstance(results, dict) and results.get("trials"):
        Console(highlight=False).print(ranking_table(sweep.name, results["trials"]))
