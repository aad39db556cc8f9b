"""A flow run's name and tags in Prefect: every flowerkit flow run is named after its run (a sweep's after the
sweep) and tagged with its flow, model type, dataset and sweep, however it was started (the CLI, a deployment
on a worker, ``flowerkit serve``, a sweep's trial), so the UI and `prefect flow-run ls` match flowerkit's runs.

Nothing here imports torch: the sweep flow labels itself without loading a model's code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flowerkit.sweep import sweep_of

if TYPE_CHECKING:
    from flowerkit.run.plan import Plan


def run_name() -> str:
    """The train, eval and predict flows' ``flow_run_name``: the run's name, set as the flow run starts. A
    deployment's run gets its ``config`` as the form's dict; ``run_lifecycle`` corrects the name if the plan's
    differs (a name from the worker's FLOWERKIT_NAME)."""
    from prefect.runtime import flow_run

    config = flow_run.parameters.get("config")
    name = config.get("name") if isinstance(config, dict) else getattr(config, "name", None)
    return str(name or flow_run.name)


def run_tags(plan: Plan) -> list[str]:
    """The flow run's tags: flowerkit, the flow, ``model:TYPE``, ``dataset:NAME`` (not for predict: its photos
    are no dataset) and ``sweep:NAME`` for a sweep's trial."""
    config = plan.config
    if plan.flow == "predict":
        facts = {"model": plan.predict.info.model_type}
    else:
        checkpoint = plan.checkpoint  # an eval run's model type is its checkpoint's unless given
        model = config.model_type or (checkpoint.model_type if checkpoint is not None else None)
        facts = {"model": model, "dataset": config.dataset, "sweep": sweep_of(config.output_dir, config.name)}
    return ["flowerkit", plan.flow, *(f"{key}:{value}" for key, value in facts.items() if value)]


def label_flow_run(name: str, tags: list[str]) -> None:
    """Name the current flow run and add ``tags`` to the ones it has (a deployment's): one API call, inside a
    flow run only. A server that cannot take it is logged, never raised: labels must not fail a run."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    current = context.flow_run
    merged = sorted(set(current.tags) | set(tags))
    if (current.name, sorted(current.tags)) == (name, merged):
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(current.id, name=name, tags=merged)
        current.name, current.tags = name, merged
    except Exception as exc:  # noqa: BLE001 - see the docstring
        logging.getLogger("flowerkit").warning("could not name or tag flow run %s: %s", current.id, exc)
