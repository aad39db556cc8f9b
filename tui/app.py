"""``flowerkit dashboard``: the Textual app that lists, follows, compares and launches runs."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from flowerkit.tui.launcher import LaunchedRun
from flowerkit.tui.runs_list import RunsScreen
from flowerkit.tui.runs_reader import RunSummary


class DashboardApp(App):
    """Screens: the runs list (home), a run's view, compare, and the launch form."""

    TITLE = "flowerkit dashboard"
    CSS_PATH = "app.tcss"
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(self, output_dir: Path, refresh_s: float = 1.0) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self.refresh_s = refresh_s  # how often the list and the open run are re-read
        self.launched: dict[str, LaunchedRun] = {}

    def get_default_screen(self) -> RunsScreen:
        return RunsScreen()

    def with_launched(self, runs: list[RunSummary]) -> list[RunSummary]:
        """Runs started here whose run record does not exist yet, shown as starting (or failed, if they died)."""
        present = {run.name for run in runs}
        extra = []
        for name, launched in self.launched.items():
            if name in present:
                continue
            code = launched.process.poll()
            status = "starting" if code is None else "failed"
            extra.append(RunSummary(name=name, path=self.output_dir / name, flow=launched.flow, status=status,
                                    started_utc=launched.started_utc))
        return runs + extra
