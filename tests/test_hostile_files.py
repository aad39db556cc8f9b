"""Every file or folder a command takes, fed hostile input: a file that is not UTF-8, a directory, a path that
does not exist. Each must end with exit 2 or 3 and one paragraph (or, where the input is legitimately
acceptable, succeed), never a traceback or exit 1 (issue 22).

The options are found by walking the Typer app, so a new path option cannot escape: every one must be listed
in ``INVOCATIONS`` (how to call its command cheaply) or in ``NOT_PROBED`` (why not).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowerkit.cli import app
from tests.conftest import SEED_FLAGS

runner = CliRunner()
NOT_UTF8 = b"seed: 1\n\xff\xfe\x80 not text\n"

# Parameters that hold a path although their type is text (their value names a file when it is not a
# built-in name): probed like the Path-typed ones.
TEXT_FILE_OPTIONS = {("train", "pretrained"), ("train", "tiny_train_subset"), ("train", "tiny_infer_subset"),
                     ("eval", "pretrained"), ("eval", "tiny_infer_subset"), ("fiftyone load", "run")}

# What a parameter is for: "in" files and folders are read (every hostile value fails); "out" folders and
# files are written (a directory or a missing path may be fine; a file where a folder belongs fails);
# "weights": a missing --pretrained file is documented as a warning and random initialisation.
ROLES = {"config_file": "in", "checkpoint": "in", "sweep_file": "in", "data_root": "in", "pretrained": "weights",
         "tiny_train_subset": "in", "tiny_infer_subset": "in", "run": "in", "onnx": "in",
         "plan_file": "in", "output_dir": "out", "tb_dir": "out", "fiftyone_dir": "out", "out": "out"}

NOT_PROBED = {
    ("eval", "pretrained"): "eval loads --checkpoint and never reads --pretrained (reported in issue 22)",
    ("dashboard", "output_dir"): "a folder starts the interactive UI (tests/test_tui.py); a file: the test below",
    ("data download", "out"): "downloads from the network",
    ("weights download", "out"): "downloads from the network",
    ("bench", "data_root"): "only with --dataset flower102, then as train's --data_root (probed there)",
    ("bench", "out"): "written after minutes of timing; its parent is checked like --output_dir",
    ("export-npz", "out"): "needs a finished run (tests/test_export_npz.py refuses an existing --out)",
}


def path_parameters() -> list[tuple[str, str, str]]:
    """(command, parameter, its flag or '' for an argument) of every path-taking parameter of every command."""
    found = []

    def walk(typer_app, prefix: str) -> None:
        for command in typer_app.registered_commands:
            name = f"{prefix}{command.name or command.callback.__name__}"
            for param in inspect.signature(command.callback).parameters.values():
                info = param.default
                is_path = "Path" in str(param.annotation)
                if not (is_path or (name, param.name) in TEXT_FILE_OPTIONS):
                    continue
                flags = [d for d in (getattr(info, "param_decls", None) or ()) if d.startswith("--")]
                is_argument = type(info).__name__ == "ArgumentInfo"
                flag = "" if is_argument else (flags[0] if flags else f"--{param.name}")
                found.append((name, param.name, flag))
        for group in typer_app.registered_groups:
            walk(group.typer_instance, f"{prefix}{group.name} ")

    walk(app, "")
    return found


@pytest.fixture
def hostile(tmp_path: Path) -> dict[str, Path]:
    """Fresh per test: a command that may create a missing path (data synth --out) must not feed the next."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "not-utf8.yaml").write_bytes(NOT_UTF8)
    (folder / "a-directory").mkdir()
    return {"not UTF-8": folder / "not-utf8.yaml", "a directory": folder / "a-directory",
            "missing": folder / "missing" / "nothing.yaml"}


def base_args(command: str, flowers_root: Path, checkpoint: Path, sweep: Path, param: str = "") -> list[str]:
    """A cheap, valid call of ``command`` (dry runs where there are some) in which ``param`` is what is read."""
    train = ["--dataset", "flower102", "--data_root", str(flowers_root), "--dry_run"]
    photo = str(next((flowers_root / "jpg").iterdir()))
    # predict reads one model source: the probed one (--output_dir is where --run is looked up).
    model = {"onnx": ["--onnx", "model.onnx"], "output_dir": ["--run", "nope"]}.get(param, ["--checkpoint",
                                                                                        str(checkpoint)])
    calls = {
        "train": ["train", "--name", "h", *train, *SEED_FLAGS],
        "eval": ["eval", "--name", "h", *train, "--checkpoint", str(checkpoint), "--tiny_infer_subset",
                 "flower102_tiny"],
        "sweep": ["sweep", "--dry_run", str(sweep)],
        "run": ["run", "plan.json"],
        "data synth": ["data", "synth", "--images-per-class", "1", "--size", "16"],
        "data check": ["data", "check", str(flowers_root)],
        "fiftyone load": ["fiftyone", "load", "nope"],
        "fiftyone compare": ["fiftyone", "compare", "nope", "nope-too"],
        "export-npz": ["export-npz", "nope"],
        "export": ["export", "nope", "--format", "onnx"],
        "predict": ["predict", photo, *model],
        "runs list": ["runs", "list"], "runs show": ["runs", "show", "nope"], "runs verify": ["runs", "verify", "nope"],
        "runs prune": ["runs", "prune", "--older-than-retention", "--dry-run"],
        "runs sync-mlflow": ["runs", "sync-mlflow", "nope"],
    }
    return calls[command]


def with_value(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag`` set to ``value`` (replacing a value given there), or ``value`` as the argument
    (the last word of ``args``)."""
    if not flag:
        return [*args[:-1], value]
    if flag in args:
        at = args.index(flag)
        return [*args[:at + 1], value, *args[at + 2:]]
    return [*args, flag, value]


def test_every_path_parameter_is_probed_or_excused() -> None:
    params = path_parameters()
    assert len(params) >= 25  # the walk must find the options, or the test below proves nothing
    unknown = [(c, p) for c, p, _ in params if (c, p) not in NOT_PROBED and p not in ROLES]
    assert not unknown, f"add these to ROLES or NOT_PROBED: {unknown}"


@pytest.fixture(scope="module")
def fixtures_for_calls(flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.test_fail_closed_inputs import write_checkpoint

    folder = tmp_path_factory.mktemp("calls")
    checkpoint = write_checkpoint(folder / "ckpt.bin")
    sweep = folder / "s.yaml"
    sweep.write_text(json.dumps({"name": "s", "base": {"dataset": "flower102", "data_root": str(flowers_root),
                                                       "model_type": "testing", "img_size": 32,
                                                       "output_dir": str(folder / "out")},
                                 "grid": {"seed": [1]}}))
    return checkpoint, sweep


@pytest.mark.parametrize("command, param, flag", [p for p in path_parameters() if p[:2] not in NOT_PROBED])
@pytest.mark.parametrize("kind", ["not UTF-8", "a directory", "missing"])
def test_hostile_path_gives_one_paragraph_and_exit_2_or_3(
        command: str, param: str, flag: str, kind: str, hostile: dict[str, Path], flowers_root: Path,
        fixtures_for_calls: tuple[Path, Path], workdir: Path) -> None:
    checkpoint, sweep = fixtures_for_calls
    args = with_value(base_args(command, flowers_root, checkpoint, sweep, param), flag, str(hostile[kind]))
    result = runner.invoke(app, args)
    # Prefect's console log handler keeps the stream of an earlier CliRunner call, which is closed by now:
    # logging's own "--- Logging error ---" report of that is the harness's, not the command's output.
    output = result.output.split("--- Logging error ---")[0]
    assert "Traceback" not in output and "Unexpected error" not in output, output
    assert result.exit_code != 1, output
    if ROLES[param] == "in" or (ROLES[param] == "weights" and kind != "missing") or kind == "not UTF-8":
        assert result.exit_code in (2, 3), output
    if result.exit_code:
        assert output.count("Error:") == 1, output


@pytest.mark.parametrize("damaged", ["labelmap.json", "run_record.json", "fiftyone/predictions.jsonl"])
def test_fiftyone_load_names_a_file_that_is_not_utf8(tmp_path: Path, damaged: str) -> None:
    run = tmp_path / "run"
    (run / "fiftyone").mkdir(parents=True)
    (run / "labelmap.json").write_text(json.dumps({"0": "a", "1": "b"}))
    (run / "run_record.json").write_text(json.dumps({"name": "run"}))
    (run / "fiftyone" / "predictions.jsonl").write_text("")
    (run / damaged).write_bytes(b'{"0": "\xff"}\n')
    result = runner.invoke(app, ["fiftyone", "load", str(run)])
    assert result.exit_code == 2, result.output
    assert f"{(run / damaged).resolve()} is not UTF-8 text" in " ".join(result.output.split())


def test_runs_commands_survive_a_run_whose_files_are_not_utf8(tmp_path: Path) -> None:
    """`runs show` of a run whose config_resolved.yaml is not UTF-8 ended with exit 1 (UnicodeDecodeError)."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "run_record.json").write_text(json.dumps({"name": "r", "flow": "train", "stage_status": "complete",
                                                     "started_utc": "2026-01-01T00:00:00Z", "artifact_index": []}))
    (run / "config_resolved.yaml").write_bytes(b"seed: \xff\n")
    shown = runner.invoke(app, ["runs", "show", "r", "--output-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "is missing or unreadable" in " ".join(shown.output.split()), shown.output
    assert runner.invoke(app, ["runs", "list", "--output-dir", str(tmp_path)]).exit_code == 0
    (run / "run_record.json").write_bytes(b'{"name": "\xff"}')
    for args in (["show", "r"], ["verify", "r"]):
        result = runner.invoke(app, ["runs", *args, "--output-dir", str(tmp_path)])
        assert result.exit_code == 2 and "is not valid JSON" in " ".join(result.output.split()), result.output


def test_dashboard_refuses_an_output_dir_that_is_a_file(tmp_path: Path) -> None:
    """It opened the terminal UI on a file, showing no runs."""
    (tmp_path / "f").write_bytes(NOT_UTF8)
    result = runner.invoke(app, ["dashboard", "--output-dir", str(tmp_path / "f")])
    assert result.exit_code == 2 and "is a file, not a folder of runs" in " ".join(result.output.split())
