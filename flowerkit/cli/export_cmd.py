"""``flowerkit export-npz``: a run's checkpoint as a Google-format ViT ``.npz``, to share or to fine-tune from."""

from __future__ import annotations

from pathlib import Path

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.cli.runs_cmd import OUTPUT, check_run_name
from flowerkit.errors import ConfigError, MissingInputError, RunExistsError

CHECKPOINTS = ("best", "latest")


def export_npz(
    run: str = typer.Argument(..., help="Run name (a folder under --output-dir)."),
    checkpoint: str = typer.Option("best", "--checkpoint",
                                   help="best: checkpoints/best.bin, the one selected on validation; latest: "
                                        "checkpoints/ckpt.bin, the last one written."),
    out: Path = typer.Option(None, "--out", help="The .npz file to write; it must not exist yet (default: "
                                                 "RUN-best.npz or RUN-latest.npz in the current folder)."),
    output_dir: Path = OUTPUT,
) -> None:
    """Write a run's checkpoint as a Google-format ViT .npz (the layout of Google's published files, head
    included), checked to load back bit for bit; --pretrained FILE fine-tunes from it (new head)."""
    from flowerkit.artifacts.files import sha256_file
    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.models.npz import checkpoint_to_npz, write_npz

    with user_errors():
        source = checkpoint_file(output_dir, run, checkpoint)
        target = check_target(out or Path(f"{run}-{checkpoint}.npz"))
        state = load_checkpoint(source)
        described = (f"{state['model_type']} at {state['img_size']} px, step {state['step']}, "
                     f"{weights_of(state, checkpoint)} weights, from {source}")
        write_npz(checkpoint_to_npz(state), target)
        typer.echo(f"Wrote {target}: {described}\nsha256 {sha256_file(target)}\nUse it with: flowerkit train "
                   f"--model_type {state['model_type']} --pretrained {target} ...")


def weights_of(state: dict, which: str) -> str:
    """best.bin records whether it holds the raw or the EMA weights; ckpt.bin always holds the raw model."""
    selection = state.get("selection") if which == "best" else None
    return str(selection.get("weights", "raw")) if isinstance(selection, dict) else "raw"


def checkpoint_file(output_dir: Path, run: str, which: str) -> Path:
    """The run's best or latest checkpoint; exit 2 for a bad choice, 3 for a run or file that is not there."""
    from flowerkit.layout import RunLayout
    from flowerkit.runs import run_dir_of

    if which not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint {which}: choose best (the checkpoint selected on validation) or latest.")
    layout = RunLayout.for_run(run_dir_of(output_dir, check_run_name(run)))
    path = layout.best_checkpoint if which == "best" else layout.checkpoint
    if not path.is_file():
        raise MissingInputError(f"Run '{run}' has no {which} checkpoint ({path} does not exist): a run writes its "
                                "checkpoints at its first evaluation (--eval_every). Wait for it, or export the "
                                "other one with --checkpoint.")
    return path


def check_target(target: Path) -> Path:
    """A new .npz file in a writable folder: --pretrained recognises Google's format by the suffix."""
    from flowerkit.writable import check_writable_folder

    if target.suffix != ".npz":
        raise ConfigError(f"--out {target} must end in .npz: --pretrained reads a file as Google's format by "
                          "that suffix.")
    if target.exists() or target.is_symlink():
        raise RunExistsError(f"--out {target} already exists; exports never overwrite a file. Choose another "
                             "name or remove it first.")
    check_writable_folder(target.parent, f"--out {target}", "Pass --out a file in a folder you can write to.")
    return target
