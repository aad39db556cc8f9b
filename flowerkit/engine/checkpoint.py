"""Checkpoints: written atomically, read back without executing pickled code (``weights_only=True``)."""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flowerkit.artifacts.files import atomic_write
from flowerkit.errors import ConfigError, MissingInputError

FORMAT = "flowerkit-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "model", "model_type", "img_size", "num_classes", "step", "labelmap")


SAFE_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.slice")


def foreign_imports(path: Path) -> list[str]:
    """Callables a torch file's pickle would import, other than torch's own; read with pickletools, never run."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            data = archive.read(member)
    except (zipfile.BadZipFile, StopIteration, OSError):
        data = Path(path).read_bytes()
    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was found so far
        pass
    return [n for n in names if not n.startswith(SAFE_PREFIXES)]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """``payload`` must hold tensors, containers and plain values only (so ``weights_only`` can read it)."""
    return atomic_write(path, lambda fh: torch.save({"format": FORMAT, "version": VERSION, **payload}, fh))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", data: bytes | None = None) -> dict[str, Any]:
    """Load and check a flowerkit checkpoint; every failure names the file and what is wrong with it.

    ``data``: the file's bytes when the caller already read them (to hash them too), so it is read once.
    """
    path = Path(path).expanduser()
    hint = "Pass a checkpoint written by `flowerkit train` (OUTPUT_DIR/RUN/checkpoints/ckpt.bin)."
    if not path.exists():
        raise MissingInputError(f"--checkpoint {path} does not exist. {hint}")
    if not path.is_file():
        raise MissingInputError(f"--checkpoint {path} is not a file. {hint}")
    if path.stat().st_size == 0:
        raise ConfigError(f"--checkpoint {path} is empty (0 bytes): it was never written completely. {hint}")
    try:
        source = io.BytesIO(data) if data is not None else path
        state = torch.load(source, map_location=map_location, weights_only=True)
    except PermissionError:
        raise MissingInputError(f"--checkpoint {path} cannot be read (permission denied). {hint}") from None
    except pickle.UnpicklingError:
        foreign = foreign_imports(path)
        if foreign:
            raise ConfigError(
                f"--checkpoint {path} was refused: loading it would execute code (it imports "
                f"{', '.join(foreign[:3])}). flowerkit loads checkpoints with weights_only=True and never runs "
                f"pickled code. {hint}") from None
        raise ConfigError(f"--checkpoint {path} is not a torch checkpoint (unreadable pickle data). {hint}") from None
    except KeyError:  # torch's legacy (non-zip) reader on a file that is not one: an unknown pickle memo key
        raise ConfigError(f"--checkpoint {path} is not a torch checkpoint (unreadable pickle data). {hint}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError) as exc:
        detail = str(exc).splitlines()[0].split(". ")[0]
        detail = "" if detail.startswith("[") else f" ({detail})"  # torch's C++ assertion text helps no user
        raise ConfigError(f"--checkpoint {path} is not a readable checkpoint: it is truncated, corrupted or not a "
                          f"torch file{detail}. {hint}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or any(k not in state for k in REQUIRED_KEYS):
        raise ConfigError(f"--checkpoint {path} is a torch file but not a flowerkit checkpoint (it lacks the "
                          f"model, model_type, img_size, step and labelmap entries). {hint}")
    problem = metadata_problem(state) or tensor_problem(state)
    if problem:
        raise ConfigError(f"--checkpoint {path} does not fit its own record: {problem}. It was damaged or "
                          f"edited after it was written. {hint}")
    return state


@dataclass(frozen=True)
class ReadCheckpoint:
    """A checkpoint's bytes as read once: their sha256 and the loaded state."""

    path: Path
    sha256: str
    state: dict[str, Any]


def read_checkpoint(path: Path) -> ReadCheckpoint:
    """Read a checkpoint once for both its sha256 and its state (``load_checkpoint``'s checks and messages)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError:
        data = None  # load_checkpoint says what is wrong with the path
    state = load_checkpoint(path, map_location="cpu", data=data)
    assert data is not None  # load_checkpoint raised for an unreadable file
    return ReadCheckpoint(path, hashlib.sha256(data).hexdigest(), state)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def metadata_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the recorded model_type / img_size / num_classes / step (None: nothing)."""
    from flowerkit.models.configs import MODEL_CONFIGS

    model_type, img_size = data["model_type"], data["img_size"]
    if not isinstance(model_type, str) or model_type not in MODEL_CONFIGS:
        return f"model_type {model_type!r} is not one of {', '.join(MODEL_CONFIGS)}"
    if not _is_int(img_size) or img_size <= 0 or img_size % MODEL_CONFIGS[model_type].patch_size:
        return f"img_size {img_size!r} is not a positive multiple of {model_type}'s patch size"
    if not _is_int(data["num_classes"]) or data["num_classes"] <= 0:
        return f"num_classes {data['num_classes']!r} is not a positive integer"
    if not _is_int(data["step"]) or data["step"] < 0:
        return f"step {data['step']!r} is not a non-negative integer"
    if not isinstance(data["model"], dict) or not all(isinstance(t, torch.Tensor) for t in data["model"].values()):
        return "its model entry is not a mapping of tensors"
    return None


def tensor_problem(data: dict[str, Any]) -> str | None:
    """Do the weights have the shapes of the recorded model? Built on the meta device: no memory, no time."""
    from flowerkit.models.vit import build_model

    with torch.device("meta"):
        expected = build_model(data["model_type"], data["img_size"], data["num_classes"]).state_dict()
    stored = data["model"]
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        return (f"its weights are not those of {data['model_type']} (missing {', '.join(missing[:3]) or 'none'}; "
                f"unexpected {', '.join(unexpected[:3]) or 'none'})")
    for key, tensor in expected.items():
        if tuple(stored[key].shape) != tuple(tensor.shape):
            return (f"{key} has shape {tuple(stored[key].shape)}, but a {data['model_type']} model at img_size "
                    f"{data['img_size']} with {data['num_classes']} classes needs {tuple(tensor.shape)}")
    return None


def checkpoint_model(state: dict[str, Any], path: Path, model_type: str | None,
                     img_size: int | None) -> tuple[str, int]:
    """The checkpoint's model type and image size; an explicitly given, different value is a ConfigError."""
    for option, given, stored in (("--model_type", model_type, state["model_type"]),
                                  ("--img_size", img_size, int(state["img_size"]))):
        if given is not None and given != stored:
            raise ConfigError(f"{option} {given} conflicts with the checkpoint {path}, which holds a "
                              f"{state['model_type']} model at img_size {state['img_size']}. Leave {option} out "
                              "to use the checkpoint's value.")
    return state["model_type"], int(state["img_size"])
