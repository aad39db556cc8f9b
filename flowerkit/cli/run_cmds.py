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
from flowerkit.errors import ConfigError


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
        config = _as_launched(flow, load_config(CONFIG_CLASSES[flow], given, config_file))
        if isinstance(config, TrainConfig) and _follows(config, dry_run):
            return
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


def _as_launched(flow: str, config: RunConfig) -> RunConfig:
    """The config with the process layout torchrun started, when it started this command."""
    from flowerkit.engine.distributed import adopt_torchrun, torchrun_env

    if isinstance(config, TrainConfig):
        return adopt_torchrun(config)
    if torchrun_env() is not None:
        raise ConfigError(f"flowerkit {flow} runs in one process; run it without torchrun.")
    return config


def _follows(config: TrainConfig, dry_run: bool) -> bool:
    """Train a share of a run whose flow another process runs (torchrun's ranks above 0, machines with
    --node_rank above 0): no Prefect, no run directory, nothing written. True when this command did that."""
    from flowerkit.engine.distributed import follow, is_follower, torchrun_env

    if not is_follower(config):
        return False
    message = follow(config, dry_run)
    if dry_run or torchrun_env() is None:  # under torchrun, rank 0's command speaks for the run
        typer.echo(message)
    return True


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


def selection_text(metrics: dict) -> str:
    """``best.bin: step 40 (raw weights), val_accuracy 0.8125`` (and why the run stopped early, if it did)."""
    text = (f"{Path(metrics['selected_checkpoint']).name}: step {metrics['selected_step']} "
            f"({metrics['selected_weights']} weights), {metrics['monitor']} {metrics['monitor_value']:.4f}")
    return text + (f"; stopped early: {metrics['stop_reason']}" if metrics.get("stopped_early") else "")


def _scores(metrics: dict, prefix: str = "") -> str:
    return (f"accuracy {metrics[prefix + 'accuracy']:.4f}, top-5 {metrics[prefix + 'top5_accuracy']:.4f}, "
            f"macro F1 {metrics[prefix + 'macro_f1']:.4f}, loss {metrics[prefix + 'loss']:.4f}")


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
    if "selected_step" in metrics:
        table.add_row("selected", selection_text(metrics))
    table.add_row(f"eval ({metrics['split']}, {metrics['num_samples']} samples)", _scores(metrics))
    if "test_accuracy" in metrics:  # --test_after: the selected checkpoint once on the test split
        table.add_row(f"test ({metrics['test_num_samples']} samples)", _scores(metrics, "test_"))
    worst = ", ".join(f"{w['class_name']} ({w['f1']:.2f})" for w in metrics["worst_classes"][:3])
    table.add_row("worst classes", worst or "-")
    layout = config.layout
    table.add_row("tensorboard", f"{layout.tb_dir}  (tensorboard --logdir {layout.tb_root})")
    for label, path in (("predictions", layout.predictions), ("per-class", layout.per_class),
                        ("metrics", layout.metrics), ("labelmap", layout.labelmap), ("env stamp", layout.stamp),
                        ("retention", layout.retention), ("record", layout.record)):
        table.add_row(label, str(path))
    if flow == "train":
        table.add_row("checkpoints", f"{layout.best_checkpoint} (selected), {layout.checkpoint} (latest, --resume)")
    from flowerkit.artifacts.record import read_record
    from flowerkit.tracking import mlflow_line

    mlflow = mlflow_line(read_record(layout.run_dir))
    if mlflow:
        table.add_row("mlflow", mlflow.removeprefix("MLflow: "))
    Console().print(table)
