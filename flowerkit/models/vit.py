"""Build a ViT classifier on torchvision's ``VisionTransformer`` from a registry config."""

from __future__ import annotations

from torchvision.models.vision_transformer import VisionTransformer

from flowerkit.models.configs import get_config


def build_model(model_type: str, img_size: int, num_classes: int) -> VisionTransformer:
    config = get_config(model_type, img_size)
    return VisionTransformer(
        image_size=img_size,
        patch_size=config.patch_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        hidden_dim=config.hidden_size,
        mlp_dim=config.mlp_dim,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        num_classes=num_classes,
    )
