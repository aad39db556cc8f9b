"""Send one run to an MLflow server from a background thread, so a down or slow server never stalls a run.

Calls from the run only append to a buffer or a queue; one worker thread talks to the server. Metrics are
sent in batches every ``FLUSH_INTERVAL_S`` (and before any other job, so order holds). The first request
that fails turns the sink off for the rest of the run: later jobs are counted as not sent instead of each
waiting out its own timeout, and ``flowerkit runs sync-mlflow`` re-sends them from the run directory.

Re-sending is idempotent: a metric value is skipped when the run already holds that key at that step (a
resumed run re-logs the steps after its last checkpoint, and a sync re-sends everything).

A live run first probes the server (``probe``: one HTTP request, ``PROBE_TIMEOUT_S`` at most): a server that is
down, or that accepts connections and never answers, turns the sink off before it starts, so the run waits
neither for the open nor, at its end, for an open that never came; MLflow itself is then not even imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from flowerkit.tracking.run_data import MODEL_TAG, PARENT_TAG, Point, metric_key, now_ms, per_class_points

log = logging.getLogger("flowerkit.tracking")

FLUSH_INTERVAL_S = 2.0
# A live run's probe of the server: a healthy one answers in milliseconds, even across a continent. Without it,
# a server that accepts connections and never answers held a tiny run 7-7.5 s (the open's wait, the wait at
# the end for that open, and MLflow's import); with it, about the probe's limit.
PROBE_TIMEOUT_S = 1.0
UNOPENED_CLOSE_WAIT_S = 2.0  # at the end of a run whose MLflow run never opened
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch request
# MLflow's defaults (120 s timeout, 7 retries with backoff) would let one request hang for many minutes, and it
# prints "View run ... at: URL" on stdout whenever a run ends (the record and flowerkit's log line say where the
# run is, once); a user's own settings of these variables win.
ENV_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def set_mlflow_defaults() -> None:
    """``ENV_DEFAULTS`` where the environment does not set them, before MLflow reads them."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


# Loggers that repeat, per retried request, what the sink reports once: urllib3's "Retrying (Retry(total=...))"
# and MLflow's own request warnings.
NOISY_LOGGERS = ("urllib3.connectionpool", "mlflow.utils.rest_utils", "mlflow.utils.request_utils",
                 "mlflow.tracking._tracking_service.client")
_quiet = threading.local()


class _TrackerNoise(logging.Filter):
    """Drops warnings (and below) logged while this thread talks to the tracking server for flowerkit: the
    sink turns the first failure into one warning of its own, and a user's other MLflow use stays as loud."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING or not getattr(_quiet, "on", False)


_NOISE_FILTER = _TrackerNoise()


@contextlib.contextmanager
def quiet_requests() -> Iterator[None]:
    """In this thread, silence the per-request retry noise of urllib3 and MLflow (see ``_TrackerNoise``)."""
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _NOISE_FILTER not in logger.filters:
            logger.addFilter(_NOISE_FILTER)
    before, _quiet.on = getattr(_quiet, "on", False), True
    try:
        yield
    finally:
        _quiet.on = before


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


def configured_tracking_uri() -> str:
    """MLflow's tracking URI as ``mlflow.get_tracking_uri()`` would say it, without importing MLflow where the
    environment names a server (``MLFLOW_TRACKING_URI``): MLflow's import costs a second or more, for nothing
    when the server turns out not to answer."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if "mlflow" not in sys.modules and uri.startswith(("http://", "https://")):
        return uri
    import mlflow

    return mlflow.get_tracking_uri()  # set_tracking_uri, the environment, or MLflow's local default


def probe(uri: str, timeout_s: float) -> str | None:
    """None when an HTTP server answers at ``uri`` (any status: a proxy's 404, a 401 for credentials, and TLS
    trouble are MLflow's to report), else why not, in at most about ``timeout_s``. Other tracking URIs (a local
    store, databricks) are not probed."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests  # MLflow's own HTTP client: the same proxies from the environment

    outcome: list[str | None] = []

    def ask() -> None:
        with quiet_requests():
            try:
                requests.get(uri.rstrip("/") + "/health", timeout=(timeout_s, timeout_s), allow_redirects=False)
                outcome.append(None)
            except requests.Timeout:  # before ConnectionError: a connect timeout is both
                outcome.append(f"the server did not answer within {timeout_s:g} s")
            except requests.exceptions.SSLError:
                outcome.append(None)
            except requests.ConnectionError as exc:  # refused, unresolvable, reset
                outcome.append(describe(exc))
            except Exception:  # noqa: BLE001 - something answered, oddly: the real requests will say what
                outcome.append(None)

    # A thread, so that a name lookup (which no socket timeout bounds) cannot hold the run either.
    asking = threading.Thread(target=ask, name="flowerkit-mlflow-probe", daemon=True)
    asking.start()
    asking.join(timeout_s)
    return outcome[0] if outcome else f"the server did not answer within {timeout_s:g} s"


def public_uri(uri: str) -> str:
    """The tracking URI without credentials, for the record and messages."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


def describe(exc: BaseException, limit: int = 200) -> str:
    """One short line: MLflow's messages embed whole urllib3 reprs; a refused or unresolvable address is said
    as such."""
    errno = _ERRNO.search(str(exc))
    if errno and ("NewConnectionError" in str(exc) or "NameResolutionError" in str(exc)):
        return f"no server answers ({errno.group(1).strip()})"
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


class MlflowSink:
    """One MLflow run, fed from any thread; implements ``flowerkit.artifacts.sinks.ScalarSink``."""

    def __init__(self, experiment: str, run_name: str, run_id: str | None = None,
                 tracking_uri: str | None = None) -> None:
        set_mlflow_defaults()
        if tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(tracking_uri)  # log_model uses the fluent API, which reads the global URI
        self.tracking_uri = configured_tracking_uri()
        self.experiment, self.run_name, self.run_id = experiment, run_name, run_id
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.failure: str | None = None
        self.not_sent: Counter[str] = Counter()
        self.model_logged = False
        self._client = None
        self._seen: set[tuple[str, int]] = set()  # (key, step) the server already holds
        self._pending: list[Point] = []
        self._pending_lock = threading.Lock()
        self._jobs: queue.Queue = queue.Queue()
        self._opened = threading.Event()
        # Who says the run opened: ``open``'s caller while it still waits, else the worker (``on_open``); decided
        # under this lock, so the line is said once.
        self._open_lock = threading.Lock()
        self._caller_waits = True
        self.on_open: Callable[[], None] | None = None  # called from the worker once a late open succeeded
        self._thread = threading.Thread(target=self._work, name="flowerkit-mlflow", daemon=True)

    # --- called by the run: never blocks longer than asked, never raises --------------------------------
    def open(self, params: dict[str, str], tags: dict[str, str], wait_s: float, probe_s: float | None = None) -> bool:
        """Create (or reopen) the MLflow run; wait at most ``wait_s`` for the server. True when it is open.

        ``probe_s``: first ask whether the server answers at all, for at most that long (``probe``); when it
        does not, the sink is off from the start (one warning) and its thread never starts."""
        self.parent_run_id = tags.get(PARENT_TAG)
        unreachable = probe(self.tracking_uri, probe_s) if probe_s is not None else None
        if unreachable is not None:
            self.not_sent["open"] += 1
            self._fail(f"open: {unreachable}")
            return False
        self._thread.start()
        self._jobs.put(("open", lambda: self._open(params, tags), 1))
        self._opened.wait(wait_s)
        with self._open_lock:
            self._caller_waits = False
            return self._opened.is_set() and self.run_id is not None and self.failure is None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.add_points([Point(metric_key(tag), float(v), step, now_ms()) for tag, v in values.items()])

    def per_class(self, step: int, rows: list[dict[str, Any]], prefix: str) -> None:
        self.add_points(per_class_points(step, rows, prefix, now_ms()))

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.submit("image", lambda: self._client.log_image(self.run_id, pixels, artifact_file=f"{tag}.png"))

    def add_points(self, points: list[Point]) -> None:
        with self._pending_lock:
            if self._never_started():  # counted, not kept: nothing will send them in this run
                self.not_sent["metrics"] += len(points)
                return
            self._pending.extend(points)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.submit("tags", lambda: [self._client.set_tag(self.run_id, k, v) for k, v in tags.items()])

    def log_artifact(self, path: Path, folder: str | None) -> None:
        self.submit(f"artifact {Path(path).name}", lambda: self._client.log_artifact(self.run_id, str(path), folder))

    def log_model(self, checkpoint: Path) -> None:
        self.submit("model", lambda: self._log_model(checkpoint))

    def submit(self, what: str, job: Callable[[], Any]) -> None:
        if self._never_started():
            self.not_sent[what] += 1
            return
        self._jobs.put((what, job, 1))

    def close(self, status: str, wait_s: float) -> dict[str, Any]:
        """Send what is queued, end the MLflow run with ``status``; give up after ``wait_s``. Returns the report."""
        self.submit("run status", lambda: self._client.set_terminated(self.run_id, status))
        if self._never_started():  # the probe found no server: nothing to wait for
            return self.report()
        self._jobs.put(None)
        if not self._opened.is_set():
            # The server had the whole run to open the MLflow run and did not: waiting longer only holds the
            # finished run (a server that accepts connections and never answers held a tiny run 25 s).
            self._thread.join(min(wait_s, UNOPENED_CLOSE_WAIT_S))
            if self._thread.is_alive():
                self._give_up("the server did not answer, so no MLflow run was opened")
            return self.report()
        self._thread.join(wait_s)
        if self._thread.is_alive():
            self._give_up(f"the server did not take everything within {wait_s:.0f} s")
        return self.report()

    def _never_started(self) -> bool:
        """Off before its thread started (the probe found no server): no other thread touches the counts."""
        return self.failure is not None and self._thread.ident is None

    def report(self) -> dict[str, Any]:
        """The record's ``mlflow`` entry."""
        unsent = [f"{n} metric values" if what == "metrics" else what if n == 1 else f"{what} (x{n})"
                  for what, n in sorted(self.not_sent.items())]
        return {"run_id": self.run_id, "experiment": self.experiment, "experiment_id": self.experiment_id,
                "tracking_uri": public_uri(self.tracking_uri), "url": self.url(),
                "complete": self.failure is None and not unsent, "error": self.failure, "not_sent": unsent,
                "parent_run_id": self.parent_run_id}

    def url(self) -> str | None:
        uri = public_uri(self.tracking_uri).rstrip("/")
        if not (uri.startswith(("http://", "https://")) and self.run_id and self.experiment_id):
            return None
        return f"{uri}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    # --- the worker thread ---------------------------------------------------------------------------------
    def _work(self) -> None:
        with quiet_requests():
            self._work_quietly()

    def _work_quietly(self) -> None:
        while True:
            try:
                item = self._jobs.get(timeout=FLUSH_INTERVAL_S)
            except queue.Empty:
                self._flush()
                continue
            self._flush()  # metrics logged before a job go out before it
            if item is None:
                return
            what, job, count = item
            opened = self._run(what, job, count)
            if what == "open":
                with self._open_lock:
                    self._opened.set()
                    late = not self._caller_waits and self.on_open is not None
                if opened and late:
                    self._announce()

    def _announce(self) -> None:
        try:
            self.on_open()
        except Exception as exc:  # a record write that failed: the run's own writes will say why
            log.debug("MLflow run opened, but could not be recorded: %s", exc)

    def _run(self, what: str, job: Callable[[], Any], count: int) -> bool:
        if self.failure is not None:
            self.not_sent[what] += count
            return False
        try:
            job()
            return True
        except Exception as exc:  # any MLflow or network error: stop sending, never disturb the run
            self.not_sent[what] += count
            self._fail(f"{what}: {describe(exc)}")
            return False

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            # The one warning of an outage: every later request is counted, not tried (see the module doc).
            log.warning("MLflow tracking of %s at %s stopped (%s); the run goes on, and `flowerkit runs "
                        "sync-mlflow %s` sends the rest once the server is reachable", self.run_name,
                        public_uri(self.tracking_uri), reason, self.run_name)

    def _give_up(self, reason: str) -> None:
        self._fail(reason)
        with self._pending_lock:
            if self._pending:
                self.not_sent["metrics"] += len(self._pending)
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.not_sent[item[0]] += item[2]

    def _flush(self) -> None:
        if self.run_id is None and self.failure is None:
            return  # not open yet: keep buffering
        with self._pending_lock:
            points, self._pending = self._pending, []
        fresh = [p for p in points if (p.key, p.step) not in self._seen]
        if fresh:
            self._run("metrics", lambda: self._send_points(fresh), len(fresh))

    def _send_points(self, points: list[Point]) -> None:
        from mlflow.entities import Metric

        for start in range(0, len(points), MAX_BATCH):
            chunk = points[start:start + MAX_BATCH]
            self._client.log_batch(self.run_id, metrics=[Metric(p.key, p.value, p.timestamp_ms, p.step)
                                                         for p in chunk])
            self._seen.update((p.key, p.step) for p in chunk)

    def _open(self, params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param, RunTag

        self._client = MlflowClient(self.tracking_uri)
        self.experiment_id = self._experiment_id()
        run = self._existing_run()
        if run is None:
            run = self._client.create_run(self.experiment_id, run_name=self.run_name)
        else:
            self._client.update_run(run.info.run_id, status="RUNNING")
            self._seen = self._logged_steps(run)
            self.model_logged = run.data.tags.get(MODEL_TAG) == "true"
        self.run_id = run.info.run_id
        self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()],
                               tags=[RunTag(k, v) for k, v in tags.items()])

    def _experiment_id(self) -> str:
        found = self._client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self._client.create_experiment(self.experiment)
        except Exception:  # created meanwhile by another run
            found = self._client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return found.experiment_id

    def _existing_run(self):
        """The run to continue (``--resume``, sync), or None when there is none on this server."""
        if not self.run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self._client.get_run(self.run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                log.info("MLflow run %s is not on %s: starting a new one", self.run_id, self.tracking_uri)
                return None
            raise
        return run if run.info.lifecycle_stage == "active" else None

    def _logged_steps(self, run) -> set[tuple[str, int]]:
        return {(key, m.step) for key in run.data.metrics
                for m in self._client.get_metric_history(run.info.run_id, key)}

    def _log_model(self, checkpoint: Path) -> None:
        if self.model_logged:
            return
        from flowerkit.tracking.model import log_model

        log_model(self._client, self.run_id, checkpoint)
        self._client.set_tag(self.run_id, MODEL_TAG, "true")
        self.model_logged = True
