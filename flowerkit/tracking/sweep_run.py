"""A sweep as a parent MLflow run: each trial's own MLflow run (its ``--tracker mlflow`` training) nests under it.

``open_sweep_run`` creates (or, when the same sweep runs again, reopens) the parent run in the trials'
experiment and exports its id as ``MLFLOW_PARENT_RUN_ID``. A trial's tracked run reads that variable
(``run_data.parent_run_id``) and sets MLflow's nesting tag ``mlflow.parentRunId``, whether it runs as a
subflow in this process or as a ``flowerkit train`` process started from it. Trials on a work pool run in a
worker's process: the variable must reach them through the flow run's environment (README, MLflow section).
``close_sweep_run`` logs the sweep's metrics on the parent (``trials``, ``trials_complete``, the best trial's
monitored value as ``best_<monitor>``) and the ranking (``results.md``, ``results.json``), and ends it.

Like a run's own tracking, the parent never fails a sweep: a server problem is one warning, and the trials
are then tracked as runs of their own. The parent's id is kept in the sweep's folder (``mlflow.json``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from flowerkit.artifacts.files import atomic_write_json
from flowerkit.sweep import Sweep
from flowerkit.tracking import run_data
from flowerkit.tracking.mlflow_sink import describe, public_uri, quiet_requests, set_mlflow_defaults

log = logging.getLogger("flowerkit.sweep")  # the sweep's own lines: its console shows them (cli/sweep_display.py)

PARENT_FILE = "mlflow.json"  # in OUTPUT_DIR/sweeps/NAME/: the parent run a re-run of the sweep reopens
SWEEP_TAG = "flowerkit.sweep"
BEST_TAG = "flowerkit.best_trial"


@dataclass
class SweepRun:
    """The open parent run of a sweep."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    previous_env: str | None  # MLFLOW_PARENT_RUN_ID before the sweep set it, restored on close

    def url(self) -> str | None:
        uri = public_uri(self.tracking_uri).rstrip("/")
        return f"{uri}/#/experiments/{self.experiment_id}/runs/{self.run_id}" if uri.startswith("http") else None


def tracked_experiment(sweep: Sweep) -> str | None:
    """The MLflow experiment of the sweep's trials, or None when none of them is tracked with MLflow."""
    experiments = [trial.config.mlflow_experiment for trial in sweep.trials if trial.config.tracker == "mlflow"]
    return experiments[0] if experiments else None


def open_sweep_run(sweep: Sweep, flow_run_id: str | None = None) -> SweepRun | None:
    """Open the sweep's parent run and make it the parent of the trials' runs; None when the trials are not
    tracked with MLflow or the server cannot be reached (one warning: the sweep goes on)."""
    experiment = tracked_experiment(sweep)
    if experiment is None:
        return None
    set_mlflow_defaults()  # as for a run: a down server must not hold the sweep for minutes
    try:
        with quiet_requests():
            parent = _open(sweep, experiment, flow_run_id)
    except Exception as exc:  # any MLflow or network error: the trials still run, tracked on their own
        log.warning("MLflow: sweep %s has no parent run (%s); its trials are tracked as runs of their own",
                    sweep.name, describe(exc))
        return None
    atomic_write_json(sweep.layout.sweep_dir / PARENT_FILE, {"run_id": parent.run_id,
                                                             "experiment_id": parent.experiment_id,
                                                             "tracking_uri": public_uri(parent.tracking_uri),
                                                             "url": parent.url()})
    os.environ[run_data.PARENT_ENV] = parent.run_id
    log.info("MLflow parent run of sweep %s: %s", sweep.name, parent.url() or parent.run_id)
    return parent


def close_sweep_run(parent: SweepRun | None, sweep: Sweep, rows: list[dict[str, Any]]) -> None:
    """Attach the ranked results to the parent run and end it: FINISHED when every trial completed."""
    if parent is None:
        return
    _restore_env(parent.previous_env)
    status = "FINISHED" if rows and all(row.get("status") == "complete" for row in rows) else "FAILED"
    try:
        with quiet_requests():
            _close(parent, sweep, rows, status)
    except Exception as exc:  # the trials' runs and the sweep's own files are complete either way
        log.warning("MLflow: could not attach the results of sweep %s to its parent run %s (%s)", sweep.name,
                    parent.run_id, describe(exc))


def trial_job_variables() -> dict[str, Any] | None:
    """Job variables that carry the open parent run to a trial submitted to a work pool (its worker's process
    does not see this one's environment): ``run_deployment(..., job_variables=trial_job_variables())``.
    None outside a tracked sweep, so the deployment's own job variables apply unchanged."""
    parent = os.environ.get(run_data.PARENT_ENV, "").strip()
    return {"env": {run_data.PARENT_ENV: parent}} if parent else None


def _open(sweep: Sweep, experiment: str, flow_run_id: str | None) -> SweepRun:
    import mlflow
    from mlflow import MlflowClient

    uri = mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    run_id = _reusable_run(client, sweep, experiment_id)
    if run_id is None:
        run_id = client.create_run(experiment_id, run_name=sweep.name).info.run_id
    else:
        client.update_run(run_id, status="RUNNING")
    tags = {SWEEP_TAG: sweep.name, "flowerkit.prefect_flow_run_id": flow_run_id,
            run_data.PREFECT_URL_TAG: run_data.prefect_flow_run_url(flow_run_id)}
    for key, value in tags.items():
        if value:
            client.set_tag(run_id, key, value)
    client.log_param(run_id, "trials", str(len(sweep.trials)))
    return SweepRun(run_id, experiment_id, uri, os.environ.get(run_data.PARENT_ENV))


def _reusable_run(client: Any, sweep: Sweep, experiment_id: str) -> str | None:
    """The parent run of an earlier pass of this sweep, when it is still on this server in this experiment."""
    path = sweep.layout.sweep_dir / PARENT_FILE
    try:
        run_id = json.loads(path.read_text())["run_id"]
        run = client.get_run(run_id)
    except Exception:  # no earlier pass, another server, or a deleted run: start a new parent
        return None
    if run.info.lifecycle_stage != "active" or run.info.experiment_id != experiment_id:
        return None
    return run_id


def _close(parent: SweepRun, sweep: Sweep, rows: list[dict[str, Any]], status: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(parent.tracking_uri)
    for key, value in summary_metrics(rows).items():
        client.log_metric(parent.run_id, key, value)
    best = best_row(rows)
    if best is not None:
        client.set_tag(parent.run_id, BEST_TAG, best["trial"])
    for path in (sweep.layout.table, sweep.layout.results):  # the ranking, as Markdown and JSON
        if path.is_file():
            client.log_artifact(parent.run_id, str(path))
    client.set_terminated(parent.run_id, status)


def summary_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The parent run's metrics: ``trials``, ``trials_complete`` and the best trial's monitored value as
    ``best_<monitor>`` (``best_val_accuracy``), so sweeps compare in MLflow's runs table."""
    metrics = {"trials": float(len(rows)), "trials_complete": float(sum(r["status"] == "complete" for r in rows))}
    best = best_row(rows)
    if best is not None and best.get("monitor") and best.get("monitor_value") is not None:
        metrics[f"best_{best['monitor']}"] = float(best["monitor_value"])
    return metrics


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first of the ranked rows when it has a rank (a complete trial with a monitored value)."""
    return rows[0] if rows and rows[0].get("rank") == 1 else None


def _restore_env(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(run_data.PARENT_ENV, None)
    else:
        os.environ[run_data.PARENT_ENV] = previous
