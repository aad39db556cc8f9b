"""How this process takes part in training a planned run: the engine's one entry point for training.

One process trains the run itself; ``--nproc_per_node N`` (N > 1) launches N workers; a process that torchrun
started joins torchrun's process group. The plan's ``execution`` says which; the train task and the CLI's other
processes (``prepare_share``) call the same function and never decide it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowerkit.artifacts.record import add_phases
from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.data.selection import Selection
from flowerkit.engine import distributed, trainer
from flowerkit.engine.progress import Progress, RecordProgress
from flowerkit.engine.trainer import TrainResult
from flowerkit.run.plan import RunPlan


def run_training(plan: RunPlan, train: Selection, val: Selection,
                 on_progress: Callable[[Progress], None] | None = None,
                 sink: ScalarSink | None = None) -> TrainResult | None:
    """Train the plan's run (or this process's share of it) on the ``train`` images, evaluating on ``val``;
    returns the TrainResult where this process holds rank 0, None in the other processes.

    The writing process's progress goes into the run record; ``on_progress`` also hears it (the flow's
    displays), whichever process trains. ``sink`` (the run's tracker) hears the scalars of a training loop in
    this process; launched workers log to the run's files only (``flowerkit runs sync-mlflow`` sends them).
    """
    writes = plan.role == "run"
    if plan.execution.launcher == "torchrun":
        recorded = RecordProgress(plan.layout.run_dir, on_progress) if writes else None
        result = distributed.run_torchrun_rank(plan, train, val, recorded, sink if writes else None)
    elif plan.execution.launcher == "flowerkit":  # rank 0's worker records; its progress comes back through the record
        result = distributed.launch(plan, train, val, on_progress if writes else None)
    else:
        result = trainer.train(plan.train_config, torch.device(plan.device.device), plan.precision, train.table(),
                               val.table(), plan.layout, RecordProgress(plan.layout.run_dir, on_progress),
                               planned_weights=plan.weights, sink=sink)
    if result is not None and writes:
        add_phases(plan.layout.run_dir, training_loop_s=result.loop_seconds, evaluation_loops_s=result.eval_seconds)
    return result
