"""Load Google's ViT ``.npz`` checkpoints (the ``jax``/``flax`` layout) into flowerkit's VisionTransformer (torchvision's parameter names).

Kept apart from the model, as timm and torchvision do. The classification head is always re-initialised
(Flowers-102 has its own 102 classes); position embeddings are resized when the resolution differs.
"""

from __future__ import annotations

import io
import logging
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flowerkit.errors import ConfigError
from flowerkit.models.vit import VisionTransformer

log = logging.getLogger(__name__)

BLOCK = "Transformer/encoderblock_{i}"
ATTN = BLOCK + "/MultiHeadDotProductAttention_1"


def read_npz(path: Path, data: bytes | None = None) -> dict[str, np.ndarray]:
    """All arrays of a Google checkpoint (``data``: its bytes, already read); an unreadable file is a
    ConfigError naming it."""
    try:
        with np.load(io.BytesIO(data) if data is not None else path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        # numpy reports a non-zip file as "pickled data"; say what is actually wrong.
        reason = "not a .npz (zip) archive" if not zipfile.is_zipfile(path) else str(exc).split(". ")[0]
        raise ConfigError(f"--pretrained {path} could not be read as a Google .npz checkpoint ({reason}). "
                          "Pass a ViT .npz file such as ViT-B_16.npz, or leave the option out to train from "
                          "scratch.") from None


def check_npz_matches(weights: dict[str, np.ndarray], path: Path, model_type: str) -> None:
    """Compare the checkpoint's patch size, width and depth with ``model_type`` before any work starts."""
    from flowerkit.models.configs import get_config

    config = get_config(model_type)
    kernel = weights.get("embedding/kernel")
    depth = sum(1 for key in weights if key.endswith("/LayerNorm_0/scale"))
    found = (kernel.shape[0], kernel.shape[-1], depth) if kernel is not None and kernel.ndim == 4 else None
    wanted = (config.patch_size, config.hidden_size, config.num_layers)
    if found != wanted:
        described = f"patch {found[0]}, width {found[1]}, {found[2]} layers" if found else "no ViT embedding"
        raise ConfigError(f"--pretrained {path} does not match --model_type {model_type}: the file holds "
                          f"{described}, the model needs patch {wanted[0]}, width {wanted[1]}, {wanted[2]} layers. "
                          "Pick the model type the checkpoint was trained as (e.g. ViT-B_16 for ViT-B_16.npz).")


def npz_to_state_dict(weights: dict[str, np.ndarray], model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Map Google's names and layouts onto ``model``'s state-dict keys (everything but the head)."""
    def t(key: str) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(weights[key])).float()

    hidden = model.hidden_dim
    state = {
        "conv_proj.weight": t("embedding/kernel").permute(3, 2, 0, 1),  # HWIO -> OIHW
        "conv_proj.bias": t("embedding/bias"),
        "class_token": t("cls").reshape(1, 1, hidden),
        "encoder.pos_embedding": resize_pos_embedding(
            t("Transformer/posembed_input/pos_embedding"), model.encoder.pos_embedding.shape[1]),
        "encoder.ln.weight": t("Transformer/encoder_norm/scale"),
        "encoder.ln.bias": t("Transformer/encoder_norm/bias"),
    }
    for i in range(len(model.encoder.layers)):
        ours, block, attn = f"encoder.layers.encoder_layer_{i}", BLOCK.format(i=i), ATTN.format(i=i)
        q, k, v = (t(f"{attn}/{name}/kernel").reshape(hidden, hidden).T for name in ("query", "key", "value"))
        qb, kb, vb = (t(f"{attn}/{name}/bias").reshape(hidden) for name in ("query", "key", "value"))
        state.update({
            f"{ours}.ln_1.weight": t(f"{block}/LayerNorm_0/scale"),
            f"{ours}.ln_1.bias": t(f"{block}/LayerNorm_0/bias"),
            f"{ours}.self_attention.in_proj_weight": torch.cat([q, k, v]),
            f"{ours}.self_attention.in_proj_bias": torch.cat([qb, kb, vb]),
            f"{ours}.self_attention.out_proj.weight": t(f"{attn}/out/kernel").reshape(hidden, hidden).T,
            f"{ours}.self_attention.out_proj.bias": t(f"{attn}/out/bias"),
            f"{ours}.ln_2.weight": t(f"{block}/LayerNorm_2/scale"),
            f"{ours}.ln_2.bias": t(f"{block}/LayerNorm_2/bias"),
            f"{ours}.mlp.0.weight": t(f"{block}/MlpBlock_3/Dense_0/kernel").T,
            f"{ours}.mlp.0.bias": t(f"{block}/MlpBlock_3/Dense_0/bias"),
            f"{ours}.mlp.3.weight": t(f"{block}/MlpBlock_3/Dense_1/kernel").T,
            f"{ours}.mlp.3.bias": t(f"{block}/MlpBlock_3/Dense_1/bias"),
        })
    return state


def state_dict_to_npz(state: Mapping[str, torch.Tensor], num_heads: int) -> dict[str, np.ndarray]:
    """Our ViT's state dict in Google's names and layouts: the exact inverse of ``npz_to_state_dict``.

    The classification head is written too (``head/kernel``, ``head/bias``, as Google's fine-tuned files hold
    it), so the file is a whole classifier for readers that load heads; ``--pretrained`` re-initialises it.
    Every array is float32, reshaped and transposed only, so a round trip is bit-exact.
    """
    def a(key: str) -> np.ndarray:
        return state[key].detach().cpu().float().numpy()

    hidden = state["class_token"].shape[-1]
    head_dim = hidden // num_heads
    weights = {
        "embedding/kernel": a("conv_proj.weight").transpose(2, 3, 1, 0),  # OIHW -> HWIO
        "embedding/bias": a("conv_proj.bias"),
        "cls": a("class_token").reshape(1, 1, hidden),
        "Transformer/posembed_input/pos_embedding": a("encoder.pos_embedding"),
        "Transformer/encoder_norm/scale": a("encoder.ln.weight"),
        "Transformer/encoder_norm/bias": a("encoder.ln.bias"),
        "head/kernel": a("heads.head.weight").T,
        "head/bias": a("heads.head.bias"),
    }
    depth = sum(1 for key in state if key.endswith(".ln_1.weight"))
    for i in range(depth):
        ours, block, attn = f"encoder.layers.encoder_layer_{i}", BLOCK.format(i=i), ATTN.format(i=i)
        qkv_weight = np.split(a(f"{ours}.self_attention.in_proj_weight"), 3)
        qkv_bias = np.split(a(f"{ours}.self_attention.in_proj_bias"), 3)
        for name, weight, bias in zip(("query", "key", "value"), qkv_weight, qkv_bias):
            weights[f"{attn}/{name}/kernel"] = weight.T.reshape(hidden, num_heads, head_dim)  # (in, heads, dim)
            weights[f"{attn}/{name}/bias"] = bias.reshape(num_heads, head_dim)
        weights.update({
            f"{block}/LayerNorm_0/scale": a(f"{ours}.ln_1.weight"),
            f"{block}/LayerNorm_0/bias": a(f"{ours}.ln_1.bias"),
            f"{attn}/out/kernel": a(f"{ours}.self_attention.out_proj.weight").T.reshape(num_heads, head_dim, hidden),
            f"{attn}/out/bias": a(f"{ours}.self_attention.out_proj.bias"),
            f"{block}/LayerNorm_2/scale": a(f"{ours}.ln_2.weight"),
            f"{block}/LayerNorm_2/bias": a(f"{ours}.ln_2.bias"),
            f"{block}/MlpBlock_3/Dense_0/kernel": a(f"{ours}.mlp.0.weight").T,
            f"{block}/MlpBlock_3/Dense_0/bias": a(f"{ours}.mlp.0.bias"),
            f"{block}/MlpBlock_3/Dense_1/kernel": a(f"{ours}.mlp.3.weight").T,
            f"{block}/MlpBlock_3/Dense_1/bias": a(f"{ours}.mlp.3.bias"),
        })
    return {key: np.ascontiguousarray(value, dtype=np.float32) for key, value in weights.items()}


def resize_pos_embedding(pos: torch.Tensor, target_tokens: int, mode: str = "bilinear",
                         antialias: bool = False) -> torch.Tensor:
    """Resize the patch-grid part of a (1, 1 + g*g, D) position embedding; the class token stays.

    The defaults (bilinear, no antialiasing) are what Google's and timm's .npz loaders do; timm resizes its own
    checkpoints bicubically with antialiasing (``flowerkit.models.timm_vit`` asks for that).
    """
    if pos.shape[1] == target_tokens:
        return pos
    cls_pos, grid = pos[:, :1], pos[:, 1:]
    old, new = int(math.isqrt(grid.shape[1])), int(math.isqrt(target_tokens - 1))
    log.info("resizing position embeddings from %dx%d to %dx%d patches", old, old, new, new)
    grid = grid.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode=mode, align_corners=False, antialias=antialias)
    return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)


def load_pretrained(model: VisionTransformer, path: Path | None, model_type: str | None = None) -> str:
    """Load ``path`` into ``model`` if it exists; returns what happened, for the logs and the run record.

    A missing file means training from scratch (a warning, never a crash); an unreadable or mismatched
    file is a ConfigError, since silently ignoring it would train the wrong thing.
    """
    if path is None:
        return "random init (no --pretrained)"
    path = Path(path).expanduser()
    if not path.is_file():
        log.warning("pretrained weights %s not found: training from random initialisation", path)
        return f"random init ({path} not found)"
    weights = read_npz(path)
    if model_type is not None:
        check_npz_matches(weights, path, model_type)
    try:
        state = npz_to_state_dict(weights, model)
        model.load_state_dict(state, strict=False)
    except (KeyError, RuntimeError) as exc:
        raise ConfigError(f"--pretrained {path} does not match the chosen --model_type ({exc}). "
                          "Pick the model type the checkpoint was trained as (e.g. ViT-B_16 for ViT-B_16.npz).") \
            from None
    log.info("loaded pretrained weights from %s (head re-initialised for %d classes)", path,
             model.heads.head.out_features)
    return f"pretrained from {path}"


def checkpoint_to_npz(checkpoint: Mapping) -> dict[str, np.ndarray]:
    """A flowerkit checkpoint's weights as Google-format arrays, proven to load back bit for bit.

    The proof maps the arrays back with ``npz_to_state_dict`` (what ``--pretrained`` runs) and compares every
    tensor, so a file that would not round-trip exactly is never written.
    """
    from flowerkit.models.configs import get_config
    from flowerkit.models.vit import build_model

    state, model_type = checkpoint["model"], checkpoint["model_type"]
    weights = state_dict_to_npz(state, get_config(model_type).num_heads)
    with torch.device("meta"):  # shapes only: the mapping needs the model's structure, not its memory
        model = build_model(model_type, int(checkpoint["img_size"]), int(checkpoint["num_classes"]))
    back = npz_to_state_dict(weights, model)
    back["heads.head.weight"] = torch.from_numpy(weights["head/kernel"].T)
    back["heads.head.bias"] = torch.from_numpy(weights["head/bias"])
    differs = [key for key in state if key not in back or not torch.equal(back[key], state[key].float())]
    differs += sorted(set(back) - set(state))
    if differs:
        raise ConfigError(f"The {model_type} checkpoint does not map onto Google's .npz layout exactly (it differs "
                          f"at {', '.join(differs[:3])}), so no file was written. Export a checkpoint written by "
                          "`flowerkit train`.")
    return weights


def write_npz(weights: Mapping[str, np.ndarray], path: Path) -> Path:
    """Write ``weights`` as an uncompressed .npz, as Google's files are, atomically (never half-written)."""
    from flowerkit.artifacts.files import atomic_write

    return atomic_write(path, lambda fh: np.savez(fh, **weights))
