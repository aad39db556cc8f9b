"""The CLI reference (docs/reference/cli.md), generated from the Typer app itself: every command, sub-command,
argument and option that ``flowerkit ... --help`` lists, with the help's own words.

scripts/update_readme_options.py writes it; the docs site's build hook (docs/hooks/generated.py) and
tests/test_docs.py fail when the page and the commands drift apart. The page is never edited by hand between
its markers.
"""

from __future__ import annotations

from typing import Any

START, END = "<!-- cli-reference -->", "<!-- /cli-reference -->"
# The pages whose generated parts this module writes, relative to the repository root.
GENERATED_PAGES = ("docs/reference/cli.md",)


def command_tree() -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the ``flowerkit`` app as (argv path, click command), groups included, in the order
    ``--help`` lists them; the root is the empty path."""
    import typer

    from flowerkit.cli import app

    def walk(command: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        found = [(path, command)]
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                found += walk(sub, (*path, name))
        return found

    return walk(typer.main.get_command(app), ())


def listed_params(command: Any) -> list[Any]:
    """The arguments and options the command's ``--help`` lists (hidden ones, such as ``--no_<switch>``,
    are named in their switch's help instead)."""
    return [p for p in command.params if not getattr(p, "hidden", False)]


def _shown(text: str) -> str:
    """Help text as ``--help`` shows it: Typer reads it as Rich markup (``\\[mlflow]`` shows ``[mlflow]``)."""
    from rich.text import Text

    return Text.from_markup(text).plain


def _md(text: str) -> str:
    """Help text as Markdown on one line: ``|`` escaped (table cells), and outside `code` spans no raw HTML
    (``best-<step>.bin``) and no emphasis from ``*`` (``FLOWERKIT_*``, ``F**(L-i)``)."""
    parts = " ".join(text.split()).replace("|", "\\|").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("*", "\\*").replace("<", "&lt;")
    return "`".join(parts)


def _default_and_help(param: Any) -> tuple[str, str]:
    help_ = _shown(str(getattr(param, "help", "") or "").split("\f")[0].strip())
    help_ = " ".join(help_.split())
    head, sep, tail = help_.rpartition(" (default: ")
    if sep and tail.endswith(")"):  # options generated from the config models state their default in the help
        return tail[:-1], head
    if param.param_type_name == "argument":
        return ("required" if param.required else "optional"), help_
    if getattr(param, "is_flag", False):
        return ("true" if param.default is True else "false"), help_
    if param.required:
        return "required", help_
    default = param.default
    if isinstance(default, (list, tuple)):
        default = " ".join(map(str, default)) or None
    return ("none" if default is None else str(default)), help_


def options_table(command: Any) -> str:
    """The option table of one command: arguments first (as their metavar), then options (every spelling)."""
    lines = ["| option | default | description |", "| --- | --- | --- |"]
    for param in listed_params(command):
        default, help_ = _default_and_help(param)
        if param.param_type_name == "argument":
            names = f"`{param.metavar or param.name.upper()}`"
        else:
            names = ", ".join(f"`{o}`" for o in (*param.opts, *param.secondary_opts))
        lines.append(f"| {names} | `{default}` | {_md(help_)} |")
    return "\n".join(lines)


def _usage(path: tuple[str, ...], command: Any) -> str:
    pieces = ["flowerkit", *path]
    if getattr(command, "commands", None):
        pieces.append("COMMAND [ARGS]...")
        return " ".join(pieces)
    if any(p.param_type_name == "option" for p in listed_params(command)):
        pieces.append("[OPTIONS]")
    for param in listed_params(command):
        if param.param_type_name == "argument":
            metavar = param.metavar or param.name.upper()
            pieces.append(metavar if param.required else f"[{metavar}]")
    return " ".join(pieces)


def _help_paragraphs(command: Any) -> str:
    text = _shown(str(command.help or "").split("\f")[0].strip())
    return "\n\n".join(_md(p) for p in text.split("\n\n") if p.strip())


def cli_reference_markdown() -> str:
    """The generated part of docs/reference/cli.md: one section per command, in ``--help``'s order."""
    out: list[str] = []
    for path, command in command_tree():
        level = "#" * min(2 + max(len(path) - 1, 0), 4)
        out.append(f"{level} `{' '.join(('flowerkit', *path))}`")
        out.append("")
        if help_ := _help_paragraphs(command):
            out += [help_, ""]
        out += ["```text", _usage(path, command), "```", ""]
        subcommands = [(name, sub) for name, sub in getattr(command, "commands", {}).items() if not sub.hidden]
        if subcommands:
            out += ["| command | what it does |", "| --- | --- |"]
            for name, sub in subcommands:
                anchor = "-".join(("flowerkit", *path, name)).lower()
                summary = _md(_shown(sub.get_short_help_str(limit=300)))
                out.append(f"| [`{name}`](#{anchor}) | {summary} |")
            out.append("")
        if listed_params(command):
            out += [options_table(command), ""]
    return "\n".join(out).rstrip() + "\n"


def render_option_tables(text: str) -> str:
    """``text`` with the part between ``<!-- cli-reference -->`` and ``<!-- /cli-reference -->`` generated
    anew (text without the markers is returned unchanged)."""
    if START not in text or END not in text:
        return text
    head, rest = text.split(START, 1)
    return f"{head}{START}\n\n{cli_reference_markdown()}\n{END}{rest.split(END, 1)[1]}"
