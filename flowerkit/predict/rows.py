"""Prediction rows: the FiftyOne-ready shape of eval's ``predictions.jsonl`` without the label fields.

A predicted image::

    {"sample_id": "photo_000001", "filepath": "/abs/path.jpg", "prediction": 3, "prediction_name": "...",
     "confidence": 0.91, "top5": [3, 7, 1, 0, 9], "top_k": [{"class": 3, "name": "...", "probability": 0.91}],
     "unknown": false}

``unknown`` only with ``--min_confidence`` (the top-1 probability is below it: the model's guess is kept in
``prediction``), ``logits`` only with ``--export_logits``. An input that could not be predicted::

    {"sample_id": "photo_000002", "filepath": "/abs/broken.jpg", "error": "broken.jpg cannot be decoded ..."}

Writers stream rows to a text file object (jsonl: one JSON object per line; csv: one line per row).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

def _utf8_text(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


FORMATS = {".jsonl": "jsonl", ".csv": "csv"}
CSV_COLUMNS = ("sample_id", "filepath", "prediction", "prediction_name", "confidence", "unknown", "top_k", "error")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sample_id(index: int) -> str:
    return f"photo_{index:06d}"


def prediction_row(index: int, path: Path, logits: np.ndarray, class_names: tuple[str, ...], top_k: int,
                   min_confidence: float | None, export_logits: bool) -> dict[str, Any]:
    """The row of one predicted image (``logits``: its 1-D logits)."""
    probs = softmax(logits[None, :])[0]
    order = np.argsort(-probs, kind="stable")
    best = int(order[0])
    row: dict[str, Any] = {
        "sample_id": sample_id(index),
        "filepath": str(Path(path).resolve()),
        "prediction": best,
        "prediction_name": class_names[best],
        "confidence": round(float(probs[best]), 6),
        "top5": [int(c) for c in order[:5]],
        "top_k": [{"class": int(c), "name": class_names[int(c)], "probability": round(float(probs[c]), 6)}
                  for c in order[:top_k]],
    }
    if min_confidence is not None:
        row["unknown"] = bool(probs[best] < min_confidence)
    if export_logits:
        row["logits"] = [round(float(v), 5) for v in logits]
    return row


def error_row(index: int, path: Path, error: str) -> dict[str, Any]:
    return {"sample_id": sample_id(index), "filepath": absolute(path), "error": error}


def absolute(path: Path) -> str:
    """``path`` resolved, or only made absolute where it cannot be (a symbolic link that loops)."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):  # RuntimeError: Python before 3.13 on a symlink loop
        return os.path.abspath(path)


class RowWriter:
    """Rows to a text file object in ``fmt`` (jsonl or csv), one at a time."""

    def __init__(self, fh: IO[str], fmt: str) -> None:
        self.fh, self.fmt = fh, fmt
        self._csv = None
        if fmt == "csv":
            self._csv = csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
            self._csv.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        if self._csv is None:
            self.fh.write(json.dumps(row, allow_nan=False) + "\n")
        else:
            self._csv.writerow(csv_fields(row))


def csv_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A row flattened for CSV: ``top_k`` as ``name=probability`` pairs joined by ``|``.

    A file name that is not valid UTF-8 (a Latin-1 name: Python holds its byte 0xE9 as the lone surrogate
    U+DCE9) is written as the JSON rows write it, as the six characters of the escape ``\\udce9``: the CSV
    stays UTF-8 text, and the escape says which byte the name holds."""
    flat = {k: _utf8_text(row.get(k, "")) for k in CSV_COLUMNS}
    if "top_k" in row:
        flat["top_k"] = "|".join(f"{t['name']}={t['probability']:.6f}" for t in row["top_k"])
    if "unknown" in row:
        flat["unknown"] = str(row["unknown"]).lower()
    return flat
