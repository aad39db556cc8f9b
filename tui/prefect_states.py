"""Task states of a flow run from Prefect's API, when ``PREFECT_API_URL`` points at a server.

Runs started without a server use an ephemeral one that dies with the run, so the dashboard then reads the
states the tasks keep in ``run_record.json`` instead (``tui.runs_reader.task_states``).
"""

from __future__ import annotations

import os
from uuid import UUID

# Prefect state type -> the dashboard's words; a "Retrying"/"AwaitingRetry" state name overrides the type.
STATE_WORDS = {"SCHEDULED": "pending", "PENDING": "pending", "RUNNING": "running", "COMPLETED": "completed",
               "FAILED": "failed", "CRASHED": "failed", "CANCELLED": "failed", "CANCELLING": "failed",
               "PAUSED": "pending"}


def api_configured() -> bool:
    return bool(os.environ.get("PREFECT_API_URL"))


def state_word(type_name: str, state_name: str) -> str:
    if state_name in ("Retrying", "AwaitingRetry"):
        return "retrying"
    return STATE_WORDS.get(type_name, type_name.lower())


def fetch_task_states(flow_run_id: str) -> list[tuple[str, str, int]] | None:
    """(task, state, attempt) of the flow run's tasks, oldest first; None when the server does not answer."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    try:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    except Exception:  # noqa: BLE001 - unreachable server or unknown run: the caller falls back to the files
        return None
    runs = sorted(runs, key=lambda r: (r.expected_start_time or r.created, r.name))
    states = []
    for run in runs:
        state = run.state
        word = state_word(state.type.value, state.name) if state else "pending"
        states.append((task_label(run.name), word, int(run.run_count or 0)))
    return states


def task_label(task_run_name: str) -> str:
    """``train-3a1`` -> ``train``; a name the task chose itself (``load_subset[val]``) is kept."""
    return task_run_name if task_run_name.endswith("]") else task_run_name.rsplit("-", 1)[0]


def with_pending(states: list[tuple[str, str, int]], flow: str) -> list[tuple[str, str, int]]:
    """The server only knows tasks that started: add the flow's others, in order, as pending."""
    from flowerkit.tasks import FLOW_TASKS

    started = {name.split("[", 1)[0] for name, _, _ in states}
    return states + [(name, "pending", 0) for name in FLOW_TASKS.get(flow, ()) if name not in started]
