"""Batched evaluation under ``torch.inference_mode``: logits for every sample, in table order."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from flowerkit.data.pipeline import InputPipeline, eval_batches


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict(model: torch.nn.Module, pipeline: InputPipeline, batch_size: int, precision: str) -> np.ndarray:
    """(N, num_classes) float32 logits, row i for sample i of ``pipeline.table``."""
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode(), autocast(pipeline.device, precision):
        for images, _positions in pipeline(eval_batches(pipeline.table, batch_size)):
            chunks.append(model(images).float())
    model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).cpu().numpy()


def evaluate_checkpoint(checkpoint: dict, pipeline: InputPipeline, batch_size: int, precision: str) -> np.ndarray:
    """Logits of a loaded checkpoint's model over ``pipeline``'s samples."""
    from flowerkit.models.vit import build_model

    model = build_model(checkpoint["model_type"], int(checkpoint["img_size"]), int(checkpoint["num_classes"]))
    model.load_state_dict(checkpoint["model"])
    return predict(model.to(pipeline.device), pipeline, batch_size, precision)
