"""``flowerkit export``: a run's checkpoint as a Google-format ViT ``.npz`` (to share or to fine-tune from) or as
an ONNX model (to serve); ``flowerkit export-npz`` is the ``.npz`` export's older name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.cli.runs_cmd import OUTPUT, check_run_name
from flowerkit.errors import ConfigError, MissingInputError, RunExistsError

CHECKPOINTS = ("best", "latest")
FORMATS = {"npz": ".npz", "onnx": ".onnx"}


def export_npz(
    run: str = typer.Argument(..., help="Run name (a folder under --output_dir)."),
    checkpoint: str = typer.Option("best", "--checkpoint",
                                   help="best: checkpoints/best.bin, the one selected on validation; latest: "
                                        "checkpoints/ckpt.bin, the last one written."),
    out: Path = typer.Option(None, "--out", help="The .npz file to write; it must not exist yet (default: "
                                                 "RUN-best.npz or RUN-latest.npz in the current folder)."),
    output_dir: Path = OUTPUT,
) -> None:
    """Write a run's checkpoint as a Google-format ViT .npz (the layout of Google's published files, head
    included), checked to load back bit for bit; --pretrained FILE fine-tunes from it (new head)."""
    with user_errors():
        _export_npz(run, checkpoint, out, output_dir)


def export(
    run: str = typer.Argument(..., help="Run name (a folder under --output_dir)."),
    format_: str = typer.Option("npz", "--format", help="npz: Google's ViT layout (as export-npz); onnx: an ONNX "
                                                        "model for serving (needs the onnx extra)."),
    checkpoint: str = typer.Option("best", "--checkpoint",
                                   help="best: checkpoints/best.bin, the one selected on validation; latest: "
                                        "checkpoints/ckpt.bin, the last one written."),
    out: Path = typer.Option(None, "--out", help="The file to write; it must not exist yet (default: "
                                                 "RUN-best.npz/.onnx or RUN-latest.* in the current folder)."),
    output_dir: Path = typer.Option(Path("output"), "--output_dir", help="Root folder of the runs."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of errors."),
) -> None:
    """Write a run's checkpoint as a Google-format .npz or as an ONNX model, each checked before it is
    written (.npz: loads back bit for bit; ONNX: onnxruntime's logits equal torch's on the run's own images)."""
    with user_errors(debug):
        if format_ not in FORMATS:
            raise ConfigError(f"--format {format_}: choose npz (Google's ViT layout) or onnx (for serving).")
        if format_ == "npz":
            _export_npz(run, checkpoint, out, output_dir)
        else:
            _export_onnx(run, checkpoint, out, output_dir)


def _export_onnx(run: str, checkpoint: str, out: Path | None, output_dir: Path) -> None:
    from flowerkit.artifacts.files import sha256_file
    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.predict.onnx_export import check_servable, export_checkpoint
    from flowerkit.predict.predictor import require_onnx
    from flowerkit.tracking.sync import log_export

    require_onnx()  # before any work: exit 2 naming the extra
    source = checkpoint_file(output_dir, run, checkpoint)
    target = check_target(out or Path(f"{run}-{checkpoint}.onnx"), ".onnx")
    state = load_checkpoint(source)
    check_servable(state)  # exit 2 before the export's minutes of work, not at predict time
    typer.echo(f"Exporting {state['model_type']} at {state['img_size']} px, step {state['step']} to ONNX...",
               err=True)
    result = export_checkpoint(source, state)
    publish(target, lambda fh: fh.write(result.data))
    typer.echo(f"Wrote {target}: {state['model_type']} at {state['img_size']} px, step {state['step']}, "
               f"{weights_of(state, checkpoint)} weights, from {source}\nChecked: onnxruntime = torch within "
               f"{result.max_difference:.2g} (batches of {' and '.join(map(str, result.checked_batches))}, "
               f"{result.proof_source})\nsha256 {sha256_file(target)}\n"
               f"Use it with: flowerkit predict PHOTOS --onnx {target}")
    logged = log_export(source.parent.parent, result.data, f"onnx-{checkpoint}")  # when the run has an MLflow run
    if logged:
        typer.echo(logged, err=True)


def _export_npz(run: str, checkpoint: str, out: Path | None, output_dir: Path) -> None:
    from flowerkit.artifacts.files import sha256_file
    from flowerkit.engine.checkpoint import load_checkpoint
    import numpy as np

    from flowerkit.models.npz import checkpoint_to_npz

    source = checkpoint_file(output_dir, run, checkpoint)
    target = check_target(out or Path(f"{run}-{checkpoint}.npz"))
    state = load_checkpoint(source)
    described = (f"{state['model_type']} at {state['img_size']} px, step {state['step']}, "
                 f"{weights_of(state, checkpoint)} weights, from {source}")
    weights = checkpoint_to_npz(state)
    publish(target, lambda fh: np.savez(fh, **weights))  # uncompressed, as Google's files (models.npz.write_npz)
    typer.echo(f"Wrote {target}: {described}\nsha256 {sha256_file(target)}\nUse it with: flowerkit train "
               f"--model_type {state['model_type']} --pretrained {target} ...")


def publish(target: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``target`` atomically and only if it still does not exist when the file is complete: check_target
    looked before the work, and another export to the same --out may have finished meanwhile. Exactly one of
    two racing exports writes; the other exits 4 and its copy is discarded."""
    from flowerkit.artifacts.files import TargetExistsError, atomic_write

    try:
        atomic_write(target, write, clobber=False)
    except TargetExistsError:
        raise RunExistsError(f"--out {target} was written by another process while this export ran; exports never "
                             "overwrite a file, so this export's copy was discarded and that file was left as it is. "
                             "Choose another --out, or remove that file first.") from None


def weights_of(state: dict, which: str) -> str:
    """best.bin records whether it holds the raw or the EMA weights; ckpt.bin always holds the raw model."""
    selection = state.get("selection") if which == "best" else None
    return str(selection.get("weights", "raw")) if isinstance(selection, dict) else "raw"


def checkpoint_file(output_dir: Path, run: str, which: str) -> Path:
    """The run's best or latest checkpoint; exit 2 for a bad choice, 3 for a run or file that is not there."""
    from flowerkit.run.layout import RunLayout
    from flowerkit.run.runs import run_dir_of

    if which not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint {which}: choose best (the checkpoint selected on validation) or latest.")
    layout = RunLayout.for_run(run_dir_of(output_dir, check_run_name(run)))
    path = layout.best_checkpoint if which == "best" else layout.checkpoint
    if not path.is_file():
        raise MissingInputError(f"Run '{run}' has no {which} checkpoint ({path} does not exist): a run writes its "
                                "checkpoints at its first evaluation (--eval_every). Wait for it, or export the "
                                "other one with --checkpoint.")
    return path


def check_target(target: Path, suffix: str = ".npz") -> Path:
    """A new file in a writable folder: --pretrained recognises Google's format by the .npz suffix, servers an
    ONNX model by .onnx."""
    from flowerkit.io.writable import check_writable_folder

    if target.suffix != suffix:
        why = ("--pretrained reads a file as Google's format by that suffix" if suffix == ".npz"
               else "ONNX tools recognise the format by that suffix")
        raise ConfigError(f"--out {target} must end in {suffix}: {why}.")
    if target.exists() or target.is_symlink():
        raise RunExistsError(f"--out {target} already exists; exports never overwrite a file. Choose another "
                             "name or remove it first.")
    check_writable_folder(target.parent, f"--out {target}", "Pass --out a file in a folder you can write to.")
    return target
