"""Where a run's scalars go besides its own files: sinks registered per run directory.

``ScalarLog`` writes TensorBoard events and ``metrics.jsonl``, then fans the same values out to the sink that
is registered for its run directory (an experiment tracker, ``flowerkit.tracking``). The registry lives here,
below both, so the artifact writers know nothing of MLflow and the tracker registers itself from above.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class ScalarSink(Protocol):
    """What ``ScalarLog`` sends a tracker: the values it writes to TensorBoard, under the same tags and steps."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def per_class(self, step: int, rows: list[dict[str, Any]], prefix: str) -> None: ...

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None: ...


_sinks: dict[Path, ScalarSink] = {}
_lock = threading.Lock()


def _key(run_dir: Path) -> Path:
    return Path(run_dir).resolve()


def sink_for(run_dir: Path) -> ScalarSink | None:
    """The sink registered for ``run_dir`` in this process, or None (no tracker, or another process)."""
    with _lock:
        return _sinks.get(_key(run_dir))


@contextlib.contextmanager
def registered(run_dir: Path, sink: ScalarSink) -> Iterator[None]:
    """``sink`` receives ``run_dir``'s scalars while the block runs."""
    with _lock:
        _sinks[_key(run_dir)] = sink
    try:
        yield
    finally:
        with _lock:
            _sinks.pop(_key(run_dir), None)
