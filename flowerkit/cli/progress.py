"""The CLI's training progress: a live rich bar in a terminal, periodic plain lines otherwise, none with --quiet.

``progress_display`` gives the display that hears the trainer's per-step ``Progress`` reports; the CLI passes
it down to the train task, which runs in this process when the CLI starts the flow.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from flowerkit.engine.progress import Listener, Progress, StepRate, describe, duration
from flowerkit.throttle import Throttle

PLAIN_INTERVAL_S = 10.0  # a log file or CI output gets a line this often, and the last step


class PlainProgress:
    """One line per ``interval_s`` to ``stream``, for output that is not a terminal, and one at every new
    evaluation (a log reader wants each validation result, however short the run)."""

    def __init__(self, stream: TextIO, interval_s: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream, self._rate, self._throttle = stream, StepRate(clock), Throttle(interval_s, clock)
        self._eval_step: int | None = None

    def __call__(self, progress: Progress) -> None:
        eta_s = self._rate.eta_s(progress)
        eval_step = (progress.last_eval or {}).get("step")
        new_eval, self._eval_step = eval_step != self._eval_step, eval_step
        if self._throttle.ready(progress.step, progress.total) or new_eval:
            print(f"progress: {describe(progress, eta_s)}", file=self._stream, flush=True)


class LiveProgress:
    """A rich progress bar with steps, images per second, ETA and the latest evaluation."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn

        self._rate = StepRate(time.monotonic)
        # Short columns: steps, rate, ETA and the last eval fit one 80-column line.
        self.bar = Bar(BarColumn(bar_width=16), MofNCompleteColumn(),
                       TextColumn("{task.fields[speed]} ETA {task.fields[eta]} {task.fields[last_eval]}"),
                       # Log records are printed through this console too (``showing``): as the text
                       # Prefect's handler made, never read as markup ("load_subset[train]" is a task name).
                       console=Console(file=stream, markup=False, emoji=False, highlight=False))
        self._task = self.bar.add_task("train", total=None, speed="", eta="?", last_eval="")

    def __call__(self, progress: Progress) -> None:
        ev = progress.last_eval
        self.bar.update(self._task, completed=progress.step, total=progress.total,
                        speed=f"{progress.images_per_second:.0f} img/s", eta=duration(self._rate.eta_s(progress)),
                        last_eval=f"acc {ev['accuracy']:.3f} @{ev['step']}" if ev else "")

    @contextlib.contextmanager
    def showing(self) -> Iterator[None]:
        """Run the bar; log records printed meanwhile go above it instead of breaking it."""
        with self.bar, logs_through(self.bar.console):
            yield


@contextlib.contextmanager
def logs_through(console) -> Iterator[None]:
    # Prefect's console handlers print with a rich Console of their own, bound to the stderr of the time
    # they were made; printing through the bar's console instead puts each record above the live bar.
    # Prefect makes those handlers when it is first imported, which the CLI does only when it starts the
    # flow, after the bar: import it now, or the handlers made later print onto the bar's row.
    import prefect.main  # noqa: F401 - configures Prefect's logging (and flowerkit's, one of its extra loggers)

    from flowerkit.cli.quiet import console_handlers

    handlers = console_handlers()
    saved = [(handler, handler.console) for handler in handlers]
    for handler, _ in saved:
        handler.console = console
    try:
        yield
    finally:
        for handler, original in saved:
            handler.console = original


@contextlib.contextmanager
def progress_display(quiet: bool, stream: TextIO | None = None) -> Iterator[Listener | None]:
    """The display of training progress for the block, to pass to the run: live in a terminal, plain lines
    otherwise, None if quiet."""
    stream = stream or sys.stderr
    if quiet or not stream.isatty():
        yield None if quiet else PlainProgress(stream)
        return
    live = LiveProgress(stream)
    with live.showing():
        yield live
