"""The ``train`` task: a retry resumes from the last checkpoint instead of starting over."""

from __future__ import annotations

from pathlib import Path

import torch
from prefect import task

from flowerkit.artifacts.record import set_progress
from flowerkit.config import TrainConfig
from flowerkit.data.selection import Selection
from flowerkit.engine import distributed, trainer
from flowerkit.engine.progress import Progress, publish
from flowerkit.tasks.prefect_artifacts import ProgressArtifact
from flowerkit.throttle import Throttle
from flowerkit.tasks.caching import train_cache_key
from flowerkit.tasks.common import retry_unless_user_error, tracked

TRAIN_RETRIES = 2
RECORD_PROGRESS_INTERVAL_S = 0.5  # a read-modify-write of run_record.json per step is needless I/O


# A retry (an exception part-way) and a --resume after a killed process both continue from
# run_dir/checkpoints/ckpt.bin: trainer.train resumes from it when it exists.
@task(name="train", retries=TRAIN_RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      persist_result=True, cache_key_fn=train_cache_key)
@tracked("train", TRAIN_RETRIES)
def train(config: TrainConfig, device: str, precision: str, train_selection: dict, val_selection: dict, *,
          run_dir: Path) -> dict:
    progress = ProgressArtifact("train", config.name)
    record_progress = Throttle(RECORD_PROGRESS_INTERVAL_S)

    def show(report: Progress) -> None:
        progress(report)
        publish(report)  # the CLI's live display, when one is subscribed in this process

    def on_progress(report: Progress) -> None:
        if record_progress.ready(report.step, report.total):  # readers follow steps live through metrics.jsonl
            set_progress(run_dir, report.step, report.total)
        show(report)

    if distributed.torchrun_env() is not None:  # rank 0 of torchrun's processes: train with them, here
        return distributed.run_torchrun_rank(config, device, precision, train_selection, val_selection,
                                             on_progress)
    if config.world_size > 1:  # start the training processes; rank 0's progress comes back through the record
        return distributed.launch(config, device, precision, train_selection, val_selection, on_progress=show)
    result = trainer.train(
        config, torch.device(device), precision, Selection.from_dict(train_selection).table(),
        Selection.from_dict(val_selection).table(), config.layout, on_progress=on_progress)
    return result.to_dict()
