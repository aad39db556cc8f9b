"""The training loop: SGD with momentum, warmup + decay, clipping, accumulation, eval and checkpoints.

Resumable by construction: the checkpoint holds model, optimizer, scheduler and RNG state plus the step,
and the batch plan depends only on ``(seed, batch index)``, so a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowerkit.artifacts.classification import classification_report
from flowerkit.artifacts.scalars import ScalarLog
from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.run.config import TrainConfig
from flowerkit.data.flowers102 import CATEGORY_NAMES, NUM_CLASSES, labelmap
from flowerkit.data.pipeline import BatchPlan, EvalRange, InputPipeline, SampleTable, shard_bounds
from flowerkit.engine.augment import BatchMixer
from flowerkit.engine.checkpoint import load_checkpoint, save_checkpoint
from flowerkit.engine.ema import make_ema
from flowerkit.engine.evaluator import autocast, predict, prepare_input, prepare_model
from flowerkit.engine.recipe import build_optimizer
from flowerkit.engine.progress import Progress
from flowerkit.engine.schedules import make_scheduler
from flowerkit.engine.selection import Decision, Selector
from flowerkit.engine.world import SINGLE, World
from flowerkit.errors import NonFiniteLossError, PeerStoppedError
from flowerkit.run.layout import RunLayout
from flowerkit.models.weights import WeightsSource, load_weights
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


@dataclass(frozen=True, kw_only=True)
class SelectedCheckpoint:
    """The checkpoint chosen on validation (``--monitor``): the one a training run reports."""

    path: Path
    step: int
    weights: str  # "raw" or "ema"
    monitor: str
    value: float


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a training run did: from which step to which, how fast, and which checkpoint it selected."""

    checkpoint: Path  # the latest (ckpt.bin): what --resume continues from
    weights: str  # what training started from, in words
    start_step: int
    steps: int
    final_loss: float
    images_per_second: float
    selected: SelectedCheckpoint
    stop_reason: str | None = None  # set when early stopping ended the run before --num_steps
    loop_seconds: float = 0.0  # the training loop's time, its evaluations excluded
    eval_seconds: float = 0.0  # the evaluations during training (validation, selection, checkpoints)

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    def selection(self, layout: RunLayout) -> dict:
        """What metrics.json and the run record say about the reported checkpoint."""
        selected = self.selected
        return {"selected_step": selected.step, "selected_checkpoint": layout.relative(selected.path),
                "selected_weights": selected.weights, "monitor": selected.monitor, "monitor_value": selected.value,
                "last_step": self.steps, "stopped_early": self.stopped_early, "stop_reason": self.stop_reason}


def make_pipeline(config, table: SampleTable, img_size: int, device: torch.device) -> InputPipeline:
    return InputPipeline(table, img_size, device, kind=config.data_pipeline, num_workers=config.num_workers,
                         persistent_workers=config.persistent_workers, cache_size=config.cache_size)


@dataclass(frozen=True)
class StepStats:
    loss: float
    accuracy: float
    seen: int
    lr: float


@dataclass(frozen=True, kw_only=True)
class Trainable:
    """The model a step updates and what updates it. ``step_model`` is what the forward pass calls (the
    compiled and/or DistributedDataParallel wrapper; the model itself by default); ``ema`` follows the model."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step_model: torch.nn.Module | None = None
    ema: torch.nn.Module | None = None

    @property
    def forward_model(self) -> torch.nn.Module:
        return self.step_model if self.step_model is not None else self.model


@dataclass(frozen=True, kw_only=True)
class StepSettings:
    """How one optimizer step is computed: the recipe's part of the configuration."""

    precision: str
    max_grad_norm: float
    accumulation: int = 1
    label_smoothing: float = 0.0
    mixer: BatchMixer | None = None

    @classmethod
    def of(cls, config: TrainConfig, precision: str) -> StepSettings:
        mixer = (BatchMixer(config.mixup_alpha, config.cutmix_alpha, NUM_CLASSES, config.seed)
                 if config.mixup_alpha or config.cutmix_alpha else None)
        return cls(precision=precision, max_grad_norm=config.max_grad_norm,
                   accumulation=config.gradient_accumulation_steps, label_smoothing=config.label_smoothing,
                   mixer=mixer)


@dataclass(frozen=True, kw_only=True)
class Sharing:
    """How a step's micro-batches are shared among the processes of a distributed run: ``global_size(k)`` is
    how many samples micro-batch ``k`` holds over all ranks; ``no_sync`` skips DDP's gradient all-reduce."""

    world: World
    global_size: Callable[[int], int]
    no_sync: Callable[[], contextlib.AbstractContextManager]


class TrainStep:
    """One optimizer step over its micro-batches: forward (autocast), backward, clip, SGD, schedule.

    ``train`` and ``flowerkit bench`` share it, so the benchmark's compute-only and end-to-end rates time
    exactly the step a run takes. Loss and accuracy stay on the device until one transfer per step.

    In a distributed run (``sharing``) each rank runs its share of every micro-batch through the
    DistributedDataParallel wrapper, whose ``no_sync`` skips the gradient all-reduce of all but the last
    micro-batch.
    """

    def __init__(self, trainable: Trainable, labels: torch.Tensor, settings: StepSettings,
                 sharing: Sharing | None = None) -> None:
        self.trainable, self.settings, self.sharing = trainable, settings, sharing
        self.labels = labels  # every sample's label, on the model's device
        self.loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)  # smooths soft targets too
        self.world = sharing.world if sharing is not None else SINGLE

    def _share(self, k: int, n: int) -> float:
        """The factor that makes DDP's mean over ranks of this rank's mean loss the mean over all samples of
        micro-batch ``k``: exactly 1.0 in one process, and for equal shares."""
        if self.sharing is None:
            return 1.0
        return n * self.world.size / self.sharing.global_size(k)

    def _gradient_sync(self, i: int) -> contextlib.AbstractContextManager:
        last = i == self.settings.accumulation - 1
        return self.sharing.no_sync() if self.sharing is not None and not last else contextlib.nullcontext()

    def __call__(self, micro_batches: Iterable[tuple[torch.Tensor, np.ndarray]]) -> StepStats:
        """Consume ``accumulation`` micro-batches one at a time (the pipeline keeps producing meanwhile)."""
        device = self.labels.device
        trainable, settings = self.trainable, self.settings
        totals = torch.zeros(2, device=device)  # summed loss, correct predictions
        seen = 0
        first = trainable.scheduler.last_epoch * settings.accumulation  # this step's first micro-batch, run-wide
        for i, (x, positions) in enumerate(micro_batches):
            y = self.labels[torch.as_tensor(positions).to(device, non_blocking=True)]
            target = y
            if settings.mixer is not None and len(y):  # several ranks: each mixes within its own share
                x, target = settings.mixer(x, y, first + i)
                # Training accuracy against mixed targets: the label with the larger share of each image.
                y = target.argmax(1)
            with self._gradient_sync(i):
                with autocast(device, settings.precision):
                    logits = trainable.forward_model(prepare_input(x))
                    # A rank with no sample of an epoch's short last batch still joins the gradient all-reduce.
                    loss = self.loss_fn(logits.float(), target) if len(y) else logits.float().sum() * 0.0
                (loss * self._share(first + i, len(y)) / settings.accumulation).backward()
            totals += torch.stack([loss.detach().float() * len(y), (logits.detach().argmax(1) == y).sum().float()])
            seen += len(y)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable.model.parameters(), settings.max_grad_norm)
        lr = max(trainable.scheduler.get_last_lr())  # the rate this step uses (the head's, under layer decay)
        self._optimizer_step()
        if trainable.ema is not None:
            trainable.ema.update_parameters(trainable.model)
        trainable.scheduler.step()
        trainable.optimizer.zero_grad(set_to_none=True)
        # The step's one device-to-host sync carries the divergence check too. A non-finite loss or gradient
        # norm has already poisoned the weights in memory: raise before anything of this step is logged or saved.
        # Summed over the ranks, so every rank logs (and checks) what one process would have.
        summary = self.world.all_reduce_sum(torch.cat([totals, totals.new_tensor([seen])]))
        loss_sum, correct, seen, norm = torch.cat([summary, grad_norm.detach().float().reshape(1)]).tolist()
        if not math.isfinite(loss_sum):
            raise NonFiniteLossError(trainable.scheduler.last_epoch, "loss")
        if not math.isfinite(norm):
            raise NonFiniteLossError(trainable.scheduler.last_epoch, "gradient norm")
        return StepStats(loss_sum / seen, correct / seen, int(seen), lr)

    def _optimizer_step(self) -> None:
        """``optimizer.step()``, with an overflow inside the optimiser reported as the divergence it is.

        AdamW at a huge rate computes a step size beyond float32 and torch raises a bare RuntimeError from
        ``addcdiv_``: unmapped, that was an "unexpected error" that Prefect retried twice from the same state."""
        try:
            self.trainable.optimizer.step()
        except RuntimeError as exc:
            if "overflow" not in str(exc):
                raise
            raise NonFiniteLossError(self.trainable.scheduler.last_epoch + 1,
                                     "optimizer's update (it overflows float32)") from exc


def train(config: TrainConfig, device: torch.device, precision: str, train_table: SampleTable,
          val_table: SampleTable, layout: RunLayout, on_progress: Callable[[Progress], None] | None = None,
          world: World = SINGLE, planned_weights: WeightsSource | None = None,
          sink: ScalarSink | None = None) -> TrainResult | None:
    """Train to ``config.num_steps`` (or an early stop), resuming from the run's latest checkpoint when one
    exists; every evaluation offers its weights to the ``Selector``, which keeps checkpoints/best.bin.

    In a distributed ``world`` every rank calls this with the same arguments and trains on its share of each
    batch. Rank 0 alone reads the checkpoint (and hands it to the others), writes metrics, TensorBoard and
    checkpoints, reports progress and returns the result; the other ranks return None. ``planned_weights``:
    what the run starts from, as its plan resolved it; ``sink``: the run's tracker, if the flow opened one.
    """
    ckpt_path = layout.checkpoint
    model = build_model(config.model_type, config.img_size, NUM_CLASSES)
    optimizer = build_optimizer(model, config.optimizer, config.learning_rate, config.weight_decay,
                                config.layer_decay)
    scheduler = make_scheduler(optimizer, config.warmup_steps, config.num_steps, config.decay_type)
    selector = Selector(config.monitor, config.save_top_k, config.early_stop_patience)

    start_step, weights, stopped_early, ema_state, loss_value = 0, "", False, None, float("nan")
    state = world.broadcast_object(
        load_checkpoint(ckpt_path, map_location="cpu") if world.is_main and ckpt_path.exists() else None)
    if state is not None:
        model.load_state_dict(state["model"])
        ema_state = state.get("ema")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _restore_rng(_rank_rng(state["rng"], world), device)
        selector.load_state_dict(state.get("selection"))
        start_step, weights = int(state["step"]), state.get("weights", "")
        stopped_early = bool(state.get("stopped_early", False))
        loss_value = float(state.get("train_loss", loss_value))  # the result of a run resumed after its last step
        if world.is_main:
            log.info("resuming from %s at step %d of %d", ckpt_path, start_step, config.num_steps)
    elif world.is_main:  # the other ranks receive these weights when DDP wraps the model
        # The plan's weights (resolved and hashed once); a caller without a plan names them by --pretrained.
        weights = load_weights(model, planned_weights or config.pretrained, config.model_type).describe()
        log.info("weights: %s", weights)
    else:
        torch.manual_seed(config.seed + world.rank)  # the same init everywhere, but each rank its own dropout
    # An earlier attempt may have logged steps past its last checkpoint (or before its first): they are
    # logged again, so drop them from metrics.jsonl and have TensorBoard purge them too.
    retried = world.is_main and _truncate_metrics(layout.metrics_jsonl, start_step)
    if retried and not start_step:
        log.info("an earlier attempt stopped before its first checkpoint: starting again from step 0")
    model = prepare_model(model, device)  # in place: the optimizer's parameters stay the same objects
    _move_optimizer_state(optimizer, device)
    ddp = world.wrap(model, device)
    step_model = torch.compile(ddp) if config.compile else ddp
    ema = make_ema(model, config.ema_decay) if config.ema_decay else None  # on the model's device
    if ema is not None and ema_state is not None:
        ema.load_state_dict(ema_state)

    scalars = (ScalarLog(layout.metrics_jsonl, layout.tb_dir, purge_step=start_step + 1 if retried else None,
                         sink=sink) if world.is_main else None)
    plan = BatchPlan(train_table, config.micro_batch_size, config.seed)
    with world.local_first():  # one process per machine decodes the images into the pixel caches
        train_pipe = make_pipeline(config, train_table, config.img_size, device)
        val_pipe = make_pipeline(config, val_table, config.img_size, device)
    labels = torch.as_tensor(train_table.labels, dtype=torch.long).to(device)
    accumulation = config.gradient_accumulation_steps
    trainable = Trainable(model=model, optimizer=optimizer, scheduler=scheduler, step_model=step_model, ema=ema)
    sharing = (Sharing(world=world, global_size=plan.batch_length, no_sync=ddp.no_sync) if world.distributed
               else None)
    train_step = TrainStep(trainable, labels, StepSettings.of(config, precision), sharing)
    evaluation = _Evaluation(run=_TrainingRun(config=config, layout=layout, precision=precision, device=device,
                                              world=world, weights=weights),
                             trainable=trainable, selector=selector, val_pipe=val_pipe, val_table=val_table,
                             scalars=scalars)
    console_every = max(1, config.num_steps // 20)

    model.train()
    step, images, t0 = start_step, 0, time.perf_counter()
    last_eval, eval_seconds = None, 0.0
    saved = start_step if state is not None else None  # the step ckpt.bin holds: a divergence names it
    batches = iter(train_pipe(plan.batches(start_step * accumulation, config.num_steps * accumulation,
                                           world.rank, world.size)))
    try:
        while step < config.num_steps and not stopped_early:
            stats = train_step(itertools.islice(batches, accumulation))
            step += 1
            images += stats.seen
            loss_value, lr = stats.loss, stats.lr
            if scalars is not None:
                scalars.log("train", step, config.num_steps,
                            {"loss": loss_value, "lr": lr, "accuracy": stats.accuracy}, "train")
                if step % console_every == 0 or step == config.num_steps:
                    log.info("step %d/%d  loss %.4f  lr %.5f  %.1f img/s", step, config.num_steps, loss_value, lr,
                             images / (time.perf_counter() - t0))
            if step % config.eval_every == 0 or step == config.num_steps:
                evaluated = time.perf_counter()
                last_eval, stopped_early = evaluation(step, loss_value)
                eval_seconds += time.perf_counter() - evaluated
                saved = step  # every evaluation ends by writing ckpt.bin (rank 0), once its weights are finite
            if on_progress:
                on_progress(Progress(step, config.num_steps, images / (time.perf_counter() - t0), last_eval))
    except NonFiniteLossError as diverged:
        # The check that raised knows the step, not the run's files: only a checkpoint that exists is offered.
        raise diverged.note_checkpoint(saved)
    finally:
        if scalars is not None:
            scalars.close()
    if not world.is_main:
        return None
    elapsed = time.perf_counter() - t0
    best = selector.best
    assert best is not None, "training always evaluates its last step"
    selected = SelectedCheckpoint(path=layout.best_checkpoint, step=best.step, weights=best.weights,
                                  monitor=config.monitor, value=best.value)
    return TrainResult(checkpoint=ckpt_path, weights=weights, start_step=start_step, steps=step,
                       final_loss=float(loss_value), images_per_second=images / elapsed if elapsed else 0.0,
                       selected=selected, stop_reason=selector.stop_reason() if stopped_early else None,
                       loop_seconds=elapsed - eval_seconds, eval_seconds=eval_seconds)


@dataclass(frozen=True, kw_only=True)
class _TrainingRun:
    """Where a training run's evaluations go and how they are computed: fixed for the whole run."""

    config: TrainConfig
    layout: RunLayout
    precision: str
    device: torch.device
    world: World
    weights: str  # what training started from, recorded in every checkpoint


@dataclass(kw_only=True)
class _Evaluation:
    """Evaluation during training, selection and checkpoints. Every rank evaluates its share of the
    validation table; rank 0 alone decides and writes, then tells the others whether to stop."""

    run: _TrainingRun
    trainable: Trainable
    selector: Selector
    val_pipe: InputPipeline
    val_table: SampleTable
    scalars: ScalarLog | None

    def __call__(self, step: int, train_loss: float) -> tuple[dict | None, bool]:
        """Rank 0's evaluation summary (``{step, accuracy, loss}``; None elsewhere) and whether to stop now."""
        run, trainable = self.run, self.trainable
        candidates = {"raw": trainable.model} | ({"ema": trainable.ema.module} if trainable.ema is not None else {})
        for net in candidates.values():
            check_finite_weights(net, step)  # a finite loss can still leave inf weights (a huge rate)
        logits = {name: _predict_all(net, self.val_pipe, run.config.eval_batch_size, run.precision, run.world,
                                     run.device) for name, net in candidates.items()}
        rng = run.world.all_gather_object(_rng_state(run.device))  # each rank's: resume is exact per rank
        outcome = None
        if run.world.is_main:
            try:
                outcome = self._select_and_save(step, candidates, logits, rng, train_loss)
            except Exception as exc:  # the other ranks wait for rank 0's word: give it before failing
                run.world.broadcast_object({"error": f"{type(exc).__name__}: {exc}"})
                raise
        outcome = run.world.broadcast_object(outcome)
        if "error" in outcome:
            raise PeerStoppedError(f"Rank {run.world.rank} stopped because rank 0 failed at step {step}: "
                                   f"{outcome['error']}")
        return outcome["last_eval"], outcome["stop"]

    def _select_and_save(self, step: int, candidates: dict[str, torch.nn.Module], logits: dict[str, np.ndarray],
                         rng: list[dict[str, torch.Tensor]], train_loss: float) -> dict:
        run = self.run
        reports = {name: _evaluate_during_training(logits[name], self.val_table, run.config, step, self.scalars,
                                                   name) for name in candidates}
        decision = self.selector.update(self.selector.candidate(step, reports))
        raw = reports["raw"]
        transform = self.val_pipe.eval_transform().to_dict()  # what flowerkit predict must do to a photo
        _save_selected(run.layout, decision, candidates, step, run.config, run.weights, transform)
        _save(run.layout.checkpoint, self.trainable, step, run, self.selector, decision.stop, rng, train_loss,
              transform)
        if decision.stop:
            log.info("stopping early at step %d: %s", step, self.selector.stop_reason())
        return {"stop": decision.stop, "last_eval": {"step": step, "accuracy": raw["accuracy"], "loss": raw["loss"]}}


def _predict_all(model: torch.nn.Module, pipe: InputPipeline, batch_size: int, precision: str, world: World,
                 device: torch.device) -> np.ndarray:
    """Logits of every sample of ``pipe.table``, in table order: each rank predicts a contiguous share."""
    if not world.distributed:
        return predict(model, pipe, batch_size, precision)
    total = len(pipe.table)
    lo, hi = shard_bounds(total, world.rank, world.size)
    share = predict(model, pipe, batch_size, precision, batches=EvalRange(hi, batch_size, lo))
    return world.gather_rows(share.reshape(hi - lo, NUM_CLASSES), total, device)


def _evaluate_during_training(logits: np.ndarray, table: SampleTable, config: TrainConfig, step: int,
                              scalars: ScalarLog | None, weights: str = "raw") -> dict:
    """Report one set of weights' validation logits; logs ``val/*`` (``val_ema/*`` for the EMA weights)."""
    report = classification_report(logits, table.labels, list(CATEGORY_NAMES))
    if not math.isfinite(report["loss"]):  # finite weights can still overflow the logits
        raise NonFiniteLossError(step, "validation loss")
    suffix = "" if weights == "raw" else f"_{weights}"
    if scalars is not None:
        scalars.log(f"eval{suffix}", step, config.num_steps,
                    {k: report[k] for k in ("loss", "accuracy", "top5_accuracy", "macro_f1")}, f"val{suffix}")
        if weights == "raw":
            scalars.confusion_image(step, report["confusion"], "val/confusion_matrix")  # at every evaluation
    log.info("eval%s at step %d: accuracy %.4f  loss %.4f (%d samples)", suffix, step, report["accuracy"],
             report["loss"], report["num_samples"])
    return report


def _save_selected(layout: RunLayout, decision: Decision, candidates: dict[str, torch.nn.Module], step: int,
                   config: TrainConfig, weights: str, eval_transform: dict | None = None) -> None:
    """best.bin when this evaluation is the new best; best-<step>.bin for the top-k (dropping those pushed out).
    Written before ckpt.bin: a run killed in between recomputes this step on resume and writes them again."""
    chosen = decision.candidate
    if not (decision.improved or decision.entered_top_k):
        return
    payload = _model_payload(candidates[chosen.weights], step, config, weights, eval_transform) | {
        "selection": {"monitor": config.monitor, "value": chosen.value, "weights": chosen.weights}}
    if decision.improved:
        save_checkpoint(layout.best_checkpoint, payload)
    if decision.entered_top_k:
        save_checkpoint(layout.top_k_checkpoint(step), payload)
    for dropped in decision.evicted:
        layout.top_k_checkpoint(dropped.step).unlink(missing_ok=True)


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Raise NonFiniteLossError when any weight is NaN or infinite: such a checkpoint is never written."""
    finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    if not bool(finite):  # one sync per checkpoint
        raise NonFiniteLossError(step, "model's weights after the update")


def _model_payload(model: torch.nn.Module, step: int, config: TrainConfig, weights: str,
                   eval_transform: dict | None = None) -> dict:
    """What every checkpoint holds: the weights and what a reader needs to rebuild and label the model, and
    (``eval_transform``) to feed it a new image as the run's evaluation fed its images."""
    return ({"eval_transform": eval_transform} if eval_transform is not None else {}) | {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "model_type": config.model_type,
        "img_size": config.img_size,
        "num_classes": NUM_CLASSES,
        "labelmap": labelmap(),
        "config": config.model_dump(mode="json"),
        "config_hash": config.config_hash(),
        "weights": weights,
    }


def _save(path: Path, trainable: Trainable, step: int, run: _TrainingRun, selector: Selector, stopped_early: bool,
          rng: list[dict[str, torch.Tensor]], train_loss: float, eval_transform: dict) -> None:
    """The latest checkpoint: everything a resumed run needs to continue exactly (``rng``: each rank's
    ``_rng_state``, rank 0's first)."""
    ema = trainable.ema
    extra = {"ema": {k: v.detach().cpu() for k, v in ema.state_dict().items()}} if ema is not None else {}
    save_checkpoint(path, _model_payload(trainable.model, step, run.config, run.weights, eval_transform) | extra | {
        "optimizer": trainable.optimizer.state_dict(),
        "scheduler": trainable.scheduler.state_dict(),
        "rng": rng[0] | ({"ranks": rng} if len(rng) > 1 else {}),
        "selection": selector.state_dict(),
        "stopped_early": stopped_early,
        "train_loss": train_loss,
    })


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's random state: the CPU generator's, and its GPU's (where dropout draws on CUDA)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:  # a checkpoint written on the CPU has no GPU state
        torch.cuda.set_rng_state(state["cuda"], device)


def _rank_rng(rng: dict, world: World) -> dict[str, torch.Tensor]:
    """This rank's saved random state (rank 0's, the only one a one-process checkpoint holds, otherwise)."""
    ranks = rng.get("ranks")
    return ranks[world.rank] if world.distributed and ranks and len(ranks) == world.size else rng


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
