"""Optional experiment tracking: one more sink of what a run already writes to its own directory.

A flow opens a tracker around its body (``tracked_run``), which yields its sink
(``flowerkit.artifacts.sinks.ScalarSink``); the flow hands it to the tasks, and ``ScalarLog`` fans every scalar
out to it with TensorBoard's step numbers, so the trainer and the export code know nothing of MLflow. The run directory stays the source of truth: whatever
a tracker fails to send, ``flowerkit runs sync-mlflow RUN`` re-sends from it.

This module imports nothing heavy; MLflow is imported only when a run asks for it (``--tracker mlflow``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flowerkit.artifacts.sinks import ScalarSink

if TYPE_CHECKING:  # a config is handed in; the tracker sits above it
    from flowerkit.run.config import RunConfig


def mlflow_line(record: dict[str, Any]) -> str | None:
    """Where the run is in MLflow (the UI link, else the run id) and whether everything arrived."""
    entry = record.get("mlflow")
    if not isinstance(entry, dict) or not (entry.get("url") or entry.get("run_id")):
        return None
    state = {True: "", None: " (logging)"}.get(entry.get("complete"), " (incomplete: `flowerkit runs sync-mlflow`)")
    return f"MLflow: {entry.get('url') or entry.get('run_id')}{state}"


@contextlib.contextmanager
def tracked_run(config: RunConfig, flow: str) -> Iterator[ScalarSink | None]:
    """Send the run to its tracker while the body runs (it yields the tracker's sink, or None without one); a
    tracker problem never fails or blocks the run.

    Enter after the run directory is claimed (the record and ``config_resolved.yaml`` exist); on a clean exit
    the run's artifacts (and, for a training run, the model) are sent too, and the record's ``mlflow`` entry
    says whether everything arrived.
    """
    if config.tracker != "mlflow":
        yield None
        return
    from flowerkit.tracking.live import LiveMlflowRun

    live = LiveMlflowRun.start(config.layout, flow, config.mlflow_experiment)
    succeeded = False
    try:
        yield live.sink
        succeeded = True
    finally:
        live.finish(succeeded)
