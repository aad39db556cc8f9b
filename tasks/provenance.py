"""The ``write_stamp``, ``write_predict_stamp`` and ``write_retention`` tasks: the run's environment and how long
it is kept."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from flowerkit.artifacts.files import atomic_write_json
from flowerkit.artifacts.record import read_record
from flowerkit.artifacts.retention import parse_utc
from flowerkit.artifacts.retention import write_retention as _write_retention
from flowerkit.artifacts.stamp import build_stamp
from flowerkit.engine.world import world_facts
from flowerkit.models.weights import WeightsSource, file_sha256, stamp_weights
from flowerkit.plan import RunPlan
from flowerkit.predict.run import PredictRunPlan
from flowerkit.tasks.common import retry_unless_user_error, tracked

RETRIES = 2


@task(name="write_stamp", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
@tracked("write_stamp", RETRIES)
def write_stamp(plan: RunPlan, run_id: str, train_subset: str, infer_subset: str) -> Path:
    config, device = plan.config, plan.device.device
    stamp = build_stamp(run_id, config.config_hash(), config.seed, device, plan.precision, train_subset,
                        infer_subset, weights=stamp_weights(config.pretrained, trained=plan.flow == "train"),
                        distributed=world_facts(config, device))
    return atomic_write_json(plan.layout.stamp, stamp)


@task(name="write_stamp", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error,
      cache_policy=NO_CACHE)  # the plan holds the loaded model (tasks/prediction.py)
@tracked("write_stamp", RETRIES)
def write_predict_stamp(plan: PredictRunPlan, run_id: str) -> Path:
    """A predict run's env_stamp.json: the same fields as a train or eval run's, in a predict run's words."""
    config, device = plan.config, plan.device.device
    # A predict run draws no random numbers and reads no dataset: those fields say so instead of a value
    # that would suggest otherwise.
    stamp = build_stamp(run_id, config.config_hash(), "not used (predict draws no random numbers)", device,
                        plan.precision, "not used (predict run)", ", ".join(config.inputs),
                        weights=_scored_weights(plan),
                        distributed={"world_size": 1, "backend": "none", "per_rank_batch": config.batch_size})
    return atomic_write_json(plan.layout.stamp, stamp)


def _scored_weights(plan: PredictRunPlan) -> dict:
    """The checkpoint the rows came from, with its sha256: which bytes scored the images."""
    model = plan.predict.model
    origin = f"run '{model.run}' (its selected checkpoint)" if model.run else "a checkpoint file"
    return WeightsSource(None, "bin", f"scored with {origin}", path=model.path,
                         sha256=file_sha256(model.path)).as_record()


@task(name="write_retention", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
@tracked("write_retention", RETRIES)
def write_retention(plan: RunPlan | PredictRunPlan, run_id: str) -> Path:
    created = parse_utc(read_record(plan.layout.run_dir)["started_utc"])
    return _write_retention(plan.layout, run_id, plan.config.retention_days, created)
