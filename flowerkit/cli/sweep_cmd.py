"""``flowerkit sweep SWEEP.yaml``: validate every trial, then run the ``sweep`` flow locally or on a work pool."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from flowerkit.cli.errors import hide_user_error_tracebacks, user_errors
from flowerkit.flows.orchestration.prefect_env import check_prefect_environment, start_ephemeral_server


def sweep(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML: name, base (recipe file or options), grid and/or "
                                                "random."),
    max_parallel: int = typer.Option(1, "--max_parallel", min=1,
                                     help="At most this many trials at once (on a work pool: a Prefect "
                                          "concurrency limit named for the sweep)."),
    local: bool = typer.Option(False, "--local", help="Run the trials on this machine even when PREFECT_API_URL "
                                                      "points at a server with the flowerkit-train deployment."),
    dry_run: bool = typer.Option(False, "--dry_run", help="List the trials and what each needs; run nothing."),
    quiet: bool = typer.Option(False, "--quiet", help="Only warnings, errors and the final table: no line per "
                                                      "trial, no INFO log lines."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show the trials' own log lines (steps, "
                                                          "evaluations); they always go to each run.log."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Expand a sweep file into train runs named <sweep>-<index>, run those not complete, rank them all.

    Prints a line per trial as it is submitted, starts, finishes (with its monitored value) or fails, with its
    Prefect flow run link when the server's UI is known, and the sweep's ETA; in a terminal, a live table of the
    trials follows them under an overall progress bar. --quiet keeps only the final table.
    """
    if quiet:
        from flowerkit.cli.quiet import quiet_console_logs

        quiet_console_logs()  # before Prefect is imported
    # A sweep has no --resume: running it again skips complete trials and resumes the stopped one.
    with user_errors(debug, resume_hint="run the same sweep command again: complete trials are skipped and the "
                                        "stopped one resumes from its last checkpoint"):
        from flowerkit.sweep import action_for, check_same_sweep, check_sweep_free, read_sweep

        found = read_sweep(sweep_file)  # every trial validated: exit 2 naming the trial and option
        check_same_sweep(found)
        if not dry_run:
            check_sweep_free(found)  # fail fast, before a Prefect server starts; the flow takes the lock
        prefect = check_prefect_environment()
        backend, where = choose_backend(local)
        if dry_run:
            typer.echo(f"Sweep '{found.name}': {len(found.trials)} trials, {where} (max_parallel {max_parallel}); "
                       f"Prefect: {prefect}; writes {found.layout.sweep_dir} (dry run: nothing is written)")
            for trial in found.trials:
                typer.echo(f"  {trial.name}  {action_for(trial):<6}  {trial.describe()}")
            return
        logging.getLogger("flowerkit").setLevel(logging.INFO)
        if not debug:
            hide_user_error_tracebacks()
        start_ephemeral_server()
        from flowerkit.cli.sweep_display import print_ranking, sweep_display
        from flowerkit.flows.sweep import sweep_flow
        from flowerkit.flows.orchestration.watcher import watching

        try:
            # watching: trials run in this process end Crashed on the server even if it is killed
            with watching(), sweep_display(quiet, verbose) as live:
                sweep_flow.with_options(flow_run_name=found.name)(str(sweep_file), max_parallel=max_parallel,
                                                                  backend=backend,
                                                                  on_progress=live.follow if live else None)
        finally:
            print_ranking(found)


def choose_backend(local: bool) -> tuple[str, str]:
    """pool when PREFECT_API_URL names a server that has the train deployment (and --local is not given)."""
    from flowerkit.flows.sweep import TRAIN_DEPLOYMENT

    if local or not os.environ.get("PREFECT_API_URL", "").strip():
        return "local", "on this machine"
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            deployed = client.read_deployment_by_name(TRAIN_DEPLOYMENT)
        except ObjectNotFound:
            return "local", f"on this machine (the server has no {TRAIN_DEPLOYMENT} deployment)"
    return "pool", f"as {TRAIN_DEPLOYMENT} runs on work pool {deployed.work_pool_name}"
