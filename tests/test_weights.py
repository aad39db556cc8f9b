"""--pretrained: timm checkpoints (.safetensors, .bin, a folder, a Hub id) load into our ViT exactly.

Proved against timm's own forward: a timm ViT with random weights is saved, loaded through flowerkit, and
its features compared with what timm computes from the same file, at the checkpoint's resolution and at
another one (position embeddings resized). Hub ids go through huggingface_hub against a local endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from flowerkit.errors import ConfigError
from flowerkit.models.vit import build_model
from flowerkit.models.weights import load_weights, resolve_weights
from tests.localhttp import LocalServer
from tests.small_models import small_vit_registered

# timm is imported where it is used: every pytest-xdist process collects this file, and only one runs it.
pytestmark = pytest.mark.skipif(find_spec("timm") is None, reason="timm is part of the dev install (make setup)")

# A ViT-Ti-shaped family (3 heads), shrunk so that the proofs take milliseconds: patch 8, width 48, 2 layers.
ARCH, MODEL_TYPE, CKPT_SIZE = "vit_tiny_patch16_224", "ViT-test_8", 32
SMALL = {"patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "mlp_ratio": 2}
REPO = "timm/vit_tiny_test"


@pytest.fixture(scope="module", autouse=True)
def small_model_type():
    with small_vit_registered(MODEL_TYPE):
        yield


def _timm_vit(**kwargs) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, img_size=CKPT_SIZE, num_classes=10, **(SMALL | kwargs))
    with torch.no_grad():  # timm zero-initialises some tensors; random everywhere makes the proof stronger
        for param in model.parameters():
            param.normal_(0, 0.05)
    return model.eval()


def _save(model: torch.nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, path) if path.suffix == ".safetensors" else torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    model = _timm_vit()
    folder = root / "hub-folder"
    _save(model, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": ARCH, "num_classes": 10, "global_pool": "token"}))
    return {"safetensors": _save(model, root / "vit.safetensors"), "bin": _save(model, root / "vit.bin"),
            "folder": folder}


def _features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.heads = torch.nn.Identity()  # what is left is the class token after the final norm: the features
    with torch.no_grad():
        return model.eval()(x)


def _timm_features(file: Path, size: int, x: torch.Tensor) -> torch.Tensor:
    """What timm itself computes from ``file`` at ``size`` (its own loading and position resizing)."""
    import timm

    reference = timm.create_model(ARCH, pretrained=True, img_size=size, num_classes=0,
                                  pretrained_cfg_overlay={"file": str(file)}, **SMALL).eval()
    with torch.no_grad():
        return reference(x)


@pytest.mark.parametrize("fmt, size", [("safetensors", CKPT_SIZE), ("safetensors", 64), ("bin", 48),
                                       ("folder", 64)])
def test_timm_checkpoint_matches_timms_forward(checkpoints: dict[str, Path], fmt: str, size: int) -> None:
    spec = checkpoints[fmt]
    file = spec / "model.safetensors" if spec.is_dir() else spec
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    model = build_model(MODEL_TYPE, size, 102)
    untouched = _features(build_model(MODEL_TYPE, size, 102), x)
    source = load_weights(model, str(spec), MODEL_TYPE)
    assert model.heads.head.out_features == 102  # the head is fresh, for Flowers-102
    ours, theirs = _features(model, x), _timm_features(file, size, x)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(untouched, theirs, atol=1e-3)  # a no-op loader would fail here
    assert source.format == ("safetensors" if fmt == "folder" else fmt)
    assert source.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert (source.config_json is not None) == (fmt == "folder")


@pytest.mark.parametrize("variant, words", [
    ({"reg_tokens": 4}, "register tokens"),
    ({"class_token": False, "global_pool": "avg"}, "fc_norm"),
    ({"init_values": 1e-5}, "layer scale"),
    ({"qk_norm": True}, "query/key normalisation"),
    ({"no_embed_class": True}, "no_embed_class"),
])
def test_architectures_we_cannot_map_are_refused_not_loaded(tmp_path: Path, variant: dict, words: str) -> None:
    file = _save(_timm_vit(**variant), tmp_path / "variant.safetensors")
    model = build_model(MODEL_TYPE, CKPT_SIZE, 102)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="cannot reproduce") as err:
        load_weights(model, str(file), MODEL_TYPE)
    assert words in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded partially


def test_declared_config_that_differs_is_refused(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "declared"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((checkpoints["folder"] / "model.safetensors").read_bytes())
    (folder / "config.json").write_text(json.dumps({"architecture": ARCH, "model_args": {"pre_norm": True}}))
    with pytest.raises(ConfigError, match="pre_norm=True"):
        load_weights(build_model(MODEL_TYPE, CKPT_SIZE, 102), str(folder), MODEL_TYPE)


def test_wrong_size_partial_or_missing_files(checkpoints: dict[str, Path], tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="does not match --model_type testing"):
        load_weights(build_model("testing", CKPT_SIZE, 102), str(checkpoints["safetensors"]), "testing")
    for fmt in ("safetensors", "bin"):
        partial = tmp_path / f"partial.{fmt}"
        partial.write_bytes(checkpoints[fmt].read_bytes()[:100_000])
        with pytest.raises(ConfigError, match="could not be read as a"):
            load_weights(build_model(MODEL_TYPE, CKPT_SIZE, 102), str(partial), MODEL_TYPE)
    with caplog.at_level("WARNING"):
        source = load_weights(build_model(MODEL_TYPE, CKPT_SIZE, 102), str(tmp_path / "absent.safetensors"),
                              MODEL_TYPE)
    assert source.path is None and "random init" in source.describe() and "not found" in caplog.text


def _in_subprocess(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run([sys.executable, "-c", code], env=clean | env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[1])


RESOLVE = """
import json, sys
from flowerkit.errors import FlowerkitError
from flowerkit.models.weights import resolve_weights
for spec in sys.argv[1:] or {specs!r}:
    try:
        print(json.dumps(resolve_weights(spec).as_record()))
    except FlowerkitError as exc:
        print(json.dumps({{"error": exc.exit_code, "message": exc.message}}))
"""


def test_hub_id_downloads_into_the_hub_cache_then_works_offline(checkpoints: dict[str, Path],
                                                                tmp_path: Path) -> None:
    """huggingface_hub fetches from HF_ENDPOINT into HF_HOME; with HF_HUB_OFFLINE=1 the cache alone serves."""
    folder = checkpoints["folder"]
    weights = (folder / "model.safetensors").read_bytes()
    with LocalServer() as server:
        for name in ("model.safetensors", "config.json"):
            server.files[f"/{REPO}/resolve/main/{name}"] = (folder / name).read_bytes()
        online = _in_subprocess(RESOLVE.format(specs=[f"hf-hub:{REPO}"]),
                                {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": server.url})
        assert online.returncode == 0, online.stderr
        fetched = json.loads(online.stdout.splitlines()[-1])
        assert fetched["format"] == "safetensors" and fetched["sha256"] == hashlib.sha256(weights).hexdigest()
        assert Path(fetched["path"]).is_relative_to(tmp_path / "hf") and fetched["config_json"]
        served = len(server.requests)
        offline = _in_subprocess(RESOLVE.format(specs=[f"hf-hub:{REPO}", "hf-hub:timm/not_cached"]),
                                 {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
                                  "HF_ENDPOINT": server.url})
        assert offline.returncode == 0, offline.stderr
        cached, missing = (json.loads(line) for line in offline.stdout.splitlines()[-2:])
        assert len(server.requests) == served  # offline means offline
    assert cached["sha256"] == fetched["sha256"] and cached["path"] == fetched["path"]
    assert missing["error"] == 3 and "not in the Hugging Face cache" in missing["message"]
    # The cached file is the timm checkpoint proved above: it loads like the local file.
    model = build_model(MODEL_TYPE, CKPT_SIZE, 102)
    load_weights(model, cached["path"], MODEL_TYPE)
    x = torch.randn(1, 3, CKPT_SIZE, CKPT_SIZE)
    torch.testing.assert_close(_features(model, x), _timm_features(folder / "model.safetensors", CKPT_SIZE, x))


def test_dry_run_names_format_source_and_sha256(checkpoints: dict[str, Path], flowers_root: Path,
                                                workdir: Path) -> None:
    from typer.testing import CliRunner

    from flowerkit.cli import app

    file = checkpoints["safetensors"]
    result = CliRunner().invoke(app, [
        "train", "--name", "dry", "--dataset", "flower102", "--data_root", str(flowers_root), "--model_type",
        MODEL_TYPE, "--img_size", "64", "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset",
        "flower102_tiny", "--pretrained_dir", str(file), "--dry_run"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("weights"))
    assert "safetensors" in line and hashlib.sha256(file.read_bytes()).hexdigest() in line
    data = next(line for line in result.output.splitlines() if line.strip().startswith("data "))
    assert str(flowers_root) in data and "checksums not verified" in data  # a generated set: no archive
    assert not (workdir / "output").exists()
    assert resolve_weights(None).describe() == "random init (no --pretrained)"


def test_pretrained_dir_is_an_alias_in_every_source(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's --pretrained_dir keeps working as flag, YAML key and FLOWERKIT_ variable, each at its level."""
    from flowerkit.cli.options import _option
    from flowerkit.run.config import TrainConfig, load_config

    flags = _option("pretrained", TrainConfig.model_fields["pretrained"])[1].param_decls
    assert list(flags) == ["--pretrained", "--pretrained_dir"]  # --pretrained-dir: dashes normalise to underscores
    assert load_config(TrainConfig, {"name": "a", "pretrained_dir": Path("x.npz")}).pretrained == "x.npz"
    monkeypatch.setenv("FLOWERKIT_PRETRAINED_DIR", "env.npz")
    assert load_config(TrainConfig, {"name": "a"}).pretrained == "env.npz"
    yaml_file = workdir / "run.yaml"
    yaml_file.write_text("pretrained_dir: yaml.npz\n")
    assert load_config(TrainConfig, {"name": "a"}, yaml_file).pretrained == "yaml.npz"  # YAML over env
    yaml_file.write_text("pretrained: yaml.npz\n")
    assert load_config(TrainConfig, {"name": "a", "pretrained_dir": "cli.npz"}, yaml_file).pretrained == "cli.npz"


def test_documented_hub_mirror_serves_hf_hub_ids(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """The Hub mirror of docs/fine-tuning.md: a folder per repo served by scripts/hub_mirror.py; `--pretrained
    hf-hub:...` with HF_ENDPOINT pointing at it downloads through huggingface_hub, and a repo without
    model.safetensors falls back to pytorch_model.bin. A plain static server is refused by huggingface_hub, as
    the page says."""
    import socket
    import time
    import urllib.request

    repo_root = Path(__file__).resolve().parents[1]
    hub = tmp_path / "hub"
    (hub / REPO).mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        (hub / REPO / name).write_bytes((checkpoints["folder"] / name).read_bytes())
    (hub / "timm" / "vit_bin_only").mkdir(parents=True)
    (hub / "timm" / "vit_bin_only" / "pytorch_model.bin").write_bytes(checkpoints["bin"].read_bytes())

    def serve(cmd: list[str]) -> tuple[subprocess.Popen, str]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(cmd + [str(port)], cwd=repo_root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            except urllib.error.HTTPError:
                break  # answering (a 404 for /)
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, cmd
                time.sleep(0.1)
                continue
            break
        return proc, f"http://127.0.0.1:{port}"

    specs = [f"hf-hub:{REPO}", "hf-hub:timm/vit_bin_only", f"hf-hub:{REPO}@no-such-revision"]
    mirror, url = serve([sys.executable, "scripts/hub_mirror.py", str(hub), "--bind", "127.0.0.1", "--port"])
    try:
        got = _in_subprocess(RESOLVE.format(specs=specs), {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": url})
    finally:
        mirror.terminate()
        mirror.wait(10)
    assert got.returncode == 0, got.stderr
    safetensors, binary, revision = (json.loads(line) for line in got.stdout.splitlines()[-3:])
    assert safetensors["format"] == "safetensors" and safetensors["config_json"]
    assert safetensors["sha256"] == hashlib.sha256((hub / REPO / "model.safetensors").read_bytes()).hexdigest()
    assert binary["format"] == "bin" and binary["sha256"] == hashlib.sha256(checkpoints["bin"].read_bytes()).hexdigest()
    assert revision["error"] == 2 and "no such repository or revision" in revision["message"]

    static_root = tmp_path / "static"  # the exact URL paths, yet no X-Repo-Commit or ETag header
    (static_root / REPO / "resolve" / "main").mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        (static_root / REPO / "resolve" / "main" / name).write_bytes((hub / REPO / name).read_bytes())
    static, url = serve([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(static_root)])
    try:
        plain = _in_subprocess(RESOLVE.format(specs=[f"hf-hub:{REPO}"]),
                               {"HF_HOME": str(tmp_path / "hf-plain"), "HF_ENDPOINT": url})
    finally:
        static.terminate()
        static.wait(10)
    refused = json.loads(plain.stdout.splitlines()[-1])
    assert refused["error"] == 2 and "does not answer as a Hugging Face Hub endpoint" in refused["message"]
    assert "X-Repo-Commit" in refused["message"] and "scripts/hub_mirror.py" in refused["message"]
