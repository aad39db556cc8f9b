"""The ``train`` task: a retry resumes from the last checkpoint instead of starting over."""

from __future__ import annotations

from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.data.selection import Selection
from flowerkit.engine.progress import Listener, Progress
from flowerkit.engine.run import run_training
from flowerkit.engine.trainer import TrainResult
from flowerkit.run.plan import RunPlan
from flowerkit.tasks.caching import train_cache_key
from flowerkit.tasks.common import run_task
from flowerkit.tasks.reporting import ProgressArtifact


# A retry (an exception part-way) and a --resume after a killed process both continue from the run's
# checkpoints/ckpt.bin: the trainer resumes from it when it exists.
@run_task("train", persist_result=True, cache_key_fn=train_cache_key)
def train(plan: RunPlan, train_selection: Selection, val_selection: Selection,
          on_progress: Listener | None = None, sink: ScalarSink | None = None) -> TrainResult | None:
    """Train the plan's run; the engine decides how (one process, launched workers, torchrun's ranks).
    ``on_progress``: the caller's display of every step (the CLI's), in this process; ``sink``: the run's
    tracker (its scalars, from this process's training loop)."""
    artifact = ProgressArtifact("train", plan.config.name)

    def show(report: Progress) -> None:  # the Prefect UI's progress, and the caller's display if any
        artifact(report)
        if on_progress is not None:
            on_progress(report)

    return run_training(plan, train_selection, val_selection, on_progress=show, sink=sink)
