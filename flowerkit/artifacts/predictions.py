"""FiftyOne-ready ``predictions.jsonl``: one row per evaluated sample, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from flowerkit.artifacts.classification import softmax
from flowerkit.artifacts.files import atomic_write_text


def prediction_rows(sample_ids: list[str], image_ids: np.ndarray, filepaths: list[Path], labels: np.ndarray,
                    logits: np.ndarray, class_names: list[str], split: str, export_logits: bool) -> list[dict]:
    probs = softmax(logits.astype(np.float64))
    predictions = probs.argmax(axis=1)
    confidence = probs[np.arange(len(predictions)), predictions]
    top5 = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    rows = []
    for i, sample_id in enumerate(sample_ids):
        row = {
            "sample_id": sample_id,
            "image_id": int(image_ids[i]),
            "filepath": str(Path(filepaths[i]).resolve()),
            "split": split,
            "label": int(labels[i]),
            "label_name": class_names[int(labels[i])],
            "prediction": int(predictions[i]),
            "prediction_name": class_names[int(predictions[i])],
            "confidence": round(float(confidence[i]), 6),
            "top5": top5[i].tolist(),
        }
        if export_logits:
            row["logits"] = [round(float(v), 5) for v in logits[i]]
        rows.append(row)
    return rows


def write_predictions(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
