"""Evaluate one checkpoint on one selection of images, for a planned run: raw logits to the run's outputs.

The flows' ``evaluate`` task calls this; the reviewable artifacts (predictions, per-class metrics) are made
from the saved outputs by ``flowerkit.artifacts.export``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from flowerkit.artifacts.export import save_outputs
from flowerkit.artifacts.record import add_phases
from flowerkit.data.selection import Selection
from flowerkit.engine.checkpoint import read_checkpoint
from flowerkit.engine.evaluator import evaluate_checkpoint
from flowerkit.engine.trainer import make_pipeline
from flowerkit.errors import ConfigError
from flowerkit.run.plan import RunPlan


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One checkpoint's logits over one selection, saved in the run's evaluation outputs."""

    outputs: Path
    split: str
    step: int
    num_samples: int
    checkpoint_sha256: str
    ids_sha256: str


def evaluate_selection(plan: RunPlan, checkpoint: Path, selection: Selection, *, held_out: bool = False) -> Evaluation:
    """Run ``checkpoint``'s model over ``selection``; save the logits (a held-out split's to its own file).

    When the plan read this checkpoint (an eval run), the bytes evaluated must be the bytes it planned with:
    a checkpoint replaced in between is an error, never a silently different report.
    """
    read = read_checkpoint(checkpoint)
    state, sha256 = read.state, read.sha256
    planned = plan.checkpoint
    if planned is not None and planned.path == checkpoint and planned.sha256 != sha256:
        raise ConfigError(f"The checkpoint {checkpoint} changed after the run was planned (sha256 "
                          f"{planned.sha256[:12]} then, {sha256[:12]} now). Evaluate it again with a new --name.")
    table = selection.table()
    pipeline = make_pipeline(plan.config, table, int(state["img_size"]), torch.device(plan.device.device))
    started = time.perf_counter()
    logits = evaluate_checkpoint(state, pipeline, plan.config.eval_batch_size, plan.precision)
    add_phases(plan.layout.run_dir, evaluation_loops_s=time.perf_counter() - started)
    layout = plan.layout
    target = layout.eval_outputs_of(selection.split) if held_out else layout.eval_outputs
    outputs = save_outputs(target, table.image_ids, table.labels, logits)
    return Evaluation(outputs=outputs, split=selection.split, step=int(state["step"]), num_samples=len(table),
                      checkpoint_sha256=sha256, ids_sha256=selection.ids_sha256)
