"""``flowerkit predict`` fed hostile inputs and huge images (issue 29): every case ends with a row's words or a
count in the summary and the documented exit code, the batch goes on, and memory stays bounded by the batch.

Each case runs ``flowerkit predict`` on real files (links that loop, pipes, a folder this user may not read, a
196-megapixel PNG of 200 KB): as a real process where the case depends on the process (its permissions, the
encoding of its standard output, what Pillow's warnings print on its stderr), otherwise in this one through
Typer's runner, which gives the same exit code, stdout and stderr without importing torch again. The model
is a fresh ``testing`` checkpoint (its numbers do not matter here: tests/test_predict.py pins them against
evaluation).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.data.eval_transform import EvalTransform
from flowerkit.predict import images
from flowerkit.predict.images import load_image, shrink, to_rgb
from tests.test_fail_closed_inputs import write_checkpoint

LATIN1_NAME = os.fsdecode(b"caf\xe9.png")  # not valid UTF-8: Python holds the byte as a lone surrogate


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("model") / "ckpt.bin")


def photo(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


def predict(*args: str | Path, checkpoint: Path, stdin: str | None = None, prefix: tuple[str, ...] = (),
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``flowerkit predict ARGS --checkpoint C`` as a new process (``prefix``: e.g. setpriv)."""
    return subprocess.run([*prefix, sys.executable, "-m", "flowerkit", "predict", *map(str, args), "--checkpoint",
                           str(checkpoint)], input=stdin, capture_output=True, text=True, timeout=300, cwd=cwd,
                          errors="surrogateescape")  # the table prints a file name's own bytes


def predict_here(*args: str | Path, checkpoint: Path, stdin: str | None = None,
                 cwd: Path | None = None) -> SimpleNamespace:
    """``flowerkit predict ARGS --checkpoint C`` in this process: what ``predict`` returns, from Typer's runner."""
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(app, ["predict", *map(str, args), "--checkpoint", str(checkpoint)],
                                    input=stdin)
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def rows_of(stdout: str) -> dict[str, dict]:
    """JSON rows by file name."""
    rows = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {Path(row["filepath"]).name: row for row in rows}


def flat(text: str) -> str:
    return " ".join(text.split())


# --- folders and files ---------------------------------------------------------------------------------------

def test_a_symlink_loop_in_a_folder_or_given_is_an_error_row_and_the_batch_goes_on(checkpoint: Path,
                                                                                   tmp_path: Path) -> None:
    """It ended the whole batch with exit 1 (OSError: Too many levels of symbolic links; RuntimeError: Symlink
    loop for a loop given directly)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / "a.png")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "ring1.png").symlink_to("ring2.png")
    (tmp_path / "ring2.png").symlink_to("ring1.png")
    done = predict_here(folder, tmp_path / "ring1.png", "--json", checkpoint=checkpoint)
    assert done.returncode == 0, done.stderr
    rows = rows_of(done.stdout)
    assert list(rows) == ["a.png", "loop.jpg", "ring1.png"]
    assert "prediction" in rows["a.png"]
    for name in ("loop.jpg", "ring1.png"):
        assert "symbolic link that loops" in rows[name]["error"] and "Fix or remove the link" in rows[name]["error"]
    assert rows["ring1.png"]["filepath"] == str(tmp_path / "ring1.png")
    assert "Traceback" not in done.stderr
    assert "1 of 3 image(s) predicted, 2 could not be" in done.stderr


def test_a_recursive_pattern_does_not_follow_a_link_back_up(checkpoint: Path, tmp_path: Path) -> None:
    """glob's ``**`` followed a link to a parent folder: every image came back forty times over (two such links
    never ended). It stays below the folder, as a folder's walk does."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    photo(folder / "a.png")
    photo(folder / "sub" / "b.png", seed=1)
    (folder / "sub" / "up").symlink_to("..")
    done = predict_here(f"{folder}/**/*.png", "--json", checkpoint=checkpoint)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["filepath"] for row in rows] == [str(folder / "a.png"), str(folder / "sub" / "b.png")]


def test_every_file_below_a_folder_is_predicted_or_counted(checkpoint: Path, tmp_path: Path) -> None:
    """Broken links, pipes, device files, links to folders, hidden and other files were dropped without a word."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    photo(folder / "a.png")
    photo(folder / "sub" / "b.png", seed=1)
    (folder / "gone.jpg").symlink_to(tmp_path / "moved-away.jpg")  # a broken link
    os.mkfifo(folder / "pipe.jpg")  # never opened: reading a FIFO would wait for a writer forever
    (folder / "null.jpg").symlink_to("/dev/null")  # a character device, under a photo's name
    (folder / "elsewhere").symlink_to(folder / "sub")  # a link to a folder: not followed
    (folder / ".thumbnail.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image extension\n")
    done = predict_here(folder, "--json", checkpoint=checkpoint)
    assert done.returncode == 0, done.stderr
    assert list(rows_of(done.stdout)) == ["a.png", "b.png"]
    assert ("2 of 2 image(s) predicted, 0 could not be" in flat(done.stderr)
            and "; 6 other file(s) skipped: 1 hidden, 1 without an image extension, 1 broken link(s), 2 special "
                "file(s) (pipe, device or socket), 1 link(s) to folders (not followed)." in flat(done.stderr)), \
        done.stderr


def without_root_bypass(locked: Path) -> tuple[str, ...]:
    """The command prefix under which ``locked`` (mode 000) cannot be read. For a user, none. Root reads it
    anyway (CAP_DAC_OVERRIDE), so for root: ``setpriv`` dropping the two capabilities that bypass permission
    bits, from the bounding set (root stays root: its interpreter under /root stays readable, unlike
    --reuid=65534's). Skipped only where neither works."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): no way to make a folder unreadable")
    prefix = (setpriv, "--bounding-set=-dac_override,-dac_read_search")
    probe = subprocess.run([*prefix, sys.executable, "-c", f"import os; os.listdir({str(locked)!r})"],
                           capture_output=True, text=True)
    if probe.returncode == 0 or "PermissionError" not in probe.stderr:
        pytest.skip(f"setpriv cannot drop root's permission bypass here: {probe.stderr.strip()[-300:]}")
    return prefix


@pytest.mark.slow  # a real process, importing torch
def test_an_unreadable_folder_or_file_has_its_own_words(checkpoint: Path, tmp_path: Path) -> None:
    """A sub-folder that could not be listed vanished silently with its images; a file that may not be read
    was 'truncated or damaged'."""
    folder = tmp_path / "photos"
    (folder / "locked").mkdir(parents=True)
    photo(folder / "a.png")
    photo(folder / "locked" / "hidden-from-us.png")
    photo(folder / "private.png", seed=2)
    (folder / "locked").chmod(0)
    (folder / "private.png").chmod(0)
    try:
        prefix = without_root_bypass(folder / "locked")
        done = predict(folder, "--json", checkpoint=checkpoint, prefix=prefix)
    finally:
        (folder / "locked").chmod(0o755)
    assert done.returncode == 0, done.stderr
    rows = rows_of(done.stdout)
    assert list(rows) == ["a.png", "private.png", "locked"]
    assert "permission denied" in rows["private.png"]["error"] and "truncated" not in rows["private.png"]["error"]
    assert rows["locked"]["error"].startswith(f"the folder {folder / 'locked'} cannot be read (Permission denied)")
    assert f"Warning: the folder {folder / 'locked'} cannot be read" in flat(done.stderr)
    assert "1 of 3 image(s) predicted, 2 could not be" in done.stderr


@pytest.mark.slow  # real processes (their stdout's encoding), importing torch
def test_out_csv_writes_a_file_name_that_is_not_utf8(checkpoint: Path, tmp_path: Path) -> None:
    """--out rows.csv ended with exit 1 (UnicodeEncodeError) and no file; the JSON rows escape the byte."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / LATIN1_NAME)
    done = predict(folder, "--out", tmp_path / "rows.csv", checkpoint=checkpoint)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "rows.csv").read_text(encoding="utf-8")  # still UTF-8 text
    assert f"{folder}/caf\\udce9.png,0," in text, text
    jsonl = predict(folder, "--out", tmp_path / "rows.jsonl", checkpoint=checkpoint)
    assert jsonl.returncode == 0, jsonl.stderr
    assert "caf\\udce9.png" in (tmp_path / "rows.jsonl").read_text(encoding="utf-8")  # the same escape


def test_stdin_naming_nothing_is_refused_before_a_named_run_starts(checkpoint: Path, tmp_path: Path) -> None:
    """`predict - --name N` started Prefect and made the run folder before finding nothing to predict."""
    for stdin, words in (("missing.jpg\n# a comment\n", "missing.jpg (listed in standard input) does not exist"),
                         ("", "standard input (-) lists no path")):
        done = predict_here("-", "--name", "scored", "--output_dir", tmp_path / "out", checkpoint=checkpoint,
                            stdin=stdin, cwd=tmp_path)
        assert done.returncode == 3, done.stderr
        assert f"Nothing to predict: {words}" in flat(done.stderr) and "the run was not started" in flat(done.stderr)
        assert not (tmp_path / "out").exists()


def test_a_named_run_reads_stdin_checked_ahead_and_survives_a_loop(prefect_harness, checkpoint: Path,
                                                                   tmp_path: Path, monkeypatch) -> None:
    """The check reads standard input before the run (to refuse an empty one); the run must still get every
    line. A loop in the folder was retried twice as a transient error, with two Prefect tracebacks."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_harness.url)  # the session's server: no temporary one
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / "a.png")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    single = photo(tmp_path / "single.png", seed=3)
    stdin = f"{tmp_path / 'missing.jpg'}\n{single}\n{folder}\n"
    result = CliRunner().invoke(app, ["predict", "-", "--checkpoint", str(checkpoint), "--output_dir",
                                      str(tmp_path / "out"), "--name", "from-stdin"], input=stdin)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "out" / "from-stdin"
    rows = [json.loads(line) for line in (run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()]
    assert [Path(row["filepath"]).name for row in rows] == ["missing.jpg", "single.png", "a.png", "loop.jpg"]
    assert ["error" in row for row in rows] == [True, False, False, True]
    record = json.loads((run_dir / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["metrics"]["failed"] == 2, record.get("error")


# --- huge images and memory ------------------------------------------------------------------------------------

def gray_png(path: Path, width: int, height: int) -> Path:
    """An 8-bit grayscale PNG of ``width`` x ``height`` written a row at a time (a gradient down the image: a
    few hundred KB however many pixels), as a decompression bomb is made: it never exists decoded here."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    body = bytearray()
    for y in range(height):
        body += packer.compress(b"\x00" + bytes([y * 255 // max(1, height - 1)]) * width)
    body += packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(body))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.slow  # a real process, importing torch
def test_a_decompression_bomb_is_refused_in_its_row_and_a_large_photo_is_predicted(checkpoint: Path,
                                                                                    tmp_path: Path) -> None:
    """Above Pillow's refusal (179 megapixels) the row said 'truncated or damaged'; between its warning and its
    refusal, Pillow's DecompressionBombWarning printed a source line on stderr."""
    folder = tmp_path / "photos"
    folder.mkdir()
    gray_png(folder / "bomb.png", 14000, 14000)  # 196 megapixels in about 200 KB
    gray_png(folder / "large.png", 10000, 9000)  # 90 megapixels: above the warning, below the refusal
    photo(folder / "small.png")
    done = predict(folder, "--json", checkpoint=checkpoint)
    assert done.returncode == 0, done.stderr
    rows = rows_of(done.stdout)
    assert "prediction" in rows["large.png"] and "prediction" in rows["small.png"]
    error = rows["bomb.png"]["error"]
    assert error.startswith("bomb.png is 196 megapixels, more than predict decodes (179 megapixels") and \
        "save a smaller copy" in error and "truncated" not in error
    assert "DecompressionBomb" not in done.stderr and "Image.py" not in done.stderr, done.stderr


def test_a_huge_16bit_image_is_reduced_before_it_is_widened(tmp_path: Path) -> None:
    """Decoding a 36-megapixel 16-bit PNG costs its own samples (2 bytes a pixel) and a strip, measured as the
    peak resident memory of a fresh process: it made float64 copies of the whole image (8 bytes a pixel, twice)."""
    side = 6000
    column = (np.arange(side, dtype=np.uint32) * 11 % 65536).astype(np.uint16)
    Image.fromarray(np.ascontiguousarray(np.broadcast_to(column[:, None], (side, side)))).save(tmp_path / "huge.png")
    Image.fromarray(column[:64, None].repeat(64, 1)).save(tmp_path / "warm.png")
    code = ("import resource, sys\nfrom pathlib import Path\n"
            "from flowerkit.data.eval_transform import EvalTransform\n"
            "from flowerkit.predict.images import load_image\n"
            "transform = EvalTransform(64, 'cached', 128)\n"
            "load_image(Path(sys.argv[2]), transform)  # imports and first allocations out of the figure\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "pixels = load_image(Path(sys.argv[1]), transform)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, pixels.shape, pixels.dtype)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "huge.png"), str(tmp_path / "warm.png")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    grown_kb, shape = done.stdout.split(" ", 1)
    assert shape.strip() == "(128, 128, 3) uint8"
    samples = side * side * 2
    assert int(grown_kb) * 1024 < 1.5 * samples, f"peak grew {int(grown_kb) // 1024} MB for {samples >> 20} MB of samples"


MODES = {
    "RGB": lambda rng: Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)),
    "RGBA": lambda rng: Image.fromarray(rng.integers(0, 256, (45, 61, 4), dtype=np.uint8), "RGBA"),
    "I;16": lambda rng: Image.fromarray(rng.integers(0, 65536, (45, 61), dtype=np.uint16)),
    "I": lambda rng: Image.fromarray(rng.integers(-999, 99999, (45, 61)).astype(np.int32), "I"),
    "F": lambda rng: Image.fromarray(rng.random((45, 61)).astype(np.float32), "F"),
    "P": lambda rng: Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)).convert("P"),
    "LA": lambda rng: Image.fromarray(rng.integers(0, 256, (45, 61, 2), dtype=np.uint8), "LA"),
    "CMYK": lambda rng: Image.fromarray(rng.integers(0, 256, (45, 61, 4), dtype=np.uint8), "CMYK"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_shrinking_a_strip_at_a_time_is_the_same_as_in_one_piece(mode: str, monkeypatch) -> None:
    """What makes the large-image path safe: converting and reducing strip by strip changes no pixel."""
    image = MODES[mode](np.random.default_rng(0))
    assert image.mode == mode
    monkeypatch.setattr(images, "STRIP_ROWS", 4)  # many strips, the last one short
    for factor in ((1, 1), (2, 3), (5, 2)):
        np.testing.assert_array_equal(np.asarray(shrink(image, factor)), np.asarray(to_rgb(image).reduce(factor)))


def test_sixteen_bit_samples_are_scaled_as_before() -> None:
    """The table gives clip(rint(v / 257), 0, 255) exactly, for every 16-bit value and beyond (mode 'I')."""
    values = np.arange(-70000, 140000, dtype=np.int32)
    expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(images.scale_16bit(values), expected)
    np.testing.assert_array_equal(images.scale_16bit(np.arange(65536, dtype=np.uint16)), expected[70000:135536])


def test_a_large_image_lands_close_to_the_transform_in_one_piece(tmp_path: Path) -> None:
    """Above LARGE_PIXELS an image is reduced (in strips) before the transform; its pixels stay within a few
    levels of the whole transform's, and a rotation tag is still applied."""
    height, width = 3000, 6000  # 18 megapixels: above LARGE_PIXELS
    assert width * height > images.LARGE_PIXELS
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "large.png", exif=exif)
    for transform in (EvalTransform(64, "cached", 128), EvalTransform(64, "pil")):
        with Image.open(tmp_path / "large.png") as im:
            whole = transform.squash(to_rgb(im.transpose(Image.Transpose.ROTATE_270)))
        got = load_image(tmp_path / "large.png", transform)
        assert got.shape == whole.shape
        assert np.abs(got.astype(int) - whole.astype(int)).max() <= 2


def test_a_jpeg_above_pillows_limit_is_drafted_and_predicted(tmp_path: Path) -> None:
    """A 200-megapixel phone photo is a real photo: a JPEG decodes at 1/8 scale, so Pillow's refusal (which
    counts the stored pixels) does not apply to it; its row is a prediction."""
    Image.new("L", (16000, 12500), 128).save(tmp_path / "phone.jpg", quality=50)  # 200 megapixels
    pixels = load_image(tmp_path / "phone.jpg", EvalTransform(64, "pil"))
    assert pixels.shape == (64, 64, 3) and abs(int(pixels.mean()) - 128) <= 1
