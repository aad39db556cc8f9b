"""CLI options generated from the config models, so the CLI, Prefect and the TUI never disagree.

Every field becomes ``--field_name`` (the seed commands use underscores); ``--field-name`` is accepted too,
through ``CONTEXT_SETTINGS`` (dashes in option names read as underscores), so the help lists one spelling,
the underscore one, for every command, and fits 80 columns. A switch also gets ``--no_field_name``, hidden
from the help (its text names it). Help text and default come from the field, shown literally (Typer reads
help as Rich markup, which would drop ``[mlflow]`` from ``pip install 'flowerkit[mlflow]'``). Only options
the user actually typed are passed on, so the config's own precedence (CLI > --config YAML > FLOWERKIT_* env >
.env > defaults) holds.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic.fields import FieldInfo
from rich.markup import escape
from typer.core import TyperOption

from flowerkit.run.config import RunConfig
from flowerkit.fields import aliases, choices, default_text, option_type

EXTRA_OPTIONS = {
    "config_file": (Path | None, typer.Option(None, "--config", help="YAML file of option values (below CLI flags, "
                                                                     "above FLOWERKIT_* env and .env).")),
    "resume": (bool, typer.Option(False, "--resume", help="Continue an incomplete run of the same name from its "
                                                          "last checkpoint (same configuration only).")),
    "dry_run": (bool, typer.Option(False, "--dry_run", help="Validate everything and print the plan; write nothing.")),
    "quiet": (bool, typer.Option(False, "--quiet", help="Only warnings, errors and the final summary: no "
                                                        "progress display (by default a live bar in a terminal, a "
                                                        "line every 10 s otherwise) and no INFO log lines, "
                                                        "Prefect's included (run.log keeps them).")),
    "debug": (bool, typer.Option(False, "--debug", help="Show the full traceback of errors.")),
}


NEGATION = "no_"  # --no_<switch>


def _underscores(token: str) -> str:
    return token.replace("-", "_")


# For commands built by command_from_config: --num-steps reads as --num_steps (values are never touched).
CONTEXT_SETTINGS = {"token_normalize_func": _underscores}


def _no_type_for_switches() -> None:
    """A switch takes no value, yet Typer's help shows its type (``--quiet <bool>``): show none, for every
    command's switches and ``--help`` alike (Typer has no setting for it)."""
    value_type = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else value_type(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_type_for_switches()


def help_text(field: FieldInfo, note: str = "") -> str:
    extra = f" One of: {', '.join(choices(field))}." if choices(field) else ""
    alias = f" Alias: {', '.join('--' + a for a in aliases(field))}." if aliases(field) else ""
    return f"{field.description}{extra}{alias}{note} (default: {default_text(field)})"


def _option(name: str, field: FieldInfo) -> tuple[Any, Any]:
    kind = option_type(field.annotation)
    panel = (field.json_schema_extra or {}).get("group", "options").title()
    if kind is bool:
        help_ = help_text(field, f" --{NEGATION}{name} turns it off (over --config, env or .env).")
        return bool | None, typer.Option(None, f"--{name}", help=escape(help_), show_default=False,
                                         rich_help_panel=panel)
    flags = [f"--{n}" for n in (name, *aliases(field))]  # older names stay accepted (e.g. --pretrained_dir)
    return kind | None, typer.Option(None, *flags, help=escape(help_text(field)), show_default=False,
                                     rich_help_panel=panel)


def _negation(name: str) -> tuple[Any, Any]:
    return bool | None, typer.Option(None, f"--{NEGATION}{name}", hidden=True)


def command_from_config(cls: type[RunConfig], run: Callable[..., None]) -> Callable[..., None]:
    """A function whose signature Typer reads as one option per config field, plus the extra options.

    Register it with ``context_settings=CONTEXT_SETTINGS`` so the dashed spellings work.
    """
    params, negations = [], {}
    for name, field in cls.model_fields.items():
        annotation, default = _option(name, field)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))
        if option_type(field.annotation) is bool:
            negations[f"{NEGATION}{name}"] = name
    for negation in negations:
        annotation, default = _negation(negations[negation])
        params.append(inspect.Parameter(negation, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))
    for name, (annotation, default) in EXTRA_OPTIONS.items():
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation))

    def command(**kwargs: Any) -> None:
        extras = {name: kwargs.pop(name) for name in EXTRA_OPTIONS}
        if extras["quiet"]:
            from flowerkit.cli.quiet import quiet_console_logs

            quiet_console_logs()  # before the command imports Prefect, which configures its logging then
        turned_off = {negations[n] for n in negations if kwargs.pop(n)}
        given = {k: v for k, v in kwargs.items() if v is not None} | {name: False for name in turned_off}
        run(given, **extras)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = escape(cls.__doc__ or "")
    return command

