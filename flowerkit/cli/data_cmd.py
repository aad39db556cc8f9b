"""``flowerkit data``: download and check the real Flowers-102, or make a synthetic one in the official layout."""

from __future__ import annotations

from pathlib import Path

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.errors import ConfigError, RunExistsError

app = typer.Typer(help="Dataset helpers.", no_args_is_help=True)


@app.callback()
def _data() -> None:
    """Dataset helpers."""


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (must not exist yet)."),
    images_per_class: int = typer.Option(30, "--images_per_class", min=1,
                                         help="Images per class: the official 10 train and 10 val, the rest test."),
    size: int = typer.Option(500, "--size", min=16, help="Short side of each JPEG in pixels (the real set: ~500)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the generator."),
    variant: str = typer.Option("standard", "--variant",
                                help="Class design: standard (flower102_synthetic's) or shifted (other hues, "
                                     "petal counts and disc colours: new classes of the same kind of flower)."),
) -> None:
    """Write a synthetic Flowers-102 (jpg/, imagelabels.mat, setid.mat) whose 102 classes a model can learn."""
    from flowerkit.data.synth import DESIGNS, SynthSpec, generate, split_counts

    with user_errors():
        if variant not in DESIGNS:
            raise ConfigError(f"--variant {variant} is not a class design; choose one of {', '.join(DESIGNS)}.")
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; pass a folder to create (it must not exist yet).")
        if out.exists() and any(out.iterdir()):
            raise RunExistsError(f"--out {out} already exists and is not empty; choose a new folder, so that no "
                                 "existing data is overwritten.")
        if out.exists():
            out.rmdir()
        generate(out, SynthSpec(images_per_class, size, seed, variant))
        n_train, n_val, n_test = split_counts(images_per_class)
        typer.echo(f"Wrote {102 * images_per_class} images ({n_train}/{n_val}/{n_test} train/val/test per class) "
                   f"to {out}\nUse it with: flowerkit train --dataset flower102 --data_root {out} ...")


@app.command()
def download(
    out: Path = typer.Option(..., "--out", help="Folder to download into (created; an existing download is "
                                                "checked and completed)."),
    mirror: str | None = typer.Option(None, "--mirror", help="Base URL serving the same file names (a lab "
                                                             "mirror); still verified against the official md5s."),
) -> None:
    """Download 102flowers.tgz, imagelabels.mat and setid.mat, verify their official md5s and extract jpg/."""
    from flowerkit.data.download import base_url, download_flowers102

    with user_errors():
        typer.echo(f"Flowers-102 from {base_url(mirror)} into {out}")
        for status in download_flowers102(out, mirror):
            typer.echo(f"  {status.name:<16} {status.action}" + (f" (md5 {status.md5})" if status.md5 else ""))
        typer.echo(f"Use it with: flowerkit train --dataset flower102 --data_root {out} ...")


@app.command()
def check(
    data_root: Path = typer.Argument(..., help="Folder holding jpg/, imagelabels.mat and setid.mat (or a parent "
                                               "holding flowers-102/)."),
) -> None:
    """Verify an existing copy: layout, .mat contents, every image decodable, md5s of the files present."""
    from flowerkit.cli.errors import print_error
    from flowerkit.data.check import check_flowers102

    with user_errors():
        report = check_flowers102(data_root)
        if not report.ok:
            for problem in report.problems:
                print_error(problem)
            raise typer.Exit(report.exit_code)
        typer.echo(f"{report.root}: {report.images} images, all present and decodable; {report.checksums()}.")
