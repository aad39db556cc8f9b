"""Models: the registry, forward/backward, and Google .npz weights landing where they belong."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from flowerkit.errors import ConfigError
from flowerkit.models import configs as model_configs
from flowerkit.models.configs import ViTConfig, get_config
from flowerkit.models.npz import load_pretrained, resize_pos_embedding
from flowerkit.models.vit import build_model

SMALL = ViTConfig(patch_size=8, hidden_size=12, mlp_dim=20, num_heads=3, num_layers=2, dropout=0.0)


@pytest.fixture
def small_model_type(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(model_configs.MODEL_CONFIGS, "small-test", SMALL)
    return "small-test"


def google_npz(config: ViTConfig, grid: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights in Google's ViT checkpoint layout (names and shapes of ViT-B_16.npz)."""
    d, h, hd, p = config.hidden_size, config.num_heads, config.hidden_size // config.num_heads, config.patch_size
    w = {
        "embedding/kernel": rng.normal(size=(p, p, 3, d)), "embedding/bias": rng.normal(size=d),
        "cls": rng.normal(size=(1, 1, d)),
        "Transformer/posembed_input/pos_embedding": rng.normal(size=(1, grid**2 + 1, d)),
        "Transformer/encoder_norm/scale": rng.normal(size=d), "Transformer/encoder_norm/bias": rng.normal(size=d),
        "head/kernel": rng.normal(size=(d, 1000)), "head/bias": rng.normal(size=1000),
    }
    for i in range(config.num_layers):
        b = f"Transformer/encoderblock_{i}"
        a = f"{b}/MultiHeadDotProductAttention_1"
        for name in ("query", "key", "value"):
            w[f"{a}/{name}/kernel"] = rng.normal(size=(d, h, hd)) / np.sqrt(d)
            w[f"{a}/{name}/bias"] = rng.normal(size=(h, hd))
        w[f"{a}/out/kernel"] = rng.normal(size=(h, hd, d)) / np.sqrt(d)
        w[f"{a}/out/bias"] = rng.normal(size=d)
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[f"{b}/{ln}/scale"] = 1 + 0.1 * rng.normal(size=d)
            w[f"{b}/{ln}/bias"] = 0.1 * rng.normal(size=d)
        w[f"{b}/MlpBlock_3/Dense_0/kernel"] = rng.normal(size=(d, config.mlp_dim)) / np.sqrt(d)
        w[f"{b}/MlpBlock_3/Dense_0/bias"] = rng.normal(size=config.mlp_dim)
        w[f"{b}/MlpBlock_3/Dense_1/kernel"] = rng.normal(size=(config.mlp_dim, d)) / np.sqrt(config.mlp_dim)
        w[f"{b}/MlpBlock_3/Dense_1/bias"] = rng.normal(size=d)
    return {k: v.astype(np.float32) for k, v in w.items()}


def reference_features(w: dict[str, np.ndarray], config: ViTConfig, image: np.ndarray) -> np.ndarray:
    """The class-token features of Google's ViT, written in NumPy in the checkpoint's own layout (NHWC)."""
    from scipy.special import erf

    def ln(x, prefix):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * w[f"{prefix}/scale"] + w[f"{prefix}/bias"]

    p, d, heads = config.patch_size, config.hidden_size, config.num_heads
    g = image.shape[0] // p
    patches = image.reshape(g, p, g, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, p, p, 3)
    x = np.einsum("nhwc,hwcd->nd", patches, w["embedding/kernel"]) + w["embedding/bias"]
    x = np.concatenate([w["cls"][0], x]) + w["Transformer/posembed_input/pos_embedding"][0]
    for i in range(config.num_layers):
        b, a = f"Transformer/encoderblock_{i}", f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1"
        y = ln(x, f"{b}/LayerNorm_0")
        q, k, v = (np.einsum("td,dhk->htk", y, w[f"{a}/{n}/kernel"]) + w[f"{a}/{n}/bias"][:, None]
                   for n in ("query", "key", "value"))
        logits = q @ k.transpose(0, 2, 1) / np.sqrt(d // heads)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + np.einsum("htk,hkd->td", att @ v, w[f"{a}/out/kernel"]) + w[f"{a}/out/bias"]
        y = ln(x, f"{b}/LayerNorm_2") @ w[f"{b}/MlpBlock_3/Dense_0/kernel"] + w[f"{b}/MlpBlock_3/Dense_0/bias"]
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))  # torchvision's exact GELU
        x = x + y @ w[f"{b}/MlpBlock_3/Dense_1/kernel"] + w[f"{b}/MlpBlock_3/Dense_1/bias"]
    return ln(x, "Transformer/encoder_norm")[0]


def test_npz_weights_land_where_they_belong(small_model_type: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weights = google_npz(SMALL, grid=4, rng=rng)
    path = tmp_path / "ViT-small.npz"
    np.savez(path, **weights)
    model = build_model(small_model_type, 32, num_classes=102)
    head_before = model.heads.head.weight.detach().clone()
    assert load_pretrained(model, path).startswith("pretrained from")

    state = model.state_dict()
    d = SMALL.hidden_size
    assert torch.equal(state["conv_proj.weight"], torch.from_numpy(weights["embedding/kernel"]).permute(3, 2, 0, 1))
    q = weights["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"].reshape(d, d)
    assert torch.equal(state["encoder.layers.encoder_layer_1.self_attention.in_proj_weight"][:d], torch.from_numpy(q.T))
    assert torch.equal(model.heads.head.weight, head_before)  # the 1000-class head is not loaded
    assert model.heads.head.out_features == 102

    # The strongest check: the loaded model computes what Google's layout computes.
    model.heads = torch.nn.Identity()
    model.eval()
    image = rng.uniform(-1, 1, size=(32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].numpy()
    np.testing.assert_allclose(ours, reference_features(weights, SMALL, image), rtol=1e-4, atol=1e-4)


def test_every_parameter_but_the_head_is_loaded(small_model_type: str, tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, **google_npz(SMALL, grid=4, rng=np.random.default_rng(1)))
    model = build_model(small_model_type, 32, num_classes=102)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_pretrained(model, path)
    unchanged = [k for k, v in model.state_dict().items() if torch.equal(v, before[k])]
    assert unchanged == ["heads.head.weight", "heads.head.bias"]


def test_position_embeddings_are_resized_for_another_resolution(small_model_type: str, tmp_path: Path) -> None:
    path = tmp_path / "w.npz"
    np.savez(path, **google_npz(SMALL, grid=4, rng=np.random.default_rng(2)))
    model = build_model(small_model_type, 48, num_classes=102)  # 6x6 patches instead of 4x4
    load_pretrained(model, path)
    assert model.encoder.pos_embedding.shape == (1, 37, SMALL.hidden_size)
    constant = torch.ones(1, 17, 4)
    assert torch.allclose(resize_pos_embedding(constant, 37), torch.ones(1, 37, 4))


def test_missing_pretrained_file_is_a_warning_and_random_init(caplog: pytest.LogCaptureFixture,
                                                             tmp_path: Path) -> None:
    model = build_model("testing", 32, 102)
    with caplog.at_level(logging.WARNING):
        assert load_pretrained(model, tmp_path / "ViT-B_16.npz").startswith("random init")
    assert "not found" in caplog.text


def test_unreadable_or_mismatched_pretrained_file_is_an_error(small_model_type: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="could not be read"):
        load_pretrained(build_model("testing", 32, 102), bad)
    other = tmp_path / "other.npz"
    np.savez(other, **google_npz(SMALL, grid=4, rng=np.random.default_rng(3)))
    with pytest.raises(ConfigError, match="does not match"):
        load_pretrained(build_model("testing", 32, 102), other)


def test_registry_and_patch_size_checks() -> None:
    assert get_config("ViT-Ti_16").hidden_size == 192 and get_config("ViT-S_16").num_heads == 6
    assert get_config("testing") == ViTConfig(16, 1, 1, 1, 1)
    with pytest.raises(ConfigError, match="unknown model type 'ViT-X'"):
        get_config("ViT-X")
    with pytest.raises(ConfigError, match="not a multiple"):
        get_config("ViT-B_16", 100)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_the_model_is_torchvisions_network_parameter_for_parameter(small_model_type: str, dropout: float) -> None:
    """The same names and shapes, the same initial weights from the same seed, and the same outputs in eval
    and (with dropout drawn from the same seed) in training, so checkpoints move between the two."""
    import dataclasses

    from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

    from flowerkit.models.vit import as_torchvision

    model_configs.MODEL_CONFIGS[small_model_type] = config = dataclasses.replace(SMALL, dropout=dropout)
    torch.manual_seed(7)
    ours = build_model(small_model_type, 32, 5)
    torch.manual_seed(7)
    theirs = TorchvisionViT(image_size=32, patch_size=config.patch_size, num_layers=config.num_layers,
                            num_heads=config.num_heads, hidden_dim=config.hidden_size, mlp_dim=config.mlp_dim,
                            dropout=dropout, attention_dropout=config.attention_dropout, num_classes=5)
    mine, tv = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(tv)
    assert all(torch.equal(mine[name], tv[name]) for name in mine)

    with torch.no_grad():  # a trained head: the initial one is all zeros, which would hide the network
        ours.heads.head.weight.normal_()
    twin = as_torchvision(ours)
    assert isinstance(twin, TorchvisionViT) and twin.training
    images = torch.randn(3, 3, 32, 32)
    torch.manual_seed(1)
    trained = ours(images)
    torch.manual_seed(1)
    assert torch.equal(trained, twin(images))
    ours.eval(), twin.eval()
    with torch.no_grad():
        assert torch.equal(ours(images), twin(images))
    with pytest.raises(Exception, match="expected 32x32 images"):
        ours(torch.randn(1, 3, 64, 64))
