"""The ``train`` flow: record the plan's device and images, train, evaluate, export, stamp, declare retention.

One entry, ``train_flow``: the CLI, the dashboard, ``train.py`` and a sweep's trials pass the plan they built
(``flowerkit.run.prepare.prepare_plan``); a deployment's flow run passes the config and ``resume`` its form sent,
and the plan is built here, on the worker. Either way the plan is built once (docs/architecture.md).
"""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.export import Exported
from flowerkit.artifacts.record import update_record
from flowerkit.run.config import TrainConfig
from flowerkit.engine.progress import Listener
from flowerkit.engine.trainer import seed_everything
from flowerkit.flows.common import RunOutcome, outcome, run_lifecycle
from flowerkit.flows.orchestration.labels import run_name
from flowerkit.run.plan import RunPlan
from flowerkit.run.prepare import plan_for
from flowerkit.tasks.evaluation import evaluate, export_predictions
from flowerkit.tasks.provenance import write_retention, write_stamp
from flowerkit.tasks.reporting import publish_results
from flowerkit.tasks.setup import detect_device, load_subset
from flowerkit.tasks.training import train


@flow(name="train", flow_run_name=run_name, persist_result=True, validate_parameters=False)
def train_flow(config: TrainConfig, resume: bool = False, plan: RunPlan | None = None,
               on_progress: Listener | None = None) -> RunOutcome:
    """Train a ViT on Flowers-102 and leave every artifact of the run under OUTPUT_DIR/NAME.

    Args:
        config: Every option of `flowerkit train` (same names, defaults and validation).
        resume: Continue an incomplete run of the same name (same configuration) from its last checkpoint.
        plan: The plan a front end built from this config (the CLI, the dashboard, a sweep's trial); a
            deployment's run leaves it out, and the plan is built here, on the worker.
        on_progress: The front end's display of every training step, in this process (the CLI's live bar);
            Prefect records only its type name.
    """
    return _train(plan_for("train", config, resume, plan), on_progress)  # exit 4 / 2 / 3 before any work


def _train(plan: RunPlan, on_progress: Listener | None = None) -> RunOutcome:
    config = plan.train_config
    detect_device(plan)
    selections = {request.split: load_subset(plan, request) for request in plan.splits}
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": plan.precision, "sample_ids_sha256": {split: selections[split].ids_sha256
                                                          for split in ("train", "val")}}

    with run_lifecycle(plan, determinism) as (plan, sink):
        trained = train(plan, selections["train"], selections["val"], on_progress, sink)
        # The report is the checkpoint selected on validation (--monitor), not the last step's.
        selected = trained.selected.path
        evaluation = evaluate(plan, selected, selections["val"])
        exported = export_predictions(plan, evaluation, selections["val"], trained, sink=sink)
        if config.test_after:  # once, after selection is final: the test split never influences it
            tested = export_predictions(plan, evaluate(plan, selected, selections["test"], held_out=True),
                                        selections["test"], held_out=True, sink=sink)
            exported = Exported(tested.metrics, tuple(sorted(set(exported.files) | set(tested.files))))
        update_record(plan.layout.run_dir, metrics=exported.metrics, selection=trained.selection(plan.layout))
        write_stamp(plan, selections["train"].subset, selections["val"].subset)
        write_retention(plan)
        publish_results(plan, exported.metrics, trained)
    return outcome(plan, exported, trained)
