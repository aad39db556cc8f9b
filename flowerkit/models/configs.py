"""The ViT family of the original ViT-pytorch ``configs.py``, plus two small configs that train on a laptop."""

from __future__ import annotations

from dataclasses import dataclass

from flowerkit.errors import ConfigError


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int
    hidden_size: int
    mlp_dim: int
    num_heads: int
    num_layers: int
    dropout: float = 0.1
    attention_dropout: float = 0.0


MODEL_CONFIGS: dict[str, ViTConfig] = {
    # The minimal config of the original, for plumbing tests: one layer, one head, hidden size 1.
    "testing": ViTConfig(patch_size=16, hidden_size=1, mlp_dim=1, num_heads=1, num_layers=1),
    "ViT-Ti_16": ViTConfig(patch_size=16, hidden_size=192, mlp_dim=768, num_heads=3, num_layers=12),
    "ViT-S_16": ViTConfig(patch_size=16, hidden_size=384, mlp_dim=1536, num_heads=6, num_layers=12),
    "ViT-B_16": ViTConfig(patch_size=16, hidden_size=768, mlp_dim=3072, num_heads=12, num_layers=12),
    "ViT-B_32": ViTConfig(patch_size=32, hidden_size=768, mlp_dim=3072, num_heads=12, num_layers=12),
    "ViT-L_16": ViTConfig(patch_size=16, hidden_size=1024, mlp_dim=4096, num_heads=16, num_layers=24),
    "ViT-L_32": ViTConfig(patch_size=32, hidden_size=1024, mlp_dim=4096, num_heads=16, num_layers=24),
    "ViT-H_14": ViTConfig(patch_size=14, hidden_size=1280, mlp_dim=5120, num_heads=16, num_layers=32),
}


def get_config(model_type: str, img_size: int | None = None) -> ViTConfig:
    """Look up ``model_type``; with ``img_size``, check that it tiles into whole patches."""
    if model_type not in MODEL_CONFIGS:
        raise ConfigError(f"--model_type: unknown model type '{model_type}'. "
                          f"Choose one of: {', '.join(MODEL_CONFIGS)}.")
    config = MODEL_CONFIGS[model_type]
    if img_size is not None and img_size % config.patch_size:
        nearest = max(1, img_size // config.patch_size) * config.patch_size
        raise ConfigError(f"--img_size {img_size} is not a multiple of {model_type}'s patch size "
                          f"({config.patch_size}); use e.g. {nearest}.")
    return config
