"""What the train, eval and predict flows share: the run lifecycle (claim, log to run.log, finish or fail), and
the outcome train and eval return."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from flowerkit.artifacts.export import Exported
from flowerkit.artifacts.files import atomic_write_text, utc_now
from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.artifacts.record import refresh_artifact_index, update_record
from flowerkit.run.config import PredictRunConfig, RunConfig
from flowerkit.device import DeviceChoice
from flowerkit.engine.trainer import TrainResult
from flowerkit.errors import DiskFullError, FlowerkitError, is_termination
from flowerkit.run.plan import Plan, RunPlan
from flowerkit.run.rundir import RunLock, claim_run_dir
from flowerkit.tasks import PLANNING_TASKS
from flowerkit.tracking import tracked_run
from flowerkit.flows.orchestration.labels import label_flow_run, run_tags
from flowerkit.flows.orchestration.watcher import watch_current_flow_run

LOGGERS = ("flowerkit", "prefect.flow_runs", "prefect.task_runs")
P = TypeVar("P", bound=Plan)


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
def run_lifecycle(plan: P, determinism: dict) -> Iterator[tuple[P, ScalarSink | None]]:
    """Claim the run directory, write ``plan.json``, keep the record current, and always leave it ``complete``
    or ``failed``; yields the claimed plan (the plan with the run's id and start time) and the run's tracker
    sink (None without ``--tracker``), which the flow hands to the tasks that log scalars."""
    config = plan.config
    lock = RunLock(plan.layout)
    label_flow_run(config.name, run_tags(plan))
    record = claim_run_dir(config, plan.flow, plan.resume, flow_run_id(), plan.total_steps, lock)
    plan = plan.claimed(record)
    watch_current_flow_run(config.name, plan.flow)  # a killed process's flow run still ends Crashed
    run_dir = plan.layout.run_dir

    planned = PLANNING_TASKS if isinstance(plan, RunPlan) else ()  # a predict run's plan runs no task

    def mark_done(rec: dict) -> None:
        for name in planned:
            rec["tasks"].setdefault(name, {"state": "completed", "attempt": 1, "updated_utc": utc_now()})

    try:
        device = plan.device.device
        atomic_write_text(plan.layout.plan, plan.to_json())
        update_record(run_dir, mark_done, device=device, determinism=determinism,
                      distributed=plan.process_facts())
        with _log_to_file(plan.layout.run_log), _tracker(plan) as sink:
            for note in plan.notes:
                logging.getLogger("flowerkit").info("%s", note)
            for warning in plan.warnings:
                logging.getLogger("flowerkit").warning("%s", warning)
            try:
                yield plan, sink
            except BaseException as exc:
                if isinstance(exc, DiskFullError) or getattr(exc, "errno", None) == errno.ENOSPC:
                    lock.free_reserve()  # room to record the failure
                message = describe_failure(exc, resumable=plan.resumable)
                logging.getLogger("flowerkit").error("run %s failed: %s", config.name, message)
                try:
                    kind = "Terminated" if is_termination(exc) else type(exc).__name__  # one name for SIGTERM
                    _finish(config, "failed", {"type": kind, "message": message})
                except (OSError, FlowerkitError) as also:  # e.g. the disk is still full: keep the first error
                    logging.getLogger("flowerkit").error("could not mark run %s failed: %s", config.name, also)
                raise
        _finish(config, "complete", None)
    finally:
        lock.release()


def _tracker(plan: Plan) -> contextlib.AbstractContextManager:
    """The run's optional MLflow run (it never fails the run); a predict run has no tracker option."""
    if isinstance(plan.config, RunConfig):
        return tracked_run(plan.config, plan.flow)
    return contextlib.nullcontext(None)


def describe_failure(exc: BaseException, resumable: bool = True) -> str:
    """The record's error message. SIGTERM reaches here as ours (Terminated, a KeyboardInterrupt) or, inside a
    flow run, as Prefect's TerminationSignal: both are a stop from outside, like Ctrl-C. Train and eval runs
    continue with ``--resume``; a predict run has no checkpoint to continue from and is run again."""
    then = ("`--resume` continues from the last checkpoint" if resumable
            else "a predict run starts over: run it again under a new --name")
    if is_termination(exc):
        return f"terminated (SIGTERM: a scheduler's or docker's stop, or a Prefect cancel); {then}"
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted (Ctrl-C or SIGINT); {then}"
    return str(exc) or type(exc).__name__


def _finish(config: RunConfig | PredictRunConfig, status: str, error: dict | None) -> None:
    """Index every file of the run (TensorBoard events included), then set the final status."""
    def settle_tasks(record: dict) -> None:  # a task that could not record its own failure
        for state in record["tasks"].values():
            if status == "failed" and state.get("state") in ("running", "retrying"):
                state.update(state="failed", updated_utc=utc_now())

    refresh_artifact_index(config.layout.run_dir)
    update_record(config.layout.run_dir, settle_tasks, stage_status=status, ended_utc=utc_now(), error=error)


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    """What a train or eval flow returns: where the run is, what ran it, and its report."""

    run_dir: Path
    tb_dir: Path
    device: DeviceChoice
    precision: str
    metrics: dict
    files: tuple[Path, ...]
    train: TrainResult | None = None


def outcome(plan: RunPlan, exported: Exported, trained: TrainResult | None = None) -> RunOutcome:
    return RunOutcome(run_dir=plan.layout.run_dir, tb_dir=plan.layout.tb_dir, device=plan.device,
                      precision=plan.precision, metrics=exported.metrics, files=exported.files, train=trained)
