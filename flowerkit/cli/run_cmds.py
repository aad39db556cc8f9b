"""``flowerkit train`` and ``flowerkit eval``: resolve the config, then run the Prefect flow (or plan it)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from flowerkit.cli.errors import hide_user_error_tracebacks, user_errors
from flowerkit.cli.options import CONTEXT_SETTINGS, command_from_config
from flowerkit.config import EvalConfig, RunConfig, TrainConfig, load_config


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
        cls = TrainConfig if flow == "train" else EvalConfig
        config = load_config(cls, given, config_file)
        from flowerkit.preflight import preflight

        plan = preflight(flow, config, resume)  # fails fast, before Prefect starts or anything is written
        if resume and not dry_run:
            _settle_crashed(config)
        if dry_run:
            typer.echo(plan.describe())
            return
        logging.getLogger("flowerkit").setLevel(logging.INFO)
        if not debug:
            hide_user_error_tracebacks()
        if flow == "train":
            from flowerkit.cli.progress import progress_display
            from flowerkit.flows.train import train_flow

            with progress_display(quiet):
                result = train_flow(config, resume=resume)
        else:
            from flowerkit.flows.eval import eval_flow

            result = eval_flow(config, resume=resume)
        print_summary(flow, config, result)


def _settle_crashed(config: RunConfig) -> None:
    """A resumed run whose process died: its old flow run must not stay Running on the server."""
    from flowerkit.cli.crashed import reconcile
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
    run_dir = Path(result["run_dir"])
    table.add_row("tensorboard", f"{result['tb_dir']}  (tensorboard --logdir {config.output_dir / 'tb'})")
    for label, rel in (("predictions", "fiftyone/predictions.jsonl"), ("per-class", "fiftyone/per_class_metrics.json"),
                       ("metrics", "metrics.json"), ("labelmap", "labelmap.json"), ("env stamp", "env_stamp.json"),
                       ("retention", "RETENTION.txt"), ("record", "run_record.json")):
        table.add_row(label, str(run_dir / rel))
    if flow == "train":
        table.add_row("checkpoint", str(run_dir / "checkpoints" / "ckpt.bin"))
    Console().print(table)
