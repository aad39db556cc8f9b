"""``flowerkit train`` and ``flowerkit eval``: resolve the config, then run the Prefect flow (or plan it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from flowerkit.cli.errors import hide_user_error_tracebacks, user_errors
from flowerkit.cli.options import CONTEXT_SETTINGS, command_from_config
from flowerkit.cli.prefect_env import check_prefect_environment, start_ephemeral_server
from flowerkit.config import CONFIG_CLASSES, EvalConfig, RunConfig, TrainConfig, load_config


def register(app: typer.Typer) -> None:
    app.command("train", help="Train a ViT on Flowers-102 (Prefect flow 'train'); writes OUTPUT_DIR/NAME.",
                context_settings=CONTEXT_SETTINGS)(
        command_from_config(TrainConfig, lambda given, **extra: _run("train", given, **extra)))
    app.command("eval", help="Evaluate a checkpoint without training (Prefect flow 'eval'); writes "
                             "OUTPUT_DIR/NAME.", context_settings=CONTEXT_SETTINGS)(
        command_from_config(EvalConfig, lambda given, **extra: _run("eval", given, **extra)))


def _run(flow: str, given: dict[str, Any], config_file: Path | None, resume: bool, dry_run: bool, quiet: bool,
         debug: bool) -> None:
    with user_errors(debug):
        config = load_config(CONFIG_CLASSES[flow], given, config_file)
        from flowerkit.plan import handing, prepare_plan

        plan = prepare_plan(flow, config, resume)  # fails fast, before Prefect starts or anything is written
        prefect = check_prefect_environment()
        if resume and not dry_run:
            _settle_crashed(config)
        if dry_run:
            typer.echo(plan.describe({"prefect": prefect}))
            return
        logging.getLogger("flowerkit").setLevel(logging.INFO)
        if not debug:
            hide_user_error_tracebacks()
        start_ephemeral_server()
        from flowerkit.cli.progress import progress_display

        with handing(plan), progress_display(quiet if flow == "train" else True):
            result = run_flow(flow, config, resume)
        print_summary(flow, plan.config, result)


def run_flow(flow: str, config: RunConfig, resume: bool) -> dict:
    """Start the Prefect flow ``flow`` in this process (it picks up a plan handed to it)."""
    if flow == "train":
        from flowerkit.flows.train import train_flow

        return train_flow(config, resume=resume)
    from flowerkit.flows.eval import eval_flow

    return eval_flow(config, resume=resume)


def _settle_crashed(config: RunConfig) -> None:
    """A resumed run whose process died: its old flow run must not stay Running on the server."""
    from flowerkit.tasks.crashed_runs import reconcile
    from flowerkit.runs import summarize

    if config.layout.record.is_file():
        reconcile(summarize(config.layout.run_dir))


def print_summary(flow: str, config: RunConfig, result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = result["metrics"]
    table = Table(title=f"flowerkit {flow}: run '{config.name}' complete", show_header=False, title_justify="left")
    table.add_row("device", f"{result['device']['device']} ({result['device']['name']}; {result['device']['reason']})"
                  f", {result['precision']}")
    if "train" in result:
        trained = result["train"]
        table.add_row("training", f"steps {trained['start_step']}->{trained['steps']}, final loss "
                                  f"{trained['final_loss']:.4f}, {trained['images_per_second']:.1f} img/s")
    table.add_row(f"eval ({metrics['split']}, {metrics['num_samples']} samples)",
                  f"accuracy {metrics['accuracy']:.4f}, top-5 {metrics['top5_accuracy']:.4f}, macro F1 "
                  f"{metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}")
    worst = ", ".join(f"{w['class_name']} ({w['f1']:.2f})" for w in metrics["worst_classes"][:3])
    table.add_row("worst classes", worst or "-")
    layout = config.layout
    table.add_row("tensorboard", f"{layout.tb_dir}  (tensorboard --logdir {layout.tb_root})")
    for label, path in (("predictions", layout.predictions), ("per-class", layout.per_class),
                        ("metrics", layout.metrics), ("labelmap", layout.labelmap), ("env stamp", layout.stamp),
                        ("retention", layout.retention), ("record", layout.record)):
        table.add_row(label, str(path))
    if flow == "train":
        table.add_row("checkpoint", str(layout.checkpoint))
    from flowerkit.artifacts.record import read_record
    from flowerkit.tracking import mlflow_line

    mlflow = mlflow_line(read_record(layout.run_dir))
    if mlflow:
        table.add_row("mlflow", mlflow.removeprefix("MLflow: "))
    Console().print(table)
