"""``flowerkit dashboard``: the Textual app that lists, follows, compares and launches runs."""

from __future__ import annotations

import asyncio
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

    def track(self, launched: LaunchedRun) -> None:
        """Show a run started here, and reap its process when it ends (else it stays a zombie until we quit)."""
        self.launched[launched.name] = launched
        self.run_worker(self._reap(launched), group="launched", exit_on_error=False)

    async def _reap(self, launched: LaunchedRun) -> None:
        # Polling, not a thread blocked in wait(): quitting cancels this at once, and the detached run goes on.
        while launched.process.poll() is None:  # poll() reaps the child once it has exited
            await asyncio.sleep(0.5)
        code = launched.process.returncode
        self.notify(f"{launched.flow} run '{launched.name}' ended with exit code {code}",
                    severity="information" if code == 0 else "error")

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
