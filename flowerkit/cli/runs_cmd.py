"""``flowerkit runs``: list, show, verify and prune the runs under an output directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.cli.options import CONTEXT_SETTINGS
from flowerkit.run.config import NAME_PATTERN
from flowerkit.errors import ConfigError

app = typer.Typer(help="List, inspect, verify and prune runs.", no_args_is_help=True,
                  context_settings=CONTEXT_SETTINGS)  # also when a test invokes this group alone
LIST_COLUMNS = ("name", "flow", "status", "device", "step", "selected", "monitored", "accuracy", "started (UTC)",
                "age")
# Left out in this order when the terminal is too narrow: the age says when a run started, the monitored value
# says more than the selected step, and name, status, step and accuracy always stay.
LIST_DROP_ORDER = ("started (UTC)", "device", "flow", "selected", "monitored", "age")
OUTPUT = typer.Option(Path("output"), "--output_dir", help="Root folder of the runs.")


def check_output_dir(output_dir: Path) -> Path:
    """A file where the runs' folder belongs is a mistake to name, not an empty folder ("No runs")."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"--output_dir {output_dir} is a file, not a folder of runs. Pass the folder the runs "
                          "were written to (train's --output_dir).")
    return output_dir


def check_run_name(name: str) -> str:
    """A run name is one folder name under --output_dir (config.py's pattern), never a path like ../x or /etc."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(f"'{name}' is not a run name: a run name is a folder name under --output_dir (letters, "
                          "digits, '.', '_' and '-', starting with a letter or digit), not a path. `flowerkit runs "
                          "list` shows the names.")
    return name


@app.command("list")
def list_runs(output_dir: Path = OUTPUT,
              sweep: str = typer.Option(None, "--sweep", help="Only this sweep's trials, ranked by the monitored "
                                                              "validation metric, with the values each sets.")
              ) -> None:
    """Every run: name, flow, status, device, step, selected checkpoint, monitored value, accuracy, started, age."""
    from rich.console import Console

    from flowerkit.cli.fit_table import fitted_table
    from flowerkit.flows.orchestration.crashed_runs import MARKED, UNREACHABLE, api_url, reconcile_all
    from flowerkit.run.runs import describe_selection, find_runs

    with user_errors():
        if sweep is not None:
            list_sweep(output_dir, check_run_name(sweep))
            return
        runs = find_runs(check_output_dir(output_dir))
        if not runs:
            typer.echo(f"No runs under {output_dir}.")
            return
        reconciled = reconcile_all(runs)
        rows = []
        for run in runs:
            accuracy = "-" if run.accuracy is None else f"{run.accuracy:.4f}"
            # A train run reports its selected checkpoint, not its last step: say which one and by what value.
            selected, monitored = describe_selection(run.selection) or ("-", "-")
            started = run.started_utc[:16].replace("T", " ") if len(run.started_utc) >= 16 else run.started_utc
            rows.append([run.name, run.flow, run.status, run.device, f"{run.step}/{run.total_steps}", selected,
                         monitored, accuracy, started or "-", run.age()])
        console = Console()
        # A terminal (or a set COLUMNS) gives the width to fit; output to a file or pipe has none: 120 as before.
        width = console.width if console.is_terminal or os.environ.get("COLUMNS") else max(120, console.width)
        table, dropped = fitted_table(LIST_COLUMNS, rows, width, LIST_DROP_ORDER)
        Console(width=max(width, console.width)).print(table)
        if dropped:
            typer.echo(f"(left out at {width} columns: {', '.join(dropped)})")
        for name, outcome in reconciled.items():
            if outcome == MARKED:
                typer.echo(f"{name}: its process died; its Prefect flow run is now marked Crashed on {api_url()}.")
            elif outcome == UNREACHABLE:
                typer.echo(f"{name}: its process died; the Prefect server {api_url()} did not answer, so its flow "
                           "run still shows its last state there.")


def list_sweep(output_dir: Path, name: str) -> None:
    """A sweep's trials side by side: rank, the values each trial sets, status, monitored value, accuracy."""
    from rich.console import Console
    from rich.table import Table

    from flowerkit.sweep import read_results

    rows = read_results(output_dir, name)
    options = list(dict.fromkeys(option for row in rows for option in row["values"]))
    monitor = next((row["monitor"] for row in rows if row["monitor"]), "monitor")
    table = Table("rank", "trial", *options, "status", monitor, "step", "accuracy",
                  title=f"sweep '{name}' ({len(rows)} trials)", title_justify="left")
    for row in rows:
        table.add_row(str(row["rank"] or "-"), row["trial"], *(_cell(row["values"].get(o)) for o in options),
                      row["status"], _cell(row["monitor_value"]), _cell(row["selected_step"]), _cell(row["accuracy"]))
    Console(width=max(120, Console().width)).print(table)
    for row in rows:
        if row["status"] != "complete" and row["error"]:
            typer.echo(f"{row['trial']} ({row['status']}): {row['error']}")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("show")
def show(name: str = typer.Argument(..., help="Run name."), output_dir: Path = OUTPUT) -> None:
    """The run: status and identity, tasks, metrics, error, files and the resolved configuration."""
    from rich.console import Console

    from flowerkit.artifacts.record import read_record
    from flowerkit.cli.run_report import render_run
    from flowerkit.run.layout import RunLayout
    from flowerkit.run.runs import run_dir_of

    with user_errors():
        run_dir = run_dir_of(output_dir, check_run_name(name))
        record = read_record(run_dir)
        # The terminal's width (COLUMNS, else 80 in a pipe): long values wrap inside their cells.
        Console().print(*render_run(RunLayout.for_run(run_dir, record), record))


@app.command("verify")
def verify(name: str = typer.Argument(..., help="Run name."), output_dir: Path = OUTPUT) -> None:
    """Recompute every sha256 in the artifact index; exit 2 if any file is missing, changed or unlisted."""
    from flowerkit.run.runs import verify_run

    with user_errors():
        report = verify_run(output_dir, check_run_name(name))
        for label, items in (("missing", report.missing), ("changed", report.changed),
                             ("unlisted", report.unlisted)):
            for item in items:
                typer.echo(f"{label:<9} {item}")
        if report.record.state == "altered":
            typer.echo(f"{'record':<9} {report.record.detail}")
        if not report.ok:
            typer.echo(f"Run '{name}' does NOT match its record: {report.describe()}.", err=True)
            raise typer.Exit(2)
        typer.echo(f"Run '{name}' verified: all {report.checked} indexed files match their sha256"
                   + (", its record matches the run index." if report.record.state == "ok" else
                      f"; its record is not in the run index ({report.record.detail}: a run from before flowerkit "
                      "kept one), so its dates are not vouched for."))


@app.command("prune")
def prune(
    older_than_retention: bool = typer.Option(False, "--older_than_retention",
                                              help="Delete runs whose retention period (from the run record) has "
                                                   "expired."),
    crashed: bool = typer.Option(False, "--crashed",
                                 help="Delete crashed predict runs (their process died; a predict run cannot be "
                                      "continued). Crashed train and eval runs are kept: --resume continues them."),
    dry_run: bool = typer.Option(False, "--dry_run", help="Only say what would be deleted."),
    force: bool = typer.Option(False, "--force", help="Also delete expired runs whose files fail verification, and "
                                                      "with --crashed, crashed train and eval runs."),
    output_dir: Path = OUTPUT,
) -> None:
    """Delete only verified runs past their retention expiry, or crashed runs that cannot be continued; anything
    else is reported and kept."""
    with user_errors():
        if not (older_than_retention or crashed):
            typer.echo("Nothing to do: pass --older_than_retention and/or --crashed (with --dry_run first to see "
                       "what it deletes).", err=True)
            raise typer.Exit(2)
        check_output_dir(output_dir)
        if crashed:
            _prune_crashed(output_dir, dry_run, force)
        if older_than_retention:
            _prune_expired(output_dir, dry_run, force)


def _prune_crashed(output_dir: Path, dry_run: bool, force: bool) -> None:
    """Crashed runs: a predict run is deleted (nothing can continue it); a train or eval run is kept unless
    --force, since ``--resume`` continues it from its last checkpoint. Kept runs are no error (exit 0)."""
    from flowerkit.run.rundir import delete_crashed
    from flowerkit.run.runs import crashed_runs

    runs = crashed_runs(output_dir)
    if not runs:
        typer.echo(f"No crashed run under {output_dir}.")
    for run in runs:
        if run.resumable and not force:
            typer.echo(f"keeping {run.name} (crashed {run.flow} run): `flowerkit {run.flow} --name {run.name} "
                       "--resume` with its options continues it; --force deletes it.", err=True)
            continue
        paths = ", ".join(map(str, run.paths))
        if dry_run:
            typer.echo(f"would delete {run.name} (crashed {run.flow} run): {paths}")
        elif delete_crashed(run):
            typer.echo(f"deleted {run.name} (crashed {run.flow} run): {paths}")
        else:
            typer.echo(f"keeping {run.name}: another process took it meanwhile (a --resume); it is not crashed "
                       "any more.", err=True)


def _prune_expired(output_dir: Path, dry_run: bool, force: bool) -> None:
    from flowerkit.run.runs import delete_run, expired_runs

    candidates = expired_runs(output_dir)
    if not candidates:
        typer.echo(f"No run under {output_dir} is past its retention period.")
    kept = 0
    for candidate in candidates:
        expired = f"expired {candidate.expires_utc:%Y-%m-%d}" if candidate.expires_utc else "expiry unknown"
        if candidate.problem and not (force and candidate.expires_utc):
            kept += 1
            typer.echo(f"keeping {candidate.name} ({expired}): {candidate.problem}.", err=True)
            continue
        verb = "would delete" if dry_run else "deleting"
        typer.echo(f"{verb} {candidate.name} ({expired}): {', '.join(map(str, candidate.paths))}")
        if not dry_run:
            delete_run(candidate)
    if kept:
        typer.echo(f"{kept} run(s) kept: see above. `flowerkit runs verify NAME` shows what differs; "
                   "--force deletes expired runs that fail verification.", err=True)
        raise typer.Exit(2)


@app.command("sync-mlflow")
def sync_mlflow(name: str = typer.Argument(..., help="Run name."), output_dir: Path = OUTPUT,
                experiment: str = typer.Option(None, "--experiment", help="MLflow experiment (default: the run's "
                                                                          "--mlflow_experiment).")) -> None:
    """Send a finished run's params, metrics, artifacts and model to MLflow (MLFLOW_TRACKING_URI); idempotent."""
    from flowerkit.run.runs import run_dir_of

    with user_errors():
        run_dir = run_dir_of(output_dir, name)
        from flowerkit.errors import ConfigError
        from flowerkit.optional import MLFLOW

        if not MLFLOW.installed():
            raise ConfigError(f"sync-mlflow: {MLFLOW.missing()}.")
        from flowerkit.tracking.sync import sync_run

        report = sync_run(run_dir, experiment)
        typer.echo(f"Run '{name}' is in MLflow: run {report['run_id']} of experiment '{report['experiment']}'"
                   + (f" ({report['url']})" if report["url"] else "") + ".")
