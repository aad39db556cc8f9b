"""Predict a folder with the model of the run being viewed: PredictRunConfig's options, the CLI's checks, then
``flowerkit predict --run RUN --name NAME -- FOLDER`` in the background, recorded as a predict run."""

from __future__ import annotations

from datetime import datetime, timezone

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Static

from flowerkit.errors import FlowerkitError
from flowerkit.tui.launch import flow_form, form_raw_values
from flowerkit.tui.launcher import LaunchedRun, form_values, launch_predict

FLOW = "predict"


def suggested_name(run: str, now: datetime | None = None) -> str:
    """A name no earlier predict run of ``run`` has: the run's name and the time, to the second (UTC)."""
    return f"{run}-predict-{(now or datetime.now(timezone.utc)).strftime('%Y%m%dT%H%M%SZ')}"


class PredictScreen(Screen):
    """Dismissed with the started predict run's name (or None when cancelled)."""

    CSS_PATH = ["launch.tcss", "predict_form.tcss"]
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "predict", "Predict", priority=True)]

    def __init__(self, run: str) -> None:
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"model: {self.run}'s selected checkpoint (best.bin, else ckpt.bin)", id="model")
        with VerticalScroll(id="form", can_focus=False):
            with Vertical(classes="flow-form"):
                yield from flow_form(FLOW)
        yield Static(id="error")
        with Horizontal(id="buttons"):
            yield Button("Predict", variant="primary", id="predict", compact=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"predict with {self.run} in {self.app.output_dir}"
        self.query_one(f"#{FLOW}-name", Input).value = suggested_name(self.run)
        folder = self.query_one(f"#{FLOW}-inputs", Input)
        folder.placeholder = "a folder of photos, or one image (required)"
        folder.focus()  # the one field without a default

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "predict":
            self.action_predict()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        if self.query_one("#predict", Button).disabled:  # the check runs; its result would start the run anyway
            self.notify("Checking the folder and the model; a moment.", severity="warning")
            return
        self.dismiss(None)

    def action_predict(self) -> None:
        button = self.query_one("#predict", Button)
        if button.disabled:  # already checking
            return
        button.disabled = True
        self._show_error("Checking the folder and loading the model ...", error=False)
        self._launch(form_values(FLOW, form_raw_values(self, FLOW)))

    @work(thread=True, exclusive=True, group="predict-launch")
    def _launch(self, values: dict) -> None:
        """Off the UI thread: checking the checkpoint loads it (and torch), which takes a second or more."""
        try:
            started = launch_predict(self.run, values, self.app.output_dir)
        except FlowerkitError as exc:
            self.app.call_from_thread(self._refused, exc.message)
            return
        self.app.call_from_thread(self._started, started)

    def _refused(self, message: str) -> None:
        self.query_one("#predict", Button).disabled = False
        self._show_error(message)

    def _started(self, started: LaunchedRun) -> None:
        self.app.track(started)
        self.notify(f"Started predict run '{started.name}'; output in {started.log_path}")
        self.dismiss(started.name)

    def _show_error(self, message: str, error: bool = True) -> None:
        shown = self.query_one("#error", Static)
        shown.update(message)
        shown.set_class(True, "shown")
        shown.set_class(not error, "busy")
