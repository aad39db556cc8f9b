"""Turn raw evaluation outputs into the run's reviewable artifacts.

Writes ``fiftyone/predictions.jsonl``, ``fiftyone/per_class_metrics.json``, ``metrics.json``,
``labelmap.json``, the eval row of ``metrics.jsonl`` and TensorBoard scalars, per-class scalars and a
confusion-matrix image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowerkit.artifacts.classification import classification_report
from flowerkit.artifacts.files import atomic_write, atomic_write_json
from flowerkit.artifacts.predictions import prediction_rows, write_predictions
from flowerkit.artifacts.scalars import HPARAM_METRICS, ScalarLog
from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.run.layout import RunLayout
from flowerkit.data.flowers102 import CATEGORY_NAMES, image_relpath, labelmap

SUMMARY_KEYS = ("num_samples", "loss", "accuracy", "top5_accuracy", "macro_f1", "worst_classes")


def save_outputs(path: Path, image_ids: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> Path:
    return atomic_write(path, lambda fh: np.savez(fh, image_ids=image_ids, labels=labels, logits=logits))


@dataclass(frozen=True)
class ExportedFiles:
    predictions: Path
    per_class: Path
    metrics: Path
    labelmap: Path

    def all(self) -> list[Path]:
        return [self.predictions, self.per_class, self.metrics, self.labelmap]


@dataclass(frozen=True)
class Exported:
    """What an export wrote: metrics.json's summary, and the files."""

    metrics: dict
    files: tuple[Path, ...]


def export_evaluation(outputs: Path, dataset_root: Path, split: str, layout: RunLayout, step: int,
                      total_steps: int, export_logits: bool, *, summary_extra: dict | None = None,
                      held_out: bool = False, log_summary: bool = True, sink: ScalarSink | None = None,
                      hparams: dict[str, tuple[type, Any]] | None = None) -> tuple[dict, ExportedFiles]:
    """The run's main report (``held_out=False``): predictions.jsonl, per-class metrics, metrics.json.

    ``held_out=True`` (the test split after training) writes ``test_predictions.jsonl`` and
    ``test_per_class_metrics.json`` beside them and adds ``test_*`` keys to metrics.json, so the two reports
    never mix. ``summary_extra`` (what was selected and why) goes into metrics.json as is; ``log_summary=False``
    leaves out the eval row and confusion matrix the training loop already logged for that step. ``hparams``
    (``run_hparams``) go to TensorBoard's HParams dashboard with the report's metrics.
    """
    with np.load(outputs, allow_pickle=False) as data:
        image_ids, labels, logits = data["image_ids"], data["labels"], data["logits"]
    names = list(CATEGORY_NAMES)
    report = classification_report(logits, labels, names)
    if held_out:
        files = ExportedFiles(layout.predictions_of(split), layout.per_class_of(split), layout.metrics,
                              layout.labelmap)
    else:
        files = ExportedFiles(layout.predictions, layout.per_class, layout.metrics, layout.labelmap)

    rows = prediction_rows([f"image_{int(i):05d}" for i in image_ids], image_ids,
                           [Path(dataset_root) / image_relpath(int(i)) for i in image_ids], labels, logits, names,
                           split, export_logits)
    write_predictions(files.predictions, rows)
    atomic_write_json(files.per_class, {"split": split, "accuracy": report["accuracy"],
                                        "macro_f1": report["macro_f1"], "classes": report["per_class"]})
    summary = {key: report[key] for key in SUMMARY_KEYS} | {"split": split, "step": step} | (summary_extra or {})
    if held_out:
        main = json.loads(files.metrics.read_text())
        summary = main | {f"{split}_{key}": value for key, value in summary.items() if key != "split"}
    atomic_write_json(files.metrics, summary)
    atomic_write_json(files.labelmap, labelmap())

    tag = split if held_out else "val"
    scalars = ScalarLog(layout.metrics_jsonl, layout.tb_dir, final_events=layout.final_events_name(step, tag),
                        sink=sink)
    try:
        if log_summary or held_out:
            scalars.log(split if held_out else "eval", step, total_steps,
                        {k: report[k] for k in ("loss", "accuracy", "top5_accuracy", "macro_f1")}, tag)
        scalars.per_class(step, report["per_class"], tag)
        if log_summary or held_out:  # otherwise the training loop logged this step's matrix already
            scalars.confusion_image(step, report["confusion"], f"{tag}/confusion_matrix")
        if hparams is not None:
            prefix = f"{split}_" if held_out else ""
            scalars.hparams(hparams, {prefix + key: report[key] for key in HPARAM_METRICS}, step)
    finally:
        scalars.close()
    return summary, files
