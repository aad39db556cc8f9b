"""The CLI's help at 80 columns, and the option spellings it accepts (the real CLI, in a subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.cli.options import EXTRA_OPTIONS
from flowerkit.config import CONFIG_CLASSES


@pytest.mark.parametrize("flow", ["train", "eval"])
def test_help_at_80_columns_names_every_option_whole(flow: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LINES", "TERMINAL_WIDTH")} | {"COLUMNS": "80"}
    shown = subprocess.run([sys.executable, "-m", "flowerkit", flow, "--help"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout and max(map(len, shown.stdout.splitlines())) <= 80
    names = set(re.findall(r"(?<![\w-])--[a-z_0-9]+(?![\w-])", shown.stdout))
    expected = {f"--{name}" for name in CONFIG_CLASSES[flow].model_fields}
    expected |= {option.param_decls[0] for _, option in EXTRA_OPTIONS.values()}
    assert expected <= names, expected - names


def test_dashed_spellings_and_negations_still_parse(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", "--name", "dashed", "--dataset", "flower102_synthetic",
                                      "--num-steps", "3", "--model-type", "testing", "--img-size", "32",
                                      "--no_prefer_mps", "--output-dir", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "3 steps" in result.output and "testing at 32 px" in result.output
