"""``flowerkit predict``: classify your own photos with a run's checkpoint or an ONNX export.

Imports stay inside the command: predicting one photo should not pay for Prefect, the flows or the dashboard.
Options are declared with underscores; registered with ``CONTEXT_SETTINGS``, the dashed spellings
(``--top-k``) read the same, and the help lists one spelling, whole at 80 columns.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from flowerkit.cli.errors import user_errors

if TYPE_CHECKING:  # the plan's modules import torch: --help stays fast
    from flowerkit.predict.run import PredictRunPlan

TABLE_EVERY = 32  # rows per printed table: the terminal shows results as they come, memory stays flat


def predict(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", show_default=False,
                                       help="Image files, folders (recursive), quoted globs, @LIST (a text file of "
                                            "paths, one per line) or - (paths on standard input)."),
    run: str = typer.Option(None, "--run", help="A training run under --output_dir: its checkpoints/best.bin "
                                                "(else ckpt.bin) and its label map."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="A checkpoint file written by flowerkit train."),
    onnx: Path = typer.Option(None, "--onnx", help="An ONNX model written by flowerkit export --format onnx "
                                                   "(runs on onnxruntime; needs the onnx extra)."),
    output_dir: Path = typer.Option(Path("output"), "--output_dir", help="Root folder of the runs."),
    top_k: int = typer.Option(5, "--top_k", help="Classes listed per image, most probable first."),
    min_confidence: float = typer.Option(None, "--min_confidence",
                                         help="Mark an image unknown when its top-1 probability is below this "
                                              "(0..1; README: how to choose it)."),
    tta: bool = typer.Option(False, "--tta", help="Average the logits of each image and its mirror image "
                                                  "(twice the model's work)."),
    out: Path = typer.Option(None, "--out", help="Write one row per input to FILE.jsonl or FILE.csv "
                                                 "(atomically; replaces an existing file)."),
    as_json: bool = typer.Option(False, "--json", help="Print rows as JSON lines on stdout instead of a table."),
    export_logits: bool = typer.Option(False, "--export_logits",
                                       help="Include each image's logits in its row."),
    batch_size: int = typer.Option(32, "--batch_size", help="Images per model call."),
    workers: int = typer.Option(0, "--workers", help="Decoding threads (0: one per CPU core the model leaves free, at most 8)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps (--onnx: cpu or cuda)."),
    name: str = typer.Option(None, "--name", help="Record a run (Prefect flow 'predict'): rows, env stamp and "
                                                  "record under OUTPUT_DIR/NAME."),
    retention_days: int = typer.Option(None, "--retention_days",
                                       help="With --name: how long the run's files are kept (at least 90; "
                                            "default 90)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of errors."),
) -> None:
    """Predict the flower class of each image: a table (or JSON rows), and optionally a .jsonl/.csv file.

    Exit 0 when at least one image was predicted (unreadable files get an error row), 3 when none could
    be, 2 for bad options; with --name, 4 when the run NAME exists."""
    if name is not None:
        given = dict(name=name, inputs=inputs, run=run, checkpoint=checkpoint, output_dir=output_dir, top_k=top_k,
                     min_confidence=min_confidence, tta=tta, export_logits=export_logits, batch_size=batch_size,
                     device=device)
        if retention_days is not None:
            given["retention_days"] = retention_days
        _record(given, onnx=onnx, out=out, as_json=as_json, workers=workers, debug=debug)
        return
    with user_errors(debug), _stopped_without_a_run():
        from flowerkit.errors import ConfigError
        from flowerkit.predict.plan import PredictOptions, prepare_predict

        if retention_days is not None:
            raise ConfigError("--retention_days says how long a recorded run's files are kept; without --name "
                              "nothing is recorded. Add --name NAME, or leave --retention_days out.")
        target, fmt = _check_out(out) if out is not None else (None, None)
        plan = prepare_predict(inputs, run=run, checkpoint=checkpoint, onnx=onnx, output_dir=output_dir,
                               device=device, options=PredictOptions(top_k, min_confidence, tta, export_logits,
                                                                     batch_size, workers))
        if plan.info.kind == "checkpoint" and not plan.info.transform_recorded:
            typer.echo(f"Note: {plan.model.path} predates recorded evaluation transforms; using its config's "
                       f"({plan.info.transform.kind}, {plan.info.transform.decode_size} px cache).", err=True)
        typer.echo(f"Model: {plan.info.description}", err=True)
        display = _Display(as_json, plan.options.min_confidence, inputs)
        summary = _run(plan, display, None) if target is None else _run_to_file(plan, display, target, fmt)
        display.flush()
        typer.echo(summary.line() + (f" Rows: {target}" if target is not None else ""), err=True)


@contextlib.contextmanager
def _stopped_without_a_run() -> Iterator[None]:
    """Ctrl-C (exit 130) or SIGTERM (exit 143, which ``user_errors`` raises as ``Terminated``, a
    KeyboardInterrupt) while predicting without --name: no run was started, so there is nothing to --resume,
    and a --out file is never half-written."""
    try:
        yield
    except KeyboardInterrupt as exc:
        from flowerkit.errors import FlowerkitError, Terminated, is_termination

        if is_termination(exc):
            stop, code = "Terminated (SIGTERM: a scheduler's or docker's stop)", Terminated.exit_code
        else:
            stop, code = "Interrupted (Ctrl-C)", 130
        raise FlowerkitError(f"{stop}; rows printed so far are complete, and no --out file was written (an "
                             "existing one is unchanged).", exit_code=code) from None


PREDICT_RUN_HINT = "a predict run has no checkpoint to continue from: run the command again under a new --name"


def _record(given: dict, *, onnx: Path | None, out: Path | None, as_json: bool, workers: int, debug: bool) -> None:
    """``--name``: the recorded run, through the Prefect flow; only this path starts Prefect (start-up matters
    for predicting a photo or two)."""
    with user_errors(debug, resume_hint=PREDICT_RUN_HINT):
        from flowerkit.run.config import load_predict_config
        from flowerkit.errors import ConfigError

        refused = [flag for flag, value in (("--onnx", onnx), ("--out", out), ("--json", as_json or None))
                   if value is not None]
        if refused:
            raise ConfigError(f"--name records the run under OUTPUT_DIR/NAME (its rows in fiftyone/predictions.jsonl) "
                              f"from --run or --checkpoint; leave out {', '.join(refused)}.")
        from flowerkit.predict.run import prepare_predict_run

        plan = prepare_predict_run(load_predict_config(given), workers)  # exit 2, 3 or 4 before Prefect starts
        run_recorded(plan, debug)


def run_recorded(plan: PredictRunPlan, debug: bool) -> None:
    """Run a recorded predict run's plan as the ``predict`` flow, in this process (inside ``user_errors``)."""
    import logging

    from flowerkit.cli.errors import hide_repeated_run_errors, hide_user_error_tracebacks
    from flowerkit.flows.orchestration.prefect_env import check_prefect_environment, start_ephemeral_server

    check_prefect_environment()
    typer.echo(f"Model: {plan.predict.info.description}", err=True)
    logging.getLogger("flowerkit").setLevel(logging.INFO)
    start_ephemeral_server()  # first: it checks Prefect's settings, which importing Prefect below would raise on
    if not debug:
        hide_user_error_tracebacks()
        hide_repeated_run_errors()
    from flowerkit.flows.orchestration.watcher import watching
    from flowerkit.flows.predict import predict_flow

    with watching():  # this process's flow run ends Crashed on the server even if the process is killed
        result = predict_flow(plan.config, plan=plan)
    typer.echo(f"{result.summary.line()} Run: {result.run_dir} (rows: {result.predictions})", err=True)


def _check_out(out: Path) -> tuple[Path, str]:
    from flowerkit.errors import ConfigError
    from flowerkit.predict.rows import FORMATS
    from flowerkit.io.writable import check_writable_folder

    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {out} must end in .jsonl (FiftyOne-ready rows, as eval's predictions.jsonl) or "
                          ".csv.")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name ending in .jsonl or .csv.")
    check_writable_folder(out.parent, f"--out {out}", "Pass --out a file in a folder you can write to.")
    return out, fmt


def _run(plan, display, writer):
    from flowerkit.predict.runner import require_predictions, run_predictions

    def sink(row: dict) -> None:
        if writer is not None:
            writer.write(row)
        display.add(row)

    return require_predictions(run_predictions(plan, sink))


def _run_to_file(plan, display, target: Path, fmt: str):
    """Rows stream into a temporary sibling renamed into place at the end: a failure leaves no file."""
    import io

    from flowerkit.artifacts.files import atomic_write
    from flowerkit.predict.rows import RowWriter

    result = {}

    def write(fh) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        result["summary"] = _run(plan, display, RowWriter(text, fmt))  # raises when none was predicted
        text.flush()
        text.detach()

    atomic_write(target, write)
    return result["summary"]


class _Display:
    """JSON lines on stdout, or a rich table printed every TABLE_EVERY rows."""

    def __init__(self, as_json: bool, min_confidence: float | None, inputs: list[str]) -> None:
        self.as_json, self.min_confidence = as_json, min_confidence
        self.shown = _shown_paths(inputs)
        self.rows: list[dict] = []
        self.printed = False

    def add(self, row: dict) -> None:
        if self.as_json:
            try:
                sys.stdout.write(json.dumps(row) + "\n")
            except BrokenPipeError:
                raise _stdout_closed() from None
            return
        self.rows.append(row)
        if len(self.rows) >= TABLE_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.as_json or not self.rows:
            sys.stdout.flush()
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_header=not self.printed, box=None, pad_edge=False)
        table.add_column("file", overflow="fold", ratio=1)
        table.add_column("prediction (probability)", overflow="fold", ratio=2)
        for row in self.rows:
            table.add_row(escape(self.shown(row["filepath"])), _cell(row))
        try:
            Console(soft_wrap=False).print(table)
        except BrokenPipeError:
            raise _stdout_closed() from None
        self.rows, self.printed = [], True


def _shown_paths(inputs: list[str]) -> Callable[[str], str]:
    """How the table names a row's file (its ``filepath`` is absolute): relative to the folder INPUT it was
    found in, so ``a/rose.jpg`` and ``b/rose.jpg`` stay apart, led by that folder as typed when there are
    several inputs; any other file relative to the current folder, or whole when outside it."""
    folders = [(arg, Path(arg).expanduser().resolve()) for arg in inputs if Path(arg).expanduser().is_dir()]
    folders.sort(key=lambda folder: -len(folder[1].parts))  # a folder given inside another one is closer
    here = Path.cwd().resolve()

    def shown(filepath: str) -> str:
        path = Path(filepath)
        for arg, root in folders:
            if path.is_relative_to(root):
                inside = path.relative_to(root)
                return str(inside if len(inputs) == 1 else Path(arg) / inside)
        return str(path.relative_to(here) if path.is_relative_to(here) else path)

    return shown


def _stdout_closed():
    """The reader of a pipe (``| head``) went away: stop, say so on stderr, and write no --out file."""
    import os

    from flowerkit.errors import FlowerkitError

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush must not fail again
    return FlowerkitError("Standard output was closed before every row was printed (its reader, e.g. `head`, "
                          "ended), so predicting stopped and no --out file was written. Use --out FILE to keep "
                          "every row.", exit_code=1)


def _cell(row: dict) -> str:
    from rich.markup import escape

    if "error" in row:
        return f"[red]error:[/red] {escape(row['error'])}"
    ranked = ", ".join(f"{escape(t['name'])} {t['probability']:.3f}" for t in row["top_k"])
    return f"[yellow]unknown[/yellow] (best guess: {ranked})" if row.get("unknown") else ranked
