"""Models: the ViT config registry, the torchvision-based builder and Google .npz weight loading."""

from flowerkit.models.configs import MODEL_CONFIGS, ViTConfig, get_config
from flowerkit.models.vit import build_model

__all__ = ["MODEL_CONFIGS", "ViTConfig", "build_model", "get_config"]
