"""The ``publish_results`` task: the run's summary and per-class metrics as Prefect UI artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from flowerkit.artifacts.record import read_record
from flowerkit.config import RunConfig
from flowerkit.tasks.prefect_artifacts import publish_summary, summary_markdown
from flowerkit.tasks.common import retry_unless_user_error

@task(name="publish_results", retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_user_error)
def publish_results(config: RunConfig, flow: str, run_id: str, device: str, precision: str, metrics: dict,
                    training: dict | None = None, checkpoint: str | None = None, *, run_dir: Path) -> dict:
    """Markdown summary (device, config hash, metrics, file paths) and a per-class metrics table."""
    paths = [*config.layout.key_files(), config.layout.tb_dir]
    mlflow = read_record(config.layout.run_dir).get("mlflow")  # opened with the run (--tracker mlflow)
    markdown = summary_markdown(flow, config.name, run_id, device, precision, config.config_hash(), metrics,
                                paths, training, checkpoint, mlflow)
    summary_id, table_id = publish_summary(flow, config.name, markdown, config.layout.per_class)
    return {"summary": str(summary_id), "per_class": str(table_id)}
