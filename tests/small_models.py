"""A shrunk ViT family (patch 8, 48 wide, 2 blocks) registered under a test's own model-type name, so weight
files in every format can be made and loaded in milliseconds."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def small_vit_registered(model_type: str) -> Iterator[None]:
    """Register the family as ``model_type`` for the block, as the registry's own entries are registered."""
    from flowerkit.models.configs import MODEL_CONFIGS, ViTConfig

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODEL_CONFIGS, model_type, ViTConfig(patch_size=8, hidden_size=48, mlp_dim=96, num_heads=3,
                                                           num_layers=2))
        yield
