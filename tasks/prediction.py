"""The ``predict_images`` task: score a predict run's inputs into its predictions.jsonl and labelmap.json."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from flowerkit.predict.run import PredictRunPlan, write_labelmap, write_predictions
from flowerkit.predict.runner import PredictSummary
from flowerkit.tasks.common import run_task


# Retried for I/O (a flaky mount under the inputs or the output folder): the rows are written to a temporary
# file renamed at the end, so a retry starts from a clean slate. No image predicted is a MissingInputError,
# never retried. Never cached: a predict run has nothing to reuse (a run name is used once).
@run_task("predict_images", cache_policy=NO_CACHE)
def predict_images(plan: PredictRunPlan) -> PredictSummary:
    """One row per input (an error row for a file that cannot be predicted); the counts."""
    summary = write_predictions(plan.predict, plan.layout.predictions, plan.stdin_read_ahead)
    write_labelmap(plan.layout, plan.predict.info.class_names)
    return summary
