"""The ``eval`` flow: evaluate a checkpoint on a split (or its tiny subset) without training."""

from __future__ import annotations

import logging

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.config import EvalConfig
from flowerkit.device import DeviceChoice, resolve_precision
from flowerkit.engine.trainer import seed_everything
from flowerkit.preflight import resolve_eval_config
from flowerkit.rundir import check_claimable
from flowerkit.flows.common import run_lifecycle
from flowerkit.tasks import (
    detect_device,
    evaluate,
    export_predictions,
    load_subset,
    publish_results,
    write_retention,
    write_stamp,
)

log = logging.getLogger("flowerkit.flows.eval")


@flow(name="eval", persist_result=True)
def eval_flow(config: EvalConfig, resume: bool = False) -> dict:
    """Evaluate OUTPUT_DIR/RUN/checkpoints/ckpt.bin-style checkpoints; never trains.

    Args:
        config: Every option of `flowerkit eval` (same names, defaults and validation).
        resume: Continue an incomplete eval run of the same name (same configuration).
    """
    check_claimable(config, resume)
    config, step = resolve_eval_config(config)  # checks the checkpoint before anything is written
    if config.pretrained is not None:
        log.info("--pretrained %s is ignored: the checkpoint holds the weights", config.pretrained)
    device = detect_device(config.device, config.prefer_mps)
    precision = resolve_precision(config.precision, DeviceChoice(**device))
    selection = load_subset(config.dataset, config.data_root, config.split, config.tiny_infer_subset,
                            config.eval_batch_size)
    determinism = seed_everything(config.seed, config.deterministic) | {
        "precision": precision, "sample_ids_sha256": {config.split: selection["ids_sha256"]}}

    with run_lifecycle(config, "eval", resume, step, device["device"], ["detect_device", "load_subset"],
                       determinism) as record:
        run_dir = config.layout.run_dir
        evaluation = evaluate(config, str(config.checkpoint), selection, device["device"], precision,
                              run_dir=run_dir)
        exported = export_predictions(config, evaluation, selection, step, run_dir=run_dir)
        update_record(run_dir, metrics=exported["metrics"], progress={"step": step, "total_steps": step})
        write_stamp(config, record["run_id"], device["device"], precision, "not used (eval-only run)",
                    selection["subset"], run_dir=run_dir)
        write_retention(config, record["run_id"], run_dir=run_dir)
        publish_results(config, "eval", record["run_id"], device["device"], precision, exported["metrics"],
                        checkpoint=str(config.checkpoint), run_dir=run_dir)
    return {"run_dir": str(run_dir), "tb_dir": str(config.layout.tb_dir), "device": device, "precision": precision,
            "metrics": exported["metrics"], "files": exported["files"]}
