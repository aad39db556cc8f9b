"""Map timm's ViT state dicts (``timm/vit_*`` on the Hugging Face Hub) onto flowerkit's VisionTransformer (torchvision's parameter names).

timm's plain ViT and torchvision's are the same network: a conv patch embedding, a class token, learned
position embeddings added to [class, patches], pre-norm blocks with one fused qkv projection (q, k, v stacked
in that order, as ``nn.MultiheadAttention.in_proj_weight``), a final LayerNorm and the class token as the
feature. Variants that differ (registers, no class token, layer scale, qk-norm, a norm before the blocks,
average pooling with ``fc_norm``, gated MLPs, ...) are refused, naming what differs, never loaded partially.
The classification head (and a pre-logits layer, if any) is dropped: Flowers-102 gets a fresh 102-class head.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from flowerkit.errors import ConfigError
from flowerkit.models.npz import resize_pos_embedding
from flowerkit.models.vit import VisionTransformer

# Dropped on purpose: the head is re-initialised, as for Google's .npz files.
DROPPED = re.compile(r"^(head|pre_logits)\.")

# Keys that betray an architecture we cannot run, and what they mean.
UNSUPPORTED_KEYS: tuple[tuple[str, str], ...] = (
    (r"^reg_token$", "register tokens"),
    (r"^dist_token$", "a distillation token (DeiT distilled)"),
    (r"^norm_pre\.", "a LayerNorm before the blocks (pre-norm, as in CLIP)"),
    (r"^fc_norm\.", "a LayerNorm after pooling (fc_norm, average pooling) instead of the class token"),
    (r"^attn_pool\.", "attention pooling (MAP head) instead of the class token"),
    (r"^patch_embed\.norm\.", "a LayerNorm on the patch embedding"),
    (r"\.ls[12]\.", "layer scale"),
    (r"\.attn\.(q_norm|k_norm)\.", "query/key normalisation"),
    (r"\.attn\.norm\.", "a norm inside attention"),
    (r"\.mlp\.(fc1_g|fc1_x|norm)\.", "a gated or normalised MLP (SwiGLU)"),
    (r"^(vit|embeddings|encoder\.layer)\.", "the Hugging Face transformers layout (ViTModel), not timm's"),
)

# config.json ``model_args`` values that change the network although the tensors may look the same.
PLAIN_ARGS: dict[str, Any] = {"class_token": True, "no_embed_class": False, "reg_tokens": 0, "pre_norm": False,
                              "fc_norm": False, "qk_norm": False, "init_values": None, "global_pool": "token",
                              "act_layer": "gelu", "qkv_bias": True}
SIZE_HEADS = {"tiny": 3, "small": 6, "base": 12, "large": 16, "huge": 16}


def _refuse(label: str, what: str) -> ConfigError:
    return ConfigError(f"--pretrained {label} is a ViT that flowerkit's model cannot reproduce: it has {what}. "
                       "Only plain ViTs (class token, learned position embeddings, pre-norm blocks, no registers, "
                       "no layer scale) load; pick such a checkpoint, e.g. hf-hub:timm/vit_base_patch16_224."
                       "augreg2_in21k_ft_in1k, or a Google .npz.")


def check_architecture(state: dict[str, torch.Tensor], config_json: dict | None, label: str) -> None:
    """Refuse variants we cannot map, from the tensors' names and from config.json's declared arguments."""
    for pattern, meaning in UNSUPPORTED_KEYS:
        if any(re.search(pattern, key) for key in state):
            raise _refuse(label, meaning)
    if "cls_token" not in state:
        raise _refuse(label, "no class token")
    grid = state["pos_embed"].shape[1] - 1 if "pos_embed" in state else 0
    if math.isqrt(grid) ** 2 != grid:
        raise _refuse(label, "position embeddings without an entry for the class token (no_embed_class)")
    config_json = config_json or {}
    args = dict(config_json.get("model_args") or {})
    if "global_pool" in config_json:
        args.setdefault("global_pool", config_json["global_pool"])
    for name, plain in PLAIN_ARGS.items():
        value = args.get(name, plain)
        if name == "global_pool" and value in ("", None):
            continue  # no pooling at all: the features are the tokens, the class token is still there
        if value != plain and not (name == "init_values" and not value):
            raise _refuse(label, f"{name}={value!r} in its config.json (flowerkit needs {plain!r})")


def _dims(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """(patch size, width, depth, MLP width) of a timm ViT state dict."""
    kernel = state["patch_embed.proj.weight"]
    depth = len({int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key))})
    return kernel.shape[-1], kernel.shape[0], depth, state["blocks.0.mlp.fc1.weight"].shape[0]


def check_fits(state: dict[str, torch.Tensor], config_json: dict | None, model: VisionTransformer,
               model_type: str, label: str) -> None:
    """The checkpoint's patch size, width, depth, MLP width and heads must be those of ``model_type``."""
    try:
        found = _dims(state)
    except (KeyError, IndexError):
        raise ConfigError(f"--pretrained {label} holds no timm ViT patch embedding or blocks "
                          "(patch_embed.proj.weight, blocks.0.mlp.fc1.weight). Pass a timm ViT checkpoint, a "
                          "Google .npz, or leave the option out to train from scratch.") from None
    layer = model.encoder.layers[0]
    wanted = (model.patch_size, model.hidden_dim, len(model.encoder.layers), layer.mlp[0].out_features)
    if found != wanted:
        raise ConfigError(f"--pretrained {label} does not match --model_type {model_type}: the file holds patch "
                          f"{found[0]}, width {found[1]}, {found[2]} layers, MLP {found[3]}; the model needs patch "
                          f"{wanted[0]}, width {wanted[1]}, {wanted[2]} layers, MLP {wanted[3]}. Pick the model "
                          "type the checkpoint was trained as (e.g. ViT-B_16 for vit_base_patch16_*).")
    heads = _declared_heads(config_json or {})
    if heads is not None and heads != layer.self_attention.num_heads:
        raise ConfigError(f"--pretrained {label} uses {heads} attention heads, --model_type {model_type} "
                          f"{layer.self_attention.num_heads}. Pick the model type the checkpoint was trained as.")


def _declared_heads(config_json: dict) -> int | None:
    """Heads from config.json's ``model_args`` or its timm architecture name (vit_base_... -> 12)."""
    args = config_json.get("model_args") or {}
    if "num_heads" in args:
        return int(args["num_heads"])
    match = re.match(r"(?:vit|deit)_(tiny|small|base|large|huge)_", str(config_json.get("architecture", "")))
    return SIZE_HEADS[match.group(1)] if match else None


def timm_to_state_dict(state: dict[str, torch.Tensor], model: VisionTransformer) -> dict[str, torch.Tensor]:
    """Rename (and where needed resize) every tensor of a plain timm ViT onto ``model``'s keys; no head.

    Position embeddings are resized as timm resizes its own checkpoints (bicubic with antialiasing), so the
    model computes what ``timm.create_model(..., img_size=N)`` computes from the same file.
    """
    def t(key: str) -> torch.Tensor:
        return state[key].float()

    ours = {
        "conv_proj.weight": t("patch_embed.proj.weight"),
        "conv_proj.bias": t("patch_embed.proj.bias"),
        "class_token": t("cls_token"),
        "encoder.pos_embedding": resize_pos_embedding(t("pos_embed"), model.encoder.pos_embedding.shape[1],
                                                      mode="bicubic", antialias=True),
        "encoder.ln.weight": t("norm.weight"),
        "encoder.ln.bias": t("norm.bias"),
    }
    for i in range(len(model.encoder.layers)):
        layer, block = f"encoder.layers.encoder_layer_{i}", f"blocks.{i}"
        for mine, theirs in (("ln_1", "norm1"), ("self_attention.out_proj", "attn.proj"), ("ln_2", "norm2"),
                             ("mlp.0", "mlp.fc1"), ("mlp.3", "mlp.fc2")):
            ours[f"{layer}.{mine}.weight"] = t(f"{block}.{theirs}.weight")
            ours[f"{layer}.{mine}.bias"] = t(f"{block}.{theirs}.bias")
        ours[f"{layer}.self_attention.in_proj_weight"] = t(f"{block}.attn.qkv.weight")
        ours[f"{layer}.self_attention.in_proj_bias"] = t(f"{block}.attn.qkv.bias")
    return ours


def used_keys(model: VisionTransformer) -> set[str]:
    """Every timm key ``timm_to_state_dict`` reads for ``model``: anything else in a file is unexplained."""
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "norm.weight",
            "norm.bias"}
    for i in range(len(model.encoder.layers)):
        for part in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{part}.weight", f"blocks.{i}.{part}.bias"}
    return keys


def map_timm(state: dict[str, torch.Tensor], config_json: dict | None, model: VisionTransformer,
             model_type: str, label: str) -> dict[str, torch.Tensor]:
    """Check and map a timm ViT state dict; a ConfigError names the first thing that does not fit."""
    check_architecture(state, config_json, label)
    check_fits(state, config_json, model, model_type, label)
    kept = {key for key in state if not DROPPED.match(key)}
    missing, extra = used_keys(model) - kept, kept - used_keys(model)
    if missing or extra:
        what = (f"missing {', '.join(sorted(missing)[:4])}" if missing else "") + \
               ("; " if missing and extra else "") + \
               (f"parameters flowerkit has no place for: {', '.join(sorted(extra)[:4])}" if extra else "")
        raise _refuse(label, what)
    return timm_to_state_dict(state, model)
