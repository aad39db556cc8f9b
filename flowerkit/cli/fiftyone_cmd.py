"""`flowerkit fiftyone ...`: look at a run's predictions in FiftyOne.

Registered by the main CLI as ``app.add_typer(fiftyone_cmd.app, name="fiftyone")``.
FiftyOne is imported only when a command runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.cli.options import CONTEXT_SETTINGS

app = typer.Typer(
    help="Explore a run's predictions in FiftyOne (load them as a dataset, evaluate, open the App).",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,  # --output-dir reads as --output_dir when a test invokes this group alone
)


@app.callback()
def _group() -> None:
    """Explore a run's predictions in FiftyOne."""
    # A callback keeps `load` a sub-command even while it is the only one (Typer would otherwise
    # collapse a one-command app into that command).


def _resolve_run_dir(run: str, output_dir: Path) -> Path:
    """RUN is a run name under OUTPUT_DIR, or a path to a run directory."""
    as_path = Path(run)
    if as_path.is_dir() and (as_path / "run_record.json").exists():
        return as_path
    return output_dir / run


def _has_display() -> bool:
    if sys.platform == "darwin" or sys.platform.startswith("win"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


LAUNCH_HELP = "Open the FiftyOne App on the dataset and wait (an existing dataset of the same runs opens as it is)."
# Options that load and compare share: one declaration each (Typer reads them as metadata, never mutates them).
OUTPUT_DIR = typer.Option(Path("output"), "--output_dir", help="Folder holding the runs.")
LAUNCH = typer.Option(False, "--launch", help=LAUNCH_HELP)
PORT = typer.Option(5151, "--port", help="Port of the FiftyOne App (with --launch).")
ADDRESS = typer.Option("127.0.0.1", "--address", help="Address the App listens on (with --launch).")


@app.command("load")
def load(
    run: str = typer.Argument(..., help="Run name under --output_dir, or the path of a run directory."),
    output_dir: Path = OUTPUT_DIR,
    dataset_name: str | None = typer.Option(
        None, "--dataset_name", help="FiftyOne dataset name (default: flowerkit-<run name>)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset if it exists (reload the run)."),
    launch: bool = LAUNCH,
    port: int = PORT,
    address: str = ADDRESS,
) -> None:
    """Load RUN's fiftyone/predictions.jsonl into a persistent FiftyOne dataset and print its evaluation."""
    from flowerkit.fiftyone.load import load_run

    with user_errors():
        # With --launch, a run loaded before is opened, not refused: looking again needs no --overwrite.
        result = load_run(_resolve_run_dir(run, output_dir), dataset_name=dataset_name, overwrite=overwrite,
                          reuse=launch)

    state = " (loaded before; --overwrite reloads it)" if result.reused else ""
    if result.evaluation_skipped is None:
        typer.echo(f"Per-class report for run {result.run_name} ({', '.join(result.splits) or 'unknown split'}, "
                   f"{result.num_samples} samples){state}:")
        result.print_report()
        typer.echo(f"accuracy: {result.accuracy:.4f}")
        typer.echo(f"FiftyOne dataset: {result.dataset_name} (evaluation key 'eval')")
    else:
        typer.echo(f"Loaded {result.num_samples} predicted images of run {result.run_name}{state}.")
        if result.left_out:
            typer.echo(f"Left out: {result.left_out} input(s) the run could not predict (rows holding an error).")
        typer.echo(f"Note: {result.evaluation_skipped}.")
        typer.echo(f"FiftyOne dataset: {result.dataset_name}")
    if launch:
        _launch(result.dataset_name, port, address)


COMPARE_HELP = (
    "Put the predictions of runs that evaluated the same samples side by side in one FiftyOne dataset.\n\n"
    "Each run's predictions are a field named after the run, evaluated under eval key eval_<field>; samples "
    "where the runs disagree are tagged 'disagree' (saved view 'disagreements'). Runs with exported logits also "
    "get FiftyOne Brain's mistakenness_<field> and hardness_<field>. Runs on different samples are refused (exit 2). "
    "A predict run is matched to the others by file path, on the images they share, and evaluated against the "
    "ground truth of a run that has one."
)


@app.command("compare", help=COMPARE_HELP)
def compare(
    runs: list[str] = typer.Argument(..., help="Two or more runs: names under --output_dir, or run directories."),
    output_dir: Path = OUTPUT_DIR,
    dataset_name: str | None = typer.Option(
        None, "--dataset_name", help="FiftyOne dataset name (default: flowerkit-compare-<run>-<run>...)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset if it exists."),
    launch: bool = LAUNCH,
    port: int = PORT,
    address: str = ADDRESS,
) -> None:
    """See COMPARE_HELP (one paragraph there: the help text is not re-wrapped)."""
    from flowerkit.fiftyone.compare import DISAGREE, DISAGREEMENTS_VIEW, compare_runs, ground_truth_run

    with user_errors():
        result = compare_runs([_resolve_run_dir(r, output_dir) for r in runs], dataset_name=dataset_name,
                              overwrite=overwrite, reuse=launch)

    state = " (compared before; --overwrite rebuilds it)" if result.reused else ""
    shared = (f"the {result.num_samples} image(s) they share ({result.left_out} left out: not in every run)"
              if result.left_out else f"the same {result.num_samples} samples")
    typer.echo(f"Compared {len(result.runs)} runs on {shared}{state}:")
    for run in result.runs:
        scored = (f", eval key '{run.eval_key}', accuracy {result.accuracy[run.field]:.4f}"
                  if run.field in result.accuracy else "")
        typer.echo(f"  {run.run_name}: field '{run.field}'{scored}")
    if not all(run.labelled for run in result.runs):
        truth = ground_truth_run(result.runs)
        typer.echo(f"ground truth: from run {truth.run_name}" if truth else
                   "ground truth: none (only predict runs), so nothing was evaluated")
    typer.echo(f"disagreements: {result.disagreements} samples (tag '{DISAGREE}', saved view '{DISAGREEMENTS_VIEW}')")
    if result.brain_fields:
        typer.echo(f"FiftyOne Brain: {', '.join(result.brain_fields)}")
    if result.brain_note:
        typer.echo(f"Note: {result.brain_note}")
    typer.echo(f"FiftyOne dataset: {result.dataset_name}")
    if launch:
        _launch(result.dataset_name, port, address)


def _launch(dataset_name: str, port: int, address: str) -> None:
    """Open the App on the dataset and wait: until Ctrl-C without a display (remote), else a moment."""
    from flowerkit.fiftyone.runtime import import_fiftyone

    with user_errors():
        fo = import_fiftyone()
    remote = not _has_display()
    session = fo.launch_app(fo.load_dataset(dataset_name), port=port, address=address, remote=remote)
    typer.echo(f"FiftyOne App: http://{address}:{port}/ (Ctrl-C to stop)")
    try:
        session.wait(-1 if remote else 3)
    except KeyboardInterrupt:
        pass
