"""``flowerkit train`` and ``flowerkit eval``: resolve the config, plan the run, then run the plan as its Prefect
flow (or show it); ``flowerkit run PLAN``: run a plan written earlier (a sweep's trials, the dashboard's runs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flowerkit.cli.errors import hide_repeated_run_errors, hide_user_error_tracebacks, user_errors
from flowerkit.cli.options import CONTEXT_SETTINGS, command_from_config
from flowerkit.flows.orchestration.prefect_env import (
    EarlyServer,
    check_prefect_environment,
    launch_ephemeral_server,
    start_ephemeral_server,
)
from flowerkit.run.config import CONFIG_CLASSES, EvalConfig, RunConfig, TrainConfig, load_config
from flowerkit.errors import ConfigError

if TYPE_CHECKING:  # the flows and the plan are imported when a run starts: --help stays fast
    from flowerkit.engine.progress import Listener
    from flowerkit.flows.common import RunOutcome
    from flowerkit.run.plan import RunPlan

def register(app: typer.Typer) -> None:
    app.command("train", help="Train a ViT on Flowers-102 (Prefect flow 'train'); writes OUTPUT_DIR/NAME.",
                context_settings=CONTEXT_SETTINGS)(
        command_from_config(TrainConfig, lambda given, **extra: _run("train", given, **extra)))
    app.command("eval", help="Evaluate a checkpoint without training (Prefect flow 'eval'); writes "
                             "OUTPUT_DIR/NAME.", context_settings=CONTEXT_SETTINGS)(
        command_from_config(EvalConfig, lambda given, **extra: _run("eval", given, **extra)))
    app.command("run", help="Run a plan (a plan.json written by the dashboard, a sweep or a run) as its flow.",
                context_settings=CONTEXT_SETTINGS)(run_plan_file)


def run_plan_file(plan_file: Path = typer.Argument(..., help="The plan to run: a plan.json that flowerkit wrote.",
                                                   show_default=False),
                  quiet: bool = typer.Option(False, "--quiet", help="No live progress; warnings and errors only."),
                  debug: bool = typer.Option(False, "--debug", help="Show tracebacks.")) -> None:
    """Run the plan as it was decided: no option is read again, nothing is planned twice."""
    from flowerkit.cli.predict_cmd import PREDICT_RUN_HINT, run_recorded
    from flowerkit.run.prepare import load_plan

    with user_errors(debug):
        plan = load_plan(plan_file)
    if plan.flow == "predict":
        with user_errors(debug, resume_hint=PREDICT_RUN_HINT):
            run_recorded(plan, debug)
        return
    with user_errors(debug):
        server = launch_ephemeral_server()  # starts up while Prefect is imported
        check_prefect_environment()
        _start(plan, quiet, debug, server)


def _run(flow: str, given: dict[str, Any], config_file: Path | None, resume: bool, dry_run: bool, quiet: bool,
         debug: bool) -> None:
    with user_errors(debug):
        loaded = load_config(CONFIG_CLASSES[flow], given, config_file)
        # Prefect's temporary server starts up while torch is imported and the run planned; the flow takes it.
        server = None if dry_run or _may_follow(loaded) else launch_ephemeral_server()
        config = _as_launched(flow, loaded)
        if isinstance(config, TrainConfig) and _trains_a_share(config, dry_run):
            return
        from flowerkit.run.prepare import describe_plan, prepare_plan

        plan = prepare_plan(flow, config, resume)  # fails fast, before anything is written
        prefect = check_prefect_environment()
        if dry_run:
            typer.echo(describe_plan(plan, {"prefect": prefect}))
            return
        _start(plan, quiet, debug, server)


def _start(plan: RunPlan, quiet: bool, debug: bool, server: EarlyServer | None = None) -> None:
    """Run a train or eval plan as its flow in this process, with the live display, then print its summary;
    ``server``: Prefect's temporary server, launched earlier."""
    if plan.resume:
        _settle_crashed(plan.config)
    logging.getLogger("flowerkit").setLevel(logging.INFO)
    start_ephemeral_server(server)  # first: it checks Prefect's settings, which importing Prefect below raises on
    if not debug:
        hide_user_error_tracebacks()
        hide_repeated_run_errors()
    from flowerkit.cli.progress import progress_display
    from flowerkit.flows.orchestration.watcher import watching

    # A killed process's flow run still ends Crashed on the server (watching); the live bar (train only).
    with watching(), progress_display(quiet if plan.flow == "train" else True) as on_progress:
        result = run_plan(plan, on_progress)
    print_summary(plan, result)


def _as_launched(flow: str, config: RunConfig) -> RunConfig:
    """The config with the process layout torchrun started, when it started this command."""
    from flowerkit.engine.distributed import adopt_torchrun, torchrun_env

    if isinstance(config, TrainConfig):
        return adopt_torchrun(config)
    if torchrun_env() is not None:
        raise ConfigError(f"flowerkit {flow} runs in one process; run it without torchrun.")
    return config


def _may_follow(config: RunConfig) -> bool:
    """Whether this command may train a share of a run another command runs, and so need no server; told
    without importing torch (``engine.distributed.is_follower`` decides), since the server overlaps that."""
    return os.environ.get("RANK", "0") != "0" or getattr(config, "node_rank", 0) != 0


def _trains_a_share(config: TrainConfig, dry_run: bool) -> bool:
    """Train a share of a run whose flow another process runs (torchrun's ranks above 0, machines with
    --node_rank above 0): no Prefect, no run directory, nothing written. True when this command did that."""
    from flowerkit.engine.distributed import is_follower

    if not is_follower(config):
        return False
    from flowerkit.run.prepare import prepare_share, share_description

    plan = prepare_share(config)
    who = f"{share_description(plan)} of run '{config.name}'"
    if dry_run:
        typer.echo(f"{who}: would train its share on {plan.device.device}; rank 0 writes the run")
        return True
    from flowerkit.engine.run import run_training

    run_training(plan, plan.selections["train"], plan.selections["val"])
    if plan.execution.launcher != "torchrun":  # under torchrun, rank 0's command speaks for the run
        typer.echo(f"{who}: done (rank 0 wrote the run)")
    return True


def run_plan(plan: RunPlan, on_progress: Listener | None = None) -> RunOutcome:
    """Run the prepared plan as its Prefect flow, in this process; ``on_progress`` shows training's steps."""
    if plan.flow == "train":
        from flowerkit.flows.train import train_flow

        return train_flow(plan.config, plan.resume, plan, on_progress)
    from flowerkit.flows.eval import eval_flow

    return eval_flow(plan.config, plan.resume, plan)


def _settle_crashed(config: RunConfig) -> None:
    """A resumed run whose process died: its old flow run must not stay Running on the server."""
    from flowerkit.flows.orchestration.crashed_runs import reconcile
    from flowerkit.run.runs import summarize

    if config.layout.record.is_file():
        reconcile(summarize(config.layout.run_dir))


def selection_text(metrics: dict) -> str:
    """``best.bin: step 40 (raw weights), val_accuracy 0.8125`` (and why the run stopped early, if it did)."""
    text = (f"{Path(metrics['selected_checkpoint']).name}: step {metrics['selected_step']} "
            f"({metrics['selected_weights']} weights), {metrics['monitor']} {metrics['monitor_value']:.4f}")
    return text + (f"; stopped early: {metrics['stop_reason']}" if metrics.get("stopped_early") else "")


def print_summary(plan: RunPlan, result: RunOutcome) -> None:
    from rich.console import Console
    from rich.table import Table

    from flowerkit.artifacts.classification import scores_text

    config, metrics, device = plan.config, result.metrics, result.device
    table = Table(title=f"flowerkit {plan.flow}: run '{config.name}' complete", show_header=False,
                  title_justify="left")
    table.add_row("device", f"{device.device} ({device.name}; {device.reason}), {result.precision}")
    trained = result.train
    if trained is not None:
        table.add_row("training", f"steps {trained.start_step}->{trained.steps}, final loss "
                                  f"{trained.final_loss:.4f}, {trained.images_per_second:.1f} img/s")
    if "selected_step" in metrics:
        table.add_row("selected", selection_text(metrics))
    table.add_row(f"eval ({metrics['split']}, {metrics['num_samples']} samples)", scores_text(metrics))
    if "test_accuracy" in metrics:  # --test_after: the selected checkpoint once on the test split
        table.add_row(f"test ({metrics['test_num_samples']} samples)", scores_text(metrics, "test_"))
    worst = ", ".join(f"{w['class_name']} ({w['f1']:.2f})" for w in metrics["worst_classes"][:3])
    table.add_row("worst classes", worst or "-")
    layout = config.layout
    table.add_row("tensorboard", f"{layout.tb_dir}  (tensorboard --logdir {layout.tb_root})")
    for label, path in (("predictions", layout.predictions), ("per-class", layout.per_class),
                        ("metrics", layout.metrics), ("labelmap", layout.labelmap), ("env stamp", layout.stamp),
                        ("retention", layout.retention), ("record", layout.record)):
        table.add_row(label, str(path))
    if plan.flow == "train":
        table.add_row("checkpoints", f"{layout.best_checkpoint} (selected), {layout.checkpoint} (latest, --resume)")
    from flowerkit.artifacts.record import read_record
    from flowerkit.tracking import mlflow_line

    mlflow = mlflow_line(read_record(layout.run_dir))
    if mlflow:
        table.add_row("mlflow", mlflow.removeprefix("MLflow: "))
    Console().print(table)
