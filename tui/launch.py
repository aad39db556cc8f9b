"""The launch form: one field per option of TrainConfig/EvalConfig, grouped, and the CLI's pre-run validation.

``flow_form`` and ``form_raw_values`` also build and read the predict form (``predict_form.py``)."""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch

from flowerkit.fields import choices, default_text
from flowerkit.errors import FlowerkitError
from flowerkit.run.config import environment_values
from flowerkit.tui.launcher import FORM_CLASSES, field_kind, form_fields, form_values, group_of, launch, resumable

FLOWS = ("train", "eval")
BOOL_CHOICES = [("true", "true"), ("false", "false")]


def field_widget(flow: str, name: str, field: FieldInfo, default: str) -> Widget:
    """Select for choices and switches (blank: ``default``, as the CLI leaves an option out), Input otherwise.

    A switch is a true/false Select rather than a checkbox: it can also be left blank, so a value from
    --config, FLOWERKIT_* or .env is not overridden, and it draws with plain text in any terminal font.
    """
    widget_id = f"{flow}-{name}"
    options = BOOL_CHOICES if field_kind(field) is bool else [(c, c) for c in choices(field)]
    if options:
        return Select(options, prompt=f"default: {default}", id=widget_id, compact=True, tooltip=field.description)
    return Input(placeholder=default, id=widget_id, compact=True, tooltip=field.description)


def flow_form(flow: str) -> ComposeResult:
    """The flow's fields under one heading per group; a blank field's default is what the run would take,
    FLOWERKIT_* or .env included."""
    group, environment = None, environment_values(FORM_CLASSES[flow])
    for name, field in form_fields(flow):
        if group_of(field) != group:
            group = group_of(field)
            yield Static(group, classes="group")
        with Horizontal(classes="field"):
            yield Label(f"--{name}", classes="option")
            given = environment.get(name)
            yield field_widget(flow, name, field, default_text(field) if given is None else f"{given} (environment)")


def form_raw_values(screen: Screen, flow: str) -> dict[str, Any]:
    """What ``flow_form(flow)`` on ``screen`` holds, per option name (None: blank)."""
    values: dict[str, Any] = {}
    for name, field in form_fields(flow):
        widget = screen.query_one(f"#{flow}-{name}")
        if isinstance(widget, Select):
            value = None if widget.is_blank() else widget.value
            values[name] = value == "true" if value is not None and field_kind(field) is bool else value
        else:
            values[name] = widget.value
    return values


class LaunchScreen(Screen):
    """Dismissed with the started run's name (or None when cancelled)."""

    CSS_PATH = "launch.tcss"
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "launch", "Launch", priority=True)]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="flow-row"):
            yield Label("flow", classes="option")
            yield Select([(f, f) for f in FLOWS], value="train", allow_blank=False, id="flow", compact=True)
        with Horizontal(id="resume-row"):
            yield Label("--resume", classes="option")
            yield Switch(id="resume", tooltip="Continue this incomplete run from its last checkpoint.")
            yield Label("continue this incomplete run (same options)", id="resume-help")
        with VerticalScroll(id="form", can_focus=False):  # Tab goes from field to field, not to the scroller
            for flow in FLOWS:
                with Vertical(id=f"form-{flow}", classes="flow-form"):
                    yield from flow_form(flow)
        yield Static(id="error")
        with Horizontal(id="buttons"):
            yield Button("Launch", variant="primary", id="launch", compact=True)
            yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"new run in {self.app.output_dir}"
        self._show_flow("train")
        self.set_focus(None)  # so the first Tab lands on the first field of the form

    @property
    def flow(self) -> str:
        return str(self.query_one("#flow", Select).value)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "flow":
            self._show_flow(str(event.value))

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == f"{self.flow}-name":
            self._offer_resume()

    def _show_flow(self, flow: str) -> None:
        for other in FLOWS:
            self.query_one(f"#form-{other}").display = other == flow
        self._offer_resume()

    def _offer_resume(self) -> None:
        """--resume only applies to an existing run: offer it when the name is taken."""
        name = self.query_one(f"#{self.flow}-name", Input).value
        offered = resumable(self.app.output_dir, name)
        self.query_one("#resume-row").display = offered
        if not offered:
            self.query_one("#resume", Switch).value = False

    @property
    def resume(self) -> bool:
        return self.query_one("#resume", Switch).value

    def raw_values(self) -> dict[str, Any]:
        return form_raw_values(self, self.flow)

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
            started = launch(self.flow, form_values(self.flow, self.raw_values()), self.app.output_dir, self.resume)
        except FlowerkitError as exc:
            error.update(exc.message)
            error.add_class("shown")
            return
        self.app.track(started)
        self.notify(f"Started {started.flow} run '{started.name}'; output in {started.log_path}")
        self.dismiss(started.name)
