"""The ``flowerkit`` command line (Typer)."""

from __future__ import annotations

import os
import sys

import typer

from flowerkit.cli import (
    bench_cmd,
    data_cmd,
    export_cmd,
    fast_exit,
    fiftyone_cmd,
    predict_cmd,
    run_cmds,
    runs_cmd,
    serve_cmd,
    server_cmd,
    sweep_cmd,
    weights_cmd,
)
from flowerkit.cli.dashboard_cmd import dashboard
from flowerkit.cli.options import CONTEXT_SETTINGS
from flowerkit.cli.quiet import hide_shutdown_notices
from flowerkit.flows.orchestration.local_server import use_local_server
from flowerkit.flows.orchestration.prefect_env import set_environment_defaults


def _quiet_prefect_defaults() -> None:
    # Before Prefect is imported: route our library's logs through Prefect's handlers, skip telemetry.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "flowerkit")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    set_environment_defaults()
    hide_shutdown_notices()


app = typer.Typer(
    name="flowerkit",
    help="Train and evaluate Vision Transformers on Oxford Flowers-102, with an auditable trail per run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Every sub-command inherits the token normaliser: each option is declared (and listed in the help) with one
    # spelling, and its dashed or underscored twin (--output_dir, --max-parallel) parses the same, so option
    # names stay whole in an 80-column help.
    context_settings={"help_option_names": ["-h", "--help"], **CONTEXT_SETTINGS},
)
run_cmds.register(app)
app.add_typer(data_cmd.app, name="data")
app.add_typer(fiftyone_cmd.app, name="fiftyone")
app.add_typer(runs_cmd.app, name="runs")
app.add_typer(weights_cmd.app, name="weights")
app.add_typer(server_cmd.app, name="server")
app.command("dashboard")(dashboard)
app.command("bench", help="Time training and evaluation: compute only, input pipeline only, end to end; writes "
                          "JSON.")(bench_cmd.bench)
app.command("export", help="Write a run's best (or latest) checkpoint as a Google-format ViT .npz or an ONNX "
                           "model for serving, checked before it is written.",
            context_settings=CONTEXT_SETTINGS)(export_cmd.export)
app.command("export-npz", help="Write a run's best (or latest) checkpoint as a Google-format ViT .npz, head "
                               "included; it loads back bit for bit through --pretrained (alias of export "
                               "--format npz).")(export_cmd.export_npz)
app.command("predict", help="Classify your own photos (any format, any number) with a run's checkpoint or an "
                            "ONNX export: a table, JSON rows or a .jsonl/.csv file.",
            context_settings=CONTEXT_SETTINGS)(predict_cmd.predict)
app.command("sweep", help="Run a grid and/or random search of train runs from a sweep YAML, locally or on a "
                          "Prefect work pool; writes OUTPUT_DIR/sweeps/NAME.")(sweep_cmd.sweep)
app.command("serve", help="Serve the train and eval flows as Prefect deployments (needs PREFECT_API_URL); see "
                          "docs/prefect.md.")(serve_cmd.serve)


def main(command: str | None = None) -> None:
    """The ``flowerkit`` program; with ``command`` ("train", "eval"), that command alone, as ``<command>.py``."""
    _quiet_prefect_defaults()
    if (command or next(iter(sys.argv[1:]), "")) != "server":  # before Prefect is imported: it reads the env once
        use_local_server()
    try:
        if command is None:
            app()
        else:  # the repo root's train.py / eval.py: the seed spec's spelling of the same command
            typer.main.get_command(app).commands[command].main(prog_name=f"{command}.py")
    except SystemExit as done:  # how click ends every command, success included
        fast_exit.exit_now(done.code)
    fast_exit.exit_now(0)
