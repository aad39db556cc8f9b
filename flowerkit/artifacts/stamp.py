"""``env_stamp.json``: the environment a run ran in, as a fixed list of fields, none of them empty.

A package that is absent is recorded as ``"missing"`` (with a warning); a value that does not apply on
this machine (no GPU) says so in words. Package versions come from installed metadata, so stamping
never imports FiftyOne or other heavy packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from flowerkit.artifacts.files import atomic_write_text, utc_now
from flowerkit.io.paths import cache_root

log = logging.getLogger(__name__)

STAMP_FIELDS = (
    "run_id", "config_hash", "git_commit", "os_version", "python_version", "torch_version", "torchvision_version",
    "ml_collections_version", "driver_version", "cuda_version", "cudnn_version", "gpu_name", "gpu_count", "fp16",
    "seed", "env_hash", "tiny_train_subset_path", "tiny_infer_subset_path", "timestamp", "fiftyone_version",
    "torch_build", "world_size", "distributed_backend", "per_rank_batch_size",
)
NO_GPU = "not applicable (no CUDA GPU)"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        log.warning("%s is not installed: env_stamp records %s_version as \"missing\"", name, name)
        return "missing"


def env_hash() -> str:
    """sha256 over the sorted ``name==version`` of every installed distribution, and the Python version.

    Reading every distribution's metadata takes a fifth of a second, on every run; the hash is kept in the
    cache under a fingerprint of the metadata folders on ``sys.path`` (their names carry the versions, their
    times change when a package is installed again), so it is computed again only when those change."""
    fingerprint = _metadata_fingerprint()
    cached = cache_root() / "env-hash" / f"{fingerprint}.txt"
    with contextlib.suppress(OSError):
        return cached.read_text().strip()
    pins = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions()
                   if d.metadata["Name"]})
    value = hashlib.sha256("\n".join([sys.version, *pins]).encode()).hexdigest()
    with contextlib.suppress(OSError):  # a read-only cache only costs the next run the same fifth of a second
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cached, value)
    return value


def _metadata_fingerprint() -> str:
    entries = [sys.version]
    for folder in sys.path:
        with contextlib.suppress(OSError), os.scandir(folder or ".") as found:
            for entry in found:
                if entry.name.endswith((".dist-info", ".egg-info")):
                    entries.append(f"{folder}/{entry.name}:{entry.stat().st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()[:32]


def git_commit(start: Path = Path(__file__).resolve().parent) -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown (git not installed)"
    try:
        commit = subprocess.run([git, "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=5)
        if commit.returncode:
            return "unknown (not a git checkout)"
        dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"], cwd=start,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git failed)"


def _driver_version() -> str:
    if not torch.cuda.is_available():
        return NO_GPU
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    return "unknown (nvidia-smi not found)"


def gpu_facts(device_type: str) -> dict[str, Any]:
    cuda_build = torch.version.cuda
    facts: dict[str, Any] = {
        "driver_version": _driver_version(),
        "cuda_version": cuda_build or "not applicable (torch built without CUDA)",
        "cudnn_version": str(torch.backends.cudnn.version()) if cuda_build and torch.backends.cudnn.is_available()
        else "not applicable (no cuDNN)",
    }
    if torch.cuda.is_available():
        facts["gpu_count"] = torch.cuda.device_count()
        facts["gpu_name"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    elif device_type == "mps":
        facts["gpu_count"] = 1
        facts["gpu_name"] = "Apple GPU (MPS)"
    else:
        facts["gpu_count"] = 0
        facts["gpu_name"] = "none (CPU only)"
    return facts


def build_stamp(run_id: str, config_hash: str, seed: int | str, device: str, precision: str,
                train_subset: str, infer_subset: str, weights: dict[str, Any] | None = None,
                distributed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stamp's fields; ``seed`` may be a sentence where no seed applies (a predict run); ``weights`` is
    ``WeightsSource.as_record()`` of what the run started from; ``distributed`` the run record's ``distributed`` (``world_facts``; None: one process)."""
    world = distributed or {"world_size": 1, "backend": "none", "per_rank_batch": "not recorded"}
    device_type = device.split(":")[0]
    stamp: dict[str, Any] = {
        "run_id": run_id,
        "config_hash": config_hash,
        "git_commit": git_commit(),
        "os_version": platform.platform(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "torchvision_version": package_version("torchvision"),
        "ml_collections_version": package_version("ml_collections"),
        **gpu_facts(device_type),
        "fp16": False,
        "seed": seed,
        "env_hash": env_hash(),
        "tiny_train_subset_path": train_subset,
        "tiny_infer_subset_path": infer_subset,
        "timestamp": utc_now(),
        "fiftyone_version": package_version("fiftyone"),
        "torch_build": f"{torch.__version__} ({'CUDA ' + torch.version.cuda if torch.version.cuda else 'CPU'}"
                       f" build, {platform.machine()})",
        "world_size": world["world_size"],
        "distributed_backend": world["backend"],
        "per_rank_batch_size": world["per_rank_batch"],
        "device": device,
        "precision": precision,
        "pretrained_weights": weights or {"format": "none", "origin": "not recorded"},
    }
    return {key: stamp[key] for key in (*STAMP_FIELDS, "device", "precision", "pretrained_weights")}


def missing_fields(stamp: dict[str, Any]) -> list[str]:
    """Fields absent or empty; ``False`` and ``0`` are values, not emptiness."""
    return [k for k in STAMP_FIELDS if k not in stamp or stamp[k] is None or stamp[k] == ""]
