"""``prepare_predict``: every option, input and model checked before any image is decoded.

The result, a ``PredictPlan``, is what ``run_predictions`` executes. A one-shot ``flowerkit predict`` loads the
model while it plans (``load=True``); a recorded run's plan (a Prefect flow's parameter, written to plan.json)
holds what the model file says about itself and its sha256, and the predict task loads the model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict

from flowerkit.errors import ConfigError, MissingInputError
from flowerkit.predict.inputs import check_inputs
from flowerkit.predict.predictor import Backend, ModelInfo

if TYPE_CHECKING:  # flowerkit.device imports torch; `predict --onnx` runs without it
    from flowerkit.device import DeviceChoice

DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class ModelSource:
    """Where the model comes from: a run's selected checkpoint, a checkpoint file, or an ONNX export."""

    kind: str  # "run", "checkpoint" or "onnx"
    path: Path
    run: str | None = None
    sha256: str | None = None  # of the file, when the plan read it whole (a recorded run's)


@dataclass(frozen=True)
class PredictOptions:
    top_k: int = 5
    min_confidence: float | None = None
    tta: bool = False
    export_logits: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 0  # decoding threads; 0: one per CPU core the model leaves free (runner.decoding_workers)


@dataclass(frozen=True)
class PredictPlan:
    # The loaded backend is carried in-process only (a plan that is serialised has none): pydantic, which
    # validates and serialises plans, takes it as it is.
    __pydantic_config__ = ConfigDict(arbitrary_types_allowed=True)

    inputs: tuple[str, ...]
    model: ModelSource
    device: str
    options: PredictOptions
    info: ModelInfo
    backend: Backend | None = field(default=None, compare=False, repr=False)  # prepare_predict(load=True)'s


def selected_checkpoint(output_dir: Path, run: str) -> Path:
    """A run's checkpoint as predict uses it: ``best.bin`` (selected on validation) where it exists, else
    ``ckpt.bin`` (the latest); a missing run or a run with neither is a MissingInputError (exit 3)."""
    from flowerkit.run.config import NAME_PATTERN
    from flowerkit.run.layout import RunLayout
    from flowerkit.run.runs import run_dir_of

    if not re.fullmatch(NAME_PATTERN, run):
        raise ConfigError(f"--run '{run}' is not a run name: a run name is a folder name under --output_dir "
                          "(letters, digits, '.', '_' and '-'), not a path; pass a checkpoint file with "
                          "--checkpoint. `flowerkit runs list` shows the names.")
    layout = RunLayout.for_run(run_dir_of(output_dir, run))
    for path in (layout.best_checkpoint, layout.checkpoint):
        if path.is_file():
            return path
    raise MissingInputError(f"Run '{run}' has no checkpoint ({layout.best_checkpoint} and {layout.checkpoint} do "
                            "not exist): a training run writes them at its first evaluation (--eval_every), and an "
                            "eval run writes none (pass the checkpoint it evaluated with --checkpoint).")


def check_options(options: PredictOptions) -> PredictOptions:
    if options.top_k < 1:
        raise ConfigError(f"--top_k {options.top_k}: give at least 1 (how many classes each image lists).")
    if options.batch_size < 1:
        raise ConfigError(f"--batch_size {options.batch_size}: give at least 1.")
    if options.workers < 0:
        raise ConfigError(f"--workers {options.workers}: give 0 (one per CPU core) or more.")
    p = options.min_confidence
    if p is not None and not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ConfigError(f"--min_confidence {p}: give a probability between 0 and 1 (README: choosing it from a "
                          "run's validation predictions).")
    return options


def model_source(run: str | None, checkpoint: Path | None, onnx: Path | None, output_dir: Path) -> ModelSource:
    given = [name for name, value in (("--run", run), ("--checkpoint", checkpoint), ("--onnx", onnx))
             if value is not None]
    if len(given) != 1:
        what = "none" if not given else " and ".join(given)
        raise ConfigError(f"Give exactly one model: --run NAME (a training run's selected checkpoint), --checkpoint "
                          f"FILE or --onnx FILE (got {what}).")
    if run is not None:
        return ModelSource("run", selected_checkpoint(Path(output_dir), run), run)
    if checkpoint is not None:
        return ModelSource("checkpoint", Path(checkpoint).expanduser())
    return ModelSource("onnx", Path(onnx).expanduser())


def read_model(source: ModelSource) -> tuple[ModelSource, ModelInfo]:
    """What the model file says about itself, and the source with the file's sha256: the file is read once
    and no model is built (a recorded run's plan; the predict task loads the model)."""
    if source.kind == "onnx":
        from flowerkit.artifacts.files import sha256_file
        from flowerkit.predict.predictor import read_onnx_info

        return replace(source, sha256=sha256_file(source.path)), read_onnx_info(source.path)[1]
    from flowerkit.engine.checkpoint import read_checkpoint
    from flowerkit.predict.predictor import checkpoint_info

    read = read_checkpoint(source.path)
    return replace(source, sha256=read.sha256), checkpoint_info(read.state, source.path)


def load_backend(source: ModelSource, device: str) -> Backend:
    if source.kind == "onnx":
        from flowerkit.predict.predictor import OnnxBackend

        return OnnxBackend(source.path, device)
    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.predict.predictor import TorchBackend

    return TorchBackend(load_checkpoint(source.path), source.path, device)


def resolve_device(device: str | DeviceChoice, source: ModelSource) -> str:
    """The device the model runs on; a ``DeviceChoice`` the caller detected already is taken as it is."""
    if not isinstance(device, str):  # detected by the caller already (a recorded run's plan)
        return device.device
    if device not in DEVICES:
        raise ConfigError(f"--device {device} is not one of {', '.join(DEVICES)}.")
    if source.kind == "onnx":  # onnxruntime: its CPU provider, or CUDA's where installed and asked for
        return "cuda" if device == "cuda" else "cpu"
    from flowerkit.device import detect_device

    return detect_device(device).device


def prepare_predict(inputs: list[str] | tuple[str, ...], *, run: str | None = None, checkpoint: Path | None = None,
                    onnx: Path | None = None, output_dir: Path = Path("output"),
                    device: str | DeviceChoice = "auto", options: PredictOptions | None = None, load: bool = True,
                    **option_values: Any) -> PredictPlan:
    """Validate options, inputs and model and return the plan. Raises FlowerkitError.

    ``load``: load the model now (a one-shot predict); otherwise read what the model file says about itself and
    its sha256, and leave loading to whoever runs the plan (a recorded run's task)."""
    options = check_options(options or PredictOptions(**option_values))
    args = check_inputs(inputs)
    source = model_source(run, checkpoint, onnx, output_dir)
    resolved = resolve_device(device, source)
    backend = load_backend(source, resolved) if load else None
    source, info = (source, backend.info) if backend is not None else read_model(source)
    classes = len(info.class_names)
    if options.top_k > classes:
        raise ConfigError(f"--top_k {options.top_k} exceeds the model's {classes} classes; give at most {classes}.")
    return PredictPlan(args, source, resolved, options, info, backend)
