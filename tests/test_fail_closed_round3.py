"""Fail closed, round three (issue 29): ONNX files whose metadata contradicts their graph, files that are not
regular files (FIFOs, devices) or far too large, two writers racing for one file that must never be
overwritten, and what a process killed with -9 leaves behind.

Everything here is real: ONNX graphs built with onnx.helper and run by onnxruntime, FIFOs made with os.mkfifo,
/dev/zero, concurrent processes and SIGKILL. No filesystem or signal is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from flowerkit.cli import app

runner = CliRunner()
needs_onnx = pytest.mark.skipif(find_spec("onnx") is None or find_spec("onnxruntime") is None,
                                reason="the onnx extra is part of the dev install (make setup)")
PROCESS_WAIT_S = 120  # a guard against a hang, never a measured duration


def flat(text: str) -> str:
    return " ".join(text.split())


def flowerkit(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:
    """The real command in its own process."""
    return subprocess.Popen([sys.executable, "-m", "flowerkit", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(found, process: subprocess.Popen, what: str):
    """Poll until ``found()`` returns something, failing if the process ends first (or on a hang)."""
    deadline = time.monotonic() + PROCESS_WAIT_S
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}: {out[-2000:]}{err[-2000:]}")
        time.sleep(0.05)
    process.kill()
    out, err = process.communicate()
    pytest.fail(f"no {what} in {PROCESS_WAIT_S} s: {out[-2000:]}{err[-2000:]}")


def temps_of(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


# --- hand-made ONNX models ----------------------------------------------------------------------------------

def hand_made_onnx(path: Path, *, names: int = 102, outputs: int | None = None, side: int = 48,
                   graph_side: int | None = None, img_size: int = 32) -> Path:
    """A flowerkit-format ONNX file: uint8 (batch, S, S, 3) pixels -> mean colour -> (batch, outputs) logits.

    ``names`` class names and ``side`` (the decoded square) go in the metadata; ``outputs`` and ``graph_side``
    (default: the same) in the graph, so the two can be made to disagree."""
    import onnx
    from onnx import TensorProto, helper

    outputs = names if outputs is None else outputs
    graph_side = side if graph_side is None else graph_side
    weights = np.random.default_rng(0).normal(size=(3, outputs)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["x"], ["colour"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["colour", "w"], ["logits"])],
        "hand_made",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", graph_side, graph_side, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", outputs])],
        [onnx.numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    meta = {"flowerkit.format": "flowerkit-onnx-1",
            "flowerkit.class_names": json.dumps([f"class {i}" for i in range(names)]),
            "flowerkit.eval_transform": json.dumps({"kind": "cached", "img_size": min(img_size, side),
                                                    "resolution": side, "mean": [0.5] * 3, "std": [0.5] * 3}),
            "flowerkit.model_type": "hand-made", "flowerkit.run": ""}
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "rose.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


@needs_onnx
def test_a_consistent_hand_made_export_predicts(tmp_path: Path, photo: Path) -> None:
    """The control: a file whose metadata fits its graph passes every check below and runs."""
    model = hand_made_onnx(tmp_path / "ok.onnx", names=7)
    result = runner.invoke(app, ["predict", str(photo), "--onnx", str(model), "--json", "--top_k", "3"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["prediction_name"].startswith("class ") and len(row["top_k"]) == 3


@needs_onnx
@pytest.mark.parametrize("spec, words", [
    # before: IndexError, exit 1, after the model had run
    (dict(names=5, outputs=102), "its metadata (flowerkit.class_names) names 5 classes, but its graph's output "
                                 "'logits' is (batch, 102)"),
    # before: exit 0, every photo labelled from 3 of the 102 names
    (dict(names=102, outputs=3), "names 102 classes, but its graph's output 'logits' is (batch, 3)"),
    # before: exit 1 from deep inside onnxruntime
    (dict(side=96, graph_side=64), "decodes each image to 96x96 px, so its graph's input 'pixels' must take uint8 "
                                   "(batch, 96, 96, 3), but it takes uint8 (batch, 64, 64, 3)"),
    # before: every photo decoded to 8193 px (200 MB) and run; at 20000 px, 7.4 GB before exit 1
    (dict(side=8193), "decoded to 8193x8193 px and fed at 32 px; flowerkit accepts 1 to 8192 px"),
    (dict(side=20000), "decoded to 20000x20000 px and fed at 32 px; flowerkit accepts 1 to 8192 px"),
])
def test_onnx_metadata_that_contradicts_its_graph_exits_2_and_runs_nothing(tmp_path: Path, photo: Path,
                                                                           spec: dict, words: str) -> None:
    model = hand_made_onnx(tmp_path / "bad.onnx", **spec)
    result = runner.invoke(app, ["predict", str(photo), "--onnx", str(model), "--json"])
    assert result.exit_code == 2, result.output
    text = flat(result.stderr)
    assert words in text and "Nothing was run" in text and text.count("Error:") == 1, text
    assert result.stdout == ""  # no row: the model never ran


@needs_onnx
def test_onnx_that_is_a_device_or_empty_is_named_for_what_it_is(tmp_path: Path, photo: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    for path, code, words in (("/dev/zero", 2, "--onnx /dev/zero is a character device, not a regular file"),
                              (str(empty), 2, f"--onnx {empty} is empty (0 bytes)"),
                              (str(tmp_path / "missing.onnx"), 3, "does not exist")):
        result = runner.invoke(app, ["predict", str(photo), "--onnx", path])
        text = flat(result.stderr)
        assert result.exit_code == code and words in text, result.output
        assert "is an ONNX model" not in text and (path == str(tmp_path / "missing.onnx")
                                                    or "does not exist" not in text)


# --- FIFOs, devices and huge files given as a config, sweep, manifest or list file ----------------------------

@contextlib.contextmanager
def fifo_never_opened(path: Path) -> Iterator[Path]:
    """A real FIFO with a writer waiting on it. Whoever opens it for reading while the block runs unblocks the
    writer (and reads a YAML line, so nothing hangs); the test then fails. Deterministic: the writer records
    whether its open returned before the block ended."""
    os.mkfifo(path)
    opened_during: list[bool] = []
    done = threading.Event()

    def writer() -> None:
        fd = os.open(path, os.O_WRONLY)  # returns once some process opens the FIFO for reading
        opened_during.append(not done.is_set())
        with contextlib.suppress(OSError):
            os.write(fd, b"name: from-the-fifo\n")
        os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open return, if it has not
        thread.join(PROCESS_WAIT_S)
        os.close(reader)
    assert opened_during == [False], "the command opened the FIFO for reading"


def sweep_args(path: str, request: pytest.FixtureRequest) -> list[str]:
    return ["sweep", path]


def config_args(path: str, request: pytest.FixtureRequest) -> list[str]:
    return ["train", "--name", "x", "--config", path, "--dry_run"]


def manifest_args(path: str, request: pytest.FixtureRequest) -> list[str]:
    """The manifest is read once the data root is found: the session's generated Flowers-102."""
    return ["train", "--name", "x", "--model_type", "testing", "--dataset", "flower102", "--data_root",
            str(request.getfixturevalue("flowers_root")), "--tiny_train_subset", path, "--dry_run"]


def list_args(path: str, request: pytest.FixtureRequest) -> list[str]:
    return ["predict", f"@{path}", "--checkpoint", "nothing.bin"]


FILE_COMMANDS = {"sweep file": (sweep_args, "The sweep file"), "--config": (config_args, "The config file"),
                 "subset manifest": (manifest_args, "The subset manifest"), "@LIST": (list_args, "The list file")}


@pytest.mark.parametrize("kind", FILE_COMMANDS)
def test_a_fifo_is_refused_unopened_with_exit_2(workdir: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """Before: the sweep command waited forever on the FIFO; --config, a manifest and @LIST said it does not
    exist (exit 3)."""
    make_args, what = FILE_COMMANDS[kind]
    with fifo_never_opened(workdir / "pipe.yaml") as fifo:
        result = runner.invoke(app, make_args(str(fifo), request))
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert f"{what} {fifo} is a named pipe (FIFO), not a regular file" in text and "does not exist" not in text


@pytest.mark.parametrize("kind", FILE_COMMANDS)
def test_dev_zero_is_refused_at_once_with_exit_2(workdir: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """Before: a sweep file /dev/zero was read until memory ran out (MemoryError); the others said it does not
    exist (exit 3)."""
    make_args, what = FILE_COMMANDS[kind]
    result = runner.invoke(app, make_args("/dev/zero", request))
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert f"{what} /dev/zero is a character device, not a regular file" in text and "does not exist" not in text


@pytest.mark.parametrize("kind", FILE_COMMANDS)
def test_a_file_past_the_bound_is_refused_before_it_is_parsed(workdir: Path, kind: str,
                                                              request: pytest.FixtureRequest) -> None:
    """Valid YAML (comments, then one option), but far larger than any real file of its kind: before, it was
    read whole and accepted. The bound is 4 MiB (64 MiB for @LIST)."""
    make_args, what = FILE_COMMANDS[kind]
    size = (64 if kind == "@LIST" else 4) * 2**20 + 1
    big = workdir / "big.yaml"
    with open(big, "w") as fh:
        fh.write("#" * 1023 + "\n")
        fh.truncate(size)  # the rest reads as NUL bytes; the bound is checked before anything is parsed
    result = runner.invoke(app, make_args(str(big), request))
    assert result.exit_code == 2, result.output
    bound = "64 MiB" if kind == "@LIST" else "4 MiB"
    assert f"{what} {big} is {size:,} bytes, past the {bound} flowerkit reads" in flat(result.output)


def test_a_large_config_of_valid_yaml_is_refused_by_its_size(workdir: Path) -> None:
    """The same bound, shown on a config that the old code read and accepted: 4 MiB of comments and a seed."""
    config = workdir / "padded.yaml"
    config.write_text("# padding\n" * (430 * 1024) + "seed: 3\n")
    result = runner.invoke(app, config_args(str(config), None))
    assert result.exit_code == 2 and "past the 4 MiB flowerkit reads" in flat(result.output), result.output


# --- no-clobber publishing: two exports racing for one --out ------------------------------------------------

def fake_run(output_dir: Path, name: str = "r", **extra: object) -> Path:
    """A run folder as `flowerkit export` reads it: a record and a best checkpoint of the testing model (with
    ``extra`` entries)."""
    from flowerkit.data.flowers102 import NUM_CLASSES, labelmap
    from flowerkit.engine.checkpoint import save_checkpoint
    from flowerkit.models.vit import build_model

    run = output_dir / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "run_record.json").write_text(json.dumps({"name": name, "flow": "train", "stage_status": "complete"}))
    save_checkpoint(run / "checkpoints" / "best.bin", {
        "model": build_model("testing", 32, NUM_CLASSES).state_dict(), "model_type": "testing", "img_size": 32,
        "num_classes": NUM_CLASSES, "step": 10, "labelmap": labelmap()} | extra)
    return run


@needs_onnx
def test_export_refuses_a_run_whose_onnx_model_predict_would_refuse(tmp_path: Path) -> None:
    """An explicit --cache_size of 9000 px decodes past the ONNX bound: exit 2 before the export's work."""
    output_dir = tmp_path / "output"
    fake_run(output_dir, eval_transform={"kind": "cached", "img_size": 32, "resolution": 9000})
    result = runner.invoke(app, ["export", "r", "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                                 "--output_dir", str(output_dir)])
    assert result.exit_code == 2, result.output
    assert "decodes each image to 9000x9000 px" in flat(result.stderr) and "at most 8192 px" in flat(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["output"]


SLOW_EXPORT = """
import sys
from pathlib import Path

import typer

from flowerkit.cli.errors import user_errors
from flowerkit.cli.export_cmd import check_target, publish

target, fifo = Path(sys.argv[1]), sys.argv[2]
try:
    with user_errors():
        check_target(target)  # nothing there yet
        publish(target, lambda fh: fh.write(open(fifo, "rb").read()))  # mid-write until the test says
        print("published")
except typer.Exit as exc:
    sys.exit(exc.exit_code)
"""


def test_of_two_exports_to_one_out_exactly_one_writes_and_the_other_exits_4(tmp_path: Path) -> None:
    """Export A checks --out (free), then is held mid-write; export B (the real command) writes --out; A's
    publish must then refuse. Before: both said "Wrote" and B's file was silently replaced by A's."""
    output_dir, target, fifo = tmp_path / "output", tmp_path / "model.npz", tmp_path / "hold"
    fake_run(output_dir)
    os.mkfifo(fifo)
    slow = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(target), str(fifo)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: temps_of(target), slow, "export A's temporary file")  # A is past its check, writing
        fast = runner.invoke(app, ["export", "r", "--format", "npz", "--out", str(target), "--output_dir",
                                   str(output_dir)])
        assert fast.exit_code == 0 and f"Wrote {target}" in fast.stdout, fast.output
        written = target.read_bytes()
        with open(fifo, "wb") as hold:  # let A finish its write and try to publish
            hold.write(b"export A's bytes")
        out, err = slow.communicate(timeout=PROCESS_WAIT_S)
    finally:
        slow.kill()
    assert slow.returncode == 4, out + err
    assert "published" not in out
    assert f"--out {target} was written by another process while this export ran" in flat(err)
    assert flat(err).count("Error:") == 1
    assert target.read_bytes() == written and np.load(target)["head/bias"].shape == (102,)
    assert temps_of(target) == []


LOCK_HOLDER = """
import fcntl, sys
fh = open(sys.argv[1], "rb")
fcntl.flock(fh, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_stale_temporaries_go_but_a_live_writers_stay(tmp_path: Path) -> None:
    """A temporary whose writer died is removed by the next write of its target; one whose pid is alive, or
    whose flock a live process holds (a writer on another host sharing the folder), stays."""
    from flowerkit.artifacts.files import atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    target = tmp_path / "rows.jsonl"
    stale = tmp_path / f".rows.jsonl.tmp-{dead_pid}-aaaaaa"
    mine = tmp_path / f".rows.jsonl.tmp-{os.getpid()}-bbbbbb"
    locked = tmp_path / f".rows.jsonl.tmp-{dead_pid}-cccccc"
    other = tmp_path / f".other.jsonl.tmp-{dead_pid}-dddddd"
    for path in (stale, mine, locked, other):
        path.write_text("partial")
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(locked)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        atomic_write_text(target, "complete\n")
    finally:
        holder.communicate("", timeout=PROCESS_WAIT_S)
    assert target.read_text() == "complete\n"
    assert not stale.exists() and mine.exists() and locked.exists() and other.exists()


@needs_onnx
def test_a_predict_out_killed_with_9_leaves_no_temporary_for_good(tmp_path: Path, photo: Path) -> None:
    """predict --out streams rows into a hidden temporary; SIGKILL leaves it. The next predict to the same
    --out removes it (its writer is dead). Before: it stayed forever."""
    model = hand_made_onnx(tmp_path / "m.onnx", names=6)
    target = tmp_path / "rows.jsonl"
    # Paths on standard input, which the test never closes: the process sits mid-write, deterministically.
    killed = flowerkit("predict", "-", "--onnx", str(model), "--out", str(target), cwd=tmp_path,
                       stdin=subprocess.PIPE)
    try:
        [temp] = wait_for(lambda: temps_of(target), killed, "the --out temporary file")
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=PROCESS_WAIT_S)
    assert killed.returncode == -signal.SIGKILL
    assert temp.exists() and not target.exists()  # what a killed writer leaves
    result = runner.invoke(app, ["predict", str(photo), "--onnx", str(model), "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert temps_of(target) == [] and json.loads(target.read_text())["prediction_name"].startswith("class ")


# --- a recorded predict run killed with -9 --------------------------------------------------------------------

def test_a_killed_predict_run_is_crashed_and_prune_crashed_clears_it(prefect_harness, tmp_path: Path,
                                                                     photo: Path) -> None:
    """The real `predict --name` (a Prefect flow on the session's server), killed with -9 once its run is
    claimed, while it waits for more paths on standard input: listed crashed; a new `predict --name` of that
    name says what to do without suggesting --resume (predict has none); `runs prune --crashed` deletes it (a
    crashed train run is kept)."""
    from tests.test_fail_closed_inputs import write_checkpoint
    from tests.test_crashed import killed_run

    checkpoint = write_checkpoint(tmp_path / "ckpt.bin")
    output_dir = tmp_path / "output"
    args = ["predict", "-", "--checkpoint", str(checkpoint), "--output_dir", str(output_dir), "--name", "scored"]
    env = {**os.environ, "PREFECT_API_URL": prefect_harness.url}
    process = flowerkit(*args, cwd=tmp_path, stdin=subprocess.PIPE, env=env)
    process.stdin.write(f"{photo}\n")  # one path; the run then waits for the rest of its batch, mid-run
    process.stdin.flush()
    record_path = output_dir / "scored" / "run_record.json"

    def started() -> dict | None:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            return None
        # Claimed: "started", then "running" once its task runs (a poll can miss the first, a short moment).
        return record if record.get("stage_status") in ("started", "running") else None

    try:
        wait_for(started, process, "the run's record")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=PROCESS_WAIT_S)
    killed_run(output_dir, "trained", None)  # a crashed train run: --resume continues it, so prune keeps it

    listed = runner.invoke(app, ["runs", "list", "--output-dir", str(output_dir)])
    assert listed.exit_code == 0 and "crashed" in listed.output, listed.output

    again = runner.invoke(app, ["predict", str(photo), "--checkpoint", str(checkpoint), "--output_dir",
                                str(output_dir), "--name", "scored"])
    assert again.exit_code == 4, again.output
    text = flat(again.output)
    assert "its process (pid" in text and "died before it finished" in text, text
    assert "--resume" not in text and f"flowerkit runs prune --crashed --output-dir {output_dir}" in text

    dry = runner.invoke(app, ["runs", "prune", "--crashed", "--dry-run", "--output-dir", str(output_dir)])
    assert dry.exit_code == 0 and "would delete scored (crashed predict run)" in flat(dry.output), dry.output
    assert (output_dir / "scored").is_dir()
    pruned = runner.invoke(app, ["runs", "prune", "--crashed", "--output-dir", str(output_dir)])
    assert pruned.exit_code == 0, pruned.output
    assert "deleted scored (crashed predict run)" in flat(pruned.output)
    assert "keeping trained (crashed train run)" in flat(pruned.output)
    assert not (output_dir / "scored").exists() and (output_dir / "trained").is_dir()
