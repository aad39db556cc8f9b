"""The ``train`` flow: detect the device, select data, train, evaluate, export, stamp, declare retention."""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.config import TrainConfig
from flowerkit.engine.trainer import seed_everything
from flowerkit.flows.common import run_lifecycle, select_splits
from flowerkit.plan import plan_for_flow
from flowerkit.tasks import (
    detect_device,
    evaluate,
    export_predictions,
    publish_results,
    train,
    write_retention,
    write_stamp,
)


@flow(name="train", persist_result=True)
def train_flow(config: TrainConfig, resume: bool = False) -> dict:
    """Train a ViT on Flowers-102 and leave every artifact of the run under OUTPUT_DIR/NAME.

    Args:
        config: Every option of `flowerkit train` (same names, defaults and validation).
        resume: Continue an incomplete run of the same name (same configuration) from its last checkpoint.
    """
    plan = plan_for_flow("train", config, resume)  # exit 4 / 2 / 3 before any work
    device = detect_device(config.device, config.prefer_mps)
    precision = plan.precision
    train_sel, val_sel = select_splits(plan)
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": precision, "sample_ids_sha256": {"train": train_sel["ids_sha256"], "val": val_sel["ids_sha256"]}}

    with run_lifecycle(plan, device["device"], determinism) as record:
        run_dir = plan.layout.run_dir
        trained = train(config, device["device"], precision, train_sel, val_sel, run_dir=run_dir)
        evaluation = evaluate(config, trained["checkpoint"], val_sel, device["device"], precision, run_dir=run_dir)
        exported = export_predictions(config, evaluation, val_sel, config.num_steps, run_dir=run_dir)
        update_record(run_dir, metrics=exported["metrics"])
        write_stamp(config, record["run_id"], device["device"], precision, train_sel["subset"], val_sel["subset"],
                    run_dir=run_dir)
        write_retention(config, record["run_id"], run_dir=run_dir)
        publish_results(config, "train", record["run_id"], device["device"], precision, exported["metrics"],
                        trained, run_dir=run_dir)
    return {"run_dir": str(run_dir), "tb_dir": str(plan.layout.tb_dir), "device": device, "precision": precision,
            "train": trained, "metrics": exported["metrics"], "files": exported["files"]}
