"""Pick the device a run uses, and say why."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from flowerkit.errors import ConfigError, MissingInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cpu", "cuda:0" or "mps": what torch.device() takes
    name: str  # human-readable hardware name
    reason: str

    @property
    def type(self) -> str:
        return torch.device(self.device).type


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _choice(kind: str, reason: str) -> DeviceChoice:
    if kind == "cuda":
        return DeviceChoice("cuda:0", torch.cuda.get_device_name(0), reason)
    if kind == "mps":
        return DeviceChoice("mps", "Apple GPU (Metal Performance Shaders)", reason)
    return DeviceChoice("cpu", "CPU", reason)


def detect_device(request: str = "auto", prefer_mps: bool = False) -> DeviceChoice:
    """``auto``: CUDA, then MPS, then CPU (MPS first with ``prefer_mps``). An absent explicit device is an error."""
    available = {"cuda": torch.cuda.is_available(), "mps": _mps_available(), "cpu": True}
    if request != "auto":
        if request not in available:
            raise ConfigError(f"--device {request} is not one of auto, cpu, cuda, mps.")
        if not available[request]:
            raise MissingInputError(
                f"--device {request} was requested but this machine has no {request.upper()} device that torch "
                f"can use (torch {torch.__version__}). Use --device auto to take the best available device, or "
                "--device cpu.")
        choice = _choice(request, f"requested with --device {request}")
    else:
        order = ("mps", "cuda", "cpu") if prefer_mps else ("cuda", "mps", "cpu")
        kind = next(k for k in order if available[k])
        skipped = [k.upper() for k in order[: order.index(kind)]]
        why = f"{', '.join(skipped)} not available" if skipped else "first choice"
        choice = _choice(kind, f"auto ({'MPS preferred, ' if prefer_mps else ''}{why})")
    log.info("device: %s (%s) - %s", choice.device, choice.name, choice.reason)
    return choice


def resolve_precision(precision: str, device: DeviceChoice) -> str:
    """``fp32`` or ``bf16``: bf16 autocast only on CUDA GPUs that support it; fp32 on CPU and MPS."""
    if device.type != "cuda":
        if precision == "bf16":
            raise ConfigError(f"--precision bf16 needs a CUDA GPU; runs on {device.device} are fp32 only. "
                              "Use --precision auto or fp32.")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return precision
