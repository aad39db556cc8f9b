"""The original ViT-pytorch learning-rate schedules: linear warmup, then cosine or linear decay."""

from __future__ import annotations

import math

import torch


def lr_lambda(warmup_steps: int, total_steps: int, decay_type: str):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return float(step) / float(max(1, warmup_steps))
        progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
        if decay_type == "cosine":
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(0.0, 1.0 - progress)

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, decay_type: str):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(warmup_steps, total_steps, decay_type))
