"""The spec's smoke suite (`pytest tests/test_smoke.py -q`): forward/backward, and validation export.

The rest of the train story's checks (TensorBoard, stamp, retention, record) are in test_train_flow.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowerkit.models.vit import build_model


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("model_type", ["testing", "ViT-Ti_16"])
def test_forward_backward_on_the_tiny_subset(flowers_root: Path, model_type: str) -> None:
    """One real training batch of flower102_tiny (cached pipeline, 64 px) through forward and backward."""
    from flowerkit.data.pipeline import BatchPlan, InputPipeline
    from flowerkit.data.selection import select_split

    table = select_split("flower102", flowers_root, "train", "flower102_tiny", batch_size=4).table()
    assert len(table) == 8  # two batches of four
    pipe = InputPipeline(table, 64, torch.device("cpu"))
    x, positions = next(iter(pipe(BatchPlan(table, 4, seed=42).batches(0, 1))))
    assert x.shape == (4, 3, 64, 64) and -1.0 - 1e-5 <= float(x.min()) and float(x.max()) <= 1.0 + 1e-5
    model = build_model(model_type, 64, 102)
    loss = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(table.labels[positions]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_predictions_have_one_row_per_evaluated_sample(tiny_run: Path) -> None:
    rows = read_jsonl(tiny_run / "fiftyone" / "predictions.jsonl")
    assert len(rows) == 4  # two eval batches of two
    assert len({r["sample_id"] for r in rows}) == 4
    required = {"sample_id", "filepath", "label", "label_name", "prediction", "prediction_name", "confidence"}
    labelmap = json.loads((tiny_run / "labelmap.json").read_text())
    for row in rows:
        assert required <= set(row)
        assert Path(row["filepath"]).is_file()
        assert labelmap[str(row["label"])] == row["label_name"]
        assert labelmap[str(row["prediction"])] == row["prediction_name"]
        assert 0 < row["confidence"] <= 1
