"""``flowerkit serve``: serve the train and eval flows from one long-running process (no work pool).

Served deployments are named ``train/flowerkit-train-serve`` and ``eval/flowerkit-eval-serve``, never the names
prefect.yaml gives the work-pool deployments (``train/flowerkit-train``, ``eval/flowerkit-eval``): serving
under the same name would rewrite those deployments on the server (no pull step, no work pool, an entrypoint
of this checkout), so their runs would fail to find their code, and stopping serve would pause them. With
distinct names both ways coexist on one server (docs/prefect.md).
"""

from __future__ import annotations

from typing import Any

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.errors import MissingInputError

TRAIN_DEPLOYMENT = "flowerkit-train-serve"
EVAL_DEPLOYMENT = "flowerkit-eval-serve"


def require_server() -> str:
    """The Prefect API URL; serving needs a real server, others cannot reach an ephemeral one."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise MissingInputError(
            "flowerkit serve needs a running Prefect server, and PREFECT_API_URL is not set. Start one with "
            "`prefect server start` and point this shell at it: `prefect config set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api` (or export PREFECT_API_URL), then run flowerkit serve "
            "again. (Without a server, `flowerkit train` / `flowerkit eval` run the flows directly.)")
    return url


def served_deployments() -> list[Any]:
    """The two deployments this process serves, with the flows' typed ``config`` parameter."""
    from flowerkit.flows.eval import eval_flow
    from flowerkit.flows.train import train_flow

    return [
        train_flow.to_deployment(name=TRAIN_DEPLOYMENT, tags=["flowerkit", "train"], enforce_parameter_schema=True),
        eval_flow.to_deployment(name=EVAL_DEPLOYMENT, tags=["flowerkit", "eval"], enforce_parameter_schema=True),
    ]


def serve(
    limit: int | None = typer.Option(None, "--limit", min=1,
                                     help="Most flow runs executed at once (default: no limit)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of errors."),
) -> None:
    """Serve the train and eval flows as deployments flowerkit-train-serve and flowerkit-eval-serve until Ctrl-C."""
    with user_errors(debug):
        url = require_server()
        from prefect import serve as prefect_serve

        typer.echo(f"Serving train/{TRAIN_DEPLOYMENT} and eval/{EVAL_DEPLOYMENT} on {url}; Ctrl-C stops.")
        prefect_serve(*served_deployments(), limit=limit)
