"""A run's checkpoint as an ONNX model for serving, proven equal to torch before it is written.

The graph takes ``pixels``: decoded images as uint8 (N, D, D, 3) RGB squares, D the evaluation transform's
decode size (``images.load_image``'s output: the run's pixel-cache side, or img_size for the pil pipeline),
with a dynamic batch axis, and returns ``logits`` (N, classes). The batch step of the evaluation transform
(``EvalTransform.to_input``: antialiased resize to img_size, normalisation) is traced into the graph from the
same function the pipelines use, so a server needs only to decode and squash (PIL) and onnxruntime. Its
``metadata_props`` carry the class names, the evaluation transform (kind, img_size, decode size, mean/std),
the model type, the checkpoint's sha256 and the run's name (keys in ``flowerkit.predict.predictor``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowerkit.errors import ConfigError, FlowerkitError
from flowerkit.predict.predictor import (MAX_ONNX_SIDE, META_CLASSES, META_FORMAT, META_MODEL, META_RUN, META_SHA,
                                         META_TRANSFORM, ONNX_FORMAT, class_names_of, require_onnx)

TOLERANCE = 1e-4  # max |onnxruntime - torch| over the proof batch's logits
OPSET = 18
CHECK_BATCHES = (1, 3)  # the dynamic batch axis is proven at two sizes


class ExportMismatchError(FlowerkitError):
    """onnxruntime disagrees with torch on the run's own images: nothing is written (exit 1)."""

    exit_code = 1


@dataclass(frozen=True)
class OnnxExport:
    data: bytes  # the serialised model, checked
    max_difference: float
    checked_batches: tuple[int, ...]
    proof_source: str  # which images the check used


def served_model(state: dict[str, Any]):
    """The checkpoint's model behind its evaluation transform's batch step: uint8 NHWC pixels in, logits out."""
    import torch

    from flowerkit.data.eval_transform import transform_of_checkpoint
    from flowerkit.models.vit import build_model

    transform, _ = transform_of_checkpoint(state)
    model = build_model(state["model_type"], int(state["img_size"]), int(state["num_classes"]))
    model.load_state_dict(state["model"])

    class Served(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model(transform.to_input(pixels))

    return Served().eval(), transform


def check_servable(state: dict[str, Any]) -> None:
    """Refuse, before any work, a checkpoint whose export ``predict --onnx`` would refuse: its images decoded to
    more than MAX_ONNX_SIDE px (only an explicit, huge --cache_size gives that)."""
    from flowerkit.data.eval_transform import transform_of_checkpoint

    side = transform_of_checkpoint(state)[0].decode_size
    if side > MAX_ONNX_SIDE:
        raise ConfigError(f"The checkpoint decodes each image to {side}x{side} px (its evaluation transform), and "
                          f"`flowerkit predict --onnx` accepts at most {MAX_ONNX_SIDE} px, so its ONNX model could "
                          "not be used; nothing was written. Predict with --run or --checkpoint instead, or train "
                          f"with a --cache_size of at most {MAX_ONNX_SIDE}.")


def export_onnx(state: dict[str, Any], proof: np.ndarray, proof_source: str, *, run: str | None,
                checkpoint_sha256: str) -> OnnxExport:
    """Export ``state`` (a loaded flowerkit checkpoint) and check it on ``proof`` (uint8 NHWC decoded images,
    at least 3). Raises ExportMismatchError when onnxruntime's logits differ from torch's."""
    import torch

    onnx, ort = require_onnx()
    model, transform = served_model(state)
    example = torch.from_numpy(proof[:2].copy())
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's own progress and deprecation chatter
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=["pixels"], output_names=["logits"],
                                    dynamic_shapes={"pixels": {0: batch}})
    proto = program.model_proto
    names = class_names_of(state["labelmap"], int(state["num_classes"]), "The checkpoint")
    meta = {META_FORMAT: ONNX_FORMAT, META_CLASSES: json.dumps(list(names)),
            META_TRANSFORM: json.dumps(transform.to_dict()), META_MODEL: str(state["model_type"]),
            META_SHA: checkpoint_sha256, META_RUN: run or ""}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(data))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in CHECK_BATCHES:
        x = proof[:n]
        with torch.no_grad():
            expected = model(torch.from_numpy(x.copy())).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        if got.shape != expected.shape:
            raise ExportMismatchError(f"The ONNX model gave logits of shape {got.shape} for a batch of {n} (torch: "
                                      f"{expected.shape}): its batch axis is not dynamic. Nothing was written.")
        worst = max(worst, float(np.abs(got - expected).max()))
    if not worst <= TOLERANCE:
        raise ExportMismatchError(f"onnxruntime's logits differ from torch's by up to {worst:.3g} on {proof_source} "
                                  f"(tolerance {TOLERANCE}); the export is not faithful, so nothing was written. "
                                  "Report it with --debug's output.")
    return OnnxExport(data, worst, CHECK_BATCHES, proof_source)


def export_checkpoint(checkpoint: Path, state: dict[str, Any] | None = None) -> OnnxExport:
    """A run's checkpoint (``RUN/checkpoints/*.bin``; ``state``: it loaded already) exported and proven on the
    run's own images."""
    from flowerkit.artifacts.files import sha256_file
    from flowerkit.engine.checkpoint import load_checkpoint

    state = state if state is not None else load_checkpoint(checkpoint)
    check_servable(state)
    run_dir = checkpoint.parent.parent
    proof, proof_source = proof_batch(run_images(run_dir), state)
    return export_onnx(state, proof, proof_source, run=run_dir.name, checkpoint_sha256=sha256_file(checkpoint))


def run_images(run_dir: Path, limit: int = 16) -> list[Path]:
    """A few image paths the run evaluated (its predictions.jsonl), for the export's proof batch."""
    from flowerkit.run.layout import RunLayout

    paths: list[Path] = []
    try:
        with open(RunLayout.for_run(run_dir).predictions, encoding="utf-8") as fh:
            for line in fh:
                paths.append(Path(json.loads(line)["filepath"]))
                if len(paths) == limit:
                    break
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no predictions yet: the proof falls back to random inputs and says so
    return paths


def proof_batch(image_paths: list[Path], state: dict[str, Any], count: int = 3) -> tuple[np.ndarray, str]:
    """Up to ``count`` of the run's own images, decoded as predict decodes them; random pixels fill the rest
    (a run whose images have moved), and the returned sentence says which were used."""
    from flowerkit.data.eval_transform import transform_of_checkpoint
    from flowerkit.predict.images import ImageError, load_image

    transform, _ = transform_of_checkpoint(state)
    pixels = []
    for path in image_paths:
        try:
            pixels.append(load_image(Path(path), transform))
        except (ImageError, OSError):
            continue
        if len(pixels) == count:
            break
    missing = count - len(pixels)
    side = transform.decode_size
    pixels += list(np.random.default_rng(0).integers(0, 256, (missing, side, side, 3), dtype=np.uint8))
    found = count - missing
    source = (f"{found} of the run's own images" + (f" and {missing} random images" if missing else "")
              if found else f"{missing} random images (the run's images were not found)")
    return np.stack(pixels), source
