"""The optimizer recipe: parameter groups without weight decay, layer-wise learning-rate decay, SGD or AdamW.

Follows timm's ``param_groups_weight_decay`` / ``param_groups_layer_decay`` (and BEiT/MAE fine-tuning):
norms, biases, the position embedding and the class token get no weight decay; with ``--layer_decay F`` the
encoder block ``i`` of ``L`` learns at ``F ** (L - i)`` times the head's rate, the embeddings at ``F ** (L + 1)``.
"""

from __future__ import annotations

import re

import torch

NO_DECAY_NAMES = ("class_token", "pos_embedding")  # torchvision VisionTransformer's names
_BLOCK = re.compile(r"^encoder\.layers\.encoder_layer_(\d+)\.")


def decays(name: str, param: torch.Tensor) -> bool:
    """Weight decay applies to matrices and convolutions only (not norms, biases, embeddings, class token)."""
    return param.ndim > 1 and not any(part in name for part in NO_DECAY_NAMES)


def layer_id(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for encoder block i, num_layers + 1 for the final norm and the head."""
    if name.startswith(("class_token", "conv_proj", "encoder.pos_embedding")):
        return 0
    match = _BLOCK.match(name)
    return int(match.group(1)) + 1 if match else num_layers + 1


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """One group per (layer, decays) pair; ``lr_scale`` multiplies the group's peak rate."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    num_layers = sum(1 for n, _ in named if _BLOCK.match(n) and n.endswith("ln_1.weight"))
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in named:
        layer, decay = layer_id(name, num_layers), decays(name, param)
        group = groups.setdefault((layer, decay), {
            "params": [], "names": [], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": layer_decay ** (num_layers + 1 - layer)})
        group["params"].append(param)
        group["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(model: torch.nn.Module, name: str, learning_rate: float, weight_decay: float,
                    layer_decay: float = 1.0) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 (the ViT paper's fine-tuning) or AdamW (betas 0.9, 0.999), over ``param_groups``.
    Each group's ``lr`` is its scaled peak rate, so the schedule (LambdaLR) scales every group alike."""
    groups = param_groups(model, weight_decay, layer_decay)
    for group in groups:
        group["lr"] = learning_rate * group["lr_scale"]
        del group["names"]  # not part of the optimizer's state (kept out of checkpoints)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate)
    return torch.optim.SGD(groups, lr=learning_rate, momentum=0.9)
