"""What the trainer reports after each step, and what its listeners share.

The trainer calls ``on_progress(Progress(...))``: ``RecordProgress`` writes it into the run record (what other
processes and front ends read), then hands it on to the callback it was given: the train task's, which feeds
the Prefect progress artifact and the display its caller passed down (the CLI's live progress, or none). The
library itself draws nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowerkit.artifacts.record import set_progress
from flowerkit.throttle import Throttle

RECORD_PROGRESS_INTERVAL_S = 0.5  # a read-modify-write of run_record.json per step is needless I/O


@dataclass(frozen=True)
class Progress:
    """One finished training step: where the run is, how fast it goes, and its latest evaluation."""

    step: int
    total: int
    images_per_second: float
    last_eval: dict[str, Any] | None = None  # {"step", "accuracy", "loss"} of the latest evaluation, if any

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


Listener = Callable[[Progress], None]


class StepRate:
    """Steps per second since the first report a listener saw (a resumed run starts counting there)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._first: tuple[int, float] | None = None

    def eta_s(self, progress: Progress) -> float | None:
        """Seconds left at the rate so far; None until two steps have been seen."""
        now = self._clock()
        if self._first is None:
            self._first = (progress.step, now)
            return None
        steps, elapsed = progress.step - self._first[0], now - self._first[1]
        if steps <= 0 or elapsed <= 0:
            return None
        return (progress.total - progress.step) * elapsed / steps


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def last_eval_text(progress: Progress) -> str:
    ev = progress.last_eval
    return "no eval yet" if not ev else f"eval at step {ev['step']}: acc {ev['accuracy']:.3f}, loss {ev['loss']:.4f}"


def describe(progress: Progress, eta_s: float | None) -> str:
    """One line: ``step 50/1000 (5%), 120.3 img/s, ETA 2:10, eval at step 40: acc 0.250, loss 4.1234``."""
    return (f"step {progress.step}/{progress.total} ({100 * progress.fraction:.0f}%), "
            f"{progress.images_per_second:.1f} img/s, ETA {duration(eta_s)}, {last_eval_text(progress)}")


class RecordProgress:
    """The writing process's progress into the run record (throttled): what ``runs list`` and the dashboard
    read while a run trains; then ``then`` hears every report (the flow's displays).

    ``detail`` adds the rate and the latest evaluation, for a launching process that shows the progress of
    training in its worker processes (it hears them only through the record)."""

    def __init__(self, run_dir: Path, then: Listener | None = None, detail: bool = False) -> None:
        self.run_dir, self.then, self.detail = run_dir, then, detail
        self.throttle = Throttle(RECORD_PROGRESS_INTERVAL_S)

    def __call__(self, report: Progress) -> None:
        if self.throttle.ready(report.step, report.total):
            extra = {"images_per_second": report.images_per_second, "last_eval": report.last_eval} if self.detail else {}
            set_progress(self.run_dir, report.step, report.total, **extra)
        if self.then is not None:
            self.then(report)
