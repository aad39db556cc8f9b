"""Scalars go to TensorBoard (``OUTPUT/tb/<run>``), to ``metrics.jsonl`` (read live by the dashboard) and, when
the flow opened one, to the run's tracker (``flowerkit.tracking``: MLflow), under the same tags and steps."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowerkit import tracking
from flowerkit.artifacts.files import utc_now


class ScalarLog:
    """One writer per run; TensorBoard's writer is imported on first use (it is slow to import)."""

    def __init__(self, jsonl_path: Path, tb_dir: Path, purge_step: int | None = None) -> None:
        self.jsonl_path = Path(jsonl_path)
        self.tb_dir = Path(tb_dir)
        self.purge_step = purge_step  # a resumed run replaces TensorBoard events from this step on
        self._writer = None
        self._t0 = time.monotonic()
        # The run directory holds metrics.jsonl; a flow that tracks the run registered its sink under it.
        self.sink = tracking.sink_for(self.jsonl_path.parent)

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.tb_dir), purge_step=self.purge_step)
        return self._writer

    def log(self, kind: str, step: int, total_steps: int, values: dict[str, float], tb_prefix: str) -> None:
        """Append a ``metrics.jsonl`` row (flushed) and write each value as ``<tb_prefix>/<key>``."""
        row: dict[str, Any] = {"kind": kind, "step": step, "total_steps": total_steps}
        row.update({k: float(v) for k, v in values.items()})
        row.update(time_utc=utc_now(), elapsed_s=round(time.monotonic() - self._t0, 3))
        with open(self.jsonl_path, "a") as fh:
            fh.write(json.dumps(row, allow_nan=False) + "\n")
        for key, value in values.items():
            self.writer.add_scalar(f"{tb_prefix}/{key}", float(value), step)
        if self.sink is not None:
            self.sink.scalars(step, {f"{tb_prefix}/{key}": float(value) for key, value in values.items()})

    def per_class(self, step: int, per_class: list[dict[str, Any]], tb_prefix: str) -> None:
        for row in per_class:
            for metric in ("precision", "recall", "f1"):
                self.writer.add_scalar(f"{tb_prefix}_per_class/{metric}/{row['class_id']:03d}_{row['class_name']}",
                                       row[metric], step)
        if self.sink is not None:
            self.sink.per_class(step, per_class, tb_prefix)

    def confusion_image(self, step: int, confusion: np.ndarray, tag: str) -> None:
        """Row-normalised confusion matrix as a grey image (white = all of a true class predicted there)."""
        image = confusion_pixels(confusion)
        self.writer.add_image(tag, image[None], step, dataformats="CHW")
        if self.sink is not None:
            self.sink.image(tag, image, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def confusion_pixels(confusion: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: each row of ``confusion`` normalised, 4 px per cell (102 classes: 408 px)."""
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=np.float64), where=rows > 0)
    return np.kron(norm, np.ones((4, 4))).astype(np.float32)
