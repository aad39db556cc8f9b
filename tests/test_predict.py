"""flowerkit predict: the run's own evaluation numbers on new photos, every photo format, and bad input.

Models: ``small_run`` (a shrunk ViT trained through the real train flow at 64 px; its logits differ per image)
and ``tiny_run`` (the seed command's run). Photos are made here, in every format a phone or camera gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.data.eval_transform import EvalTransform
from flowerkit.engine.checkpoint import load_checkpoint, save_checkpoint
from flowerkit.predict.plan import PredictOptions, prepare_predict
from flowerkit.predict.runner import run_predictions

W, H = 80, 56  # not square: a rotation changes what the model sees


def cli(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, ["predict", *args], input=stdin)


def rows_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def predict_rows(run_dir: Path, *inputs: Path | str, extra: tuple[str, ...] = ()) -> list[dict]:
    result = cli(*map(str, inputs), "--run", run_dir.name, "--output_dir", str(run_dir.parent), "--json",
                 "--export_logits", *extra)
    assert result.exit_code == 0, result.output
    return rows_of(result.stdout)


def logits_of(rows: list[dict]) -> np.ndarray:
    return np.array([r["logits"] for r in rows], dtype=np.float64)


@pytest.fixture(scope="module")
def base(flowers_root: Path) -> np.ndarray:
    """A real-looking flower (a synthetic Flowers-102 image) as H x W RGB uint8."""
    with Image.open(flowers_root / "jpg" / "image_00005.jpg") as im:
        return np.asarray(im.convert("RGB").resize((W, H), Image.BILINEAR))


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, base: np.ndarray) -> Path:
    """One folder with the image in every format, a truncated JPEG and a text file named .jpg."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    folder = tmp_path_factory.mktemp("photos")
    rgb = Image.fromarray(base)
    rgb.save(folder / "plain.png")
    rgb.save(folder / "plain.bmp")
    rgb.save(folder / "plain.tiff")
    rgb.save(folder / "plain.webp", lossless=True, exact=True)
    rgb.save(folder / "photo.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the camera was turned; viewers rotate 90 degrees clockwise
    rgb.save(folder / "rotated.jpg", quality=95, exif=exif)
    alpha = np.where(np.arange(W)[None, :] < W // 2, 255, 0).astype(np.uint8).repeat(H, 0)
    rgba = np.dstack([base * (alpha[..., None] // 255), alpha])  # hidden pixels black, as editors store them
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    gray = np.asarray(rgb.convert("L"))
    Image.fromarray(gray, "L").save(folder / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")  # 16-bit samples
    rgb.convert("CMYK").save(folder / "print.jpg", quality=95)
    frames = [rgb, Image.fromarray(base[::-1, ::-1].copy())]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb.save(folder / "phone.heic", quality=90)
    good = (folder / "photo.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.jpg").write_text("not a photo\n")
    (folder / "readme.txt").write_text("not an image extension: folders skip it\n")
    return folder


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory, base: np.ndarray, photos: Path) -> Path:
    """What some photos should look like once decoded, written as plain PNGs by hand (outside the folder)."""
    folder = tmp_path_factory.mktemp("references")
    with Image.open(photos / "rotated.jpg") as im:  # PIL's own decode, EXIF ignored, then rotated by hand
        decoded = im.convert("RGB")
    decoded.save(folder / "unrotated.png")
    decoded.transpose(Image.Transpose.ROTATE_270).save(folder / "rotated.png")
    white = base.copy()
    white[:, W // 2:] = 255  # the transparent half composited on white
    Image.fromarray(white).save(folder / "on_white.png")
    black = base.copy()
    black[:, W // 2:] = 0
    Image.fromarray(black).save(folder / "on_black.png")
    with Image.open(photos / "animated.gif") as gif:
        gif.convert("RGB").save(folder / "frame0.png")
        gif.seek(1)
        gif.convert("RGB").save(folder / "frame1.png")
    Image.fromarray(base[:, ::-1].copy()).save(folder / "mirrored.png")
    return folder


@pytest.fixture(scope="module")
def folder_rows(small_run: Path, photos: Path) -> list[dict]:
    return predict_rows(small_run, photos)


# --- the run's evaluation numbers ---------------------------------------------------------------------------

def _eval_logits_by_path(run_dir: Path) -> dict[str, np.ndarray]:
    rows = [json.loads(line) for line in (run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()]
    outputs = np.load(run_dir / "eval" / "outputs.npz")
    by_id = dict(zip(outputs["image_ids"].tolist(), outputs["logits"]))
    return {r["filepath"]: by_id[r["image_id"]] for r in rows}


@pytest.mark.usefixtures("prefect_harness")  # what both runs are made through: not in `make test-fast`
@pytest.mark.parametrize("run_fixture", ["small_run", "tiny_run"])
def test_predicting_a_runs_evaluated_images_gives_its_eval_logits(run_fixture: str, request) -> None:
    run_dir = request.getfixturevalue(run_fixture)
    expected = _eval_logits_by_path(run_dir)
    rows = predict_rows(run_dir, *expected)
    assert [r["filepath"] for r in rows] == list(expected)
    got, want = logits_of(rows), np.stack(list(expected.values()))
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    if run_fixture == "small_run":  # the numbers depend on the image: a wrong transform would show
        assert want.std(axis=0).max() > 1e-2
        assert load_checkpoint(run_dir / "checkpoints" / "best.bin")["eval_transform"]["resolution"] == 96
    eval_rows = [json.loads(x) for x in (run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in eval_rows]
    assert [r["confidence"] for r in rows] == pytest.approx([r["confidence"] for r in eval_rows], abs=1e-5)


@pytest.fixture(scope="module")
def large_jpegs(tmp_path_factory: pytest.TempPathFactory, flowers_root: Path) -> list[Path]:
    """Six 200 x 150 JPEGs: large enough for the cached pipeline's JPEG draft decode to shrink them."""
    folder = tmp_path_factory.mktemp("large")
    paths = []
    for i in range(1, 7):
        with Image.open(flowers_root / "jpg" / f"image_{i:05d}.jpg") as im:
            path = folder / f"large_{i}.jpg"
            im.convert("RGB").resize((200, 150), Image.BICUBIC).save(path, quality=92)
            paths.append(path)
    return paths


@pytest.mark.parametrize("kind, cache_size", [("pil", None), ("cached", None), ("cached", 64)],
                         ids=["pil", "cached-default", "cached-draft"])
def test_predict_reproduces_each_eval_pipeline(kind: str, cache_size: int | None, small_run: Path,
                                               large_jpegs: list[Path], tmp_path: Path) -> None:
    """The evaluate task's own code (InputPipeline + evaluate_checkpoint) against predict, per pipeline."""
    from flowerkit.data.pipeline import InputPipeline
    from flowerkit.data.table import SampleTable
    from flowerkit.engine.evaluator import evaluate_checkpoint

    state = load_checkpoint(small_run / "checkpoints" / "best.bin")
    table = SampleTable(np.arange(1, 7), np.zeros(6, dtype=np.int64), large_jpegs, np.array([[200, 150]] * 6))
    pipeline = InputPipeline(table, 64, torch.device("cpu"), kind=kind, cache_dir=tmp_path / "cache",
                             cache_size=cache_size)
    expected = evaluate_checkpoint(state, pipeline, 4, "fp32")
    transform = pipeline.eval_transform()
    assert transform.decode_size == {"pil": 64, "cached": 128 if cache_size is None else 64}[kind]
    state["eval_transform"] = transform.to_dict()
    save_checkpoint(tmp_path / "ckpt.bin", state)
    plan = prepare_predict([str(p) for p in large_jpegs], checkpoint=tmp_path / "ckpt.bin", device="cpu",
                           options=PredictOptions(export_logits=True, batch_size=4))
    rows: list[dict] = []
    summary = run_predictions(plan, rows.append)
    assert summary.predicted == 6 and summary.failed == 0
    np.testing.assert_allclose(logits_of(rows), expected, atol=2e-5, rtol=0)


# --- every format ----------------------------------------------------------------------------------------------

def test_a_folder_predicts_every_format_and_reports_bad_files(folder_rows: list[dict]) -> None:
    by_name = {Path(r["filepath"]).name: r for r in folder_rows}
    assert list(by_name) == sorted(by_name)  # sorted, and readme.txt (no image extension) skipped
    assert "readme.txt" not in by_name and len(folder_rows) == 14
    errors = {name: r["error"] for name, r in by_name.items() if "error" in r}
    assert set(errors) == {"broken.jpg", "notes.jpg"}
    assert "truncated" in errors["broken.jpg"] and "not an image" in errors["notes.jpg"]
    for name, row in by_name.items():
        if name not in errors:
            assert set(row) >= {"sample_id", "filepath", "prediction", "prediction_name", "confidence", "top5",
                                "top_k"}, name
            assert "label" not in row and "error" not in row
            assert np.isfinite(row["logits"]).all() and 0 < row["confidence"] <= 1


def test_lossless_formats_and_16_bit_give_the_same_numbers(folder_rows: list[dict]) -> None:
    logits = {Path(r["filepath"]).name: np.array(r["logits"]) for r in folder_rows if "logits" in r}
    for name in ("plain.bmp", "plain.tiff", "plain.webp"):
        np.testing.assert_array_equal(logits[name], logits["plain.png"], err_msg=name)
    np.testing.assert_array_equal(logits["gray16.png"], logits["gray.png"])  # scaled, not clipped to white
    assert np.abs(logits["gray.png"] - logits["plain.png"]).max() > 1e-3  # and colour does matter
    assert np.abs(logits["photo.jpg"] - logits["plain.png"]).max() < 0.5  # lossy formats land close
    assert np.abs(logits["print.jpg"] - logits["plain.png"]).max() < 0.5
    assert np.abs(logits["phone.heic"] - logits["plain.png"]).max() < 0.5


def test_exif_orientation_is_applied(small_run: Path, photos: Path, references: Path) -> None:
    rotated, by_hand, unrotated = logits_of(predict_rows(small_run, photos / "rotated.jpg",
                                                         references / "rotated.png", references / "unrotated.png"))
    np.testing.assert_allclose(rotated, by_hand, atol=1e-5)
    assert np.abs(rotated - unrotated).max() > 1e-3  # the tag changed the result


def test_transparency_is_composited_on_white(small_run: Path, photos: Path, references: Path) -> None:
    rgba, white, black = logits_of(predict_rows(small_run, photos / "transparent.png", references / "on_white.png",
                                                references / "on_black.png"))
    np.testing.assert_allclose(rgba, white, atol=1e-5)
    assert np.abs(rgba - black).max() > 1e-3


def test_an_animated_gif_is_its_first_frame(small_run: Path, photos: Path, references: Path) -> None:
    gif, first, second = logits_of(predict_rows(small_run, photos / "animated.gif", references / "frame0.png",
                                                references / "frame1.png"))
    np.testing.assert_allclose(gif, first, atol=1e-5)
    assert np.abs(gif - second).max() > 1e-3


def test_heic_without_pillow_heif_says_how_to_install_it(small_run: Path, photos: Path, monkeypatch) -> None:
    from flowerkit.predict import images

    monkeypatch.setitem(images._heif_state, "ok", False)  # as when `import pillow_heif` fails
    rows = predict_rows(small_run, photos / "phone.heic", photos / "plain.png")
    assert "pip install 'flowerkit[heif]'" in rows[0]["error"] and "prediction" in rows[1]


# --- options -----------------------------------------------------------------------------------------------

def test_tta_averages_the_image_and_its_mirror(small_run: Path, photos: Path, references: Path) -> None:
    plain, mirrored = logits_of(predict_rows(small_run, photos / "plain.png", references / "mirrored.png"))
    [tta] = logits_of(predict_rows(small_run, photos / "plain.png", extra=("--tta",)))
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-3)
    assert np.abs(tta - plain).max() > 1e-4


def test_min_confidence_marks_unknown(small_run: Path, photos: Path, folder_rows: list[dict]) -> None:
    confidences = sorted(r["confidence"] for r in folder_rows if "confidence" in r)
    threshold = (confidences[len(confidences) // 2 - 1] + confidences[len(confidences) // 2]) / 2
    result = cli(str(photos), "--run", "small", "--output_dir", str(small_run.parent), "--json",
                 "--min_confidence", str(threshold))
    assert result.exit_code == 0, result.output
    rows = [r for r in rows_of(result.stdout) if "confidence" in r]
    assert [r["unknown"] for r in rows] == [r["confidence"] < threshold for r in rows]
    unknown = sum(r["unknown"] for r in rows)
    assert 0 < unknown < len(rows) and f"{unknown} below --min_confidence (unknown)" in result.stderr


def test_top_k_rows_are_ranked_probabilities(folder_rows: list[dict]) -> None:
    row = next(r for r in folder_rows if "top_k" in r)
    probs = [t["probability"] for t in row["top_k"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and probs[0] == row["confidence"]
    assert [t["class"] for t in row["top_k"]] == row["top5"] and row["top_k"][0]["name"] == row["prediction_name"]
    expected = np.exp(np.array(row["logits"]) - max(row["logits"]))
    assert probs[0] == pytest.approx(expected.max() / expected.sum(), abs=1e-5)


def test_out_jsonl_and_csv_and_the_terminal_table(small_run: Path, photos: Path, tmp_path: Path) -> None:
    import csv

    from flowerkit.data.flowers102 import labelmap
    from flowerkit.fiftyone.load import iter_prediction_rows

    for suffix in ("jsonl", "csv"):
        out = tmp_path / f"rows.{suffix}"
        result = cli(str(photos), "--run", "small", "--output_dir", str(small_run.parent), "--out", str(out))
        assert result.exit_code == 0, result.output
        assert "12 of 14 image(s) predicted, 2 could not be" in result.stderr and f"Rows: {out}" in result.stderr
        assert "plain.png" in result.stdout and "error:" in result.stdout  # the table
        if suffix == "jsonl":
            rows = [json.loads(x) for x in out.read_text().splitlines()]
            assert len(rows) == 14 and sum("error" in r for r in rows) == 2
            classes = [labelmap()[str(i)] for i in range(102)]
            loaded = list(iter_prediction_rows(out, classes, labels_optional=True))  # FiftyOne's reader
            assert len(loaded) == 12 and all(r.label is None for r in loaded)
        else:
            table = list(csv.DictReader(out.open()))
            assert len(table) == 14 and list(table[0]) == ["sample_id", "filepath", "prediction", "prediction_name",
                                                           "confidence", "unknown", "top_k", "error"]
            broken = next(r for r in table if r["filepath"].endswith("broken.jpg"))
            assert broken["prediction"] == "" and "truncated" in broken["error"]
            good = next(r for r in table if r["filepath"].endswith("plain.png"))
            assert good["top_k"].count("|") == 4 and good["prediction_name"] in good["top_k"].split("|")[0]


def test_the_table_names_files_relative_to_their_input(tmp_path: Path, base: np.ndarray, monkeypatch) -> None:
    """Two roses in two sub-folders are two lines, not the same base name twice."""
    from tests.test_fail_closed_inputs import write_checkpoint

    checkpoint = write_checkpoint(tmp_path / "ckpt.bin")
    for sub in ("a", "b"):
        (tmp_path / "photos" / sub).mkdir(parents=True)
        Image.fromarray(base).save(tmp_path / "photos" / sub / "rose.jpg")
    monkeypatch.chdir(tmp_path)

    def files(*inputs: str) -> list[str]:  # the first column of the table's rows (long cells wrap below them)
        result = cli(*inputs, "--checkpoint", str(checkpoint))
        assert result.exit_code == 0, result.output
        return [line.split()[0] for line in result.stdout.splitlines()[1:] if line[:1].strip()]

    assert files("photos") == ["a/rose.jpg", "b/rose.jpg"]
    assert files("photos/a", "photos/b/rose.jpg") == ["photos/a/rose.jpg", "photos/b/rose.jpg"]


def test_inputs_from_a_list_file_stdin_and_globs(small_run: Path, photos: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# my photos\n{photos / 'plain.png'}\n\n{photos / 'plain.bmp'}\n")
    rows = predict_rows(small_run, f"@{listing}", str(photos / "plain.t*"))
    assert [Path(r["filepath"]).name for r in rows] == ["plain.png", "plain.bmp", "plain.tiff"]
    result = cli("-", "--run", "small", "--output_dir", str(small_run.parent), "--json",
                 stdin=f"{photos / 'gray.png'}\n{photos / 'missing.png'}\n")
    assert result.exit_code == 0, result.output
    rows = rows_of(result.stdout)
    assert "prediction" in rows[0] and "does not exist" in rows[1]["error"]


# --- bad input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, words", [
    (["{photos}/broken.jpg", "{photos}/notes.jpg", "--run", "small"], 3, "None of the 2 input(s) could be predicted"),
    (["{photos}/plain.png"], 2, "Give exactly one model"),
    (["{photos}/plain.png", "--run", "small", "--onnx", "m.onnx"], 2, "Give exactly one model"),
    (["{photos}/plain.png", "--run", "small", "--top_k", "0"], 2, "--top_k 0"),
    (["{photos}/plain.png", "--run", "small", "--top_k", "103"], 2, "exceeds the model's 102 classes"),
    (["{photos}/plain.png", "--run", "small", "--min_confidence", "1.5"], 2, "between 0 and 1"),
    (["{photos}/plain.png", "--run", "small", "--out", "rows.txt"], 2, "must end in .jsonl"),
    (["{photos}/plain.png", "--run", "no_such_run"], 3, "No run named 'no_such_run'"),
    (["{photos}/plain.png", "--run", "../small"], 2, "not a run name"),
    (["{photos}/plain.png", "--checkpoint", "missing.bin"], 3, "does not exist"),
    (["{photos}/plain.png", "--checkpoint", "{photos}/notes.jpg"], 2, "is not a torch checkpoint"),
    (["@missing-list.txt", "--run", "small"], 3, "list file missing-list.txt"),
])
def test_bad_input_is_one_paragraph_with_its_exit_code(small_run: Path, photos: Path, tmp_path: Path, monkeypatch,
                                                       args: list[str], code: int, words: str) -> None:
    monkeypatch.chdir(tmp_path)
    args = [a.format(photos=photos) for a in args] + ["--output_dir", str(small_run.parent)]
    result = cli(*args, "--out", "rows.jsonl") if "--out" not in args else cli(*args)
    assert result.exit_code == code, result.output
    assert words in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # no --out file, not even a partial one


def test_a_failed_run_leaves_an_existing_out_file_untouched(small_run: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    out.write_text("keep me\n")
    result = cli(str(photos / "notes.jpg"), "--run", "small", "--output_dir", str(small_run.parent), "--out", str(out))
    assert result.exit_code == 3
    assert out.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_an_old_checkpoint_without_a_recorded_transform_uses_its_config(tiny_run: Path, tmp_path: Path) -> None:
    from flowerkit.data.eval_transform import transform_of_checkpoint

    state = load_checkpoint(tiny_run / "checkpoints" / "best.bin")
    assert transform_of_checkpoint(state) == (EvalTransform(64, "cached", 96), True)
    del state["eval_transform"]
    assert transform_of_checkpoint(state) == (EvalTransform(64, "cached", 128), False)  # 2 x img_size
    state["config"]["data_pipeline"] = "pil"
    save_checkpoint(tmp_path / "old.bin", state)
    result = cli(str(tiny_run.parent), "--checkpoint", str(tmp_path / "old.bin"), "--json")
    assert "predates recorded evaluation transforms; using its config's (pil, 64 px" in result.stderr


def test_decoding_streams_in_batches(small_run: Path, photos: Path, monkeypatch) -> None:
    """Memory stays flat: no more than two batches of decoded images exist at any time."""
    from flowerkit.predict import runner

    live, peak, real = [0], [0], runner.load_image

    def counting(path, transform):
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        return real(path, transform)

    monkeypatch.setattr(runner, "load_image", counting)
    plan = prepare_predict([str(photos)] * 4, run="small", output_dir=small_run.parent, device="cpu",
                           options=PredictOptions(batch_size=3, workers=2))

    def sink(row: dict) -> None:
        live[0] -= "error" not in row or "truncated" in row["error"] or "not an image" in row["error"]

    summary = run_predictions(plan, sink)
    assert summary.inputs == 56 and summary.predicted == 48 and summary.failed == 8
    assert peak[0] <= 3 * 2  # the batch the model takes and, at most, the next one


def test_the_documented_min_confidence_one_liner_runs(tmp_path: Path) -> None:
    """The documented way to choose P: the 5th percentile of the correct predictions' confidence."""
    import subprocess
    import sys

    page = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    block = page.split("**Open set: `--min_confidence P`.**")[1].split("```bash\n")[1].split("```")[0]
    confidences = np.linspace(0.05, 0.95, 40)
    rows = [{"label": i % 3, "prediction": 0, "confidence": float(c)} for i, c in enumerate(confidences)]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = block.replace("output/RUN/fiftyone/predictions.jsonl", str(tmp_path / "predictions.jsonl"))
    command = command.replace(".venv/bin/python", sys.executable)
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    correct = [r["confidence"] for r in rows if r["label"] == r["prediction"]]
    assert float(done.stdout) == pytest.approx(np.percentile(correct, 5), abs=1e-4)


@pytest.mark.parametrize("command", ["predict", "export"])
def test_help_at_80_columns_names_every_option_whole(command: str) -> None:
    import typer

    from tests.test_cli_help import option_names_at_80_columns

    names = option_names_at_80_columns(command)
    params = typer.main.get_command(app).commands[command].params
    assert {o for p in params if p.param_type_name == "option" for o in p.opts if "_" in o or "-" not in o[2:]} <= names


def test_dashed_spellings_parse(small_run: Path, photos: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(photos / "plain.png"), "--run", "small", "--output-dir",
                                      str(small_run.parent), "--top-k", "2", "--min-confidence", "0.5",
                                      "--export-logits", "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    [row] = rows_of(result.stdout)
    assert len(row["top_k"]) == 2 and "logits" in row and "unknown" in row


def test_decoding_threads_take_only_the_cores_a_cpu_model_leaves_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overlapping a CPU model, decoders get the cores beyond torch's threads (at least one); on a GPU, or
    between model calls, every core (at most 8); ``--workers`` always wins."""
    from dataclasses import replace

    from flowerkit.predict.plan import ModelSource, PredictPlan
    from flowerkit.predict.predictor import ModelInfo
    from flowerkit.predict.runner import decoding_workers

    info = ModelInfo("checkpoint", Path("best.bin"), ("a", "b"), EvalTransform(64, "pil"), True, "testing", "")
    plan = PredictPlan(("photos",), ModelSource("run", Path("best.bin"), "r"), "cpu", PredictOptions(), info)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert decoding_workers(plan, overlap=True) == 4
        assert decoding_workers(plan, overlap=False) == 6
        assert decoding_workers(replace(plan, device="cuda"), overlap=True) == 6
        torch.set_num_threads(6)
        assert decoding_workers(plan, overlap=True) == 1  # never none
        onnx = replace(plan, model=ModelSource("onnx", Path("m.onnx")))
        assert decoding_workers(onnx, overlap=True) == 6
        assert decoding_workers(replace(plan, options=PredictOptions(workers=3)), overlap=True) == 3
    finally:
        torch.set_num_threads(threads)
