"""The ``predict`` flow: score folders of photos with a training run's checkpoint as a recorded run.

One entry, ``predict_flow``: ``flowerkit predict ... --name NAME`` and the dashboard pass the plan they built
(``prepare_predict_run``); the ``flowerkit-predict`` deployment's flow run passes the config its form sent (a
folder and a run), and the plan is built here, on the worker (docs/architecture.md). The run leaves
OUTPUT_DIR/NAME with the contract of a train or eval run: fiftyone/predictions.jsonl, labelmap.json,
env_stamp.json, RETENTION.txt, plan.json, run.log and a hashed run_record.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from prefect import flow

from flowerkit.artifacts.record import update_record
from flowerkit.run.config import PredictRunConfig, load_predict_config
from flowerkit.flows.common import run_lifecycle
from flowerkit.flows.orchestration.labels import run_name
from flowerkit.predict.run import PredictRunPlan, prepare_predict_run
from flowerkit.predict.runner import PredictSummary
from flowerkit.tasks.prediction import predict_images
from flowerkit.tasks.provenance import write_predict_stamp, write_retention
from flowerkit.tasks.reporting import publish_predict_results


@dataclass(frozen=True, kw_only=True)
class PredictOutcome:
    """What the predict flow returns: where the run is, its rows and how many images were predicted."""

    run_dir: Path
    predictions: Path
    summary: PredictSummary


@flow(name="predict", flow_run_name=run_name, validate_parameters=False)
def predict_flow(config: PredictRunConfig, plan: PredictRunPlan | None = None) -> PredictOutcome:
    """Predict the flower class of every image of a folder and record it as the run OUTPUT_DIR/NAME.

    Args:
        config: The run's name, the folder(s) to score (inputs), the training run (or checkpoint) whose
            model scores them, and the options of `flowerkit predict`.
        plan: The plan a front end built from this config; a deployment's run leaves it out, and the plan
            is built here, on the worker.
    """
    return _predict(plan or prepare_predict_run(load_predict_config(config) if isinstance(config, dict) else config))


def _predict(plan: PredictRunPlan) -> PredictOutcome:
    run_dir = plan.layout.run_dir
    with run_lifecycle(plan, {"precision": plan.precision, "tta": plan.config.tta}) as (plan, _):
        summary = predict_images(plan)  # raises MissingInputError (exit 3) when no image could be predicted
        logging.getLogger("flowerkit").info("%s", summary.line())  # in run.log too
        update_record(run_dir, metrics=_counts(summary),
                      progress={"step": summary.inputs, "total_steps": summary.inputs})
        write_predict_stamp(plan)
        write_retention(plan)
        publish_predict_results(plan, summary)
    return PredictOutcome(run_dir=run_dir, predictions=plan.layout.predictions, summary=summary)


def _counts(summary: PredictSummary) -> dict[str, int]:
    return {"inputs": summary.inputs, "predicted": summary.predicted, "failed": summary.failed,
            "unknown": summary.unknown, "skipped": sum(summary.skipped.values())}
