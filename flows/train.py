"""The ``train`` flow: detect the device, select data, train, evaluate, export, stamp, declare retention."""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.config import TrainConfig
from flowerkit.engine.trainer import TrainResult, seed_everything
from flowerkit.flows.common import run_lifecycle, select_splits
from flowerkit.plan import plan_for_flow
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
        # The report is the checkpoint selected on validation (--monitor), not the last step's; the training
        # loop already logged that step's validation row, so the export adds per-class views only.
        selected = TrainResult(**trained).selection(config.layout)
        evaluation = evaluate(config, trained["selected_checkpoint"], val_sel, device["device"], precision,
                              run_dir=run_dir)
        exported = export_predictions(config, evaluation, val_sel, config.num_steps, summary_extra=selected,
                                      log_summary=False, run_dir=run_dir)
        if config.test_after:  # once, after selection is final: the test split never influences it
            test_sel = load_subset(config.dataset, config.data_root, "test", config.tiny_infer_subset,
                                   config.eval_batch_size)
            test_eval = evaluate(config, trained["selected_checkpoint"], test_sel, device["device"], precision,
                                 held_out=True, run_dir=run_dir)
            tested = export_predictions(config, test_eval, test_sel, config.num_steps, held_out=True,
                                        run_dir=run_dir)
            exported = {"metrics": tested["metrics"], "files": sorted(set(exported["files"] + tested["files"]))}
        update_record(run_dir, metrics=exported["metrics"], selection=selected)
        write_stamp(config, record["run_id"], device["device"], precision, train_sel["subset"], val_sel["subset"],
                    run_dir=run_dir)
        write_retention(config, record["run_id"], run_dir=run_dir)
        publish_results(config, "train", record["run_id"], device["device"], precision, exported["metrics"],
                        trained, run_dir=run_dir)
    return {"run_dir": str(run_dir), "tb_dir": str(plan.layout.tb_dir), "device": device, "precision": precision,
            "train": trained, "metrics": exported["metrics"], "files": exported["files"]}
