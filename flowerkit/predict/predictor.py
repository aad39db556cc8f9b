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
from flowerkit.errors import ConfigError

ONNX_HINT = "pip install 'flowerkit[onnx]'"
# The ONNX export's metadata_props keys (flowerkit.predict.onnx_export writes them).
META_FORMAT = "flowerkit.format"
META_CLASSES = "flowerkit.class_names"
META_TRANSFORM = "flowerkit.eval_transform"
META_MODEL = "flowerkit.model_type"
META_SHA = "flowerkit.checkpoint_sha256"
META_RUN = "flowerkit.run"
ONNX_FORMAT = "flowerkit-onnx-1"
# The largest decoded square an ONNX export may ask for: twice train's largest --img_size (config.MAX_IMG_SIZE),
# the default pixel-cache rule's largest side. A damaged or hostile file saying 20000 would otherwise decode every
# photo to 1.2 GB before failing; `flowerkit export` refuses a run past it (onnx_export.check_servable).
MAX_ONNX_SIDE = 8192
MAX_ONNX_BYTES = 2**31  # protobuf's limit for one message: a larger file cannot be an ONNX model without external data


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


def load_onnx_export(path: Path) -> tuple[dict[str, str], ModelInfo, bytes]:
    """Read ``--onnx FILE`` once and check it before anything runs: a regular, non-empty file, a flowerkit export,
    metadata within bounds, and a graph that fits its metadata (its input takes the transform's decoded squares,
    its output has one logit per class name). Returns (metadata, ModelInfo, the file's bytes), the bytes being
    what onnxruntime is then given, so the model that runs is the one that was checked."""
    import json

    from flowerkit.io.inputs import read_bytes

    onnx, _ = require_onnx()
    path = Path(path).expanduser()
    hint = "Pass the file that `flowerkit export RUN --format onnx --out FILE.onnx` wrote."
    data = read_bytes(path, "--onnx", hint, max_bytes=MAX_ONNX_BYTES)  # never a FIFO or device; exit 2 or 3
    if not data:
        raise ConfigError(f"--onnx {path} is empty (0 bytes): it was never written completely. Export it again "
                          "with `flowerkit export RUN --format onnx`.")
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a damaged file
        raise ConfigError(f"--onnx {path} is not a readable ONNX model ({type(exc).__name__}): it is truncated or "
                          "another kind of file. Export it again with `flowerkit export RUN --format onnx`.") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get(META_FORMAT) != ONNX_FORMAT:
        raise ConfigError(f"--onnx {path} is an ONNX model, but not one exported by flowerkit: it lacks the class "
                          "names and evaluation transform in its metadata. Export it with `flowerkit export RUN "
                          "--format onnx`.")
    try:
        names = json.loads(meta[META_CLASSES])
        transform = EvalTransform.from_dict(json.loads(meta[META_TRANSFORM]))
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise ValueError(f"{META_CLASSES} is not a list of class names")
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"--onnx {path} has damaged flowerkit metadata ({exc}). Export it again.") from None
    _check_onnx_graph(path, proto, tuple(names), transform)
    model_type = meta.get(META_MODEL, "?")
    run = f" of run {meta[META_RUN]}" if meta.get(META_RUN) else ""
    return meta, ModelInfo("onnx", path, tuple(names), transform, True, model_type,
                           f"{model_type} at {transform.img_size} px{run}, ONNX from {path}"), data


def _check_onnx_graph(path: Path, proto: Any, names: tuple[str, ...], transform: EvalTransform) -> None:
    """The metadata and the graph must describe one model: an export edited or put together by hand could
    otherwise label every photo from the wrong classes, or fail deep inside onnxruntime. ConfigError (exit 2)."""
    side, size = transform.decode_size, transform.img_size
    again = "Nothing was run. Export the run again with `flowerkit export RUN --format onnx`."
    if not (1 <= size <= MAX_ONNX_SIDE and 1 <= side <= MAX_ONNX_SIDE):
        raise ConfigError(f"--onnx {path}: its metadata ({META_TRANSFORM}) says images are decoded to {side}x{side} "
                          f"px and fed at {size} px; flowerkit accepts 1 to {MAX_ONNX_SIDE} px (a {MAX_ONNX_SIDE} px "
                          "photo already takes 192 MiB decoded), so the file is damaged or was not written by "
                          f"flowerkit. {again}")
    initialized = {tensor.name for tensor in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initialized]
    outputs = list(proto.graph.output)
    if len(inputs) != 1 or not outputs:
        raise ConfigError(f"--onnx {path}: its graph has {len(inputs)} input(s) and {len(outputs)} output(s); a "
                          f"flowerkit export has one input (pixels) and one output (logits). {again}")
    pixels, logits = inputs[0], outputs[0]
    expected = ("batch", side, side, 3)
    got = _dims(pixels)
    if (got is None or len(got) != 4 or got[1:] != [side, side, 3]
            or pixels.type.tensor_type.elem_type != UINT8):
        raise ConfigError(f"--onnx {path} is inconsistent: its metadata ({META_TRANSFORM}) decodes each image to "
                          f"{side}x{side} px, so its graph's input '{pixels.name}' must take uint8 "
                          f"{_shape(expected)}, but it takes {_elem(pixels)} {_shape(got)}. {again}")
    got = _dims(logits)
    if got is None or len(got) != 2 or got[1] != len(names):
        raise ConfigError(f"--onnx {path} is inconsistent: its metadata ({META_CLASSES}) names {len(names)} classes, "
                          f"but its graph's output '{logits.name}' is {_shape(got)}, not one logit per class "
                          f"{_shape(('batch', len(names)))}; its predictions would be labelled with the wrong "
                          f"names. {again}")


UINT8 = 2  # onnx.TensorProto.UINT8, spelled out so that this module imports onnx only where it loads a model


def _dims(value: Any) -> list[int | str] | None:
    """A graph value's shape: a fixed size as an int, a named (dynamic) axis as its name; None if unknown."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]


def _shape(dims: Any) -> str:
    return "of unknown shape" if dims is None else f"({', '.join(map(str, dims))})"


def _elem(value: Any) -> str:
    import onnx

    elem = value.type.tensor_type.elem_type
    return onnx.TensorProto.DataType.Name(elem).lower() if elem else "(no type)"


class OnnxBackend:
    """An ONNX export on onnxruntime: no torch model code, its class names and transform from metadata."""

    def __init__(self, path: Path, device: str = "cpu") -> None:
        _, ort = require_onnx()
        self.meta, self.info, data = load_onnx_export(path)
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(data, providers=providers)  # the bytes checked above
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are its own types
            raise ConfigError(f"onnxruntime cannot load --onnx {path}: {str(exc).splitlines()[0]}. Export it again "
                              "with `flowerkit export RUN --format onnx`.") from None
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        out = np.asarray(self.session.run(None, {self.input_name: pixels})[0])
        if out.shape != (len(pixels), len(self.info.class_names)):  # checked on load; a last guard on what runs
            raise ConfigError(f"--onnx {self.info.path} gave logits of shape {out.shape} for {len(pixels)} image(s) "
                              f"and {len(self.info.class_names)} class names; its predictions cannot be labelled. "
                              "Export it again with `flowerkit export RUN --format onnx`.")
        return out

    def logits(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        out = self._run(np.ascontiguousarray(pixels, dtype=np.uint8))
        if tta:
            mirrored = np.ascontiguousarray(pixels[:, :, ::-1], dtype=np.uint8)
            out = (out + self._run(mirrored)) / 2
        return np.asarray(out, dtype=np.float32)
