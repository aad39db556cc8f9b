"""The ``eval`` flow: evaluate a checkpoint on a split (or its tiny subset) without training.

Two entry points run the same body, each with the plan prepared exactly once: ``eval_flow(config, resume)``
for a Prefect deployment, the dashboard and Python callers, and ``run_eval_plan(plan)`` for the CLI
(docs/architecture.md).
"""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.config import EvalConfig
from flowerkit.engine.trainer import seed_everything
from flowerkit.flows.common import RunOutcome, outcome, run_lifecycle
from flowerkit.plan import RunPlan
from flowerkit.prepare import prepare_plan
from flowerkit.tasks import (
    detect_device,
    evaluate,
    export_predictions,
    load_subset,
    publish_results,
    write_retention,
    write_stamp,
)


@flow(name="eval", persist_result=True)
def eval_flow(config: EvalConfig, resume: bool = False) -> RunOutcome:
    """Evaluate OUTPUT_DIR/RUN/checkpoints/ckpt.bin-style checkpoints; never trains.

    Args:
        config: Every option of `flowerkit eval` (same names, defaults and validation).
        resume: Continue an incomplete eval run of the same name (same configuration).
    """
    return _eval(prepare_plan("eval", config, resume))  # reads and checks the checkpoint before any work


@flow(name="eval", persist_result=True, validate_parameters=False)
def run_eval_plan(plan: RunPlan) -> RunOutcome:
    """The eval flow of a run whose plan is already prepared (the CLI prepares it before Prefect starts)."""
    return _eval(plan)


def _eval(plan: RunPlan) -> RunOutcome:
    config, checkpoint = plan.config, plan.checkpoint
    assert checkpoint is not None
    detect_device(plan)
    (request,) = plan.splits
    selection = load_subset(plan, request)
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": plan.precision, "sample_ids_sha256": {request.split: selection.ids_sha256}}

    with run_lifecycle(plan, determinism) as run_id:
        exported = export_predictions(plan, evaluate(plan, checkpoint.path, selection), selection)
        update_record(plan.layout.run_dir, metrics=exported.metrics,
                      progress={"step": checkpoint.step, "total_steps": checkpoint.step})
        write_stamp(plan, run_id, "not used (eval-only run)", selection.subset)
        write_retention(plan, run_id)
        publish_results(plan, run_id, exported.metrics)
    return outcome(plan, exported)
