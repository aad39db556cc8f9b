"""The ``train`` flow: detect the device, select data, train, evaluate, export, stamp, declare retention."""

from __future__ import annotations

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.config import TrainConfig
from flowerkit.device import DeviceChoice, resolve_precision
from flowerkit.engine.trainer import seed_everything
from flowerkit.rundir import check_claimable
from flowerkit.flows.common import run_lifecycle
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
    check_claimable(config, resume)  # exit 4 before any work when the run exists
    device = detect_device(config.device, config.prefer_mps)
    precision = resolve_precision(config.precision, DeviceChoice(**device))
    train_sel = load_subset(config.dataset, config.data_root, "train", config.tiny_train_subset,
                            config.train_batch_size)
    val_sel = load_subset(config.dataset, config.data_root, "val", config.tiny_infer_subset,
                          config.eval_batch_size)
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": precision, "sample_ids_sha256": {"train": train_sel["ids_sha256"], "val": val_sel["ids_sha256"]}}

    with run_lifecycle(config, "train", resume, config.num_steps, device["device"],
                       ["detect_device", "load_subset"], determinism) as record:
        run_dir = config.layout.run_dir
        trained = train(config, device["device"], precision, train_sel, val_sel, run_dir=run_dir)
        evaluation = evaluate(config, trained["checkpoint"], val_sel, device["device"], precision, run_dir=run_dir)
        exported = export_predictions(config, evaluation, val_sel, config.num_steps, run_dir=run_dir)
        update_record(run_dir, metrics=exported["metrics"])
        write_stamp(config, record["run_id"], device["device"], precision, train_sel["subset"], val_sel["subset"],
                    run_dir=run_dir)
        write_retention(config, record["run_id"], run_dir=run_dir)
        publish_results(config, "train", record["run_id"], device["device"], precision, exported["metrics"],
                        trained, run_dir=run_dir)
    return {"run_dir": str(run_dir), "tb_dir": str(config.layout.tb_dir), "device": device, "precision": precision,
            "train": trained, "metrics": exported["metrics"], "files": exported["files"]}
