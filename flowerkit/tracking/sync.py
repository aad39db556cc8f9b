"""``flowerkit runs sync-mlflow RUN``: send a finished run's params, metrics and artifacts from its directory;
``log_export``: send an ONNX export of a finished run (``flowerkit export --format onnx``) to its MLflow run.

Completes the MLflow run the record names (or creates one when there is none on the server); running it
again sends nothing twice (metrics are matched by key and step, artifacts overwrite themselves, the model is
logged once).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flowerkit.artifacts.record import read_record, update_record
from flowerkit.artifacts.scalars import confusion_pixels
from flowerkit.data.flowers102 import NUM_CLASSES
from flowerkit.errors import ConfigError, FlowerkitError, MissingInputError
from flowerkit.run.layout import RunLayout
from flowerkit.tracking import run_data

OPEN_WAIT_S = 60.0
SYNC_WAIT_S = 1800.0  # a large model upload is what takes long
FINISHED = ("complete", "failed")


def sync_run(run_dir: Path, experiment: str | None = None) -> dict[str, Any]:
    """Send the run to the MLflow server of MLFLOW_TRACKING_URI (else the one its record names); returns the
    record's new ``mlflow`` entry. Raises a FlowerkitError when the run is unfinished or the server fails."""
    from flowerkit.tracking.mlflow_sink import MlflowSink

    record = read_record(run_dir)
    layout = RunLayout.for_run(run_dir, record)
    if record.get("stage_status") not in FINISHED:
        raise ConfigError(f"Run '{layout.name}' is {record.get('stage_status')}: sync-mlflow sends finished runs "
                          "only. Wait for it to end (or --resume it), then sync again.")
    if not layout.config.is_file():
        raise MissingInputError(f"Run '{layout.name}' has no {layout.config.name}: there is nothing to send.")
    previous = record.get("mlflow") or {}
    experiment = (experiment or previous.get("experiment") or run_data.resolved_config(layout).get("mlflow_experiment")
                  or "flowerkit")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or previous.get("tracking_uri")
    sink = MlflowSink(experiment, layout.name, run_id=previous.get("run_id"), tracking_uri=uri)
    if not sink.open(run_data.params(layout), run_data.tags(layout, record), OPEN_WAIT_S):
        sink.close("FAILED", 1)
        raise MissingInputError(f"Cannot reach the MLflow server at {sink.report()['tracking_uri']} "
                                f"({sink.failure or 'no answer'}). Start it, or set MLFLOW_TRACKING_URI to the "
                                "server to use, and run sync-mlflow again.")
    _send(sink, layout, record)
    report = sink.close("FINISHED" if record["stage_status"] == "complete" else "FAILED", SYNC_WAIT_S)
    update_record(run_dir, mlflow=report)
    if not report["complete"]:
        raise FlowerkitError(f"MLflow sync of run '{layout.name}' is incomplete ({report['error']}; not sent: "
                             f"{', '.join(report['not_sent'])}). Running sync-mlflow again sends only what is missing.")
    return report


def _send(sink, layout: RunLayout, record: dict[str, Any]) -> None:
    sink.add_points(run_data.metric_points(layout))
    if layout.predictions.is_file():
        confusion = run_data.confusion_from_predictions(layout.predictions, NUM_CLASSES)
        sink.image("val/confusion_matrix", confusion_pixels(confusion), 0)
    for path, folder in run_data.artifacts(layout):
        sink.log_artifact(path, folder)
    if record.get("flow") == "train" and layout.checkpoint.is_file():
        sink.log_model(layout.checkpoint)


def log_export(run_dir: Path, onnx_bytes: bytes, name: str) -> str | None:
    """Log an ONNX export of a run into the MLflow run its record names, as the model ``name``; None when it
    names none, else the line that says what happened. A server that is down, or MLflow missing, is said, never
    raised: the exported file is what was asked for, and it is written."""
    from flowerkit.optional import MLFLOW
    from flowerkit.tracking.mlflow_sink import describe, public_uri, quiet_requests, set_mlflow_defaults
    from flowerkit.tracking.model import log_onnx_model

    entry = read_record(run_dir).get("mlflow") or {}
    run_id = entry.get("run_id") if isinstance(entry, dict) else None
    if not run_id:
        return None
    if not MLFLOW.installed():
        return f"Not logged to the run's MLflow run {run_id}: {MLFLOW.missing()}."
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or entry.get("tracking_uri")  # credentials live in the environment
    set_mlflow_defaults()
    try:
        mlflow.set_tracking_uri(uri)
        with quiet_requests():
            log_onnx_model(run_id, onnx_bytes, name)
    except Exception as exc:  # noqa: BLE001 - any MLflow or network error: the file is written all the same
        return f"Not logged to the run's MLflow run {run_id} at {public_uri(str(uri))}: {describe(exc)}."
    return f"Logged to the run's MLflow run as the onnx model {name}: {entry.get('url') or run_id}"
