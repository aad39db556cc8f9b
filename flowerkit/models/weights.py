"""``--pretrained``: resolve what the user named into a described, hashed source, and load it into our ViT.

Accepted: a Google ``.npz`` file; a timm / Hugging Face checkpoint as a local ``.safetensors`` or ``.bin`` file
or a folder holding one (with its ``config.json`` when present); a Hub id ``hf-hub:ORG/NAME[@REVISION]``,
fetched with huggingface_hub into its normal cache (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT and HF_HUB_OFFLINE
apply). A local path that does not exist means random init with a warning (the seed's behaviour); anything
present but unreadable, partial or mismatched is a ConfigError.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowerkit.errors import ConfigError, MissingInputError

if TYPE_CHECKING:  # torch is imported where tensors are read, so resolving a source stays light
    import torch
    from flowerkit.models.vit import VisionTransformer

log = logging.getLogger(__name__)

HUB_PREFIX = "hf-hub:"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes, preferred first
FORMATS = {".npz": "npz", ".safetensors": "safetensors", ".bin": "bin", ".pth": "bin", ".pt": "bin"}


@dataclass(frozen=True)
class WeightsSource:
    """What ``--pretrained`` resolved to. ``path`` is None when the run starts from random weights."""

    spec: str | None
    format: str  # npz, safetensors, bin; "none" for random init
    origin: str  # where the file came from, in words
    path: Path | None = None
    sha256: str | None = None
    config_json: Path | None = None

    def describe(self) -> str:
        if self.path is None and self.spec and self.spec.startswith(HUB_PREFIX):
            return f"{self.spec}: {self.origin.removeprefix(self.spec + ' ')}"  # a dry run, before the download
        if self.path is None:
            return f"random init ({self.origin})"
        return f"pretrained from {self.spec} ({self.format}, {self.origin}, sha256 {self.sha256})"

    def as_record(self) -> dict[str, Any]:
        """Strict-JSON facts for the env stamp and run record."""
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(self).items()}


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    from flowerkit.artifacts.files import sha256_file

    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    """sha256 of ``path``, computed once per (path, size, mtime): checkpoints are hundreds of MB."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def resolve_weights(spec: str | os.PathLike | None, download: bool = True, warn: bool = True) -> WeightsSource:
    """Turn ``--pretrained`` into a WeightsSource; ``download=False`` (dry runs) only looks in caches.
    ``warn=False``: a missing file is not logged here (a plan records the warning for its run to log)."""
    if spec is None or str(spec) == "":
        return WeightsSource(None, "none", "no --pretrained")
    spec = str(spec)
    if spec.startswith(HUB_PREFIX):
        return _resolve_hub(spec, download)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _local(spec, _weights_in_folder(path, spec), "local folder")
    if not path.exists():
        if warn:
            log.warning("%s", missing_weights_warning(path))
        return WeightsSource(spec, "none", f"{path} not found: a warning, not an error")
    sibling_config = path.parent / "config.json"
    return _local(spec, path, "local file", sibling_config if path.suffix != ".npz" else None)


def missing_weights_warning(path: Path) -> str:
    return f"pretrained weights {path} not found: training from random initialisation"


def _local(spec: str, path: Path, origin: str, config_json: Path | None = None) -> WeightsSource:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--pretrained {spec}: {path.name} is not a weights format flowerkit reads. Pass a Google "
                          ".npz, a timm/Hugging Face .safetensors or .bin file, a folder holding one, or a Hub id "
                          "such as hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k.")
    if config_json is None and fmt != "npz" and (path.parent / "config.json").is_file():
        config_json = path.parent / "config.json"
    config_json = config_json.resolve() if config_json is not None and config_json.is_file() else None
    # The record keeps the absolute path: a run's stamp must name the file wherever it was started from. The
    # sha256 is taken when the file is read (check_weights, load_weights): a large file is read once for both.
    return WeightsSource(spec, fmt, origin, path.resolve(), None, config_json)


def _weights_in_folder(folder: Path, spec: str) -> Path:
    """The one checkpoint in ``folder``: timm's own file names first, else the only weights file there."""
    for name in HUB_FILES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in FORMATS and p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "no .safetensors, .bin or .npz file"
    raise ConfigError(f"--pretrained {spec} is a folder, but flowerkit cannot tell which checkpoint to load: it "
                      f"holds {found}. Name the file itself, or a folder with model.safetensors (and config.json).")


def _resolve_hub(spec: str, download: bool) -> WeightsSource:
    """Fetch (or, for a dry run, look up in the cache) a Hub repo's weights and config.json."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = spec.removeprefix(HUB_PREFIX).partition("@")
    revision = revision or None
    for filename in HUB_FILES:
        cached = try_to_load_from_cache(repo_id, filename, revision=revision)
        path = Path(cached) if isinstance(cached, str) else None
        if path is None and download:
            path = _hub_download(spec, repo_id, filename, revision)
        if path is not None:
            config = _hub_config(repo_id, revision, download)
            origin = f"Hugging Face Hub {repo_id}, cached at {path.parent}"
            return WeightsSource(spec, FORMATS[path.suffix], origin, path, file_sha256(path), config)
    if not download:
        from huggingface_hub.constants import is_offline_mode

        if is_offline_mode():
            raise MissingInputError(f"--pretrained {spec} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 "
                                    "forbids downloading it. Unset HF_HUB_OFFLINE (with internet access) or copy "
                                    "the cache (HF_HOME) from a machine that has it.")
        return WeightsSource(spec, "none", f"{spec} is not in the Hugging Face cache yet: the run downloads it")
    raise ConfigError(f"--pretrained {spec}: the Hub repo {repo_id} has neither {' nor '.join(HUB_FILES)}. Pass a "
                      "timm ViT repo such as hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k.")


def _hub_download(spec: str, repo_id: str, filename: str, revision: str | None) -> Path | None:
    """One file into the Hub cache; None when the repo simply does not have it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.constants import ENDPOINT as endpoint_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        FileMetadataError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ConfigError(f"--pretrained {spec}: no such repository or revision on the Hub "
                          f"({type(exc).__name__}). Check the id (e.g. hf-hub:timm/vit_base_patch16_224."
                          "augreg2_in21k_ft_in1k); private repos need `hf auth login` or HF_TOKEN.") from None
    except LocalEntryNotFoundError as exc:
        # An answer, but not as the Hub answers (e.g. a static server as HF_ENDPOINT): not a connection problem.
        # The Hub's own 404s carry X-Error-Code and arrive as the errors above; a bare 404 is another server's.
        cause = exc.__cause__
        bare_404 = isinstance(cause, HfHubHTTPError) and getattr(cause.response, "status_code", None) == 404
        if isinstance(cause, FileMetadataError) or bare_404:
            raise ConfigError(f"--pretrained {spec}: {endpoint_url} does not answer as a Hugging Face Hub endpoint "
                              f"({str(cause).splitlines()[0].split('. ')[0]}). A mirror set with HF_ENDPOINT "
                              "must serve the Hub's resolve endpoint with its headers (README, Mirrors; "
                              "scripts/hub_mirror.py serves a folder of repos).") from None
        # Offline (HF_HUB_OFFLINE=1) or unreachable, and not cached: not a typo, so not exit 2.
        raise MissingInputError(f"--pretrained {spec}: {filename} is not in the Hugging Face cache and the Hub "
                                "cannot be reached (offline, or HF_HUB_OFFLINE=1). Run once with internet access "
                                "(or copy the cache, HF_HOME), or pass a local file.") from None
    except EntryNotFoundError:
        return None
    except HfHubHTTPError as exc:
        raise MissingInputError(f"--pretrained {spec}: downloading {filename} failed ({exc}). Check the "
                                "connection or HF_ENDPOINT and try again; the download resumes.") from None


def _hub_config(repo_id: str, revision: str | None, download: bool) -> Path | None:
    """The repo's config.json if it has one (timm repos do); never an error, since it is optional."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    if not download:
        return None
    try:
        return Path(hf_hub_download(repo_id, "config.json", revision=revision))
    except (HfHubHTTPError, LocalEntryNotFoundError):
        return None


def read_state_dict(source: WeightsSource, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or .bin file (``data``: its bytes, already read); unreadable or truncated
    files are a ConfigError."""
    import io

    import torch

    assert source.path is not None
    try:
        if source.format == "safetensors":
            from safetensors.torch import load, load_file

            state = load(data) if data is not None else load_file(source.path)
        else:
            state = torch.load(io.BytesIO(data) if data is not None else source.path, map_location="cpu",
                               weights_only=True)
            for wrapper in ("state_dict", "model"):  # training checkpoints wrap the weights
                if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
                    state = state[wrapper]
    except Exception as exc:  # noqa: BLE001 - safetensors, pickle and zip report damage with many types
        if isinstance(exc, (KeyboardInterrupt, MemoryError)):
            raise
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"--pretrained {source.spec}: {source.path} could not be read as a {source.format} "
                          f"checkpoint ({reason}). The file may be partial or damaged: download it again.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--pretrained {source.spec}: {source.path} holds no state dict of tensors.")
    return state


def read_config_json(source: WeightsSource) -> dict | None:
    if source.config_json is None:
        return None
    try:
        data = json.loads(source.config_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--pretrained {source.spec}: {source.config_json} is not valid JSON ({exc}).") from None
    return data if isinstance(data, dict) else None


def mapped_state_dict(source: WeightsSource, model: VisionTransformer, model_type: str,
                      data: bytes | None = None) -> dict[str, torch.Tensor]:
    """The source's weights under ``model``'s keys, checked against ``model_type`` (everything but the head);
    ``data``: the file's bytes, already read."""
    from flowerkit.models import npz, timm_vit

    assert source.path is not None
    if source.format == "npz":
        weights = npz.read_npz(source.path, data)
        npz.check_npz_matches(weights, source.path, model_type)
        try:
            return npz.npz_to_state_dict(weights, model)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--pretrained {source.spec} does not match --model_type {model_type} ({exc}). "
                              "Pick the model type the checkpoint was trained as (e.g. ViT-B_16 for "
                              "ViT-B_16.npz).") from None
    return timm_vit.map_timm(read_state_dict(source, data), read_config_json(source), model, model_type,
                             str(source.spec))


def read_weights(source: WeightsSource) -> tuple[WeightsSource, bytes | None]:
    """The file's bytes, read once, and the source with their sha256 (a source without a file: as it is)."""
    if source.path is None:
        return source, None
    import hashlib

    try:
        data = source.path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--pretrained {source.spec}: {source.path} could not be read ({exc.strerror}).") from None
    return replace(source, sha256=hashlib.sha256(data).hexdigest()), data


def check_weights(source: WeightsSource, model_type: str, img_size: int) -> WeightsSource:
    """Everything ``load_weights`` checks, on a throwaway model: for the plan, before any run starts. Returns
    the source with its file's sha256 (the file is read once for both)."""
    import torch

    from flowerkit.data.flowers102 import NUM_CLASSES
    from flowerkit.models.vit import build_model

    source, data = read_weights(source)
    if data is not None:
        with torch.device("meta"):  # shapes are all the checks need: no memory, no init time
            model = build_model(model_type, img_size, NUM_CLASSES)
        mapped_state_dict(source, model, model_type, data)
    return source


def load_weights(model: VisionTransformer, planned: WeightsSource | str | os.PathLike | None,
                 model_type: str) -> WeightsSource:
    """Load the plan's weights (or a ``--pretrained`` value, resolved here) into ``model`` (head kept random);
    returns what was loaded. A Hub id the plan found not cached yet is downloaded now, when the run starts."""
    if not isinstance(planned, WeightsSource):
        planned = resolve_weights(planned)
    source = planned
    if source.path is None and source.spec and source.spec.startswith(HUB_PREFIX):
        source = resolve_weights(source.spec)
    if source.path is None:
        return source
    source, data = read_weights(source)
    if planned.sha256 is not None and source.sha256 != planned.sha256:
        raise ConfigError(f"--pretrained {source.spec}: {source.path} changed after the run was planned (sha256 "
                          f"{planned.sha256[:12]} then, {source.sha256[:12]} now). Start the run again.")
    state = mapped_state_dict(source, model, model_type, data)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only the fresh head may stay as initialised; anything else would be a silently partial load.
    if unexpected or any(not key.startswith("heads.") for key in missing):
        raise ConfigError(f"--pretrained {source.spec} does not fill the model completely (missing "
                          f"{[k for k in missing if not k.startswith('heads.')][:4]}, unexpected "
                          f"{list(unexpected)[:4]}). Pick the model type the checkpoint was trained as.")
    log.info("loaded %s (head re-initialised for %d classes)", source.describe(), model.heads.head.out_features)
    return source

