"""``flowerkit weights``: fetch Google's published ViT .npz checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.io.paths import cache_root

app = typer.Typer(help="Pretrained weights.", no_args_is_help=True)


@app.callback()
def _weights() -> None:
    """Pretrained weights."""


@app.command()
def download(
    model_type: str = typer.Argument(..., help="Model type, e.g. ViT-B_16 (as --model_type)."),
    variant: str = typer.Option("imagenet21k", "--variant",
                                help="imagenet21k (pre-trained), imagenet21k+imagenet2012 (also fine-tuned on "
                                     "ImageNet-1k), or all."),
    out: Path = typer.Option(None, "--out", help="Folder to save into, as OUT/VARIANT/MODEL_TYPE.npz "
                                                 "(default: the flowerkit cache, ~/.cache/flowerkit/weights)."),
    mirror: str | None = typer.Option(None, "--mirror", help="Base URL mirroring Google's vit_models bucket."),
) -> None:
    """Download Google's .npz checkpoint of MODEL_TYPE (resumable), check it, and print its sha256."""
    from flowerkit.models.google import download_google_npz, published_variants

    with user_errors():
        for name in published_variants(model_type, variant):
            got = download_google_npz(model_type, name, out or cache_root() / "weights", mirror)
            typer.echo(f"{got.variant:<26} {got.action}: {got.path}\n{'':<26} from {got.url}\n"
                       f"{'':<26} sha256 {got.sha256}")
            typer.echo(f"{'':<26} use: flowerkit train --model_type {model_type} --pretrained {got.path} ...")
