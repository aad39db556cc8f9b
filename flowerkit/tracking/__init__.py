"""Optional experiment tracking: one more sink of what a run already writes to its own directory.

A flow opens a tracker around its body (``tracked_run``); ``ScalarLog`` finds the run's tracker with
``sink_for(run_dir)`` and fans every scalar out to it with TensorBoard's step numbers, so the trainer and the
export code know nothing of MLflow. The run directory stays the source of truth: whatever a tracker fails to
send, ``flowerkit runs sync-mlflow RUN`` re-sends from it.

This module imports nothing heavy; MLflow is imported only when a run asks for it (``--tracker mlflow``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from flowerkit.config import RunConfig


class ScalarSink(Protocol):
    """What ``ScalarLog`` sends a tracker: the values it writes to TensorBoard, under the same tags and steps."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def per_class(self, step: int, rows: list[dict[str, Any]], prefix: str) -> None: ...

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None: ...


MLFLOW_MISSING = ("MLflow is not installed in this environment. Install the extra with "
                  "`pip install 'flowerkit[mlflow]'` (or `pip install mlflow==3.17.2`)")


def mlflow_installed() -> bool:
    """Whether MLflow can be imported, found without importing it (that takes seconds)."""
    return importlib.util.find_spec("mlflow") is not None


def mlflow_line(record: dict[str, Any]) -> str | None:
    """Where the run is in MLflow (the UI link, else the run id) and whether everything arrived."""
    entry = record.get("mlflow")
    if not isinstance(entry, dict) or not (entry.get("url") or entry.get("run_id")):
        return None
    state = {True: "", None: " (logging)"}.get(entry.get("complete"), " (incomplete: `flowerkit runs sync-mlflow`)")
    return f"MLflow: {entry.get('url') or entry.get('run_id')}{state}"


_sinks: dict[Path, ScalarSink] = {}
_lock = threading.Lock()


def _key(run_dir: Path) -> Path:
    return Path(run_dir).resolve()


def sink_for(run_dir: Path) -> ScalarSink | None:
    """The tracker a flow opened for ``run_dir`` in this process, or None (no tracker, or another process)."""
    with _lock:
        return _sinks.get(_key(run_dir))


def _register(run_dir: Path, sink: ScalarSink | None) -> None:
    with _lock:
        if sink is None:
            _sinks.pop(_key(run_dir), None)
        else:
            _sinks[_key(run_dir)] = sink


@contextlib.contextmanager
def tracked_run(config: RunConfig, flow: str) -> Iterator[None]:
    """Send the run to its tracker while the body runs; a tracker problem never fails or blocks the run.

    Enter after the run directory is claimed (the record and ``config_resolved.yaml`` exist); on a clean exit
    the run's artifacts (and, for a training run, the model) are sent too, and the record's ``mlflow`` entry
    says whether everything arrived.
    """
    if config.tracker != "mlflow":
        yield
        return
    from flowerkit.tracking.live import LiveMlflowRun

    live = LiveMlflowRun.start(config.layout, flow, config.mlflow_experiment)
    _register(config.layout.run_dir, live.sink)
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        _register(config.layout.run_dir, None)
        live.finish(succeeded)
