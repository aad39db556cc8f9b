"""The ``publish_results`` task: the run's summary and per-class metrics as Prefect UI artifacts."""

from __future__ import annotations

from flowerkit.artifacts.record import read_record
from flowerkit.engine.trainer import TrainResult
from flowerkit.plan import RunPlan
from flowerkit.tasks.common import run_task
from flowerkit.tasks.prefect_artifacts import publish_summary, summary_markdown


@run_task("publish_results", recorded=False)
def publish_results(plan: RunPlan, metrics: dict, trained: TrainResult | None = None) -> dict:
    """Markdown summary (device, config hash, metrics, file paths, the MLflow run) and a per-class table."""
    config, layout = plan.config, plan.layout
    training = None if trained is None else {
        "start_step": trained.start_step, "steps": trained.steps, "final_loss": trained.final_loss,
        "images_per_second": trained.images_per_second}
    checkpoint = str(plan.checkpoint.path) if plan.checkpoint is not None else None
    mlflow = read_record(layout.run_dir).get("mlflow")  # opened with the run (--tracker mlflow)
    markdown = summary_markdown(plan.flow, config.name, plan.run_id, plan.device.device, plan.precision,
                                config.config_hash(), metrics, [*layout.key_files(), layout.tb_dir], training,
                                checkpoint, mlflow)
    summary_id, table_id = publish_summary(plan.flow, config.name, markdown, layout.per_class)
    return {"summary": str(summary_id), "per_class": str(table_id)}
