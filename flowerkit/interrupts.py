"""``held_interrupts``: Ctrl-C (SIGINT) and SIGTERM wait until a library call that takes locks has returned.

A signal's exception is raised in the main thread between any two bytecodes. Raised inside a library's
``with lock:`` (after the lock is taken, before the block is entered) it leaves the lock held for good, and the
cleanup that the exception starts then waits on that lock forever: a SIGTERM to a training run deadlocked in
TensorBoard's ``flush()`` behind the queue mutex its own ``add_scalar`` had leaked. Holding the signals for the
length of such a call, then delivering them to whichever handler was in place (the CLI's, Prefect's flow
engine's, Python's default), keeps every lock balanced and still stops the run at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def held_interrupts() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are noted, not acted on; at its end they are raised again."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are handled in the main thread only: nothing to hold here
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: caught.append(signum)) for sig in HELD}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(caught):  # each once, in the order they came
            signal.raise_signal(sig)
