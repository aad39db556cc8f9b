"""``flowerkit bench`` runs end to end on a small configuration (no timing assertions: numbers are machine-bound)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flowerkit.bench import BenchSpec, format_result, run_bench
from flowerkit.cli.bench_cmd import bench

PHASES = ("compute_only", "pipeline_only", "end_to_end")
SMALL = ["--model_type", "testing", "--img_size", "32", "--batch_size", "4", "--steps", "2", "--warmup", "1",
         "--repeats", "1"]


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("bench")(bench)
    app.command("other")(lambda: None)  # two commands, so "bench" is addressed by name as in flowerkit
    return app


def test_run_bench_measures_every_phase(flowers_root: Path, tmp_path: Path) -> None:
    spec = BenchSpec(model_type="testing", img_size=32, batch_size=4, eval_batch_size=8, steps=2, warmup=1,
                     repeats=2, dataset="flower102", data_root=flowers_root)
    result = run_bench(spec, cache_dir=tmp_path)
    assert result["precision"] == "fp32" and result["machine"]["device"] == "cpu"
    for name, per_step in (("train", 4), ("eval", 8)):
        part = result[name]
        for phase in PHASES:
            assert part[phase]["images"] == 2 * per_step
            assert part[phase]["seconds"] > 0 and part[phase]["images_per_second"] > 0
            assert part[phase]["peak_memory_mb"] > 0
            assert len(part[phase]["all_rates"]) == 2 and part[phase]["images_per_second"] == pytest.approx(
                max(part[phase]["all_rates"]), abs=0.01)
        ratio = part["end_to_end"]["images_per_second"] / part["compute_only"]["images_per_second"]
        assert part["end_to_end_over_compute"] == pytest.approx(ratio, rel=1e-3, abs=1e-4)  # written to 4 places
    assert json.loads(json.dumps(result)) == result  # JSON-able as written
    table = format_result(result)
    assert "e2e/compute" in table and "train" in table and "eval" in table


def test_cli_writes_the_result_json(cli: typer.Typer, flowers_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = CliRunner().invoke(cli, ["bench", *SMALL, "--pipeline", "pil", "--data_root", str(flowers_root),
                                    "--out", str(out)])
    assert done.exit_code == 0, done.output
    result = json.loads(out.read_text())
    assert result["format"] == "flowerkit-bench" and result["spec"]["pipeline"] == "pil"
    assert result["spec"]["dataset"] == "flower102"  # --data_root implies the real layout
    assert "end to end" in done.stdout and str(out) in done.stdout


@pytest.mark.parametrize("bad, words", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--pipeline", "dali"], "--pipeline must be one of cached, pil"),
    (["--precision", "bf16"], "--precision bf16 needs a CUDA GPU"),
    (["--img_size", "40"], "not a multiple of"),
])
def test_bad_options_are_one_clear_error(cli: typer.Typer, flowers_root: Path, tmp_path: Path, bad: list[str],
                                         words: str) -> None:
    args = ["bench", *SMALL, "--data_root", str(flowers_root), "--out", str(tmp_path / "r.json"), *bad]
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    assert words in done.output
    assert not (tmp_path / "r.json").exists()
