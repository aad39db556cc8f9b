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
             checkpoint_sha256: str | None = None, state: dict | None = None, held_out: bool = False, *,
             run_dir: Path) -> dict:
    """Run the checkpoint's model over the selection; save logits to the run's eval outputs (a held-out
    split's to its own file).

    An eval run passes the checkpoint's ``state`` and ``checkpoint_sha256`` its plan read, so the file is
    read once; the train flow passes only the path of the checkpoint it selected.
    """
    if state is None:
        state = load_checkpoint(Path(checkpoint), map_location="cpu")
    chosen = Selection.from_dict(selection)
    table = chosen.table()
    pipeline = make_pipeline(config, table, int(state["img_size"]), torch.device(device))
    logits = evaluate_checkpoint(state, pipeline, config.eval_batch_size, precision)
    target = config.layout.eval_outputs_of(chosen.split) if held_out else config.layout.eval_outputs
    outputs = save_outputs(target, table.image_ids, table.labels, logits)
    return {"outputs": str(outputs), "step": int(state["step"]), "num_samples": len(table),
            "checkpoint_sha256": checkpoint_sha256 or sha256_file(Path(checkpoint)), "ids_sha256": chosen.ids_sha256}


@task(name="export_predictions", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      persist_result=True, cache_key_fn=export_cache_key)
@tracked("export_predictions", RETRIES)
def export_predictions(config: RunConfig, evaluation: dict, selection: dict, total_steps: int,
                       summary_extra: dict | None = None, held_out: bool = False, log_summary: bool = True, *,
                       run_dir: Path) -> dict:
    """predictions.jsonl, per-class metrics, metrics.json, labelmap.json and TensorBoard eval scalars (see
    ``export_evaluation`` for a held-out split and the selection summary)."""
    chosen = Selection.from_dict(selection)
    summary, files = export_evaluation(Path(evaluation["outputs"]), Path(chosen.root), chosen.split, config.layout,
                                       evaluation["step"], total_steps, config.export_logits,
                                       summary_extra=summary_extra, held_out=held_out, log_summary=log_summary)
    return {"metrics": summary, "files": [str(p) for p in files.all()]}
