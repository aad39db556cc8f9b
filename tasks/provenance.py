"""The ``write_stamp`` and ``write_retention`` tasks: the run's environment and how long it is kept."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from flowerkit.artifacts.files import atomic_write_json
from flowerkit.artifacts.record import read_record
from flowerkit.artifacts.retention import parse_utc
from flowerkit.artifacts.retention import write_retention as _write_retention
from flowerkit.artifacts.stamp import build_stamp
from flowerkit.config import RunConfig
from flowerkit.engine.world import world_facts
from flowerkit.models.weights import stamp_weights
from flowerkit.tasks.common import retry_unless_user_error, tracked

RETRIES = 2


@task(name="write_stamp", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
@tracked("write_stamp", RETRIES)
def write_stamp(config: RunConfig, run_id: str, device: str, precision: str, train_subset: str,
                infer_subset: str, *, run_dir: Path) -> str:
    stamp = build_stamp(run_id, config.config_hash(), config.seed, device, precision, train_subset, infer_subset,
                        weights=stamp_weights(config), distributed=world_facts(config, device))
    return str(atomic_write_json(config.layout.stamp, stamp))


@task(name="write_retention", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
@tracked("write_retention", RETRIES)
def write_retention(config: RunConfig, run_id: str, *, run_dir: Path) -> str:
    created = parse_utc(read_record(run_dir)["started_utc"])
    return str(_write_retention(config.layout, run_id, config.retention_days, created))
