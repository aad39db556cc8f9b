"""The training loop: SGD with momentum, warmup + decay, clipping, accumulation, eval and checkpoints.

Resumable by construction: the checkpoint holds model, optimizer, scheduler and RNG state plus the step,
and the batch plan depends only on ``(seed, batch index)``, so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from flowerkit.artifacts.classification import classification_report
from flowerkit.artifacts.scalars import ScalarLog
from flowerkit.config import TrainConfig
from flowerkit.data.flowers102 import CATEGORY_NAMES, NUM_CLASSES, labelmap
from flowerkit.data.pipeline import BatchPlan, InputPipeline, SampleTable
from flowerkit.engine.checkpoint import load_checkpoint, save_checkpoint
from flowerkit.engine.evaluator import autocast, predict, prepare_input, prepare_model
from flowerkit.engine.progress import Progress
from flowerkit.engine.schedules import make_scheduler
from flowerkit.layout import RunLayout
from flowerkit.models.npz import load_pretrained
from flowerkit.models.vit import build_model

log = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool) -> dict:
    """Seed Python, NumPy and torch; returns the determinism flags actually in force (for the run record)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))  # inherited by spawned DataLoader workers
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return {
        "seed": seed,
        "deterministic": deterministic,
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }


@dataclass
class TrainResult:
    checkpoint: str
    start_step: int
    steps: int
    final_loss: float
    images_per_second: float
    weights: str

    def to_dict(self) -> dict:
        return asdict(self)


def make_pipeline(config, table: SampleTable, img_size: int, device: torch.device) -> InputPipeline:
    return InputPipeline(table, img_size, device, kind=config.data_pipeline, num_workers=config.num_workers,
                         persistent_workers=config.persistent_workers)


@dataclass(frozen=True)
class StepStats:
    loss: float
    accuracy: float
    seen: int
    lr: float


class TrainStep:
    """One optimizer step over its micro-batches: forward (autocast), backward, clip, SGD, schedule.

    ``train`` and ``flowerkit bench`` share it, so the benchmark's compute-only and end-to-end rates time
    exactly the step a run takes. Loss and accuracy stay on the device until one transfer per step.
    """

    def __init__(self, model: torch.nn.Module, step_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler, labels: torch.Tensor, precision: str, max_grad_norm: float,
                 accumulation: int = 1) -> None:
        self.model, self.step_model, self.optimizer, self.scheduler = model, step_model, optimizer, scheduler
        self.labels = labels  # every sample's label, on the model's device
        self.precision, self.max_grad_norm, self.accumulation = precision, max_grad_norm, accumulation
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def __call__(self, micro_batches: Iterable[tuple[torch.Tensor, np.ndarray]]) -> StepStats:
        """Consume ``accumulation`` micro-batches one at a time (the pipeline keeps producing meanwhile)."""
        device = self.labels.device
        totals = torch.zeros(2, device=device)  # summed loss, correct predictions
        seen = 0
        for x, positions in micro_batches:
            y = self.labels[torch.as_tensor(positions).to(device, non_blocking=True)]
            with autocast(device, self.precision):
                logits = self.step_model(prepare_input(x))
                loss = self.loss_fn(logits.float(), y)
            (loss / self.accumulation).backward()
            totals += torch.stack([loss.detach().float() * len(y), (logits.detach().argmax(1) == y).sum().float()])
            seen += len(y)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct = totals.tolist()  # the step's one device-to-host sync
        return StepStats(loss_sum / seen, correct / seen, seen, lr)


def train(config: TrainConfig, device: torch.device, precision: str, train_table: SampleTable,
          val_table: SampleTable, layout: RunLayout,
          on_progress: Callable[[Progress], None] | None = None) -> TrainResult:
    """Train to ``config.num_steps``, resuming from the run's latest checkpoint when one exists."""
    ckpt_path = layout.checkpoint
    model = build_model(config.model_type, config.img_size, NUM_CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9,
                                weight_decay=config.weight_decay)
    scheduler = make_scheduler(optimizer, config.warmup_steps, config.num_steps, config.decay_type)

    start_step, weights = 0, ""
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        start_step, weights = int(state["step"]), state.get("weights", "")
        log.info("resuming from %s at step %d of %d", ckpt_path, start_step, config.num_steps)
    else:
        weights = load_pretrained(model, config.pretrained_dir, config.model_type)
        log.info("weights: %s", weights)
    # An earlier attempt may have logged steps past its last checkpoint (or before its first): they are
    # logged again, so drop them from metrics.jsonl and have TensorBoard purge them too.
    retried = _truncate_metrics(layout.metrics_jsonl, start_step)
    if retried and not start_step:
        log.info("an earlier attempt stopped before its first checkpoint: starting again from step 0")
    model = prepare_model(model, device)  # in place: the optimizer's parameters stay the same objects
    _move_optimizer_state(optimizer, device)
    step_model = torch.compile(model) if config.compile else model

    scalars = ScalarLog(layout.metrics_jsonl, layout.tb_dir, purge_step=start_step + 1 if retried else None)
    plan = BatchPlan(train_table, config.micro_batch_size, config.seed)
    train_pipe = make_pipeline(config, train_table, config.img_size, device)
    val_pipe = make_pipeline(config, val_table, config.img_size, device)
    labels = torch.as_tensor(train_table.labels, dtype=torch.long).to(device)
    accumulation = config.gradient_accumulation_steps
    train_step = TrainStep(model, step_model, optimizer, scheduler, labels, precision, config.max_grad_norm,
                           accumulation)
    console_every = max(1, config.num_steps // 20)

    model.train()
    step, loss_value, images, t0 = start_step, float("nan"), 0, time.perf_counter()
    last_eval = None
    batches = iter(train_pipe(plan.batches(start_step * accumulation, config.num_steps * accumulation)))
    try:
        while step < config.num_steps:
            stats = train_step(itertools.islice(batches, accumulation))
            step += 1
            images += stats.seen
            loss_value, lr = stats.loss, stats.lr
            scalars.log("train", step, config.num_steps, {"loss": loss_value, "lr": lr, "accuracy": stats.accuracy},
                        "train")
            if step % console_every == 0 or step == config.num_steps:
                log.info("step %d/%d  loss %.4f  lr %.5f  %.1f img/s", step, config.num_steps, loss_value, lr,
                         images / (time.perf_counter() - t0))
            if step % config.eval_every == 0 or step == config.num_steps:
                if step < config.num_steps:  # the final evaluation is the evaluate task's
                    last_eval = _evaluate_during_training(step_model, val_pipe, val_table, config, precision, step,
                                                          scalars)
                _save(ckpt_path, model, optimizer, scheduler, step, config, weights)
            if on_progress:
                on_progress(Progress(step, config.num_steps, images / (time.perf_counter() - t0), last_eval))
    finally:
        scalars.close()
    elapsed = time.perf_counter() - t0
    return TrainResult(str(ckpt_path), start_step, step, float(loss_value), images / elapsed if elapsed else 0.0,
                       weights)


def _evaluate_during_training(model, pipe: InputPipeline, table: SampleTable, config: TrainConfig, precision: str,
                              step: int, scalars: ScalarLog) -> dict:
    logits = predict(model, pipe, config.eval_batch_size, precision)
    report = classification_report(logits, table.labels, list(CATEGORY_NAMES))
    scalars.log("eval", step, config.num_steps, {k: report[k] for k in ("loss", "accuracy", "top5_accuracy",
                                                                        "macro_f1")}, "val")
    scalars.confusion_image(step, report["confusion"], "val/confusion_matrix")  # at every evaluation
    log.info("eval at step %d: accuracy %.4f  loss %.4f (%d samples)", step, report["accuracy"], report["loss"],
             report["num_samples"])
    return {"step": step, "accuracy": report["accuracy"], "loss": report["loss"]}


def _save(path: Path, model, optimizer, scheduler, step: int, config: TrainConfig, weights: str) -> None:
    save_checkpoint(path, {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "model_type": config.model_type,
        "img_size": config.img_size,
        "num_classes": NUM_CLASSES,
        "labelmap": labelmap(),
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "weights": weights,
        "rng": {"torch": torch.get_rng_state()},
    })


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value):
                state[key] = value.to(device)


def _truncate_metrics(path: Path, last_step: int) -> bool:
    """Drop rows past ``last_step``; returns whether an earlier attempt had logged anything."""
    if not path.exists():
        return False
    kept = [line for line in path.read_text().splitlines(keepends=True) if _row_step(line) <= last_step]
    path.write_text("".join(kept))
    return True


def _row_step(line: str) -> float:
    """A row's step; a line torn by a killed process counts as past every checkpoint, so it is dropped."""
    try:
        return json.loads(line)["step"] if line.endswith("\n") else float("inf")
    except (ValueError, KeyError, TypeError):
        return float("inf")
