"""The ``write_stamp`` and ``write_retention`` tasks: the run's environment and how long it is kept."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from flowerkit.artifacts.files import atomic_write_json
from flowerkit.artifacts.retention import write_retention as _write_retention
from flowerkit.artifacts.stamp import build_stamp
from flowerkit.config import RunConfig
from tasks.common import retry_unless_user_error, tracked

RETRIES = 2


@task(name="write_stamp", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
@tracked("write_stamp", RETRIES)
def write_stamp(config: RunConfig, run_id: str, device: str, precision: str, train_subset: str,
                infer_subset: str, *, run_dir: Path) -> str:
    stamp = build_stamp(run_id, config.config_hash(), config.seed, device, precision, train_subset, infer_subset)
    path = run_dir / "env_stamp.json"
    atomic_write_json(path, stamp)
    return str(path)


@task(name="write_retention", retries=RETRIES, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
@tracked("write_retention", RETRIES)
def write_retention(config: RunConfig, run_id: str, *, run_dir: Path) -> str:
    path = _write_retention(run_dir / "RETENTION.txt", config.name, run_id, config.retention_days, run_dir,
                            config.tb_dir)
    return str(path)
