"""CLI options generated from the config models, so the CLI, Prefect and the TUI never disagree.

Every field becomes ``--field_name`` and ``--field-name`` (the seed commands use underscores); its help
text and default come from the field. Only options the user actually typed are passed on, so the
config's own precedence (CLI > --config YAML > FLOWERKIT_* env > .env > defaults) holds.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic.fields import FieldInfo

from flowerkit.config import RunConfig

EXTRA_OPTIONS = {
    "config_file": (Path | None, typer.Option(None, "--config", help="YAML file of option values (below CLI flags, "
                                                                     "above FLOWERKIT_* env and .env).")),
    "resume": (bool, typer.Option(False, "--resume", help="Continue an incomplete run of the same name from its "
                                                          "last checkpoint (same configuration only).")),
    "dry_run": (bool, typer.Option(False, "--dry_run", "--dry-run", help="Validate everything and print the plan; "
                                                                         "write nothing.")),
    "quiet": (bool, typer.Option(False, "--quiet", help="No progress display (by default: a live bar in a "
                                                        "terminal, a line every 10 s otherwise).")),
    "debug": (bool, typer.Option(False, "--debug", help="Show the full traceback of errors.")),
}


def option_type(annotation: Any) -> Any:
    """``Path | None`` -> Path; ``Literal[...]`` -> str (pydantic validates and names the choices)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return str
    if args and typing.get_origin(annotation) is not Literal:
        return option_type(args[0])
    return annotation


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    return "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)


def choices(field: FieldInfo) -> list[str]:
    annotation = field.annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is Literal:
            return [str(c) for c in typing.get_args(candidate)]
    return []


def help_text(field: FieldInfo) -> str:
    extra = f" One of: {', '.join(choices(field))}." if choices(field) else ""
    return f"{field.description}{extra} (default: {default_text(field)})"


def _option(name: str, field: FieldInfo) -> tuple[Any, Any]:
    kind = option_type(field.annotation)
    under, dash = f"--{name}", f"--{name.replace('_', '-')}"
    panel = (field.json_schema_extra or {}).get("group", "options").title()
    if kind is bool:
        # Both spellings switch it on; the negation (to override a YAML/env value) keeps one spelling,
        # so the help's left column stays narrow.
        flags = [f"{under}/--no_{name}"] + ([] if under == dash else [dash])
        return bool | None, typer.Option(None, *flags, help=help_text(field), show_default=False,
                                         rich_help_panel=panel)
    spellings = [under] if under == dash else [under, dash]
    return kind | None, typer.Option(None, *spellings, help=help_text(field), show_default=False,
                                     rich_help_panel=panel)


def command_from_config(cls: type[RunConfig], run: Callable[..., None]) -> Callable[..., None]:
    """A function whose signature Typer reads as one option per config field, plus the extra options."""
    params = []
    for name, field in cls.model_fields.items():
        annotation, default = _option(name, field)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
    for name, (annotation, default) in EXTRA_OPTIONS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))

    def command(**kwargs: Any) -> None:
        extras = {name: kwargs.pop(name) for name in EXTRA_OPTIONS}
        given = {k: v for k, v in kwargs.items() if v is not None}
        run(given, **extras)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = cls.__doc__
    return command


def options_markdown(cls: type[RunConfig]) -> str:
    """The README's option table for ``cls`` (a test keeps the README in step with this)."""
    lines = ["| option | default | description |", "| --- | --- | --- |"]
    for name, field in cls.model_fields.items():
        desc = help_text(field).rsplit(" (default:", 1)[0].replace("|", "\\|")
        lines.append(f"| `--{name}` | `{default_text(field)}` | {desc} |")
    for name, (_, option) in EXTRA_OPTIONS.items():
        lines.append(f"| `{option.param_decls[0]}` | | {option.help} |")
    return "\n".join(lines)


def render_option_tables(readme: str) -> str:
    """Replace the text between ``<!-- options:train -->`` / ``<!-- /options:train -->`` (and eval)."""
    from flowerkit.config import CONFIG_CLASSES

    for command, cls in CONFIG_CLASSES.items():
        start, end = f"<!-- options:{command} -->", f"<!-- /options:{command} -->"
        if start in readme and end in readme:
            head, rest = readme.split(start, 1)
            readme = f"{head}{start}\n{options_markdown(cls)}\n{end}{rest.split(end, 1)[1]}"
    return readme
