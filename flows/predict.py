"""The ``predict`` flow: score folders of photos with a training run's checkpoint as a recorded run.

Two entry points run the same body, each with the plan prepared exactly once: ``predict_flow(config)`` for the
``flowerkit-predict`` deployment (a folder and a run in the Prefect UI's form) and Python callers, and
``run_predict_plan(plan)`` for ``flowerkit predict ... --name NAME``, which prepared it before Prefect started
(docs/architecture.md). The run leaves OUTPUT_DIR/NAME with the contract of a train or eval run:
fiftyone/predictions.jsonl, labelmap.json, env_stamp.json, RETENTION.txt, run.log and a hashed run_record.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from prefect import flow
from prefect.cache_policies import NO_CACHE

from flowerkit.artifacts.record import update_record
from flowerkit.config import PredictRunConfig
from flowerkit.flows.common import run_lifecycle
from flowerkit.predict.run import PredictRunPlan, prepare_predict_run
from flowerkit.predict.runner import PredictSummary
from flowerkit.tasks import predict_images, write_predict_stamp, write_retention


@dataclass(frozen=True, kw_only=True)
class PredictOutcome:
    """What the predict flow returns: where the run is, its rows and how many images were predicted."""

    run_dir: Path
    predictions: Path
    summary: PredictSummary


@flow(name="predict")
def predict_flow(config: PredictRunConfig) -> PredictOutcome:
    """Predict the flower class of every image of a folder and record it as the run OUTPUT_DIR/NAME.

    Args:
        config: The run's name, the folder(s) to score (inputs), the training run (or checkpoint) whose
            model scores them, and the options of `flowerkit predict`.
    """
    return _predict(prepare_predict_run(config))  # checks the name, inputs and model before any work


@flow(name="predict", validate_parameters=False)
def run_predict_plan(plan: PredictRunPlan) -> PredictOutcome:
    """The predict flow of a run whose plan is already prepared (the CLI prepares it before Prefect starts)."""
    return _predict(plan)


def _predict(plan: PredictRunPlan) -> PredictOutcome:
    run_dir = plan.layout.run_dir
    with run_lifecycle(plan, {"precision": plan.precision, "tta": plan.config.tta}) as run_id:
        summary = predict_images(plan)  # raises MissingInputError (exit 3) when no image could be predicted
        logging.getLogger("flowerkit").info("%s", summary.line())  # in run.log too
        update_record(run_dir, metrics=_counts(summary),
                      progress={"step": summary.inputs, "total_steps": summary.inputs})
        write_predict_stamp(plan, run_id)
        write_retention.with_options(cache_policy=NO_CACHE)(plan, run_id)  # the plan holds the loaded model
    return PredictOutcome(run_dir=run_dir, predictions=plan.layout.predictions, summary=summary)


def _counts(summary: PredictSummary) -> dict[str, int]:
    return {"inputs": summary.inputs, "predicted": summary.predicted, "failed": summary.failed,
            "unknown": summary.unknown}
