"""The launch form: one input per config field (built from TrainConfig/EvalConfig), the CLI's validation."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Header,
    Input,
    Label,
    Select,
    Static,
)

from flowerkit.fields import choices, default_text
from flowerkit.errors import FlowerkitError
from flowerkit.tui.launcher import field_kind, form_fields, form_values, launch

FLOWS = ("train", "eval")


def field_widget(flow: str, name: str, field) -> Widget:
    """Select for a fixed set of choices, Checkbox for a switch, Input otherwise; blank means the default."""
    widget_id = f"{flow}-{name}"
    options = choices(field)
    if options:
        return Select([(c, c) for c in options], prompt=f"default: {default_text(field)}", id=widget_id,
                      compact=True, tooltip=field.description)
    if field_kind(field) is bool:
        return Checkbox(value=bool(field.get_default()), id=widget_id, compact=True, tooltip=field.description)
    return Input(placeholder=default_text(field), id=widget_id, compact=True, tooltip=field.description)


class LaunchScreen(Screen):
    """Dismissed with the started run's name (or None when cancelled)."""

    CSS_PATH = "launch.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "launch", "Launch", priority=True)]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="flow-row"):
            yield Label("flow", classes="option")
            yield Select([(f, f) for f in FLOWS], value="train", allow_blank=False, id="flow", compact=True)
        with VerticalScroll(id="form"):
            for flow in FLOWS:
                with Vertical(id=f"form-{flow}", classes="flow-form"):
                    for name, field in form_fields(flow):
                        with Horizontal(classes="field"):
                            yield Label(f"--{name}", classes="option")
                            yield field_widget(flow, name, field)
        yield Static(id="error")
        with Horizontal(id="buttons"):
            yield Button("Launch", variant="primary", id="launch", compact=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"new run in {self.app.output_dir}"
        self._show_flow("train")

    @property
    def flow(self) -> str:
        return str(self.query_one("#flow", Select).value)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "flow":
            self._show_flow(str(event.value))

    def _show_flow(self, flow: str) -> None:
        for other in FLOWS:
            self.query_one(f"#form-{other}").display = other == flow

    def raw_values(self) -> dict[str, Any]:
        """What the form holds, per option name, for the chosen flow."""
        values: dict[str, Any] = {}
        for name, _ in form_fields(self.flow):
            widget = self.query_one(f"#{self.flow}-{name}")
            if isinstance(widget, Select):
                values[name] = None if widget.is_blank() else widget.value
            else:
                values[name] = widget.value
        return values

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "launch":
            self.action_launch()
        else:
            self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_launch(self) -> None:
        error = self.query_one("#error", Static)
        try:
            started = launch(self.flow, form_values(self.flow, self.raw_values()), self.app.output_dir)
        except FlowerkitError as exc:
            error.update(exc.message)
            error.add_class("shown")
            return
        self.app.launched[started.name] = started
        self.notify(f"Started {started.flow} run '{started.name}'; output in {started.log_path}")
        self.dismiss(started.name)
