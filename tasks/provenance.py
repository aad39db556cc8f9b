"""The ``write_stamp`` and ``write_retention`` tasks: the run's environment and how long it is kept."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from flowerkit.artifacts.files import atomic_write_json
from flowerkit.artifacts.record import read_record
from flowerkit.artifacts.retention import parse_utc
from flowerkit.artifacts.retention import write_retention as _write_retention
from flowerkit.artifacts.stamp import build_stamp
from flowerkit.engine.world import world_facts
from flowerkit.models.weights import stamp_weights
from flowerkit.plan import RunPlan
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


@task(name="write_retention", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
@tracked("write_retention", RETRIES)
def write_retention(plan: RunPlan, run_id: str) -> Path:
    created = parse_utc(read_record(plan.layout.run_dir)["started_utc"])
    return _write_retention(plan.layout, run_id, plan.config.retention_days, created)
