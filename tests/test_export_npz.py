"""flowerkit export-npz: a run's checkpoint as a Google-format .npz that loads back bit for bit.

Proved two ways: through our own loader (``--pretrained``: every backbone tensor and the features equal), and
through timm's reader of Google's .npz files, which knows nothing of our mapping (same logits, head included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.engine.checkpoint import load_checkpoint
from flowerkit.models.npz import checkpoint_to_npz, read_npz, write_npz
from flowerkit.models.vit import build_model
from flowerkit.models.weights import load_weights
from tests.small_models import small_vit_registered

# A ViT-Ti-shaped family (3 heads, so the attention reshapes are really exercised), shrunk to take milliseconds.
MODEL_TYPE, SIZE = "ViT-export_8", 32


@pytest.fixture(scope="module", autouse=True)
def small_model_type():
    with small_vit_registered(MODEL_TYPE):
        yield


def _checkpoint(model_type: str = MODEL_TYPE, size: int = SIZE) -> dict:
    torch.manual_seed(0)
    model = build_model(model_type, size, 102)
    with torch.no_grad():  # torchvision zero-initialises some tensors; random everywhere is a stronger proof
        for param in model.parameters():
            param.normal_(0, 0.05)
    return {"model": model.state_dict(), "model_type": model_type, "img_size": size, "num_classes": 102}


def _features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.heads = torch.nn.Identity()  # the class token after the final norm: the pre-logits features
    with torch.no_grad():
        return model.eval()(x)


def _assert_backbone_loads_back(file: Path, state: dict, model_type: str, size: int) -> None:
    model = build_model(model_type, size, 102)
    source = load_weights(model, str(file), model_type)
    assert source.format == "npz"
    loaded = model.state_dict()
    for key, tensor in state.items():
        if not key.startswith("heads."):  # --pretrained re-initialises the head, as for every source
            assert torch.equal(loaded[key], tensor), key
    original = build_model(model_type, size, 102)
    original.load_state_dict(state)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_features(model, x), _features(original, x))


def test_export_round_trips_bit_for_bit_through_pretrained(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    file = write_npz(checkpoint_to_npz(checkpoint), tmp_path / "vit.npz")
    weights = read_npz(file)
    assert all(a.dtype == np.float32 for a in weights.values())
    assert weights["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"].shape == (48, 3, 16)
    assert weights["embedding/kernel"].shape == (8, 8, 3, 48) and weights["head/kernel"].shape == (48, 102)
    _assert_backbone_loads_back(file, checkpoint["model"], MODEL_TYPE, SIZE)


def test_timm_reads_the_export_as_a_google_checkpoint(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import _load_weights

    checkpoint = _checkpoint()
    file = write_npz(checkpoint_to_npz(checkpoint), tmp_path / "vit.npz")
    theirs = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, num_classes=102,
                               patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2).eval()
    _load_weights(theirs, str(file))
    ours = build_model(MODEL_TYPE, SIZE, 102).eval()
    ours.load_state_dict(checkpoint["model"])
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


def test_cli_exports_a_trained_runs_best_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "flower_mps-best.npz"
    result = CliRunner().invoke(app, ["export-npz", tiny_run.name, "--output-dir", str(tiny_run.parent),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and f"--pretrained {out}" in result.output
    best = load_checkpoint(tiny_run / "checkpoints" / "best.bin")
    _assert_backbone_loads_back(out, best["model"], best["model_type"], best["img_size"])
    heads = read_npz(out)
    assert np.array_equal(heads["head/kernel"], best["model"]["heads.head.weight"].numpy().T)
    latest = tmp_path / "latest.npz"
    result = CliRunner().invoke(app, ["export-npz", tiny_run.name, "--output-dir", str(tiny_run.parent),
                                      "--checkpoint", "latest", "--out", str(latest)])
    assert result.exit_code == 0 and "step 10, raw weights" in result.output, result.output
    state = load_checkpoint(tiny_run / "checkpoints" / "ckpt.bin")
    _assert_backbone_loads_back(latest, state["model"], state["model_type"], state["img_size"])


@pytest.mark.parametrize("args, code, words", [
    (["no_such_run"], 3, "No run named 'no_such_run'"),
    (["../flower_mps"], 2, "not a run name"),
    (["flower_mps", "--checkpoint", "first"], 2, "choose best"),
    (["flower_mps", "--out", "weights.bin"], 2, "must end in .npz"),
    (["flower_mps", "--out", "taken.npz"], 4, "already exists"),
])
def test_bad_input_is_one_paragraph_and_writes_nothing(tiny_run: Path, tmp_path: Path, monkeypatch, args: list,
                                                       code: int, words: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.npz").write_bytes(b"keep me")
    result = CliRunner().invoke(app, ["export-npz", *args, "--output-dir", str(tiny_run.parent)])
    assert result.exit_code == code, result.output
    assert words in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.npz"]
    assert (tmp_path / "taken.npz").read_bytes() == b"keep me"
