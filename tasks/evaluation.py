"""The ``evaluate`` and ``export_predictions`` tasks: raw logits first, then the reviewable artifacts."""

from __future__ import annotations

from pathlib import Path

from flowerkit.artifacts.export import Exported, export_evaluation
from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.data.selection import Selection
from flowerkit.engine.evaluation import Evaluation, evaluate_selection
from flowerkit.engine.trainer import TrainResult
from flowerkit.run.config import run_hparams
from flowerkit.run.plan import RunPlan
from flowerkit.tasks.caching import evaluate_cache_key, export_cache_key
from flowerkit.tasks.common import run_task


@run_task("evaluate", persist_result=True, cache_key_fn=evaluate_cache_key)
def evaluate(plan: RunPlan, checkpoint: Path, selection: Selection, held_out: bool = False) -> Evaluation:
    """Run the checkpoint's model over the selection; save logits to the run's eval outputs (a held-out
    split's to its own file)."""
    return evaluate_selection(plan, checkpoint, selection, held_out=held_out)


@run_task("export_predictions", persist_result=True, cache_key_fn=export_cache_key)
def export_predictions(plan: RunPlan, evaluation: Evaluation, selection: Selection,
                       trained: TrainResult | None = None, held_out: bool = False,
                       sink: ScalarSink | None = None) -> Exported:
    """predictions.jsonl, per-class metrics, metrics.json, labelmap.json, TensorBoard eval scalars and hparams (see
    ``export_evaluation`` for a held-out split). A training run's main report also says which checkpoint was
    selected and why; its evaluation row and confusion matrix were logged by the training loop already."""
    summary_extra = trained.selection(plan.layout) if trained is not None and not held_out else None
    summary, files = export_evaluation(evaluation.outputs, Path(selection.root), selection.split, plan.layout,
                                       evaluation.step, plan.total_steps, plan.config.export_logits,
                                       summary_extra=summary_extra, held_out=held_out,
                                       log_summary=plan.flow != "train", sink=sink,
                                       hparams=run_hparams(plan.config, plan.flow))
    return Exported(summary, tuple(files.all()))
