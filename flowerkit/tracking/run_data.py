"""What a run sends to a tracker, derived from its run directory alone (no MLflow import here).

The live run and ``runs sync-mlflow`` both build params, tags, metric points and the artifact list from
these functions, so a synced run looks exactly like one that was tracked live.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from flowerkit.artifacts.files import read_json
from flowerkit.io.inputs import read_utf8
from flowerkit.run.layout import RECORD_NAME, RunLayout

# ScalarLog's callers log metrics.jsonl rows of kind "train" under TensorBoard prefix "train" and rows of kind
# "eval" under "val" (flowerkit/engine/trainer.py, flowerkit/artifacts/export.py).
PREFIX_OF_KIND = {"train": "train", "eval": "val"}
ROW_META = {"kind", "step", "total_steps", "time_utc", "elapsed_s", "num_samples"}
PER_CLASS_METRIC = "f1"  # per-class precision and recall stay in the per_class_metrics.json artifact
MODEL_TAG = "flowerkit.model_logged"
TRAIN_LINK_TAG = "flowerkit.train_mlflow_run_id"
PREFECT_URL_TAG = "flowerkit.prefect_flow_run_url"
# MLflow's own tag for nesting (what ``mlflow.start_run(nested=True)`` sets): the UI shows the run under it.
PARENT_TAG = "mlflow.parentRunId"
# The parent run a tracked run nests under: a sweep sets it for its trials (flowerkit.tracking.sweep_run);
# a work-pool trial gets it through its worker's environment. Not an MLflow setting: flowerkit reads it.
PARENT_ENV = "MLFLOW_PARENT_RUN_ID"
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")  # MLflow's metric-name alphabet


@dataclass(frozen=True)
class Point:
    key: str
    value: float
    step: int
    timestamp_ms: int


def now_ms() -> int:
    return int(time.time() * 1000)


def metric_key(tag: str) -> str:
    """A TensorBoard tag as an MLflow metric key (class names such as "colt's foot" lose the apostrophe)."""
    return _BAD_KEY_CHARS.sub("_", tag)


def per_class_key(prefix: str, class_id: int, class_name: str) -> str:
    return metric_key(f"{prefix}_per_class/{PER_CLASS_METRIC}/{class_id:03d}_{class_name}")


def per_class_points(step: int, rows: list[dict[str, Any]], prefix: str, timestamp_ms: int) -> list[Point]:
    return [Point(per_class_key(prefix, int(r["class_id"]), r["class_name"]), float(r[PER_CLASS_METRIC]), step,
                  timestamp_ms) for r in rows]


# --- params and tags --------------------------------------------------------------------------------------
def resolved_config(layout: RunLayout) -> dict[str, Any]:
    return yaml.safe_load(read_utf8(layout.config, "The run's resolved configuration")) or {}


def param_value(value: Any) -> str:
    """MLflow params are strings; None stays "None" so every config key is present."""
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def params(layout: RunLayout) -> dict[str, str]:
    """Every resolved config value (``config_resolved.yaml``)."""
    return {key: param_value(value) for key, value in resolved_config(layout).items()}


def tags(layout: RunLayout, record: dict[str, Any]) -> dict[str, str]:
    """Who the run is: its flowerkit ids, code version, device, flow, checkpoint and training run."""
    config = resolved_config(layout)
    found = {
        "flowerkit.run_id": record.get("run_id"),
        "flowerkit.config_hash": record.get("config_hash"),
        "flowerkit.flow": record.get("flow"),
        "flowerkit.device": record.get("device"),
        "flowerkit.prefect_flow_run_id": record.get("flow_run_id"),
        "flowerkit.git_commit": _git_commit(layout),
    }
    checkpoint = checkpoint_of(layout, record)
    if checkpoint is not None:
        found["flowerkit.checkpoint"] = str(checkpoint)
    if record.get("flow") == "eval" and config.get("checkpoint"):
        found[TRAIN_LINK_TAG] = training_mlflow_run_id(Path(config["checkpoint"]))
    found[PREFECT_URL_TAG] = prefect_flow_run_url(record.get("flow_run_id"))
    found[PARENT_TAG] = parent_run_id(record)
    return {key: str(value) for key, value in found.items() if value not in (None, "")}


def parent_run_id(record: dict[str, Any]) -> str | None:
    """The MLflow run this one nests under: the environment's (a sweep running it), else the one recorded
    when it was tracked live (so ``runs sync-mlflow`` keeps the nesting)."""
    return os.environ.get(PARENT_ENV, "").strip() or (record.get("mlflow") or {}).get("parent_run_id")


def prefect_ui_url() -> str | None:
    """The Prefect UI of the server this process reports to, when its address is known (PREFECT_UI_URL, else
    PREFECT_API_URL without ``/api``, as Prefect derives it); None for Prefect's temporary server, whose UI
    is gone once the run ends."""
    ui = os.environ.get("PREFECT_UI_URL", "").strip()
    if not ui:
        api = os.environ.get("PREFECT_API_URL", "").strip().rstrip("/")
        ui = api[:-len("/api")] if api.endswith("/api") else api.replace("/api/", "/")
    return ui.rstrip("/") or None


def prefect_flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI, or None when the run had no flow run or the UI is unknown."""
    ui = prefect_ui_url()
    return f"{ui}/runs/flow-run/{flow_run_id}" if ui and flow_run_id else None


def _git_commit(layout: RunLayout) -> str:
    if layout.stamp.is_file():  # a finished run's stamp names the code it ran
        return str(read_json(layout.stamp).get("git_commit", ""))
    from flowerkit.artifacts.stamp import git_commit

    return git_commit()


def checkpoint_of(layout: RunLayout, record: dict[str, Any]) -> Path | None:
    """The checkpoint the run selected: its own (train) or the one it evaluated (eval)."""
    if record.get("flow") == "eval":
        value = resolved_config(layout).get("checkpoint")
        return Path(value).resolve() if value else None
    return layout.checkpoint.resolve() if layout.checkpoint.is_file() else None


def training_mlflow_run_id(checkpoint: Path) -> str | None:
    """The MLflow run id of the training run that wrote ``checkpoint``, when that run was tracked."""
    run_dir = checkpoint.resolve().parent.parent
    record_path = run_dir / RECORD_NAME
    if not record_path.is_file():
        return None
    try:
        record = read_json(record_path)
    except (OSError, ValueError):
        return None
    if RunLayout.for_run(run_dir, record).checkpoint.resolve() != checkpoint.resolve():
        return None
    return (record.get("mlflow") or {}).get("run_id")


# --- metrics ----------------------------------------------------------------------------------------------
def _time_ms(row: dict[str, Any]) -> int:
    try:
        return int(datetime.fromisoformat(str(row["time_utc"]).replace("Z", "+00:00")).timestamp() * 1000)
    except (KeyError, ValueError):
        return now_ms()


def jsonl_points(path: Path) -> list[Point]:
    """The scalars of ``metrics.jsonl`` under the keys and steps ScalarLog gave them in TensorBoard."""
    points = []
    if not path.is_file():
        return points
    for line in read_utf8(path, "The run's metrics file").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line torn by a killed process
        prefix = PREFIX_OF_KIND.get(row.get("kind"))
        if prefix is None:
            continue
        points += [Point(metric_key(f"{prefix}/{key}"), float(value), int(row["step"]), _time_ms(row))
                   for key, value in row.items() if key not in ROW_META]
    return points


def metric_points(layout: RunLayout) -> list[Point]:
    """Every scalar the run logged: metrics.jsonl plus the per-class F1 of the final evaluation."""
    points = jsonl_points(layout.metrics_jsonl)
    if layout.per_class.is_file() and layout.metrics.is_file():
        step = int(read_json(layout.metrics)["step"])
        points += per_class_points(step, read_json(layout.per_class)["classes"], PREFIX_OF_KIND["eval"], now_ms())
    return points


def confusion_from_predictions(path: Path, num_classes: int) -> np.ndarray:
    """The final evaluation's confusion matrix (rows: true class), rebuilt from predictions.jsonl."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for line in read_utf8(path, "The predictions file").splitlines():
        row = json.loads(line)
        confusion[int(row["label"]), int(row["prediction"])] += 1
    return confusion


# --- artifacts --------------------------------------------------------------------------------------------
def artifacts(layout: RunLayout) -> list[tuple[Path, str | None]]:
    """(file, folder in the MLflow run's artifacts) for each reviewable file the run has written."""
    wanted = [(layout.predictions, "fiftyone"), (layout.per_class, "fiftyone"), (layout.labelmap, None),
              (layout.metrics, None), (layout.metrics_jsonl, None), (layout.stamp, None), (layout.retention, None),
              (layout.config, None)]
    return [(path, folder) for path, folder in wanted if path.is_file()]
