"""Batch-level MixUp / CutMix on the device, with torchvision's own transforms (``transforms.v2``).

Their randomness (the mixing weight, the box, which of the two) is drawn from torch's CPU generator; we
fork it and seed it from ``(seed, micro-batch index)`` around each call, so a resumed run mixes exactly as the
uninterrupted one and nothing else's random stream moves.
"""

from __future__ import annotations

import torch


class BatchMixer:
    def __init__(self, mixup_alpha: float, cutmix_alpha: float, num_classes: int, seed: int) -> None:
        from torchvision.transforms import v2  # only runs that mix pay torchvision's import (1.4-3 s)

        choices = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not choices:
            raise ValueError("BatchMixer needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.transform = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)  # timm: 50/50 switch
        self.seed = seed

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed images and soft (N, num_classes) targets for micro-batch ``index`` of the run."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed((self.seed * 1_000_033 + index) % 2**63)
            return self.transform(images, labels)
