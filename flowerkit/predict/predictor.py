"""Two backends with one interface: a flowerkit checkpoint on torch, or an ONNX export on onnxruntime.

Both take the decoded batch (uint8 NHWC squares at the transform's ``decode_size``, what
``images.load_image`` returns) and give float32 logits as numpy. The batch step of the evaluation transform
(``EvalTransform.to_input``: resize and normalise) runs in torch for a checkpoint and inside the ONNX graph for
an export (it was traced into the graph from the same function), so the ONNX path needs no torch at all.
``tta`` averages the logits of the images and their horizontal mirror images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowerkit.data.eval_transform import EvalTransform
from flowerkit.errors import ConfigError, MissingInputError

ONNX_HINT = "pip install 'flowerkit[onnx]'"
# The ONNX export's metadata_props keys (flowerkit.predict.onnx_export writes them).
META_FORMAT = "flowerkit.format"
META_CLASSES = "flowerkit.class_names"
META_TRANSFORM = "flowerkit.eval_transform"
META_MODEL = "flowerkit.model_type"
META_SHA = "flowerkit.checkpoint_sha256"
META_RUN = "flowerkit.run"
ONNX_FORMAT = "flowerkit-onnx-1"


@dataclass(frozen=True)
class ModelInfo:
    """What a model source says about itself: enough to label, transform and describe its predictions."""

    kind: str  # "checkpoint" or "onnx"
    path: Path
    class_names: tuple[str, ...]
    transform: EvalTransform
    transform_recorded: bool  # False: derived from an older checkpoint's config (see transform_of_checkpoint)
    model_type: str
    description: str


# runtime_checkable: a Prefect flow taking a PredictPlan builds a validator for every field, this one too.
@runtime_checkable
class Backend(Protocol):
    info: ModelInfo

    def logits(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        """(N, classes) float32 logits of a uint8 NHWC batch at ``info.transform.decode_size``."""


def require_onnx() -> tuple[Any, Any]:
    """onnx and onnxruntime, or a ConfigError (exit 2) naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"ONNX export and --onnx need onnx and onnxruntime ({exc.name} is not installed): "
                          f"{ONNX_HINT}.") from None
    return onnx, onnxruntime


def class_names_of(labelmap: Any, num_classes: int, where: str) -> tuple[str, ...]:
    """Names ordered by class id from a ``{"0": "pink primrose", ...}`` label map."""
    try:
        items = sorted((int(k), str(v)) for k, v in dict(labelmap).items())
    except (TypeError, ValueError):
        items = []
    if [i for i, _ in items] != list(range(num_classes)):
        raise ConfigError(f"{where} has no label map of class ids 0..{num_classes - 1}; it was not written by "
                          "flowerkit or was damaged. Export the run again.")
    return tuple(n for _, n in items)


def checkpoint_info(state: dict[str, Any], path: Path) -> ModelInfo:
    """What a flowerkit checkpoint says about its model: class names, evaluation transform, description."""
    from flowerkit.data.eval_transform import transform_of_checkpoint

    transform, recorded = transform_of_checkpoint(state)
    names = class_names_of(state["labelmap"], int(state["num_classes"]), f"The checkpoint {path}")
    return ModelInfo("checkpoint", Path(path), names, transform, recorded, str(state["model_type"]),
                     f"{state['model_type']} at {state['img_size']} px, step {state['step']}, from {path}")


class TorchBackend:
    """A flowerkit checkpoint's model (``best.bin``/``ckpt.bin``), in eval mode on ``device``."""

    def __init__(self, state: dict[str, Any], path: Path, device: str = "cpu") -> None:
        import torch

        from flowerkit.models.vit import build_model

        self.info = checkpoint_info(state, path)
        model = build_model(state["model_type"], int(state["img_size"]), int(state["num_classes"]))
        model.load_state_dict(state["model"])
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def logits(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        import torch

        transform = self.info.transform
        with torch.inference_mode():
            out = self.model(transform.to_input(torch.from_numpy(pixels)).to(self.device)).float()
            if tta:
                mirrored = torch.from_numpy(np.ascontiguousarray(pixels[:, :, ::-1]))
                out = (out + self.model(transform.to_input(mirrored).to(self.device)).float()) / 2
        return out.cpu().numpy()


def read_onnx_info(path: Path) -> tuple[dict[str, str], ModelInfo]:
    """The export's flowerkit metadata; a file that is not a flowerkit ONNX export is a ConfigError."""
    import json

    onnx, _ = require_onnx()
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"--onnx {path} does not exist. Write one with `flowerkit export RUN --format onnx "
                                "--out FILE.onnx`.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a damaged file
        raise ConfigError(f"--onnx {path} is not a readable ONNX model ({type(exc).__name__}): it is truncated or "
                          "another kind of file. Export it again with `flowerkit export RUN --format onnx`.") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(META_FORMAT) != ONNX_FORMAT:
        raise ConfigError(f"--onnx {path} is an ONNX model, but not one exported by flowerkit: it lacks the class "
                          "names and evaluation transform in its metadata. Export it with `flowerkit export RUN "
                          "--format onnx`.")
    try:
        names = tuple(json.loads(meta[META_CLASSES]))
        transform = EvalTransform.from_dict(json.loads(meta[META_TRANSFORM]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"--onnx {path} has damaged flowerkit metadata ({exc}). Export it again.") from None
    model_type = meta.get(META_MODEL, "?")
    run = f" of run {meta[META_RUN]}" if meta.get(META_RUN) else ""
    return meta, ModelInfo("onnx", path, names, transform, True, model_type,
                           f"{model_type} at {transform.img_size} px{run}, ONNX from {path}")


class OnnxBackend:
    """An ONNX export on onnxruntime: no torch model code, its class names and transform from metadata."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        _, ort = require_onnx()
        self.meta, self.info = read_onnx_info(path)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are its own types
            raise ConfigError(f"onnxruntime cannot load --onnx {path}: {str(exc).splitlines()[0]}. Export it again "
                              "with `flowerkit export RUN --format onnx`.") from None
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, dtype=np.uint8)})[0]
        if tta:
            mirrored = np.ascontiguousarray(pixels[:, :, ::-1], dtype=np.uint8)
            out = (out + self.session.run(None, {self.input_name: mirrored})[0]) / 2
        return np.asarray(out, dtype=np.float32)
