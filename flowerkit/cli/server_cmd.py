"""``flowerkit server start | stop | status``: a local Prefect server in the background, used by later runs
(``flowerkit.flows.orchestration.local_server``)."""

from __future__ import annotations

import os

import typer

from flowerkit.artifacts.files import process_exists
from flowerkit.flows.orchestration.local_server import (
    DEFAULT_PORT,
    START_TIMEOUT_S,
    healthy,
    recorded,
    start_server,
    state_path,
    terminate,
)

app = typer.Typer(help="A local Prefect server in the background, used by later runs (docs/prefect.md).",
                  no_args_is_help=True)


@app.command("start")
def start(port: int = typer.Option(DEFAULT_PORT, "--port", help="Port on 127.0.0.1 (another free one if taken)."),
          timeout_s: float = typer.Option(START_TIMEOUT_S, "--timeout", help="Seconds to wait until it answers.")
          ) -> None:
    """Start `prefect server start` on 127.0.0.1 in the background; later runs report to it."""
    running = recorded()
    if running is not None and process_exists(running.pid) and healthy(running):
        typer.echo(f"A flowerkit Prefect server is already running: {running.ui_url} (pid {running.pid}).")
        return
    try:
        server = start_server(port, timeout_s)
    except RuntimeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Prefect server running: UI {server.ui_url}, API {server.api_url} (pid {server.pid}, log "
               f"{server.log}).\nflowerkit runs without PREFECT_API_URL now report to it; `flowerkit server stop` "
               "stops it.")


@app.command("stop")
def stop() -> None:
    """Stop the server `flowerkit server start` started; runs go back to an ephemeral server each."""
    server = recorded()
    if server is None:
        typer.echo("No flowerkit Prefect server is recorded; nothing to stop.")
        return
    if process_exists(server.pid):
        terminate(server.pid)
    state_path().unlink(missing_ok=True)
    typer.echo(f"Stopped the Prefect server on port {server.port} (pid {server.pid}).")


@app.command("status")
def status() -> None:
    """Whether the server is running, and where; exit 1 when it is not."""
    server = recorded()
    if server is None or not process_exists(server.pid):
        typer.echo("No flowerkit Prefect server is running: each run starts an ephemeral one "
                   "(`flowerkit server start` starts a shared one).")
        raise typer.Exit(1)
    answering = "answering" if healthy(server) else "not answering yet"
    shadowed = os.environ.get("PREFECT_API_URL")
    note = f"; this shell's PREFECT_API_URL={shadowed} takes precedence" if shadowed else ""
    typer.echo(f"Prefect server {answering}: UI {server.ui_url}, API {server.api_url} (pid {server.pid}){note}.")
