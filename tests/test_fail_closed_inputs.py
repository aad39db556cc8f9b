"""Fail closed on bad inputs: every bad value, file or environment stops a run with exit 2 or 3 and one
paragraph naming what is wrong and where it came from, before anything is written (issue 11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.config import CONFIG_CLASSES, load_config
from flowerkit.errors import ConfigError
from tests.conftest import SEED_FLAGS

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def seed_args(flowers_root: Path, name: str = "run", *extra: str) -> list[str]:
    return ["train", "--name", name, "--dataset", "flower102", "--data_root", str(flowers_root), *SEED_FLAGS, *extra]


def options_of(kind: type) -> list[tuple[str, str]]:
    """(flow, option) for every option of both configs whose type is ``kind`` (Optional included)."""
    return [(flow, name) for flow, cls in CONFIG_CLASSES.items() for name, field in cls.model_fields.items()
            if field.annotation in (kind, kind | None)]


# --- configuration values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flow, option", options_of(float))
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", float("inf"), float("nan")])
def test_every_float_option_must_be_finite(workdir: Path, flow: str, option: str, value: object) -> None:
    extra = {"checkpoint": "ckpt.bin"} if flow == "eval" else {}
    with pytest.raises(ConfigError) as caught:
        load_config(CONFIG_CLASSES[flow], {"name": "f", **extra, option: value})
    assert f"--{option}: Input should be a finite number" in caught.value.message


@pytest.mark.parametrize("flow, option", options_of(int))
@pytest.mark.parametrize("value", [10**30, -(10**30), 2**63])
def test_every_int_option_rejects_huge_values(workdir: Path, flow: str, option: str, value: int) -> None:
    extra = {"checkpoint": "ckpt.bin"} if flow == "eval" else {}
    with pytest.raises(ConfigError) as caught:
        load_config(CONFIG_CLASSES[flow], {"name": "f", **extra, option: value})
    assert f"--{option}:" in caught.value.message


def test_float_and_int_options_exist() -> None:
    """The property tests above must not pass vacuously."""
    assert len(options_of(float)) == 3 and len(options_of(int)) >= 12


@pytest.mark.parametrize("seed, ok", [(0, True), (2**32 - 1, True), (-1, False), (2**32, False)])
def test_seed_range_is_what_numpy_accepts(workdir: Path, seed: int, ok: bool) -> None:
    import numpy as np

    if ok:
        np.random.seed(load_config(CONFIG_CLASSES["train"], {"name": "s", "seed": seed}).seed)
    else:
        with pytest.raises(ConfigError, match="--seed"):
            load_config(CONFIG_CLASSES["train"], {"name": "s", "seed": seed})


def test_a_bad_flag_value_exits_2_through_the_cli(flowers_root: Path, workdir: Path) -> None:
    result = runner.invoke(app, seed_args(flowers_root, "x", "--learning_rate", "1e999", "--dry_run"))
    assert result.exit_code == 2, result.output
    assert "--learning_rate: Input should be a finite number" in flat(result.output)
    assert not (workdir / "output").exists()


def test_each_bad_value_names_where_it_came_from(flowers_root: Path, workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / ".env").write_text("FLOWERKIT_WEIGHT_DECAY=inf\n")
    monkeypatch.setenv("FLOWERKIT_SEED", "-3")
    (workdir / "c.yaml").write_text("max_grad_norm: .nan\n")
    result = runner.invoke(app, seed_args(flowers_root, "x", "--config", "c.yaml", "--learning_rate", "nan"))
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert f"--weight_decay (set by the .env file {workdir / '.env'})" in text
    assert "--seed (set by the environment variable FLOWERKIT_SEED)" in text
    assert "--max_grad_norm (set by the config file c.yaml)" in text
    assert "--learning_rate: Input should be a finite number" in text


def test_non_utf8_config_and_dotenv_files_exit_2_naming_the_file(flowers_root: Path, workdir: Path) -> None:
    (workdir / "c.yaml").write_bytes(b"seed: 1\n\xff\xfe\n")
    result = runner.invoke(app, seed_args(flowers_root, "x", "--config", "c.yaml", "--dry_run"))
    assert result.exit_code == 2 and f"{workdir / 'c.yaml'} is not UTF-8" in flat(result.output), result.output
    (workdir / ".env").write_bytes(b"FLOWERKIT_SEED=\xff\n")
    result = runner.invoke(app, seed_args(flowers_root, "x", "--dry_run"))
    assert result.exit_code == 2 and f"{workdir / '.env'} is not UTF-8" in flat(result.output), result.output


def test_config_that_is_a_directory_says_so(flowers_root: Path, workdir: Path) -> None:
    (workdir / "conf").mkdir()
    result = runner.invoke(app, seed_args(flowers_root, "x", "--config", "conf", "--dry_run"))
    assert result.exit_code == 2 and "--config conf is a directory" in flat(result.output), result.output


# --- run names in `flowerkit runs` ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "verify"])
@pytest.mark.parametrize("name", ["../x", "/etc", "a/b", ".hidden", "..", "-x", "x" * 101])
def test_runs_commands_refuse_names_that_are_not_run_names(tmp_path: Path, command: str, name: str) -> None:
    # /etc holds no run_record.json, so the old code reached outside --output-dir and said "no run named".
    result = runner.invoke(app, ["runs", command, "--output-dir", str(tmp_path), "--", name])
    assert result.exit_code == 2, result.output
    assert "is not a run name" in flat(result.output)
