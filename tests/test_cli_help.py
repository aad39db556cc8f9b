"""The CLI's help at 80 columns, and the option spellings it accepts (the real CLI, in a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import click
import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.cli.options import EXTRA_OPTIONS
from flowerkit.run.config import CONFIG_CLASSES


def option_names_at_80_columns(command: str) -> set[str]:
    """`flowerkit COMMAND --help` in a real process at 80 columns: no line wider, nothing cut short with an
    ellipsis; returns the option names it shows."""
    env = {k: v for k, v in os.environ.items() if k not in ("LINES", "TERMINAL_WIDTH")} | {"COLUMNS": "80"}
    shown = subprocess.run([sys.executable, "-m", "flowerkit", command, "--help"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and max(map(len, shown.stdout.splitlines())) <= 80
    return set(re.findall(r"(?<![\w-])--[a-z_0-9]+(?![\w-])", shown.stdout))


@pytest.mark.parametrize("flow", ["train", "eval"])
def test_help_at_80_columns_names_every_option_whole(flow: str) -> None:
    names = option_names_at_80_columns(flow)
    expected = {f"--{name}" for name in CONFIG_CLASSES[flow].model_fields}
    expected |= {option.param_decls[0] for _, option in EXTRA_OPTIONS.values()}
    assert expected <= names, expected - names


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command and sub-command of the Typer app, as (argv path, click command), the groups included."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


ALL_COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("path,command", ALL_COMMANDS, ids=[" ".join(p) or "flowerkit" for p, _ in ALL_COMMANDS])
def test_every_commands_help_shows_every_option_name_whole_at_80_columns(path, command) -> None:
    shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert max(map(len, lines)) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert "…" not in shown.output, shown.output
    words = set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*(?![\w-])", shown.output))
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            for name in (*param.opts, *param.secondary_opts):
                assert name in words, f"{' '.join(path)} --help does not show {name} whole:\n{shown.output}"


def _help(path: tuple[str, ...]) -> str:
    shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert shown.exit_code == 0, shown.output
    return shown.output


def _options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


TYPERS_OWN = {"--install-completion", "--show-completion"}  # Typer's, on the root command only
DECLARED = {name for _, command in ALL_COMMANDS for option in _options(command) for name in option.opts} - TYPERS_OWN


def test_help_shows_literal_text_as_written() -> None:
    """Typer reads help as Rich markup: an unescaped ``[mlflow]`` would vanish from ``flowerkit[mlflow]``."""
    for flow in ("train", "eval"):
        assert "pip install 'flowerkit[mlflow]'" in " ".join(_help((flow,)).replace("│", " ").split())
    for path, command in ALL_COMMANDS:
        for text in [command.help or "", *(getattr(param, "help", None) or "" for param in command.params)]:
            assert Text.from_markup(text).plain.count("[") == text.count("["), f"{' '.join(path)}: {text}"


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=[" ".join(p) or "flowerkit" for p, _ in ALL_COMMANDS])
def test_help_shows_one_underscore_spelling_and_no_type_for_switches(path) -> None:
    shown = _help(path)
    assert "<bool>" not in shown, shown  # a switch takes no value
    dashed = set(re.findall(r"(?<![\w-])--[a-z]+(?:-[a-z]+)+", shown)) - TYPERS_OWN
    assert not {name for name in dashed if name.replace("-", "_") in DECLARED}, shown
    assert all("-" not in name[2:] for name in DECLARED), sorted(n for n in DECLARED if "-" in n[2:])


@pytest.mark.parametrize("path,command", ALL_COMMANDS, ids=[" ".join(p) or "flowerkit" for p, _ in ALL_COMMANDS])
def test_every_option_parses_in_both_spellings(path, command) -> None:
    """``--output_dir`` and ``--output-dir`` alike, on every command (``--help`` ends the command once the
    options have parsed; an unknown spelling would end it with exit 2 first)."""
    for option in _options(command):
        value = [] if option.is_flag or option.name == "help" else ["1"]
        for name in (name for name in option.opts if name.startswith("--")):
            for spelling in {name, "--" + name[2:].replace("_", "-"), "--" + name[2:].replace("-", "_")}:
                result = CliRunner().invoke(app, [*path, spelling, *value, "--help"])
                assert result.exit_code == 0, f"{' '.join(path)} {spelling}: {result.output}"


@pytest.mark.parametrize("path,spellings", [(("runs", "list"), ("--output-dir", "--output_dir")),
                                            (("sweep",), ("--max_parallel", "--max-parallel"))])
def test_both_spellings_parse_though_the_help_lists_one(path, spellings, tmp_path) -> None:
    for spelling in spellings:
        if path == ("sweep",):
            result = CliRunner().invoke(app, [*path, str(tmp_path / "missing.yaml"), spelling, "2", "--dry_run"])
            assert "No such option" not in result.output and result.exit_code != 0  # the file is what is missing
        else:
            result = CliRunner().invoke(app, [*path, spelling, str(tmp_path)])
            assert result.exit_code == 0 and f"No runs under {tmp_path}" in result.output, result.output


def test_dashed_spellings_and_negations_still_parse(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "--name", "dashed", "--dataset", "flower102_synthetic",
                                      "--num-steps", "3", "--model-type", "testing", "--img-size", "32",
                                      "--no_prefer_mps", "--output-dir", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "3 steps" in result.output and "testing at 32 px" in result.output


def test_the_seed_scripts_forward_to_the_cli(tmp_path) -> None:
    """`python train.py ...` / `python eval.py ...` at the repo root take the CLI's flags."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    planned = subprocess.run([sys.executable, str(root / "train.py"), "--name", "seed", "--dataset",
                              "flower102_synthetic", "--model_type", "testing", "--img_size", "32", "--num_steps", "3",
                              "--output_dir", str(tmp_path), "--dry_run"], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "Plan for flowerkit train 'seed'" in planned.stdout and not (tmp_path / "seed").exists()
    helped = subprocess.run([sys.executable, str(root / "eval.py"), "--help"], capture_output=True, text=True,
                            timeout=120, env=os.environ | {"COLUMNS": "80"})
    assert helped.returncode == 0 and "Usage: eval.py [OPTIONS]" in helped.stdout and "--checkpoint" in helped.stdout
