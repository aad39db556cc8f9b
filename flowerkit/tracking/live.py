"""An MLflow run that follows a flowerkit run live: opened when the run starts, completed when it ends."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from flowerkit.artifacts.record import read_record, update_record
from flowerkit.run.layout import RunLayout
from flowerkit.tracking import run_data
from flowerkit.tracking.mlflow_sink import PROBE_TIMEOUT_S, MlflowSink

log = logging.getLogger("flowerkit.tracking")

# How long a run start waits for the server before training anyway: a healthy server opens the run in well
# under a second; a slow or silent one is not waited for (the sink buffers metrics until the run is open).
OPEN_WAIT_S = 2.0
FINISH_WAIT_S = 120.0  # artifacts and the model, after a successful run
FAILED_WAIT_S = 15.0  # after a failure or Ctrl-C: only the buffered metrics and the status


_report_lock = threading.Lock()  # the run's thread and the sink's may both record the MLflow run at its start


def _record_progress(layout: RunLayout, sink: MlflowSink) -> None:
    """The record's ``mlflow`` entry while the run goes on (``complete`` None: still logging); the sink's state
    is read under the lock, so a late open's run id is never overwritten by an earlier "not open yet"."""
    with _report_lock:
        update_record(layout.run_dir, mlflow=sink.report() | {"complete": None})


@dataclass
class LiveMlflowRun:
    layout: RunLayout
    flow: str
    sink: MlflowSink | None

    @classmethod
    def start(cls, layout: RunLayout, flow: str, experiment: str) -> LiveMlflowRun:
        """Open (or, on ``--resume``, reopen) the run's MLflow run; a problem is a warning, never an error."""
        record = read_record(layout.run_dir)
        previous = (record.get("mlflow") or {}).get("run_id")
        try:
            sink = MlflowSink(experiment, layout.name, run_id=previous)
            sink.on_open = lambda: cls._opened(layout, sink)  # a server slower than OPEN_WAIT_S
            # A server that does not answer the probe costs the run only the probe (mlflow_sink.probe).
            opened = sink.open(run_data.params(layout), run_data.tags(layout, record), OPEN_WAIT_S, PROBE_TIMEOUT_S)
        except Exception as exc:  # e.g. a malformed MLFLOW_TRACKING_URI: the run itself is fine
            log.warning("MLflow tracking is off for this run: %s: %s", type(exc).__name__, exc)
            update_record(layout.run_dir, mlflow={"run_id": previous, "complete": False,
                                                  "error": f"{type(exc).__name__}: {exc}", "not_sent": ["all"]})
            return cls(layout, flow, None)
        if opened:  # else the sink's thread says it, once, when the run opens late (never both)
            cls._opened(layout, sink)
        else:
            if sink.failure is None:
                log.info("MLflow run opening in the background (%s has not answered yet); training goes on",
                         sink.tracking_uri)
            _record_progress(layout, sink)
        return cls(layout, flow, sink)

    @staticmethod
    def _opened(layout: RunLayout, sink: MlflowSink) -> None:
        """Say where the MLflow run is, in the log and the record (from the sink's thread when it came late)."""
        log.info("MLflow run %s%s", sink.run_id, f" ({sink.url()})" if sink.url() else "")
        _record_progress(layout, sink)

    def finish(self, succeeded: bool) -> None:
        """Send the run's artifacts (and the model of a training run), end the MLflow run, record the outcome."""
        if self.sink is None:
            return
        try:
            report = self._finish(succeeded)
        except Exception as exc:  # never let tracking turn a finished run into a failed one
            log.warning("MLflow tracking could not finish: %s: %s", type(exc).__name__, exc)
            report = self.sink.report() | {"complete": False, "error": f"{type(exc).__name__}: {exc}"}
        update_record(self.layout.run_dir, mlflow=report)
        if not report["complete"]:
            # The sink warned when it stopped sending; this line adds the command that sends the rest, and is
            # a warning of its own only when nothing was said yet.
            level = logging.INFO if self.sink.failure is not None else logging.WARNING
            log.log(level, "MLflow logging of run %s is incomplete (%s; not sent: %s). Once the server is reachable, "
                        "`flowerkit runs sync-mlflow %s --output-dir %s` sends the rest.", self.layout.name,
                        report["error"], ", ".join(report["not_sent"]) or "-", self.layout.name,
                        self.layout.output_dir)

    def _finish(self, succeeded: bool) -> dict:
        sink, layout = self.sink, self.layout
        if not succeeded:
            return sink.close("FAILED", FAILED_WAIT_S)
        record = read_record(layout.run_dir)
        sink.set_tags(run_data.tags(layout, record))  # now with the stamp's git commit and the checkpoint
        for path, folder in run_data.artifacts(layout):
            sink.log_artifact(path, folder)
        if self.flow == "train" and layout.checkpoint.is_file():
            sink.log_model(layout.checkpoint)
        return sink.close("FINISHED", FINISH_WAIT_S)
