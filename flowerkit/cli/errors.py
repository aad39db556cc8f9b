"""One place that turns exceptions into a clear paragraph and the documented exit code."""

from __future__ import annotations

import contextlib
import logging
import sys
import textwrap
import traceback
from collections.abc import Iterator

import typer

from flowerkit.errors import FlowerkitError


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
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_HideUserErrorTracebacks())


@contextlib.contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """Run a command body: FlowerkitError -> its exit code; anything else -> exit 1; tracebacks with --debug."""
    try:
        yield
    except FlowerkitError as exc:
        if debug:
            traceback.print_exc()
        print_error(exc.message)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print_error("Interrupted. A run that had started is marked failed in its run_record.json; run the same "
                    "command with --resume to continue it from its last checkpoint.")
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a CLI
        if debug:
            traceback.print_exc()
        print_error(f"Unexpected error: {type(exc).__name__}: {exc}. Run again with --debug for the traceback, "
                    "and report it if it persists.")
        raise typer.Exit(1) from None
