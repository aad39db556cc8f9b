"""The ``publish_results`` task, and what a flow run shows in the Prefect UI: a run summary, per-class metrics,
live training progress (the ``train`` task's) and a sweep's ranking (the ``sweep`` flow's).

Prefect artifacts mirror files the run already wrote (docs/artifacts.md), so the UI shows a run's results
without opening its directory. They must be created inside a flow or task run.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flowerkit.artifacts.classification import scores_text
from flowerkit.artifacts.files import read_json
from flowerkit.artifacts.record import read_record
from flowerkit.engine.progress import Progress, StepRate, describe
from flowerkit.engine.trainer import TrainResult
from flowerkit.predict.run import PredictRunPlan
from flowerkit.predict.runner import PredictSummary
from flowerkit.run.plan import RunPlan
from flowerkit.tasks.common import run_task
from flowerkit.throttle import Throttle

log = logging.getLogger(__name__)

PER_CLASS_COLUMNS = ("class_id", "class_name", "precision", "recall", "f1", "support")
METRIC_NAMES = ("accuracy", "top5_accuracy", "macro_f1", "loss", "num_samples")


def artifact_key(flow: str, run_name: str, kind: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes); one key per run keeps its versions together."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")
    return f"flowerkit-{flow}-{slug}-{kind}"


def summary_markdown(flow: str, run_name: str, run_id: str, device: str, precision: str, config_hash: str,
                     metrics: dict, paths: Iterable[Path], training: dict | None = None,
                     checkpoint: str | None = None, mlflow: dict | None = None) -> str:
    """The run summary: where it ran, which configuration, how well it did, and where its files are.

    ``mlflow`` is the run record's ``mlflow`` entry (``--tracker mlflow``): the summary links the MLflow run.
    """
    lines = [f"# flowerkit {flow}: `{run_name}`", "",
             f"- run id: `{run_id}`",
             f"- device: `{device}` ({precision})",
             f"- config hash: `{config_hash}`"]
    lines += mlflow_lines(mlflow)
    if checkpoint:
        lines.append(f"- evaluated checkpoint: `{checkpoint}`")
    if training:
        lines.append(f"- training: steps {training['start_step']} -> {training['steps']}, final loss "
                     f"{training['final_loss']:.4f}, {training['images_per_second']:.1f} img/s")
    lines += selection_lines(metrics, training)
    lines += ["", f"## Metrics ({metrics.get('split', '?')} split)", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {_number(metrics[name])} |" for name in METRIC_NAMES if name in metrics]
    # --test_after: the selected checkpoint on the test split, reported beside (never mixed into) validation.
    lines += [f"| test_{name} | {_number(metrics[f'test_{name}'])} |" for name in METRIC_NAMES
              if f"test_{name}" in metrics]
    worst = ", ".join(f"{w['class_name']} ({w['f1']:.2f})" for w in metrics.get("worst_classes", [])[:5])
    lines += ["", f"Worst classes: {worst or '-'}", "", "## Files", ""]
    lines += [f"- `{path}`" for path in paths]
    return "\n".join(lines) + "\n"


def mlflow_lines(entry: dict | None) -> list[str]:
    """The MLflow run as a link (its UI page), else its id; and the sweep run it is nested under."""
    if not isinstance(entry, dict) or not entry.get("run_id"):
        return []
    run = f"[{entry['run_id']}]({entry['url']})" if entry.get("url") else f"`{entry['run_id']}`"
    lines = [f"- MLflow run: {run} (experiment `{entry.get('experiment') or '?'}`)"]
    if entry.get("parent_run_id"):
        lines.append(f"- MLflow parent run (sweep): `{entry['parent_run_id']}`")
    return lines


def selection_lines(metrics: dict, training: dict | None = None) -> list[str]:
    """What a train run reports: the checkpoint selected on validation (not the last step), why, and whether
    early stopping ended the run. metrics.json's keys first (run-relative path), else the training result's."""
    source = metrics if "selected_step" in metrics else (training or {})
    if source.get("selected_step") is None:
        return []  # an eval run, or a result from before model selection
    checkpoint = source.get("selected_checkpoint") or "?"
    value = source.get("monitor_value")
    stopped = f"yes: {source.get('stop_reason') or 'no reason recorded'}" if source.get("stopped_early") else "no"
    return [f"- selected checkpoint: `{checkpoint}` (step {source['selected_step']}, "
            f"{source.get('selected_weights') or 'raw'} weights)",
            f"- monitor: `{source.get('monitor') or '?'}` = {_number(value) if value is not None else '-'}",
            f"- stopped early: {stopped}"]


def per_class_rows(per_class: Path) -> list[dict]:
    """One row per class from the run's per-class metrics file."""
    classes = read_json(per_class)["classes"]
    return [{column: _number(row[column]) for column in PER_CLASS_COLUMNS} for row in classes]


def publish_summary(flow: str, run_name: str, markdown: str, per_class: Path) -> tuple[UUID, UUID]:
    """Create the markdown summary and the per-class table of a finished evaluation."""
    summary = create_markdown_artifact(markdown, key=artifact_key(flow, run_name, "summary"),
                                       description=f"flowerkit {flow} run '{run_name}': summary")
    table = create_table_artifact(per_class_rows(per_class), key=artifact_key(flow, run_name, "per-class"),
                                  description=f"flowerkit {flow} run '{run_name}': per-class metrics")
    return summary, table


class ProgressArtifact:
    """Training progress as a Prefect progress artifact, updated at most every ``min_interval_s`` seconds.

    The bar is the share of steps done; the description carries what the CLI's progress display shows:
    steps, images per second, ETA and the latest evaluation.

    Training calls back after every step; one API call per step would slow short steps down and flood the
    server, so intermediate updates are throttled. The last step is always sent. A failed update is logged,
    never raised: the UI's progress bar must not stop a training run.
    """

    def __init__(self, flow: str, run_name: str, min_interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = Throttle(min_interval_s, clock)
        self._rate = StepRate(clock)
        self._label = f"flowerkit {flow} run '{run_name}'"
        self.updates = 0
        self.description = ""
        self.artifact_id = create_progress_artifact(
            0.0, key=artifact_key(flow, run_name, "progress"),
            description=f"flowerkit {flow} run '{run_name}': training steps done (%)")

    def __call__(self, progress: Progress) -> None:
        eta_s = self._rate.eta_s(progress)  # every step counts towards the rate, sent or not
        if not self._throttle.ready(progress.step, progress.total):
            return
        self.description = f"{self._label}: {describe(progress, eta_s)}"
        try:
            update_progress_artifact(self.artifact_id, 100.0 * progress.fraction, description=self.description)
            self.updates += 1
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("could not update the Prefect progress artifact at step %d: %s", progress.step, exc)


def _number(value):
    return round(value, 4) if isinstance(value, float) else value


SWEEP_COLUMNS = ("rank", "trial", "status", "values", "monitor", "monitor_value", "selected_step", "accuracy",
                 "error")


def publish_sweep_table(sweep_name: str, rows: list[dict]) -> UUID:
    """A sweep's trials ranked by their monitored validation value (the sweep's results.md as a table)."""
    table = [{column: (", ".join(f"{k}={v}" for k, v in row["values"].items()) if column == "values"
                       else _number(row[column])) for column in SWEEP_COLUMNS} for row in rows]
    return create_table_artifact(table, key=artifact_key("sweep", sweep_name, "results"),
                                 description=f"flowerkit sweep '{sweep_name}': trials ranked by the monitored "
                                             "validation metric")


def predict_markdown(plan: PredictRunPlan, summary: PredictSummary) -> str:
    """A predict run's summary: the model the rows came from, the counts, and where the rows are."""
    model, info = plan.predict.model, plan.predict.info
    source = f"run `{model.run}`: `{model.path}`" if model.run else f"{model.kind} `{model.path}`"
    lines = [f"# flowerkit predict: `{plan.config.name}`", "",
             f"- run id: `{plan.run_id}`",
             f"- model: {source} ({info.model_type})",
             f"- device: `{plan.device.device}` ({plan.precision})",
             f"- rows: `{plan.layout.predictions}`",
             "", "| count | value |", "| --- | --- |",
             f"| inputs | {summary.inputs} |", f"| predicted | {summary.predicted} |",
             f"| errors | {summary.failed} |", f"| unknown (below --min_confidence) | {summary.unknown} |",
             f"| skipped | {sum(summary.skipped.values())} |", "", "## Files", ""]
    lines += [f"- `{path}`" for path in plan.layout.key_files()]
    return "\n".join(lines) + "\n"


@run_task("publish_results", recorded=False)
def publish_predict_results(plan: PredictRunPlan, summary: PredictSummary) -> dict:
    """The predict run's summary as a markdown artifact (its rows are in the run, not the UI)."""
    summary_id = create_markdown_artifact(predict_markdown(plan, summary),
                                          key=artifact_key("predict", plan.config.name, "summary"),
                                          description=f"flowerkit predict run '{plan.config.name}': summary")
    return {"summary": str(summary_id)}


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
    # The result in the run's log too (run.log, and the flow run's logs in the UI): the CLI prints it as a table.
    log.info("%s run '%s': %s split (%d samples): %s", plan.flow, config.name, metrics["split"],
             metrics["num_samples"], scores_text(metrics))
    return {"summary": str(summary_id), "per_class": str(table_id)}
