"""flowerkit export --format onnx: a run's checkpoint for serving, proven against torch before it is written,
and flowerkit predict --onnx giving what --run gives."""

from __future__ import annotations

import json
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.engine.checkpoint import load_checkpoint

# onnx and onnxruntime are imported where they are used: every pytest-xdist process collects this file, and
# only one runs it.
pytestmark = pytest.mark.skipif(find_spec("onnx") is None or find_spec("onnxruntime") is None,
                                reason="the onnx extra is part of the dev install (make setup)")


def export(run_dir: Path, *args: str):
    return CliRunner().invoke(app, ["export", run_dir.name, "--output_dir", str(run_dir.parent), *args])


@pytest.fixture(scope="module")
def exported(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "small.onnx"
    result = export(small_run, "--format", "onnx", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Checked: onnxruntime = torch within" in result.stdout and "3 of the run's own images" in result.output
    return out


def _run_images(run_dir: Path) -> list[str]:
    rows = (run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()
    return [json.loads(r)["filepath"] for r in rows]


def test_the_onnx_file_carries_its_metadata_and_a_dynamic_batch(exported: Path, small_run: Path) -> None:
    import onnx
    import onnxruntime as ort

    from flowerkit.artifacts.files import sha256_file
    from flowerkit.data.flowers102 import labelmap

    model = onnx.load(str(exported))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["flowerkit.class_names"]) == [labelmap()[str(i)] for i in range(102)]
    assert json.loads(meta["flowerkit.eval_transform"]) == {"kind": "cached", "img_size": 64, "resolution": 96,
                                                           "mean": [0.5] * 3, "std": [0.5] * 3}
    assert meta["flowerkit.checkpoint_sha256"] == sha256_file(small_run / "checkpoints" / "best.bin")
    assert meta["flowerkit.run"] == "small"
    from flowerkit.predict.onnx_export import served_model

    served, _ = served_model(load_checkpoint(small_run / "checkpoints" / "best.bin"))
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    [graph_input] = session.get_inputs()
    assert graph_input.type == "tensor(uint8)" and graph_input.shape[1:] == [96, 96, 3]  # the decoded squares
    for n in (1, 3, 5):
        x = np.random.default_rng(n).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        got = session.run(None, {"pixels": x})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, served(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=0)


def test_predict_with_onnx_matches_the_run(exported: Path, small_run: Path) -> None:
    images = _run_images(small_run)
    runs = {}
    for source in (["--run", "small", "--output_dir", str(small_run.parent)], ["--onnx", str(exported)]):
        result = CliRunner().invoke(app, ["predict", *images, *source, "--json", "--export_logits"])
        assert result.exit_code == 0, result.output
        runs[source[0]] = [json.loads(x) for x in result.stdout.splitlines()]
    torch_rows, onnx_rows = runs["--run"], runs["--onnx"]
    assert [r["prediction"] for r in onnx_rows] == [r["prediction"] for r in torch_rows]
    assert [r["prediction_name"] for r in onnx_rows] == [r["prediction_name"] for r in torch_rows]
    np.testing.assert_allclose([r["logits"] for r in onnx_rows], [r["logits"] for r in torch_rows], atol=1e-4)
    np.testing.assert_allclose([r["confidence"] for r in onnx_rows], [r["confidence"] for r in torch_rows],
                               atol=1e-5)
    spread = np.array([r["logits"] for r in torch_rows]).std(axis=0).max()
    assert spread > 1e-2  # the images really give different numbers


def test_npz_format_is_export_npz(small_run: Path, tmp_path: Path) -> None:
    from flowerkit.models.npz import read_npz

    via_export, via_alias = tmp_path / "a.npz", tmp_path / "b.npz"
    assert export(small_run, "--format", "npz", "--out", str(via_export)).exit_code == 0
    alias = CliRunner().invoke(app, ["export-npz", "small", "--output_dir", str(small_run.parent), "--out",
                                     str(via_alias)])
    assert alias.exit_code == 0, alias.output
    a, b = read_npz(via_export), read_npz(via_alias)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_mismatch_writes_nothing(small_run: Path, tmp_path: Path, monkeypatch) -> None:
    from flowerkit.predict import onnx_export

    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # no difference passes: the failure path for real
    out = tmp_path / "m.onnx"
    result = export(small_run, "--format", "onnx", "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "differ from torch's by up to" in result.stderr and "nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, code, words", [
    (["--format", "tflite"], 2, "choose npz"),
    (["--format", "onnx", "--out", "m.npz"], 2, "must end in .onnx"),
    (["--format", "onnx", "--out", "taken.onnx"], 4, "already exists"),
    (["--format", "onnx", "--checkpoint", "first"], 2, "choose best"),
])
def test_bad_export_options(small_run: Path, tmp_path: Path, monkeypatch, args: list[str], code: int,
                            words: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.onnx").write_bytes(b"keep me")
    result = export(small_run, *args)
    assert result.exit_code == code, result.output
    assert words in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.onnx"]


def test_predict_with_onnx_needs_no_torch(exported: Path, small_run: Path) -> None:
    """The ONNX path decodes with PIL and runs onnxruntime: torch is never imported (a serving image needs none)."""
    import subprocess

    image = _run_images(small_run)[0]
    code = ("import sys, json; from typer.testing import CliRunner; from flowerkit.cli import app; "
            f"r = CliRunner().invoke(app, ['predict', {image!r}, '--onnx', {str(exported)!r}, '--json']); "
            "print(json.dumps([r.exit_code, 'torch' in sys.modules, r.stdout]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    exit_code, imported_torch, stdout = json.loads(done.stdout.splitlines()[-1])
    assert exit_code == 0 and not imported_torch and json.loads(stdout)["prediction_name"]


def test_without_the_onnx_extra_both_commands_name_it(small_run: Path, exported: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError, as uninstalled
    result = export(small_run, "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    assert result.exit_code == 2 and "pip install 'flowerkit[onnx]'" in " ".join(result.stderr.split())
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(app, ["predict", _run_images(small_run)[0], "--onnx", str(exported)])
    assert result.exit_code == 2 and "pip install 'flowerkit[onnx]'" in " ".join(result.stderr.split())


def test_predict_refuses_an_onnx_file_flowerkit_did_not_write(exported: Path, tmp_path: Path,
                                                              small_run: Path) -> None:
    import onnx

    model = onnx.load(str(exported))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "bare.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx")
    image = _run_images(small_run)[0]
    for name, words in (("bare.onnx", "not one exported by flowerkit"), ("junk.onnx", "not a readable ONNX model"),
                        ("missing.onnx", "does not exist")):
        result = CliRunner().invoke(app, ["predict", image, "--onnx", str(tmp_path / name)])
        assert result.exit_code in (2, 3) and words in " ".join(result.stderr.split()), result.output
