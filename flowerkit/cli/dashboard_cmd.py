"""``flowerkit dashboard``: the terminal dashboard of the runs under an output directory."""

from __future__ import annotations

from pathlib import Path

import typer


def dashboard(
    output_dir: Path = typer.Option(Path("output"), "--output_dir",
                                    help="Root folder of the runs to show (runs started here land there too)."),
    refresh: float = typer.Option(1.0, "--refresh", min=0.2, help="Seconds between re-reads of the run files."),
) -> None:
    """Follow, compare and launch runs in a terminal UI (keys in the footer; q quits)."""
    from flowerkit.cli.errors import user_errors
    from flowerkit.cli.runs_cmd import check_output_dir

    with user_errors():
        check_output_dir(output_dir)  # a file there is a wrong path, not an empty list of runs
    from flowerkit.tui.app import DashboardApp  # Textual is imported only for this command

    DashboardApp(output_dir, refresh_s=refresh).run()
