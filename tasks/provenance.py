"""The ``write_stamp``, ``write_predict_stamp`` and ``write_retention`` tasks: the run's environment and how long
it is kept."""

from __future__ import annotations

from pathlib import Path

from flowerkit.artifacts.files import atomic_write_json
from flowerkit.artifacts.retention import parse_utc
from flowerkit.artifacts.retention import write_retention as _write_retention
from flowerkit.artifacts.stamp import build_stamp
from flowerkit.models.weights import HUB_PREFIX, WeightsSource, resolve_weights
from flowerkit.run.plan import Plan, RunPlan
from flowerkit.predict.run import PredictRunPlan
from flowerkit.tasks.common import run_task


@run_task("write_stamp")
def write_stamp(plan: RunPlan, train_subset: str, infer_subset: str) -> Path:
    config, device = plan.config, plan.device.device
    stamp = build_stamp(plan.run_id, config.config_hash(), config.seed, device, plan.precision, train_subset,
                        infer_subset, weights=_started_from(plan),
                        distributed=plan.process_facts())
    return atomic_write_json(plan.layout.stamp, stamp)


def _started_from(plan: RunPlan) -> dict:
    """The weights a training run started from, as its plan resolved them; a Hub id the plan found not cached
    was downloaded when training started, and is looked up in the cache now (no download)."""
    if plan.flow != "train":
        return WeightsSource(plan.config.pretrained, "none", "not used (eval-only run: the checkpoint holds the "
                             "weights)").as_record()
    weights = plan.weights
    if weights is None or (weights.path is None and weights.spec and weights.spec.startswith(HUB_PREFIX)):
        weights = resolve_weights(plan.config.pretrained, download=False)
    return weights.as_record()


@run_task("write_stamp")
def write_predict_stamp(plan: PredictRunPlan) -> Path:
    """A predict run's env_stamp.json: the same fields as a train or eval run's, in a predict run's words."""
    config, device = plan.config, plan.device.device
    # A predict run draws no random numbers and reads no dataset: those fields say so instead of a value
    # that would suggest otherwise.
    stamp = build_stamp(plan.run_id, config.config_hash(), "not used (predict draws no random numbers)", device,
                        plan.precision, "not used (predict run)", ", ".join(config.inputs),
                        weights=_scored_weights(plan), distributed=plan.process_facts())
    return atomic_write_json(plan.layout.stamp, stamp)


def _scored_weights(plan: PredictRunPlan) -> dict:
    """The checkpoint the rows came from, with its sha256: which bytes scored the images."""
    model = plan.predict.model
    origin = f"run '{model.run}' (its selected checkpoint)" if model.run else "a checkpoint file"
    return WeightsSource(None, "bin", f"scored with {origin}", path=model.path, sha256=model.sha256).as_record()


@run_task("write_retention")
def write_retention(plan: Plan) -> Path:
    assert plan.claim is not None
    return _write_retention(plan.layout, plan.run_id, plan.config.retention_days, parse_utc(plan.claim.started_utc))
