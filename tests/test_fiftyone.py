"""FiftyOne runtime and `flowerkit fiftyone load`, checked through FiftyOne's own API.

The `run_dir` fixture is a real tiny training run made by the train flow; every expectation below is
read back from the run's own files (predictions.jsonl, per_class_metrics.json,
labelmap.json, run_record.json).

The database is a private mongod on a temporary folder (FIFTYONE_DATABASE_DIR), stopped at the end
of the session; ~/.fiftyone and any FiftyOne database already running are never touched.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from flowerkit.errors import FlowerkitError
from flowerkit.fiftyone.load import DatasetExistsError, load_run
from flowerkit.fiftyone.runtime import (
    import_fiftyone,
    private_database,
)
from tests.servers import default_sigint

# FiftyOne is imported by the fixtures, not here: every pytest-xdist process collects this file, and only one
# runs it.
pytestmark = [pytest.mark.fiftyone,
              pytest.mark.skipif(find_spec("fiftyone") is None, reason="FiftyOne is not installed (make setup)")]

# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def fo(tmp_path_factory):
    """FiftyOne, connected to a private database in a temporary folder for this test session."""
    home = tmp_path_factory.mktemp("fiftyone")
    saved = {k: os.environ.get(k) for k in ("FIFTYONE_DATABASE_DIR", "FIFTYONE_DO_NOT_TRACK")}
    os.environ["FIFTYONE_DATABASE_DIR"] = str(home / "db")
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    with private_database(home / "db"):
        module = import_fiftyone()
        assert Path(module.config.database_dir) == home / "db"
        yield module
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def run_dir(prefect_harness, flowers_root: Path, tmp_path_factory) -> Path:
    """A real finished run: the train flow on the tiny subset (12 evaluated samples, logits exported)."""
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.flows.train import train_flow

    config = load_config(TrainConfig, dict(
        name="tiny-run", dataset="flower102", data_root=flowers_root, model_type="testing", img_size=32,
        num_steps=20, eval_every=10, train_batch_size=8, eval_batch_size=6, tiny_train_subset="flower102_tiny",
        tiny_infer_subset="flower102_tiny", export_logits=True, output_dir=tmp_path_factory.mktemp("output")))
    return Path(train_flow(config).run_dir)


# --------------------------------------------------------------------------------------------------
# Helpers reading the run's own files


def _rows(run: Path) -> list[dict]:
    lines = (run / "fiftyone" / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _labelmap(run: Path) -> list[str]:
    raw = json.loads((run / "labelmap.json").read_text())
    return [raw[str(i)] for i in range(len(raw))]


@pytest.fixture()
def broken_run(run_dir, tmp_path) -> Path:
    """A writable copy of the run, for tests that damage it."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


# --------------------------------------------------------------------------------------------------
# Runtime


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
                    reason="only Linux x86_64's mongod needs OpenSSL 1.1 from the virtual environment")
@pytest.mark.slow  # real processes, each importing torch
def test_plain_python_starts_the_database_with_no_library_path(tmp_path):
    """`import fiftyone; fo.list_datasets()` in this environment, with no LD_LIBRARY_PATH set by anyone.

    mongod itself is run too: FiftyOne attaches to a database another process already started, which
    would hide a mongod that cannot start.
    """
    from flowerkit.fiftyone.runtime import find_mongod

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "home"),
           "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), "FIFTYONE_DO_NOT_TRACK": "true"}
    mongod = subprocess.run([str(find_mongod()), "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert mongod.returncode == 0, mongod.stderr
    listed = subprocess.run([sys.executable, "-c", "import fiftyone as fo; print(fo.list_datasets())"], env=env,
                            capture_output=True, text=True, timeout=180)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert listed.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------------------------------
# load_run


def test_load_run_builds_dataset_that_matches_the_run(fo, run_dir):
    rows = _rows(run_dir)
    classes = _labelmap(run_dir)
    per_class = json.loads((run_dir / "fiftyone" / "per_class_metrics.json").read_text())
    record = json.loads((run_dir / "run_record.json").read_text())

    result = load_run(run_dir, dataset_name="fk-test-match", overwrite=True)
    assert result.dataset_name == "fk-test-match"

    dataset = fo.load_dataset("fk-test-match")
    assert dataset.persistent
    assert len(dataset) == len(rows) == result.num_samples
    assert dataset.info["flowerkit_run_name"] == record["name"]
    assert dataset.info["config_hash"] == record["config_hash"]
    assert dataset.info["split"] == ",".join(sorted({r["split"] for r in rows}))

    by_id = {s["sample_id"]: s for s in dataset.select_fields(["sample_id", "image_id", "split", "ground_truth",
                                                                "predictions", "eval"])}
    assert set(by_id) == {r["sample_id"] for r in rows}
    for row in rows:
        sample = by_id[row["sample_id"]]
        assert Path(sample.filepath).is_file()
        assert sample.filepath == row["filepath"]
        assert sample["image_id"] == row["image_id"]
        assert sample["split"] == row["split"]
        assert sample.ground_truth.label == classes[row["label"]] == row["label_name"]
        assert sample.predictions.label == classes[row["prediction"]] == row["prediction_name"]
        assert sample.predictions.confidence == pytest.approx(row["confidence"])
        if "logits" in row:
            assert list(sample.predictions.logits) == pytest.approx(row["logits"])
        assert sample["eval"] == (row["label"] == row["prediction"])

    # FiftyOne's evaluation against the rows and against the run's own per-class metrics.
    row_accuracy = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    assert result.accuracy == pytest.approx(row_accuracy)
    assert result.accuracy == pytest.approx(per_class["accuracy"], abs=1e-6)  # the run rounds to 6 places
    assert dataset.get_evaluation_info("eval").key == "eval"
    stored = dataset.load_evaluation_results("eval")
    assert stored.metrics()["accuracy"] == pytest.approx(row_accuracy)
    occurring = [c for c in per_class["classes"] if c["class_name"] in result.classes]
    assert {c["class_name"] for c in per_class["classes"] if c["support"]} <= set(result.classes)
    for c in occurring:
        fo_row = result.report[c["class_name"]]
        assert fo_row["support"] == c["support"], c["class_name"]
        assert fo_row["precision"] == pytest.approx(c["precision"], abs=1e-6), c["class_name"]
        assert fo_row["recall"] == pytest.approx(c["recall"], abs=1e-6), c["class_name"]
        assert fo_row["f1-score"] == pytest.approx(c["f1"], abs=1e-6), c["class_name"]
    assert result.report["macro avg"]["f1-score"] == pytest.approx(per_class["macro_f1"], abs=1e-6)


def test_existing_dataset_is_kept_unless_overwrite(fo, run_dir):
    first = load_run(run_dir, dataset_name="fk-test-exists", overwrite=True)
    first_id = fo.load_dataset(first.dataset_name)._doc.id
    with pytest.raises(DatasetExistsError, match="--overwrite") as err:
        load_run(run_dir, dataset_name="fk-test-exists", overwrite=False)
    assert err.value.exit_code == 4
    assert fo.load_dataset("fk-test-exists")._doc.id == first_id
    again = load_run(run_dir, dataset_name="fk-test-exists", overwrite=True)
    assert again.num_samples == len(_rows(run_dir))
    assert fo.load_dataset("fk-test-exists")._doc.id != first_id


def test_default_dataset_name_is_flowerkit_run_name(fo, run_dir):
    name = "flowerkit-" + json.loads((run_dir / "run_record.json").read_text())["name"]
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    assert load_run(run_dir, None, False).dataset_name == name
    assert fo.dataset_exists(name)


@pytest.mark.parametrize(
    "damage, exit_code, fragment",
    [
        ("no_run", 3, "does not exist"),
        ("no_predictions", 3, "predictions.jsonl"),
        ("malformed_line", 2, "line 2"),
        ("missing_key", 2, "lacks confidence"),
        ("missing_image", 3, "do not exist"),
        ("labelmap_mismatch", 2, "different runs"),
    ],
)
def test_bad_input_gives_one_clear_error_and_no_dataset(fo, broken_run, damage, exit_code, fragment):
    pred = broken_run / "fiftyone" / "predictions.jsonl"
    lines = pred.read_text().splitlines()
    target = broken_run
    if damage == "no_run":
        target = broken_run.parent / "no-such-run"
    elif damage == "no_predictions":
        pred.unlink()
    elif damage == "malformed_line":
        lines[1] = lines[1][:-5]
        pred.write_text("\n".join(lines) + "\n")
    elif damage == "missing_key":
        row = json.loads(lines[0])
        del row["confidence"]
        lines[0] = json.dumps(row)
        pred.write_text("\n".join(lines) + "\n")
    elif damage == "missing_image":
        row = json.loads(lines[0])
        row["filepath"] = str(broken_run / "gone.jpg")
        lines[0] = json.dumps(row)
        pred.write_text("\n".join(lines) + "\n")
    elif damage == "labelmap_mismatch":
        labelmap = json.loads((broken_run / "labelmap.json").read_text())
        labelmap["0"], labelmap["1"] = labelmap["1"], labelmap["0"]
        (broken_run / "labelmap.json").write_text(json.dumps(labelmap))
    name = f"fk-test-bad-{damage}"
    with pytest.raises(FlowerkitError) as err:
        load_run(target, dataset_name=name, overwrite=True)
    assert err.value.exit_code == exit_code
    assert fragment in err.value.message
    assert "\n" not in err.value.message
    assert not fo.dataset_exists(name)


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_load_prints_report_and_dataset_name(fo, run_dir):
    from typer.testing import CliRunner

    from flowerkit.cli.fiftyone_cmd import app

    runner = CliRunner()
    result = runner.invoke(app, ["load", run_dir.name, "--output-dir", str(run_dir.parent),
                                 "--dataset-name", "fk-test-cli", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "FiftyOne dataset: fk-test-cli" in result.output
    for row in _rows(run_dir):  # every class that occurs is in the printed report
        assert row["label_name"] in result.output and row["prediction_name"] in result.output
    assert fo.dataset_exists("fk-test-cli")

    again = runner.invoke(app, ["load", str(run_dir), "--dataset-name", "fk-test-cli"])
    assert again.exit_code == 4
    assert "--overwrite" in again.output

    missing = runner.invoke(app, ["load", "no-such-run", "--output-dir", str(run_dir.parent)])
    assert missing.exit_code == 3
    assert "does not exist" in missing.output


# --------------------------------------------------------------------------------------------------
# load --launch on a run loaded before; compare


@pytest.fixture(scope="session")
def second_run(prefect_harness, flowers_root: Path, run_dir: Path) -> Path:
    """Another real run on the same samples as `run_dir` (another seed, fewer steps), logits exported too."""
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.flows.train import train_flow

    config = load_config(TrainConfig, dict(
        name="tiny-run-b", dataset="flower102", data_root=flowers_root, model_type="testing", img_size=32,
        num_steps=4, eval_every=4, train_batch_size=8, eval_batch_size=6, tiny_train_subset="flower102_tiny",
        tiny_infer_subset="flower102_tiny", export_logits=True, seed=7, output_dir=run_dir.parent))
    return Path(train_flow(config).run_dir)


def test_load_reuses_a_dataset_of_the_same_run_only(fo, run_dir, tmp_path):
    first = load_run(run_dir, dataset_name="fk-test-reuse", overwrite=True)
    dataset_id = fo.load_dataset("fk-test-reuse")._doc.id
    again = load_run(run_dir, dataset_name="fk-test-reuse", reuse=True)
    assert again.reused and fo.load_dataset("fk-test-reuse")._doc.id == dataset_id
    assert again.accuracy == first.accuracy and again.report == first.report
    other = tmp_path / "other-run"  # the same files in another directory: another run, not reused
    shutil.copytree(run_dir, other)
    with pytest.raises(DatasetExistsError):
        load_run(other, dataset_name="fk-test-reuse", reuse=True)


@pytest.mark.slow  # real processes, each importing torch
def test_cli_load_launch_opens_a_run_loaded_before(fo, run_dir, tmp_path):
    """`fiftyone load RUN --launch` on a loaded run: no refusal, the report, then the App answers on its port."""
    import signal
    import socket
    import time
    import urllib.request

    load_run(run_dir, dataset_name="fk-test-launch", overwrite=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    cmd = [sys.executable, "-m", "flowerkit", "fiftyone", "load", str(run_dir), "--dataset-name", "fk-test-launch",
           "--launch", "--port", str(port)]
    log = tmp_path / "launch.log"
    with log.open("w") as out, default_sigint():  # stopped below with Ctrl-C's signal
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, answered = time.monotonic() + 120, False
        while time.monotonic() < deadline and not answered and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    answered = response.status == 200
            except OSError:
                time.sleep(0.5)
        assert answered, log.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "loaded before; --overwrite reloads it" in text and "FiftyOne dataset: fk-test-launch" in text
    assert "exists already" not in text


def test_cli_compare_puts_two_runs_side_by_side(fo, run_dir, second_run):
    from typer.testing import CliRunner

    from flowerkit.cli.fiftyone_cmd import app

    result = CliRunner().invoke(app, ["compare", "tiny-run", "tiny-run-b", "--output-dir", str(run_dir.parent),
                                      "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "FiftyOne dataset: flowerkit-compare-tiny_run-tiny_run_b" in result.output
    dataset = fo.load_dataset("flowerkit-compare-tiny_run-tiny_run_b")
    a, b = {r["sample_id"]: r for r in _rows(run_dir)}, {r["sample_id"]: r for r in _rows(second_run)}
    assert len(dataset) == len(a) == len(b)
    classes = _labelmap(run_dir)
    for sample in dataset:
        row_a, row_b = a[sample["sample_id"]], b[sample["sample_id"]]
        assert sample.ground_truth.label == row_a["label_name"]
        assert sample.tiny_run.label == classes[row_a["prediction"]]
        assert sample.tiny_run_b.label == classes[row_b["prediction"]]
        assert sample["eval_tiny_run"] == (row_a["label"] == row_a["prediction"])
        assert sample["eval_tiny_run_b"] == (row_b["label"] == row_b["prediction"])
        disagree = row_a["prediction"] != row_b["prediction"]
        assert sample["disagree"] == disagree and ("disagree" in sample.tags) == disagree
        for name in ("tiny_run", "tiny_run_b"):  # Brain's scores from each run's logits
            assert 0.0 <= sample[f"mistakenness_{name}"] <= 1.0
            assert 0.0 <= sample[f"hardness_{name}"] <= math.log(len(classes)) + 1e-6  # softmax entropy
    expected = sum(a[i]["prediction"] != b[i]["prediction"] for i in a)
    assert f"disagreements: {expected} samples" in result.output
    assert len(dataset.load_saved_view("disagreements")) == expected
    for name, rows in (("tiny_run", a), ("tiny_run_b", b)):
        accuracy = sum(r["label"] == r["prediction"] for r in rows.values()) / len(rows)
        assert dataset.load_evaluation_results(f"eval_{name}").metrics()["accuracy"] == pytest.approx(accuracy)
        assert f"field '{name}', eval key 'eval_{name}', accuracy {accuracy:.4f}" in result.output

    from flowerkit.fiftyone.compare import compare_runs  # what `compare --launch` does with a comparison made before

    again = compare_runs([run_dir, second_run], reuse=True)
    assert again.reused and fo.load_dataset(again.dataset_name)._doc.id == dataset._doc.id
    assert again.disagreements == expected and len(again.brain_fields) == 4
    with pytest.raises(DatasetExistsError):  # the same name over other runs is not reused
        compare_runs([second_run, run_dir], dataset_name=again.dataset_name, reuse=True)


def test_cli_compare_refuses_runs_on_different_samples(fo, run_dir, broken_run):
    from typer.testing import CliRunner

    from flowerkit.cli.fiftyone_cmd import app

    pred = broken_run / "fiftyone" / "predictions.jsonl"
    pred.write_text("\n".join(pred.read_text().splitlines()[:-2]) + "\n")  # a run that evaluated fewer samples
    record = json.loads((broken_run / "run_record.json").read_text())
    (broken_run / "run_record.json").write_text(json.dumps(record | {"name": "fewer"}))
    result = CliRunner().invoke(app, ["compare", str(run_dir), str(broken_run), "--dataset-name", "fk-test-refused"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "Runs tiny-run and fewer evaluated different samples" in text and "2 only in tiny-run" in text
    assert result.output.count("Error:") == 1
    assert not fo.dataset_exists("fk-test-refused")


# --------------------------------------------------------------------------------------------------
# A predict run: load it on its own, compare it with an eval run of the same images


@pytest.fixture(scope="session")
def predict_run(prefect_harness, flowers_root: Path, run_dir: Path, tmp_path_factory) -> Path:
    """A real `flowerkit predict --name` run with tiny-run's model on all but two of the images tiny-run evaluated,
    one image it did not evaluate, and a photo that cannot be decoded (an error row)."""
    from typer.testing import CliRunner

    from flowerkit.cli import app

    evaluated = [row["filepath"] for row in _rows(run_dir)]
    other = next(p for p in sorted((flowers_root / "jpg").glob("*.jpg")) if str(p.resolve()) not in evaluated)
    broken = tmp_path_factory.mktemp("photos") / "broken.jpg"
    broken.write_bytes(other.read_bytes()[: other.stat().st_size // 2])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_API_URL", prefect_harness.url)  # the session's server: no temporary one
        result = CliRunner().invoke(app, ["predict", *evaluated[2:], str(other), str(broken), "--run", run_dir.name,
                                          "--output_dir", str(run_dir.parent), "--name", "tiny-predict",
                                          "--export_logits"])
    assert result.exit_code == 0, result.output
    return run_dir.parent / "tiny-predict"


def test_cli_load_predict_run_has_predictions_and_no_ground_truth(fo, predict_run):
    from typer.testing import CliRunner

    from flowerkit.cli.fiftyone_cmd import app

    rows = _rows(predict_run)
    predicted = {r["filepath"]: r for r in rows if "prediction" in r}
    assert len(predicted) == len(rows) - 1  # the broken photo's row holds an error
    result = CliRunner().invoke(app, ["load", str(predict_run), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert f"Loaded {len(predicted)} predicted images of run tiny-predict" in result.output
    assert "Left out: 1 input(s) the run could not predict" in result.output
    assert "evaluation skipped: a predict run's images have no ground truth" in " ".join(result.output.split())

    dataset = fo.load_dataset("flowerkit-tiny-predict")
    schema = dataset.get_field_schema()
    assert len(dataset) == len(predicted) and "predictions" in schema and "ground_truth" not in schema
    assert dataset.list_evaluations() == []
    for sample in dataset:
        row = predicted[sample.filepath]
        assert sample.predictions.label == row["prediction_name"] and sample["sample_id"] == row["sample_id"]
        assert sample.predictions.confidence == pytest.approx(row["confidence"])
        assert list(sample.predictions.logits) == pytest.approx(row["logits"])
    again = load_run(predict_run, reuse=True)  # what `load --launch` does: the dataset as it is
    assert again.reused and again.num_samples == len(predicted) and again.accuracy is None


def test_cli_compare_predict_run_beside_eval_run(fo, run_dir, predict_run):
    from typer.testing import CliRunner

    from flowerkit.cli.fiftyone_cmd import app

    truth = {r["filepath"]: r for r in _rows(run_dir)}
    predicted = {r["filepath"]: r for r in _rows(predict_run) if "prediction" in r}
    shared = set(truth) & set(predicted)
    assert len(shared) == len(truth) - 2
    result = CliRunner().invoke(app, ["compare", str(predict_run), str(run_dir), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert f"the {len(shared)} image(s) they share (3 left out: not in every run)" in result.output
    assert "ground truth: from run tiny-run" in result.output

    dataset = fo.load_dataset("flowerkit-compare-tiny_predict-tiny_run")
    assert {s.filepath for s in dataset} == shared
    for sample in dataset:
        eval_row, predict_row = truth[sample.filepath], predicted[sample.filepath]
        assert sample["sample_id"] == eval_row["sample_id"] and sample.ground_truth.label == eval_row["label_name"]
        assert sample.tiny_predict.label == predict_row["prediction_name"]
        assert sample.tiny_run.label == eval_row["prediction_name"]
        assert sample["eval_tiny_predict"] == (predict_row["prediction"] == eval_row["label"])
        assert sample["disagree"] == (predict_row["prediction"] != eval_row["prediction"])
    accuracy = sum(predicted[p]["prediction"] == truth[p]["label"] for p in shared) / len(shared)
    assert f"field 'tiny_predict', eval key 'eval_tiny_predict', accuracy {accuracy:.4f}" in result.output


def test_cli_compare_refuses_a_predict_run_that_shares_no_image(fo, run_dir, predict_run, tmp_path):
    from typer.testing import CliRunner

    from flowerkit.cli.fiftyone_cmd import app

    other = tmp_path / "elsewhere"
    shutil.copytree(predict_run, other)
    evaluated = {r["filepath"] for r in _rows(run_dir)}
    kept = [json.dumps(r) for r in _rows(predict_run) if r["filepath"] not in evaluated]
    (other / "fiftyone" / "predictions.jsonl").write_text("\n".join(kept) + "\n")  # the other image, the error
    result = CliRunner().invoke(app, ["compare", str(run_dir), str(other)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "The runs tiny-run, tiny-predict share no image" in text and "matched to the other runs by the file" in text
    assert result.output.count("Error:") == 1
    assert not fo.dataset_exists("flowerkit-compare-tiny_run-tiny_predict")
