"""What every flowerkit task shares: its one declaration (``run_task``), when to retry, and keeping the run
record's task states current."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flowerkit.artifacts.record import refresh_artifact_index, set_task_state
from flowerkit.errors import (
    ConfigError,
    DiskFullError,
    DistributedError,
    FlowerkitError,
    MissingInputError,
    NonFiniteLossError,
    RunExistsError,
    is_termination,
)
from flowerkit.run.plan import Plan

log = logging.getLogger(__name__)

# A user's mistake (or a full disk) does not heal by retrying a second later, and a diverged run diverges
# again from the same checkpoint; only unexpected failures (a flaky mount, a killed step) are retried. A failed
# training process of a distributed run fails the run (its paragraph names the rank; --resume continues).
NOT_RETRIED = (ConfigError, MissingInputError, RunExistsError, DiskFullError, NonFiniteLossError, DistributedError)


def retry_unless_user_error(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn`` (must be a plain function: partials are taken as 'never retry')."""
    try:
        state.result(raise_on_failure=True)
    except NOT_RETRIED:
        return False
    except BaseException as exc:
        return not is_termination(exc)  # SIGTERM stops the run, as Ctrl-C does
    return False


def _attempt() -> int:
    from prefect.runtime import task_run

    return int(task_run.run_count or 1)


def run_task(name: str, retries: int = 2, recorded: bool = True, **options: Any) -> Callable:
    """Declare a flowerkit task once: a Prefect task ``name``, retried ``retries`` times a second apart unless
    the error is the user's (``retry_unless_user_error``); ``recorded``: its states are kept in the run record
    too (``_recorded``). ``options`` go to Prefect's ``task`` (caching, result persistence, the run's name)."""
    from prefect import task

    def decorate(fn: Callable) -> Any:
        body = _recorded(name, retries)(fn) if recorded else fn
        return task(name=name, retries=retries, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
                    **options)(body)

    return decorate


def _recorded(name: str, retries: int) -> Callable:
    """Record running / retrying / completed / failed in the run record around the task body.

    The task takes the run's plan as its first argument (the record is in its layout); another process (the
    dashboard) reads these states because it cannot reach this process's ephemeral Prefect server.
    """
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(plan: Plan, *args: Any, **kwargs: Any) -> Any:
            run_dir, attempt = plan.layout.run_dir, _attempt()
            set_task_state(run_dir, name, "running", attempt)
            try:
                result = fn(plan, *args, **kwargs)
            except (*NOT_RETRIED, KeyboardInterrupt, SystemExit):  # a user's mistake, or the user stopping it
                _note_state(run_dir, name, "failed", attempt)
                raise
            except BaseException as exc:
                stopped = is_termination(exc)  # Prefect's own SIGTERM signal, inside a flow run
                _note_state(run_dir, name, "retrying" if attempt <= retries and not stopped else "failed", attempt)
                raise
            refresh_artifact_index(run_dir)  # the record follows each artifact as written
            set_task_state(run_dir, name, "completed", attempt)
            return result

        return wrapper

    return decorate


def _note_state(run_dir, name: str, state: str, attempt: int) -> None:
    """Record a failing task's state without masking its error (the disk may be the thing that failed)."""
    try:
        set_task_state(run_dir, name, state, attempt)
    except (OSError, FlowerkitError) as exc:
        log.warning("could not record task %s as %s: %s", name, state, exc)
