"""The Vision Transformer (Dosovitskiy et al., 2021) as small, explicit modules, built from a registry config.

Its parameters carry exactly the names, shapes and initialisation of torchvision's ``VisionTransformer``
(``conv_proj``, ``class_token``, ``encoder.layers.encoder_layer_<i>.self_attention``, ``heads.head`` ...), so
checkpoints move between the two with ``load_state_dict`` and the same seed initialises both to the same
weights (tests/test_models.py checks both). Why not import torchvision's: importing torchvision imports its
detection ops and with them ``torch._dynamo``, 1.4-3 s of every run's start-up that no training step uses.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial

import torch
from torch import nn

from flowerkit.models.configs import ViTConfig, get_config

LayerNorm = partial(nn.LayerNorm, eps=1e-6)  # the original's epsilon


def normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """``tensor.normal_(std=std)``, except on the meta device (a checkpoint's shape check builds the model
    there), where there is nothing to draw and torch's meta ``normal_`` imports ``torch._dynamo`` (seconds)."""
    return tensor if tensor.is_meta else tensor.normal_(std=std)


class MLPBlock(nn.Sequential):
    """Linear, GELU, dropout, linear, dropout: indexes 0 and 3 hold the weights, as in torchvision."""

    def __init__(self, hidden_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__(nn.Linear(hidden_dim, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(mlp_dim, hidden_dim), nn.Dropout(dropout))
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                with torch.no_grad():
                    normal_(module.bias, std=1e-6)


class EncoderBlock(nn.Module):
    """Pre-norm self-attention and MLP, each added back to its input."""

    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float,
                 attention_dropout: float) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(hidden_dim)
        self.self_attention = nn.MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout,
                                                    batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = LayerNorm(hidden_dim)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(tokens)
        x, _ = self.self_attention(x, x, x, need_weights=False)
        x = self.dropout(x) + tokens
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    """Learned position embeddings, the blocks, and a final norm."""

    def __init__(self, seq_length: int, config: ViTConfig) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(normal_(torch.empty(1, seq_length, config.hidden_size), std=0.02))
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(config.num_heads, config.hidden_size, config.mlp_dim,
                                                config.dropout, config.attention_dropout))
            for i in range(config.num_layers)))
        self.ln = LayerNorm(config.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.dropout(tokens + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """Patches, a class token, the encoder, and a linear head on the class token's features."""

    def __init__(self, config: ViTConfig, image_size: int, num_classes: int) -> None:
        super().__init__()
        self.config, self.image_size, self.num_classes = config, image_size, num_classes
        self.patch_size, self.hidden_dim = config.patch_size, config.hidden_size
        self.conv_proj = nn.Conv2d(3, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.seq_length = (image_size // config.patch_size) ** 2 + 1
        self.encoder = Encoder(self.seq_length, config)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(config.hidden_size, num_classes)))

        fan_in = 3 * config.patch_size ** 2
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.zeros_(self.heads.head.weight)  # a fresh head predicts uniformly until it learns
        nn.init.zeros_(self.heads.head.bias)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, patches, hidden) tokens, row by row."""
        n, _, h, w = images.shape
        torch._assert(h == self.image_size and w == self.image_size,
                      f"expected {self.image_size}x{self.image_size} images, got {h}x{w}")
        return self.conv_proj(images).reshape(n, self.hidden_dim, -1).permute(0, 2, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(images)
        tokens = torch.cat([self.class_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self.heads(self.encoder(tokens)[:, 0])


def build_model(model_type: str, img_size: int, num_classes: int) -> VisionTransformer:
    return VisionTransformer(get_config(model_type, img_size), img_size, num_classes)


def as_torchvision(model: VisionTransformer) -> nn.Module:
    """The same network as torchvision's own ``VisionTransformer`` (the same weights, strictly loaded): what a
    tool that knows torchvision but not flowerkit loads, such as an MLflow model served elsewhere."""
    from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

    config = model.config
    twin = TorchvisionViT(image_size=model.image_size, patch_size=config.patch_size, num_layers=config.num_layers,
                          num_heads=config.num_heads, hidden_dim=config.hidden_size, mlp_dim=config.mlp_dim,
                          dropout=config.dropout, attention_dropout=config.attention_dropout,
                          num_classes=model.num_classes)
    twin.load_state_dict(model.state_dict())
    return twin.train(model.training)
