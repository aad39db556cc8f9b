"""The ``evaluate`` and ``export_predictions`` tasks: raw logits first, then the reviewable artifacts."""

from __future__ import annotations

from pathlib import Path

import torch
from prefect import task

from flowerkit.artifacts.export import export_evaluation, save_outputs
from flowerkit.artifacts.files import sha256_file
from flowerkit.config import RunConfig
from flowerkit.data.selection import Selection
from flowerkit.engine.checkpoint import load_checkpoint
from flowerkit.engine.evaluator import evaluate_checkpoint
from flowerkit.engine.trainer import make_pipeline
from flowerkit.tasks.caching import evaluate_cache_key, export_cache_key
from flowerkit.tasks.common import retry_unless_user_error, tracked

RETRIES = 2


@task(name="evaluate", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      persist_result=True, cache_key_fn=evaluate_cache_key)
@tracked("evaluate", RETRIES)
def evaluate(config: RunConfig, checkpoint: str, selection: dict, device: str, precision: str,
             checkpoint_sha256: str | None = None, state: dict | None = None, *, run_dir: Path) -> dict:
    """Run the checkpoint's model over the selection; save logits to the run's eval outputs.

    An eval run passes the checkpoint's ``state`` and ``checkpoint_sha256`` its plan read, so the file is
    read once; the train flow passes only the path of the checkpoint it just wrote.
    """
    if state is None:
        state = load_checkpoint(Path(checkpoint), map_location="cpu")
    chosen = Selection.from_dict(selection)
    table = chosen.table()
    pipeline = make_pipeline(config, table, int(state["img_size"]), torch.device(device))
    logits = evaluate_checkpoint(state, pipeline, config.eval_batch_size, precision)
    outputs = save_outputs(config.layout.eval_outputs, table.image_ids, table.labels, logits)
    return {"outputs": str(outputs), "step": int(state["step"]), "num_samples": len(table),
            "checkpoint_sha256": checkpoint_sha256 or sha256_file(Path(checkpoint)), "ids_sha256": chosen.ids_sha256}


@task(name="export_predictions", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      persist_result=True, cache_key_fn=export_cache_key)
@tracked("export_predictions", RETRIES)
def export_predictions(config: RunConfig, evaluation: dict, selection: dict, total_steps: int, *,
                       run_dir: Path) -> dict:
    """predictions.jsonl, per-class metrics, metrics.json, labelmap.json and TensorBoard eval scalars."""
    chosen = Selection.from_dict(selection)
    summary, files = export_evaluation(Path(evaluation["outputs"]), Path(chosen.root), chosen.split, config.layout,
                                       evaluation["step"], total_steps, config.export_logits)
    return {"metrics": summary, "files": [str(p) for p in files.all()]}
