"""Tell the Prefect server about runs whose process died, so their flow runs do not stay Running forever.

The library only reports a run as ``crashed`` (``flowerkit.run.runs.run_status``: the record says running, but its
process on this host is gone). A killed process never reports its own end, so its flow run stays Running on
the server. Whenever a front end meets such a run (``flowerkit runs list``, the dashboard, ``--resume``), it
calls ``reconcile`` here, which sets that flow run to Crashed (forced) when the server is reachable.

Which server: the one this process is configured for (``PREFECT_API_URL``). Without one (the CLI's ephemeral
mode) nothing is sent: an ephemeral server only lives as long as its run. When the server does not answer,
nothing changes and the next front end to meet the run tries again; a flow run already in a final state is
left as it is.
"""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

from flowerkit.run.layout import RunLayout
from flowerkit.run.runs import RunSummary, read_json_or_none

MARKED, FINAL, NO_SERVER, UNREACHABLE, UNKNOWN = "marked crashed", "already final", "no server", "unreachable", "unknown"
RETRY_UNREACHABLE_S = 30.0  # the dashboard meets a crashed run every refresh: do not knock every second
_settled: set[str] = set()  # flow runs this process has settled (marked, or found final): not asked again
_unreachable_at: dict[str, float] = {}


def api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def mark_crashed(flow_run_id: str, message: str) -> str:
    """Set the flow run to Crashed on the configured server; returns what happened (one of the constants)."""
    if flow_run_id in _settled:
        return FINAL
    if not api_url():
        return NO_SERVER
    if time.monotonic() - _unreachable_at.get(flow_run_id, -RETRY_UNREACHABLE_S) < RETRY_UNREACHABLE_S:
        return UNREACHABLE
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(UUID(flow_run_id))
            if flow_run.state is not None and flow_run.state.is_final():
                outcome = FINAL
            else:
                client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
                outcome = MARKED
    except (ObjectNotFound, ValueError):  # another server's run, or not a flow-run id
        return UNKNOWN
    except Exception:  # noqa: BLE001 - any transport error: the server is not reachable now
        _unreachable_at[flow_run_id] = time.monotonic()
        return UNREACHABLE
    _settled.add(flow_run_id)
    return outcome


def reconcile(run: RunSummary) -> str | None:
    """For a crashed run with a flow run id, mark that flow run Crashed; None for any other run."""
    if run.status != "crashed":
        return None
    record = read_json_or_none(RunLayout.for_run(Path(run.path)).record) or {}
    flow_run_id = record.get("flow_run_id")
    if not flow_run_id:
        return None
    advice = ("a predict run cannot be continued: `flowerkit runs prune --crashed` deletes it" if run.flow == "predict"
              else f"`flowerkit {run.flow} --resume` continues it")
    return mark_crashed(str(flow_run_id), f"The process of flowerkit run '{run.name}' died (found by flowerkit); "
                                          f"{advice}.")


def reconcile_all(runs: list[RunSummary]) -> dict[str, str]:
    """reconcile() each run; returns {run name: outcome} for the crashed ones."""
    outcomes = {run.name: reconcile(run) for run in runs}
    return {name: outcome for name, outcome in outcomes.items() if outcome is not None}
