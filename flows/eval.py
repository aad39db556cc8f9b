"""The ``eval`` flow: evaluate a checkpoint on a split (or its tiny subset) without training."""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.config import EvalConfig
from flowerkit.engine.trainer import seed_everything
from flowerkit.flows.common import run_lifecycle, select_splits
from flowerkit.plan import plan_for_flow
from flowerkit.tasks import (
    detect_device,
    evaluate,
    export_predictions,
    publish_results,
    write_retention,
    write_stamp,
)


@flow(name="eval", persist_result=True)
def eval_flow(config: EvalConfig, resume: bool = False) -> dict:
    """Evaluate OUTPUT_DIR/RUN/checkpoints/ckpt.bin-style checkpoints; never trains.

    Args:
        config: Every option of `flowerkit eval` (same names, defaults and validation).
        resume: Continue an incomplete eval run of the same name (same configuration).
    """
    plan = plan_for_flow("eval", config, resume)  # reads and checks the checkpoint before anything is written
    config, checkpoint = plan.config, plan.checkpoint
    assert checkpoint is not None
    device = detect_device(config.device, config.prefer_mps)
    precision = plan.precision
    (selection,) = select_splits(plan)
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": precision, "sample_ids_sha256": {config.split: selection["ids_sha256"]}}

    with run_lifecycle(plan, device["device"], determinism) as record:
        run_dir = plan.layout.run_dir
        evaluation = evaluate(config, str(checkpoint.path), selection, device["device"], precision,
                              checkpoint_sha256=checkpoint.sha256, state=plan.checkpoint_state(), run_dir=run_dir)
        exported = export_predictions(config, evaluation, selection, checkpoint.step, run_dir=run_dir)
        update_record(run_dir, metrics=exported["metrics"], progress={"step": checkpoint.step,
                                                                      "total_steps": checkpoint.step})
        write_stamp(config, record["run_id"], device["device"], precision, "not used (eval-only run)",
                    selection["subset"], run_dir=run_dir)
        write_retention(config, record["run_id"], run_dir=run_dir)
        publish_results(config, "eval", record["run_id"], device["device"], precision, exported["metrics"],
                        checkpoint=str(checkpoint.path), run_dir=run_dir)
    return {"run_dir": str(run_dir), "tb_dir": str(plan.layout.tb_dir), "device": device, "precision": precision,
            "metrics": exported["metrics"], "files": exported["files"]}
