"""The ``train`` flow: record the plan's device and images, train, evaluate, export, stamp, declare retention.

Two entry points run the same body, each with the plan prepared exactly once: ``train_flow(config, resume)``
for a Prefect deployment, the dashboard and Python callers (it prepares the plan itself), and
``run_train_plan(plan)`` for the CLI, which prepared it before Prefect started (docs/architecture.md).
"""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.export import Exported
from flowerkit.artifacts.record import update_record
from flowerkit.config import TrainConfig
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
    train,
    write_retention,
    write_stamp,
)


@flow(name="train", persist_result=True)
def train_flow(config: TrainConfig, resume: bool = False) -> RunOutcome:
    """Train a ViT on Flowers-102 and leave every artifact of the run under OUTPUT_DIR/NAME.

    Args:
        config: Every option of `flowerkit train` (same names, defaults and validation).
        resume: Continue an incomplete run of the same name (same configuration) from its last checkpoint.
    """
    return _train(prepare_plan("train", config, resume))  # exit 4 / 2 / 3 before any work


@flow(name="train", persist_result=True, validate_parameters=False)
def run_train_plan(plan: RunPlan) -> RunOutcome:
    """The train flow of a run whose plan is already prepared (the CLI prepares it before Prefect starts)."""
    return _train(plan)


def _train(plan: RunPlan) -> RunOutcome:
    config = plan.train_config
    detect_device(plan)
    selections = {request.split: load_subset(plan, request) for request in plan.splits}
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": plan.precision, "sample_ids_sha256": {split: selections[split].ids_sha256
                                                          for split in ("train", "val")}}

    with run_lifecycle(plan, determinism) as run_id:
        trained = train(plan, selections["train"], selections["val"])
        # The report is the checkpoint selected on validation (--monitor), not the last step's.
        selected = trained.selected.path
        evaluation = evaluate(plan, selected, selections["val"])
        exported = export_predictions(plan, evaluation, selections["val"], trained)
        if config.test_after:  # once, after selection is final: the test split never influences it
            tested = export_predictions(plan, evaluate(plan, selected, selections["test"], held_out=True),
                                        selections["test"], held_out=True)
            exported = Exported(tested.metrics, tuple(sorted(set(exported.files) | set(tested.files))))
        update_record(plan.layout.run_dir, metrics=exported.metrics, selection=trained.selection(plan.layout))
        write_stamp(plan, run_id, selections["train"].subset, selections["val"].subset)
        write_retention(plan, run_id)
        publish_results(plan, run_id, exported.metrics, trained)
    return outcome(plan, exported, trained)
