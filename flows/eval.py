"""The ``eval`` flow: evaluate a checkpoint on a split (or its tiny subset) without training.

One entry, ``eval_flow``: front ends pass the plan they built; a deployment's flow run passes the config and
``resume`` its form sent, and the plan is built here, on the worker (docs/architecture.md).
"""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.run.config import EvalConfig
from flowerkit.engine.trainer import seed_everything
from flowerkit.flows.common import RunOutcome, outcome, run_lifecycle
from flowerkit.flows.orchestration.labels import run_name
from flowerkit.run.plan import RunPlan
from flowerkit.run.prepare import plan_for
from flowerkit.tasks.evaluation import evaluate, export_predictions
from flowerkit.tasks.provenance import write_retention, write_stamp
from flowerkit.tasks.reporting import publish_results
from flowerkit.tasks.setup import detect_device, load_subset


@flow(name="eval", flow_run_name=run_name, persist_result=True, validate_parameters=False)
def eval_flow(config: EvalConfig, resume: bool = False, plan: RunPlan | None = None) -> RunOutcome:
    """Evaluate OUTPUT_DIR/RUN/checkpoints/ckpt.bin-style checkpoints; never trains.

    Args:
        config: Every option of `flowerkit eval` (same names, defaults and validation).
        resume: Continue an incomplete eval run of the same name (same configuration).
        plan: The plan a front end built from this config (the CLI, the dashboard, a sweep's trial); a
            deployment's run leaves it out, and the plan is built here, on the worker.
    """
    return _eval(plan_for("eval", config, resume, plan))  # reads the checkpoint before any work


def _eval(plan: RunPlan) -> RunOutcome:
    config, checkpoint = plan.config, plan.checkpoint
    assert checkpoint is not None
    detect_device(plan)
    (request,) = plan.splits
    selection = load_subset(plan, request)
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": plan.precision, "sample_ids_sha256": {request.split: selection.ids_sha256}}

    with run_lifecycle(plan, determinism) as (plan, sink):
        exported = export_predictions(plan, evaluate(plan, checkpoint.path, selection), selection, sink=sink)
        update_record(plan.layout.run_dir, metrics=exported.metrics,
                      progress={"step": checkpoint.step, "total_steps": checkpoint.step})
        write_stamp(plan, "not used (eval-only run)", selection.subset)
        write_retention(plan)
        publish_results(plan, exported.metrics)
    return outcome(plan, exported)
