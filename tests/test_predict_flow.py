"""``flowerkit predict ... --name NAME``: a recorded predict run through the Prefect flow ``predict``.

The run leaves OUTPUT_DIR/NAME with the contract of a train or eval run (rows, env stamp, retention, a complete
record whose artifact index hashes every file), and a second run of the same name is refused with exit 4.
The ``flowerkit-predict`` deployment is tested on the real server in tests/test_prefect_server.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from flowerkit.artifacts.record import read_record
from flowerkit.artifacts.stamp import missing_fields
from flowerkit.cli import app

IMAGES = 3


def test_a_named_predict_run_is_recorded_and_never_overwritten(prefect_harness, small_run: Path,
                                                               flowers_root: Path, tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_harness.url)  # the session's server: no temporary one
    folder = tmp_path / "photos"
    folder.mkdir()
    for image in sorted((flowers_root / "jpg").glob("*.jpg"))[:IMAGES]:
        shutil.copy(image, folder)
    output_dir = small_run.parent
    args = ["predict", str(folder), "--run", small_run.name, "--output_dir", str(output_dir), "--name", "scored"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run_dir = output_dir / "scored"
    rows = [json.loads(line) for line in (run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == IMAGES and all("prediction_name" in row for row in rows)
    assert missing_fields(json.loads((run_dir / "env_stamp.json").read_text())) == []
    assert "retention_days: 90" in (run_dir / "RETENTION.txt").read_text()
    record = read_record(run_dir)
    assert record["flow"] == "predict" and record["stage_status"] == "complete", record.get("error")
    assert record["metrics"] == {"inputs": IMAGES, "predicted": IMAGES, "failed": 0, "unknown": 0,
                                 "skipped": 0}
    indexed = {entry["relative_path"]: entry["sha256"] for entry in record["artifact_index"]}
    for name in ("fiftyone/predictions.jsonl", "env_stamp.json", "RETENTION.txt", "labelmap.json",
                 "config_resolved.yaml", "run.log"):
        path = run_dir / name
        assert indexed[f"scored/{name}"] == hashlib.sha256(path.read_bytes()).hexdigest(), name
    assert {name: task["state"] for name, task in record["tasks"].items()} == {
        "predict_images": "completed", "write_stamp": "completed", "write_retention": "completed"}
    verified = CliRunner().invoke(app, ["runs", "verify", "scored", "--output-dir", str(output_dir)])
    assert verified.exit_code == 0, verified.output

    shown = CliRunner().invoke(app, ["runs", "show", "scored", "--output-dir", str(output_dir)])
    assert shown.exit_code == 0, shown.output

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 4, again.output
    assert "already exists" in again.output

    # Nothing predictable: exit 3, the run recorded as failed, and no rows file.
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.jpg").write_text("not an image")
    none = CliRunner().invoke(app, ["predict", str(tmp_path / "junk"), *args[2:-1], "nothing"])
    assert none.exit_code == 3, none.output
    assert read_record(output_dir / "nothing")["stage_status"] == "failed"
    assert not (output_dir / "nothing" / "fiftyone" / "predictions.jsonl").exists()

    # Ctrl-C while images are scored: exit 130, the run failed, and the advice is a new --name (no --resume).
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("flowerkit.tasks.prediction.write_predictions", interrupted)
    stopped = CliRunner().invoke(app, [*args[:-1], "stopped"])
    assert stopped.exit_code == 130, stopped.output
    assert "new --name" in stopped.output and "--resume" not in stopped.output
    error = read_record(output_dir / "stopped")["error"]
    assert "new --name" in error["message"] and "--resume" not in error["message"], error


def test_without_a_name_predict_imports_no_prefect(tiny_run: Path, flowers_root: Path) -> None:
    """Predicting a photo pays for no Prefect import, let alone a server (start-up matters there). The seed
    run's model: a fresh process knows its model type."""
    import subprocess
    import sys

    photo = sorted((flowers_root / "jpg").glob("*.jpg"))[0]
    args = ["predict", str(photo), "--run", tiny_run.name, "--output_dir", str(tiny_run.parent)]
    script = (f"import sys\nfrom flowerkit.cli import app\ntry:\n    app({args!r}, standalone_mode=False)\n"
              "finally:\n    print('prefect loaded:', 'prefect' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prefect loaded: False" in done.stdout, done.stdout


def test_a_named_run_with_nothing_to_predict_is_refused_before_it_starts(small_run: Path, tmp_path: Path) -> None:
    """A missing or empty folder cannot give a single row: one paragraph, exit 3, no run directory."""
    empty = tmp_path / "empty"
    empty.mkdir()
    output_dir = small_run.parent
    for folder in (tmp_path / "missing", empty):
        result = CliRunner().invoke(app, ["predict", str(folder), "--run", small_run.name, "--output_dir",
                                          str(output_dir), "--name", "no-input"])
        assert result.exit_code == 3, result.output
        text = " ".join(result.output.split())
        assert "Nothing to predict:" in text and str(folder) in text and "the run was not started" in text
        assert not (output_dir / "no-input").exists()
