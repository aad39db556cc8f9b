"""``flowerkit dashboard``: the Textual app that lists, follows, compares and launches runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.cells import cell_len
from textual.app import App
from textual.binding import Binding
from textual.content import Content
from textual.widgets import Header

from flowerkit.columns import shorten_middle
from flowerkit.tui.launcher import LaunchedRun
from flowerkit.tui.runs_list import RunsScreen
from flowerkit.tui.runs_reader import RunSummary

HEADER_SIDES = 18  # cells of the header's icon (8) and clock space (10), left and right of its title


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

    def format_title(self, title: str, sub_title: str) -> Content:
        """The header's title within the screen's width: the app's name goes first, then the subtitle (a run's
        name, the output directory) is shortened in the middle, never cut at its end."""
        room = self.size.width - HEADER_SIDES
        if sub_title and cell_len(f"{title} — {sub_title}") > room:
            return Content(shorten_middle(sub_title, room))
        return super().format_title(title, sub_title)

    def on_resize(self) -> None:
        # The header formats its title only when the title changes: fit it to the new width too, once App's own
        # handler (which runs after this one) has taken the new size.
        self.call_after_refresh(self._fit_titles)

    def _fit_titles(self) -> None:
        for header in self.screen.query(Header):
            header.query_one("HeaderTitle").update(header.format_title())

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
