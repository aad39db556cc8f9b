"""The run lifecycle shared by the train and eval flows: claim, log to run.log, finish or fail."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from flowerkit.artifacts.files import utc_now
from flowerkit.artifacts.record import refresh_artifact_index, update_record
from flowerkit.config import RunConfig
from flowerkit.rundir import claim_run_dir
from flowerkit.tracking import tracked_run

LOGGERS = ("flowerkit", "prefect.flow_runs", "prefect.task_runs")


def flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return str(flow_run.id) if flow_run.id else None


@contextlib.contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    ours, level = loggers[0], loggers[0].level
    # The CLI sets INFO; a deployment's flow run does not go through the CLI, and run.log needs our INFO
    # lines (steps, evaluations, "resuming from ... at step N") there too.
    if ours.getEffectiveLevel() > logging.INFO:
        ours.setLevel(logging.INFO)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        ours.setLevel(level)
        handler.close()


@contextlib.contextmanager
def run_lifecycle(config: RunConfig, flow: str, resume: bool, total_steps: int, device: str,
                  completed_tasks: list[str], determinism: dict) -> Iterator[dict]:
    """Claim the run directory, keep the record current, and always leave it ``complete`` or ``failed``."""
    record = claim_run_dir(config, flow, resume, flow_run_id(), total_steps)
    run_dir = config.layout.run_dir

    def mark_done(rec: dict) -> None:
        for name in completed_tasks:
            rec["tasks"].setdefault(name, {"state": "completed", "attempt": 1, "updated_utc": utc_now()})

    update_record(run_dir, mark_done, device=device, determinism=determinism)
    with _log_to_file(config.layout.run_log), tracked_run(config, flow):  # optional MLflow run; never fails the run
        try:
            yield record
        except BaseException as exc:
            message = describe_failure(exc)
            logging.getLogger("flowerkit").error("run %s failed: %s", config.name, message)
            _finish(config, "failed", {"type": type(exc).__name__, "message": message})
            raise
    _finish(config, "complete", None)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGINT); `--resume` continues from the last checkpoint"
    return str(exc) or type(exc).__name__


def _finish(config: RunConfig, status: str, error: dict | None) -> None:
    """Index every file of the run (TensorBoard events included), then set the final status."""
    refresh_artifact_index(config.layout.run_dir)
    update_record(config.layout.run_dir, stage_status=status, ended_utc=utc_now(), error=error)
