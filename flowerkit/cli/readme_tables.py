"""The README's option tables, generated from the commands themselves (scripts/update_readme_options.py writes
them; tests/test_docs.py fails when they drift)."""

from __future__ import annotations

import typer

from flowerkit.cli.options import options_markdown

# Commands whose options are written by hand (typer.Option), not generated from a config model.
TYPER_TABLES = ("predict", "export")


def command_options_markdown(name: str) -> str:
    """The README's option table of the hand-written command ``name`` (arguments first, then options)."""
    from flowerkit.cli import app

    command = typer.main.get_command(app).commands[name]
    lines = ["| option | default | description |", "| --- | --- | --- |"]
    for param in command.params:
        help_ = " ".join(str(getattr(param, "help", "") or "").split()).replace("|", "\\|")
        if param.param_type_name == "argument":
            lines.append(f"| `{param.metavar or param.name.upper()}` | required | {help_} |")
            continue
        if param.is_flag:
            default = "false"
        else:
            default = "none" if param.default is None else str(param.default)
        names = " ".join(f"`{o}`" for o in param.opts)
        lines.append(f"| {names} | `{default}` | {help_} |")
    return "\n".join(lines)


def render_option_tables(readme: str) -> str:
    """Replace the text between ``<!-- options:train -->`` / ``<!-- /options:train -->`` (and eval, and the
    hand-written commands of ``TYPER_TABLES``)."""
    from flowerkit.config import CONFIG_CLASSES

    tables = {command: (lambda cls=cls: options_markdown(cls)) for command, cls in CONFIG_CLASSES.items()}
    tables |= {command: (lambda command=command: command_options_markdown(command)) for command in TYPER_TABLES}
    for command, table in tables.items():
        start, end = f"<!-- options:{command} -->", f"<!-- /options:{command} -->"
        if start in readme and end in readme:
            head, rest = readme.split(start, 1)
            readme = f"{head}{start}\n{table()}\n{end}{rest.split(end, 1)[1]}"
    return readme
