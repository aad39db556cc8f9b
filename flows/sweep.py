"""The ``sweep`` flow: expand a sweep file into train runs, run the ones not complete yet, rank them all.

Each trial is an ordinary ``train`` run, so its directory and record are exactly a normal run's. Trials run

- locally: as subflows of this flow, one after another (``max_parallel`` 1), or as ``flowerkit train``
  processes, up to ``max_parallel`` at once, reporting to the same Prefect server;
- on a work pool: as runs of the ``train/flowerkit-train`` deployment, which workers on any machine pick up.
  A Prefect global concurrency limit named for the sweep (``flowerkit-sweep-<name>``, ``max_parallel`` slots)
  holds a slot for each trial from submission to its final state; changing the limit in the UI throttles a
  running sweep.

What a trial needs is read from its run record (``flowerkit.sweep.action_for``): complete trials are skipped,
failed or crashed ones resumed, so re-running a sweep finishes it. One failing trial never stops the others.
"""

from __future__ import annotations

import contextvars
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.runtime import flow_run as current_flow_run

from flowerkit.errors import FlowerkitError
from flowerkit.sweep import (
    Outcome,
    Sweep,
    SweepLock,
    Trial,
    action_for,
    check_same_sweep,
    failure_error,
    read_sweep,
    write_expansion,
    write_results,
)
from flowerkit.flows.orchestration.labels import label_flow_run
from flowerkit.flows.sweep_progress import SweepProgress
from flowerkit.tracking.sweep_run import close_sweep_run, open_sweep_run, trial_job_variables

TRAIN_DEPLOYMENT = "train/flowerkit-train"
POLL_S = 2.0
MAX_THREADS = 32  # trials waiting on the concurrency limit each hold a thread; more only queue here


@flow(name="sweep", persist_result=False, validate_parameters=False)
def sweep_flow(sweep_file: str, max_parallel: int = 1, backend: Literal["local", "pool"] = "local",
               deployment: str = TRAIN_DEPLOYMENT,
               on_progress: Callable[[SweepProgress], None] | None = None) -> list[dict]:
    """Run every trial of a sweep file that is not complete yet, then write and publish the ranked results.

    Args:
        sweep_file: The sweep YAML (name, base, grid and/or random).
        max_parallel: At most this many trials run at once.
        backend: local (this machine) or pool (the train deployment's work pool).
        deployment: The train deployment trials are submitted to (backend pool).
        on_progress: The front end's display of the trials (the CLI's live table), in this process: handed
            the sweep's progress once its trials are known. Prefect records only its type name.
    """
    sweep = read_sweep(Path(sweep_file))  # exit 2 before any trial, naming a bad trial and option
    lock = SweepLock(sweep.layout)
    lock.acquire()  # one writer per sweep: a second process exits 4 naming this one
    try:
        return _run_sweep(sweep, max_parallel, backend, deployment, on_progress)
    finally:
        lock.release()


def _run_sweep(sweep: Sweep, max_parallel: int, backend: str, deployment: str,
               on_progress: Callable[[SweepProgress], None] | None) -> list[dict]:
    """One pass over the sweep's trials, under its lock."""
    label_flow_run(sweep.name, sweep_tags(sweep))
    check_same_sweep(sweep)
    write_expansion(sweep)
    actions = {trial.name: action_for(trial) for trial in sweep.trials}
    todo = [trial for trial in sweep.trials if actions[trial.name] in ("run", "resume")]
    outcomes = {name: Outcome(action, "SKIPPED" if action == "skip" else "RUNNING",
                              "another process is running this trial" if action == "busy" else None)
                for name, action in actions.items() if action in ("skip", "busy")}
    parent = open_sweep_run(sweep, current_flow_run.id)  # MLflow parent of the trials' runs (--tracker mlflow)
    at_once = max_parallel if backend == "pool" or (max_parallel > 1 and len(todo) > 1) else 1
    progress = SweepProgress(sweep.name, todo, at_once, skipped=len(sweep.trials) - len(todo))
    if on_progress is not None:
        on_progress(progress)
    if backend == "pool":
        outcomes |= run_on_pool(sweep, todo, actions, max_parallel, deployment, progress)
    elif max_parallel > 1 and len(todo) > 1:
        outcomes |= run_in_processes(sweep, todo, actions, max_parallel, progress)
    else:
        outcomes |= {trial.name: run_subflow(trial, actions[trial.name], progress) for trial in todo}
    rows = write_results(sweep, outcomes)
    close_sweep_run(parent, sweep, rows)
    from flowerkit.tasks.reporting import publish_sweep_table

    publish_sweep_table(sweep.name, rows)
    problem = failure_error(sweep, rows)
    if problem is not None:
        raise problem
    return rows


def sweep_tags(sweep: Sweep) -> list[str]:
    """The sweep flow run's tags: its name, and the model types and datasets its trials train."""
    configs = [trial.config for trial in sweep.trials]
    return ["flowerkit", "sweep", f"sweep:{sweep.name}", *sorted({f"model:{c.model_type}" for c in configs}),
            *sorted({f"dataset:{c.dataset}" for c in configs})]


def run_subflow(trial: Trial, action: str, progress: SweepProgress) -> Outcome:
    """The train flow as a subflow of this one, in this process; its failure is recorded, not raised."""
    from flowerkit.flows.train import train_flow

    progress.started(trial)
    state = train_flow(trial.config, resume=action == "resume", return_state=True)  # named after the trial
    outcome = Outcome(action, state.type.value, None if state.is_completed() else state.message,
                      str(state.state_details.flow_run_id))
    progress.ended(trial, outcome)
    return outcome


def _in_threads(trials: list[Trial], workers: int, one: Callable[[Trial], Outcome],
                on_abort: Callable[[], None] | None = None) -> dict[str, Outcome]:
    """``one(trial)`` for every trial in a thread pool; each thread runs in a copy of this flow's context,
    so what it starts in Prefect is linked to this flow run. When waiting is interrupted (Ctrl-C, SIGTERM),
    ``on_abort`` runs before the pool waits for its threads, so it can end what they wait on."""
    with ThreadPoolExecutor(max_workers=max(1, min(workers, MAX_THREADS))) as pool:
        futures = {trial.name: pool.submit(contextvars.copy_context().run, one, trial) for trial in trials}
        try:
            return {name: future.result() for name, future in futures.items()}
        except BaseException:
            for future in futures.values():
                future.cancel()  # trials not started yet never start
            if on_abort is not None:
                on_abort()
            raise


# --- local processes ----------------------------------------------------------------------------------------
def run_in_processes(sweep: Sweep, trials: list[Trial], actions: dict[str, str], max_parallel: int,
                     progress: SweepProgress) -> dict[str, Outcome]:
    """Each trial planned here and run as ``flowerkit run <its plan>``, at most ``max_parallel`` at once: runs in
    one process share torch's global RNG and the loggers that feed run.log, so parallel trials need their own."""
    env = os.environ | {"PREFECT_API_URL": _current_api_url()}  # the server this flow reports to
    running: set[subprocess.Popen] = set()

    def one(trial: Trial) -> Outcome:
        action = actions[trial.name]
        progress.started(trial)
        try:
            plan_file = write_trial_plan(sweep, trial, resume=action == "resume")
        except FlowerkitError as exc:  # the trial cannot start (its run is busy, its data moved ...)
            outcome = Outcome(action, "FAILED", " ".join(str(exc).split())[:1000])
            progress.ended(trial, outcome)
            return outcome
        cmd = [sys.executable, "-m", "flowerkit", "run", str(plan_file)]
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            running.add(proc)
            _, stderr = proc.communicate()
            running.discard(proc)
        outcome = Outcome(action, "COMPLETED") if proc.returncode == 0 else \
            Outcome(action, "FAILED", _cli_error(stderr) or f"exit {proc.returncode}")
        progress.ended(trial, outcome)
        return outcome

    def stop_trials() -> None:
        # Ctrl-C or SIGTERM reached this process only (a scheduler signals one pid): stop the trials' processes
        # the same way (SIGTERM), so each marks its run failed and resumable, and none outlives the sweep.
        for proc in list(running):
            proc.terminate()

    return _in_threads(trials, max_parallel, one, on_abort=stop_trials)


def write_trial_plan(sweep: Sweep, trial: Trial, resume: bool) -> Path:
    """Plan the trial's run once, here, and write the plan where its process reads it."""
    from flowerkit.artifacts.files import atomic_write_text
    from flowerkit.run.prepare import prepare_plan

    plan = prepare_plan("train", trial.config, resume)
    return atomic_write_text(sweep.layout.trial_plan(trial.name), plan.to_json())


def _current_api_url() -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return str(client.api_url).rstrip("/")


def _cli_error(stderr: str) -> str:
    """The paragraph the CLI printed last ("Error: ..."; Prefect's log lines go to stderr too)."""
    start = stderr.rfind("Error: ")
    lines = stderr.strip().splitlines()
    text = stderr[start + len("Error: "):] if start >= 0 else (lines[-1] if lines else "")
    return " ".join(text.split())[:1000]


# --- a work pool --------------------------------------------------------------------------------------------
def concurrency_limit_name(sweep_name: str) -> str:
    from flowerkit.tasks.reporting import artifact_key

    return artifact_key("sweep", sweep_name, "trials")


def run_on_pool(sweep: Sweep, trials: list[Trial], actions: dict[str, str], max_parallel: int,
                deployment: str, progress: SweepProgress) -> dict[str, Outcome]:
    """Submit each trial as a run of ``deployment``; a trial holds one slot of the sweep's concurrency limit
    from submission to its final state."""
    from prefect.client.orchestration import get_client

    limit = concurrency_limit_name(sweep.name)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(limit, max_parallel)
    return _in_threads(trials, len(trials), lambda trial: _run_deployment(trial, actions[trial.name], limit,
                                                                          deployment, progress))


def _run_deployment(trial: Trial, action: str, limit: str, deployment: str, progress: SweepProgress) -> Outcome:
    from prefect.concurrency.sync import concurrency
    from prefect.deployments import run_deployment

    # mode="json": paths as text, as the deployment's parameter schema wants them; every option explicit, so
    # the worker's environment cannot change what was validated here.
    parameters = {"config": trial.config.model_dump(mode="json"), "resume": action == "resume"}
    with concurrency(limit, occupy=1):
        # job_variables: a tracked sweep's parent MLflow run, for the trial's worker process (None otherwise).
        run = run_deployment(deployment, parameters=parameters, timeout=0, flow_run_name=trial.name,
                             job_variables=trial_job_variables())
        progress.submitted(trial, str(run.id))
        state = _wait_final(run.id, lambda: progress.started(trial, str(run.id)))
    outcome = Outcome(action, state.type.value, None if state.is_completed() else state.message, str(run.id))
    progress.ended(trial, outcome)
    return outcome


def _wait_final(flow_run_id, on_running: Callable[[], None] = lambda: None):
    """The flow run's final state; ``on_running`` once, when it is first seen running."""
    from prefect.client.orchestration import get_client

    seen_running = False
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            state = flow_run.state
            if state is not None and state.is_final():
                if not seen_running and flow_run.start_time is not None:
                    on_running()  # it ran between two polls: it did start
                return state
            if state is not None and state.is_running() and not seen_running:
                seen_running = True
                on_running()
            time.sleep(POLL_S)
