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
