"""Rate-limit per-step side effects (run-record progress, Prefect progress) without ever dropping the last."""

from __future__ import annotations

import time
from collections.abc import Callable


class Throttle:
    """``ready(step, total)`` is true at most every ``min_interval_s`` seconds, and always at the last step."""

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last = clock()

    def ready(self, step: int, total: int) -> bool:
        now = self._clock()
        if step < total and now - self._last < self.min_interval_s:
            return False
        self._last = now
        return True
