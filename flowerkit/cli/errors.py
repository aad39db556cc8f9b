"""One place that turns exceptions into a clear paragraph and the documented exit code."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import sys
import textwrap
import threading
import traceback
from collections.abc import Iterator

import typer

from flowerkit.errors import FlowerkitError, Terminated, is_termination


def print_error(message: str) -> None:
    width = 100
    # Paths and flags stay whole, so they can be copied from the message.
    body = "\n".join(textwrap.fill(part, width, break_on_hyphens=False, break_long_words=False)
                     for part in message.split("\n"))
    print(f"Error: {body}" if not body.startswith("Error") else body, file=sys.stderr)


class _HideUserErrorTracebacks(logging.Filter):
    """Prefect logs a failed flow's traceback; for a user's mistake, the one paragraph we print is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FlowerkitError):
            record.exc_info, record.exc_text = None, None
        return True


def hide_user_error_tracebacks() -> None:
    for name in PREFECT_RUN_LOGGERS:
        logging.getLogger(name).addFilter(_HideUserErrorTracebacks())


PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
# How Prefect's engines announce the end of a run that did not complete (Prefect 3: flow_engine.py,
# task_engine.py), and how it words a crash that was a signal (states.exception_to_crashed_state).
RUN_END_LINES = ("Crash detected! ", "Finished in state Crashed(", "Finished in state Failed(",
                 "Encountered exception during execution")
SIGNAL_CRASHES = ("Execution was aborted by an interrupt signal.", "Execution was aborted by a termination signal.")
# flows/common.py (run_lifecycle) logs every failed run with this format, for run.log and a deployment's log.
RUN_FAILED_FORMAT = "run %s failed: %s"
_FAILED_WITH = re.compile(r"encountered an exception:? (\w+): ")


def _flowerkit_error_names() -> set[str]:
    names, todo = set(), [FlowerkitError]
    while todo:
        kind = todo.pop()
        names.add(kind.__name__)
        todo.extend(kind.__subclasses__())
    return names


class _RunEndRepeats(logging.Filter):
    """For the console's handlers: drop the lines that say again what the CLI's one paragraph says at the end.

    A stopped or failed train, eval or predict run was announced three to five times on the terminal before
    the paragraph: Prefect's "Crash detected!" and "Finished in state Crashed(...)" for Ctrl-C and SIGTERM, its
    "Finished in state Failed(...)" and "Encountered exception during execution" for each run level of a
    flowerkit error (a diverged run's message came four times), and flowerkit's own "run NAME failed" line.
    Only the console loses them: run.log and Prefect's API log (the UI) keep every line, and the flow and task
    runs end in the same states. An unexpected error's lines stay (their traceback is all there is to report)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "flowerkit" and record.msg == RUN_FAILED_FORMAT:
            return False
        if record.name not in PREFECT_RUN_LOGGERS:
            return True
        text = record.getMessage()
        if not text.startswith(RUN_END_LINES):
            return True
        if any(crash in text for crash in SIGNAL_CRASHES):
            return False
        raised = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if isinstance(raised, FlowerkitError):
            return False
        named = _FAILED_WITH.search(text)
        return not (named and named.group(1) in _flowerkit_error_names())


_RUN_END_REPEATS = _RunEndRepeats()


def hide_repeated_run_errors() -> None:
    """For the rest of this process (a train, eval or predict command, which ends with its run): the console
    shows a run's failure or stop once, as the CLI's paragraph (``_RunEndRepeats``). Not for a sweep, whose
    trials fail without ending the command."""
    import prefect.main  # noqa: F401 - configures Prefect's logging, which makes the console handlers

    from flowerkit.cli.quiet import console_handlers

    for handler in console_handlers():
        if _RUN_END_REPEATS not in handler.filters:
            handler.addFilter(_RUN_END_REPEATS)


RESUME_HINT = "run the same command with --resume to continue it from its last checkpoint"


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``Terminated`` (a KeyboardInterrupt) instead of killing the process
    on the spot: the run is marked failed with the resume hint, exactly as for Ctrl-C. Prefect's flow engine
    swaps in its own handler during a flow run and, once it has recorded the crash, re-sends the signal to
    this one."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextlib.contextmanager
def user_errors(debug: bool = False, resume_hint: str = RESUME_HINT) -> Iterator[None]:
    """Run a command body: FlowerkitError -> its exit code; anything else -> exit 1; tracebacks with --debug.

    ``resume_hint`` says how this command continues what an interrupt (Ctrl-C: 130, SIGTERM: 143) stopped."""
    try:
        with sigterm_as_interrupt():
            yield
    except FlowerkitError as exc:
        if debug:
            traceback.print_exc()
        print_error(exc.message)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        if is_termination(exc):
            raise typer.Exit(_terminated(resume_hint)) from None
        print_error(f"Interrupted. A run that had started is marked failed in its run_record.json; {resume_hint}.")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a CLI
        if debug:
            traceback.print_exc()
        print_error(f"Unexpected error: {type(exc).__name__}: {exc}. Run again with --debug for the traceback, "
                    "and report it if it persists.")
        raise typer.Exit(1) from None
    except BaseException as exc:
        if not is_termination(exc):
            raise
        raise typer.Exit(_terminated(resume_hint)) from None


def _terminated(resume_hint: str) -> int:
    """The paragraph for SIGTERM; returns its exit code (143: 128 + 15, what a shell reports for it)."""
    print_error(f"Terminated (SIGTERM: a scheduler's or docker's stop, or a Prefect cancel). A run that had started "
                f"is marked failed in its run_record.json; {resume_hint}.")
    return Terminated.exit_code
