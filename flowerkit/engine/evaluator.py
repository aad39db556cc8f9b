"""Batched evaluation under ``torch.inference_mode``: logits for every sample, in table order."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch

from flowerkit.data.pipeline import Batch, InputPipeline, eval_batches


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(device: torch.device) -> bool:
    """Channels-last only on CUDA, where cuDNN runs the patch-embedding convolution natively in NHWC. On the
    CPU it measured no gain (docs/performance.md); MPS is untested, so both stay NCHW."""
    return device.type == "cuda"


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move ``model`` to ``device`` in the memory format its inputs will have."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last(device) else model


def prepare_input(images: torch.Tensor) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if channels_last(images.device) else images


def predict(model: torch.nn.Module, pipeline: InputPipeline, batch_size: int, precision: str,
            batches: Sequence[Batch] | None = None) -> np.ndarray:
    """(N, num_classes) float32 logits, row i for sample i of ``pipeline.table`` (or of ``batches``, in order)."""
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode(), autocast(pipeline.device, precision):
        for images, _positions in pipeline(eval_batches(pipeline.table, batch_size) if batches is None else batches):
            chunks.append(model(prepare_input(images)).float())
    model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).cpu().numpy()


def evaluate_checkpoint(checkpoint: dict, pipeline: InputPipeline, batch_size: int, precision: str) -> np.ndarray:
    """Logits of a loaded checkpoint's model over ``pipeline``'s samples."""
    from flowerkit.models.vit import build_model

    model = build_model(checkpoint["model_type"], int(checkpoint["img_size"]), int(checkpoint["num_classes"]))
    model.load_state_dict(checkpoint["model"])
    return predict(prepare_model(model, pipeline.device), pipeline, batch_size, precision)
