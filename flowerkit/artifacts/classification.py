"""Classification metrics from logits, vectorised with NumPy (no per-sample Python loops)."""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(labels.size), labels].mean()) if labels.size else 0.0


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes, num_classes)


def classification_report(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, top-5, loss, per-class precision/recall/F1/support, macro F1 and the worst classes.

    Macro F1 averages over the classes that occur as a label or a prediction (sklearn's default), since a
    tiny subset covers few of the 102 classes.
    """
    num_classes = len(class_names)
    predictions = logits.argmax(axis=1)
    k = min(5, num_classes)
    top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    confusion = confusion_matrix(labels, predictions, num_classes)
    tp = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(num_classes), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=(precision + recall) > 0)
    present = (support > 0) | (predicted > 0)
    per_class = [
        {"class_id": c, "class_name": class_names[c], "precision": round(float(precision[c]), 6),
         "recall": round(float(recall[c]), 6), "f1": round(float(f1[c]), 6), "support": int(support[c])}
        for c in range(num_classes)
    ]
    worst = sorted((row for row in per_class if row["support"]), key=lambda r: (r["f1"], r["class_id"]))[:5]
    n = int(labels.size)
    return {
        "num_samples": n,
        "loss": round(cross_entropy(logits, labels), 6),
        "accuracy": round(float((predictions == labels).mean()) if n else 0.0, 6),
        "top5_accuracy": round(float((top5 == labels[:, None]).any(axis=1).mean()) if n else 0.0, 6),
        "macro_f1": round(float(f1[present].mean()) if present.any() else 0.0, 6),
        "worst_classes": [{"class_name": r["class_name"], "f1": r["f1"], "support": r["support"]} for r in worst],
        "per_class": per_class,
        "confusion": confusion,
    }


def scores_text(metrics: dict[str, Any], prefix: str = "") -> str:
    """``accuracy 0.2500, top-5 0.7500, macro F1 0.1000, loss 4.6159``: a report's scores on one line
    (``prefix`` "test_": the --test_after ones)."""
    return (f"accuracy {metrics[prefix + 'accuracy']:.4f}, top-5 {metrics[prefix + 'top5_accuracy']:.4f}, "
            f"macro F1 {metrics[prefix + 'macro_f1']:.4f}, loss {metrics[prefix + 'loss']:.4f}")
