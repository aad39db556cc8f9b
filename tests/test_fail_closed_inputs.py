"""Fail closed on bad inputs: every bad value, file or environment stops a run with exit 2 or 3 and one
paragraph naming what is wrong and where it came from, before anything is written (issue 11)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.run.config import CONFIG_CLASSES, load_config
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
    assert len(options_of(float)) >= 8 and len(options_of(int)) >= 12


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


def test_a_prefect_setting_prefect_refuses_exits_2_naming_it(flowers_root: Path, workdir: Path) -> None:
    """A heartbeat frequency under Prefect's minimum (30 s) ended as "Unexpected error: ValidationError"."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "10"}
    done = subprocess.run([sys.executable, "-m", "flowerkit", *seed_args(flowers_root, "hb")], env=env,
                          cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    text = flat(done.stderr)
    assert text.count("Error:") == 1 and "Unexpected" not in text
    assert "Prefect's settings are not valid (FlowsSettings: heartbeat_frequency = '10'" in text
    assert "prefect config view" in text and not (workdir / "output").exists()


@pytest.mark.parametrize("hub_id", ["hf-hub:", "hf-hub:a/b c", "hf-hub:timm/vit@", "hf-hub:a--b/c"])
def test_a_malformed_hub_id_exits_2_naming_pretrained(workdir: Path, hub_id: str) -> None:
    """It reached hf_hub_download and ended as exit 1 with HFValidationError."""
    result = runner.invoke(app, ["train", "--name", "h", "--model_type", "testing", "--img_size", "32",
                                 "--pretrained", hub_id, "--dry_run"])
    assert result.exit_code == 2, result.output
    assert f"--pretrained: '{hub_id}' is not a Hub id" in flat(result.output)
    assert load_config(CONFIG_CLASSES["train"], {"name": "h", "pretrained": "hf-hub:timm/vit_b@main"}).pretrained


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


# --- data ----------------------------------------------------------------------------------------------------


def copy_dataset(flowers_root: Path, dest: Path) -> Path:
    """The fixture's label files copied and its images linked, so single images can be damaged cheaply."""
    import shutil

    (dest / "jpg").mkdir(parents=True)
    for name in ("imagelabels.mat", "setid.mat"):
        shutil.copy(flowers_root / name, dest / name)
    for image in (flowers_root / "jpg").iterdir():
        (dest / "jpg" / image.name).symlink_to(image)
    return dest


def damage(root: Path, image_id: int, data: bytes) -> Path:
    path = root / "jpg" / f"image_{image_id:05d}.jpg"
    path.unlink()
    path.write_bytes(data)
    return path


def full_split_args(root: Path, *extra: str) -> list[str]:
    return ["train", "--name", "d", "--dataset", "flower102", "--data_root", str(root), "--model_type", "testing",
            "--img_size", "32", "--num_steps", "10", "--train_batch_size", "4", "--eval_batch_size", "2", *extra]


def test_dry_run_reports_every_undecodable_image_at_once(flowers_root: Path, workdir: Path) -> None:
    from flowerkit.data.flowers102 import open_flowers102

    root = copy_dataset(flowers_root, workdir / "data")
    flowers = open_flowers102(root)
    train_id, val_id = int(flowers.splits["train"][3]), int(flowers.splits["val"][5])
    intact = (flowers_root / "jpg" / f"image_{train_id:05d}.jpg").read_bytes()
    truncated = damage(root, train_id, intact[: len(intact) // 2])
    garbage = damage(root, val_id, os.urandom(4096))
    result = runner.invoke(app, full_split_args(root, "--dry_run"))
    assert result.exit_code == 2, result.output
    text = flat(result.output)
    assert str(truncated) in text and "truncated" in text
    assert str(garbage) not in text  # the train split fails first; the val split is its own check
    result = runner.invoke(app, full_split_args(root, "--tiny_train_subset", "flower102_tiny", "--dry_run"))
    assert result.exit_code == 2 and str(garbage) in flat(result.output), result.output
    assert not (workdir / "output").exists()


def test_all_bad_files_of_a_split_are_named_in_one_error_and_not_retried(flowers_root: Path, tmp_path: Path) -> None:
    from flowerkit.data.flowers102 import open_flowers102
    from flowerkit.data.selection import select_split

    root = copy_dataset(flowers_root, tmp_path / "data")
    ids = open_flowers102(root).splits["val"][:3].tolist()
    bad = [damage(root, i, os.urandom(2048)) for i in ids]
    with pytest.raises(ConfigError) as caught:
        select_split("flower102", root, "val", None, 2)
    # A ConfigError: tasks/common.py's retry condition (tested in test_retries.py) never retries one.
    assert "3 image file(s)" in caught.value.message and all(str(p) in caught.value.message for p in bad)


def test_pixel_cache_names_a_file_that_broke_after_the_check(flowers_root: Path, tmp_path: Path) -> None:
    from flowerkit.data.flowers102 import open_flowers102
    from flowerkit.data.pipeline import build_table
    from flowerkit.data.pixel_cache import open_pixel_cache

    root = copy_dataset(flowers_root, tmp_path / "data")
    flowers = open_flowers102(root)
    image_id = int(flowers.splits["val"][0])
    intact = (flowers_root / "jpg" / f"image_{image_id:05d}.jpg").read_bytes()
    path = damage(root, image_id, intact[: len(intact) // 3])
    table = build_table(flowers, flowers.splits["val"][:4])  # headers are intact: the decode is what fails
    with pytest.raises(ConfigError, match=f"{path} cannot be decoded"):
        open_pixel_cache(table, 32, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.npy"))


@pytest.mark.parametrize("split_key", ["valid", "trnid"])
def test_an_empty_split_exits_2_before_training(flowers_root: Path, workdir: Path, split_key: str) -> None:
    from scipy.io import loadmat, savemat

    root = copy_dataset(flowers_root, workdir / "data")
    setid = {k: v for k, v in loadmat(root / "setid.mat").items() if not k.startswith("__")}
    setid[split_key] = setid[split_key][:, :0]
    savemat(root / "setid.mat", setid)
    result = runner.invoke(app, full_split_args(root, "--dry_run"))
    assert result.exit_code == 2, result.output
    assert f"'{split_key}' is empty" in flat(result.output)
    assert not (workdir / "output").exists()


def test_data_check_gives_trains_exit_codes(flowers_root: Path, tmp_path: Path) -> None:
    """A missing root is exit 3 (train's code for it; data check said 2), and an empty split, test included, is
    exit 2 as train's pre-run check gives (data check passed it)."""
    from scipy.io import loadmat, savemat

    missing = runner.invoke(app, ["data", "check", str(tmp_path / "nowhere")])
    assert missing.exit_code == 3 and "does not exist" in flat(missing.output), missing.output
    root = copy_dataset(flowers_root, tmp_path / "data")
    setid = {k: v for k, v in loadmat(root / "setid.mat").items() if not k.startswith("__")}
    savemat(root / "setid.mat", setid | {"tstid": setid["tstid"][:, :0]})
    empty = runner.invoke(app, ["data", "check", str(root)])
    assert empty.exit_code == 2, empty.output
    assert "The test split has no images" in flat(empty.output) and "'tstid' is empty" in flat(empty.output)


# --- output, cache and Prefect home --------------------------------------------------------------------------


def test_output_dir_that_is_a_file_or_under_one_exits_2(flowers_root: Path, workdir: Path) -> None:
    (workdir / "taken").write_text("")
    for output_dir in ("taken", "taken/runs"):
        result = runner.invoke(app, seed_args(flowers_root, "x", "--output_dir", output_dir, "--dry_run"))
        assert result.exit_code == 2, result.output
        assert "a file, not a folder" in flat(result.output) and "--output_dir" in result.output


def test_cache_dir_that_is_a_file_exits_2(flowers_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (workdir / "cachefile").write_text("")
    monkeypatch.setenv("FLOWERKIT_CACHE_DIR", str(workdir / "cachefile"))
    result = runner.invoke(app, seed_args(flowers_root, "x", "--dry_run"))
    assert result.exit_code == 2 and "FLOWERKIT_CACHE_DIR" in flat(result.output), result.output


def exit_code_as_nobody(check) -> int:
    """Run ``check`` in a forked child without root's bypass of permission bits (uid/gid 65534), or as is when
    not root; returns the FlowerkitError's exit code (0: no error). Proves the probe sees what a user sees."""
    from flowerkit.errors import FlowerkitError

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            check()
        except FlowerkitError as exc:
            code = exc.exit_code
        except BaseException:
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_unwritable_output_dir_and_prefect_home_exit_3(monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from flowerkit.flows.orchestration.prefect_env import check_prefect_home
    from flowerkit.run.config import TrainConfig
    from flowerkit.run.prepare import check_output_writable

    # Not under pytest's tmp folder: its parents are private to root, and the unprivileged child must reach it.
    tmp_path = Path(tempfile.mkdtemp(prefix="flowerkit-perm-"))
    tmp_path.chmod(0o755)
    monkeypatch.chdir(tmp_path)  # no stray .env
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    config = load_config(TrainConfig, {"name": "x", "output_dir": locked / "out"})
    assert exit_code_as_nobody(lambda: check_output_writable(config)) == 3
    monkeypatch.setenv("PREFECT_HOME", str(locked / "prefect"))
    assert exit_code_as_nobody(check_prefect_home) == 3
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "free"))
    (tmp_path / "free").mkdir(mode=0o777)
    (tmp_path / "free").chmod(0o777)
    assert exit_code_as_nobody(check_prefect_home) == 0  # the check can pass: it is not always 3
    import shutil

    shutil.rmtree(tmp_path)


def test_read_only_home_is_caught_before_prefect_starts(flowers_root: Path, tmp_path: Path) -> None:
    """A real read-only mount (root is not exempt from it), in a private mount namespace."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs unshare -m (Linux, with the right to make a mount namespace)")
    home = tmp_path / "home"
    home.mkdir()
    code = ("from pathlib import Path; from flowerkit.flows.orchestration.prefect_env import check_prefect_home\n"
            "from flowerkit.errors import FlowerkitError\n"
            "try: check_prefect_home()\nexcept FlowerkitError as e: print(e.message); raise SystemExit(e.exit_code)")
    script = f"mount -t tmpfs -o ro tmpfs {home} && exec {sys.executable} -c \"$0\""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"} | {"HOME": str(home)}
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, code], env=env, capture_output=True, text=True,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Read-only file system" in result.stdout and "Set PREFECT_HOME to a writable folder" in result.stdout


def test_data_synth_out_that_is_a_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "is a file" in flat(result.output), result.output


# --- the Prefect server --------------------------------------------------------------------------------------


def test_unreachable_prefect_api_url_exits_3(flowers_root: Path, workdir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # the discard port: nothing listens
    result = runner.invoke(app, seed_args(flowers_root, "x", "--dry_run"))
    assert result.exit_code == 3, result.output
    assert "no Prefect server answers there" in flat(result.output) and "Unexpected" not in result.output


@pytest.mark.slow  # real processes, each importing torch
def test_ctrl_c_in_a_terminal_interrupts_the_run_cleanly(prefect_harness, flowers_root: Path, workdir: Path) -> None:
    """A terminal's Ctrl-C signals the whole process group. The temporary Prefect server must not die with
    it: exit 130, one paragraph, the run marked failed, and --resume completes it."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    from tests.servers import default_sigint

    flags = ["--dataset", "flower102", "--data_root", str(flowers_root), "--model_type", "testing", "--img_size",
             "32", "--num_steps", "400", "--eval_every", "200", "--train_batch_size", "4", "--eval_batch_size", "2",
             "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset", "flower102_tiny"]
    cmd = [sys.executable, "-m", "flowerkit", "train", "--name", "ctrlc", *flags]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the temporary server, in our group
    with default_sigint():  # as a terminal gives it, wherever pytest runs
        proc = subprocess.Popen(cmd, env=env, cwd=workdir, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    rows = workdir / "output" / "ctrlc" / "metrics.jsonl"
    deadline = time.monotonic() + 400  # the first temporary-server start is slow on a busy machine
    while proc.poll() is None and not (rows.exists() and rows.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the CLI's whole process group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "ConnectError" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.count("Error:") == 1 and "--resume" in flat(stderr.split("Error:")[1])
    record = json.loads((workdir / "output" / "ctrlc" / "run_record.json").read_text())
    assert record["stage_status"] == "failed" and record["error"]["type"] == "KeyboardInterrupt"

    # Resume through the session's server: no second temporary-server start.
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    resumed = subprocess.run([*cmd, "--resume"], env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((workdir / "output" / "ctrlc" / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["resumed"] == 1


@pytest.mark.slow  # real processes, each importing torch
def test_sigterm_stops_the_run_like_ctrl_c_with_exit_143(prefect_harness, flowers_root: Path,
                                                         workdir: Path) -> None:
    """A batch scheduler's stop (or docker stop, or a Prefect cancel): it ended with Prefect's crash lines and
    the signal's default death. Now: exit 143, one paragraph, the record marked, and --resume completes."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from prefect.settings import PREFECT_API_URL

    flags = ["--dataset", "flower102", "--data_root", str(flowers_root), "--model_type", "testing", "--img_size",
             "32", "--num_steps", "20", "--eval_every", "10", "--train_batch_size", "4", "--eval_batch_size", "2",
             "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset", "flower102_tiny"]
    cmd = [sys.executable, "-m", "flowerkit", "train", "--name", "term", *flags]
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's server: no start-up cost
    proc = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoint = workdir / "output" / "term" / "checkpoints" / "ckpt.bin"
    deadline = time.monotonic() + 120
    while proc.poll() is None and not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)  # to the CLI alone, as a scheduler does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and stderr.count("Error:") == 1, stderr[-3000:]
    assert "Terminated (SIGTERM" in stderr and "--resume" in flat(stderr.split("Error:")[1])
    record = json.loads((workdir / "output" / "term" / "run_record.json").read_text())
    assert record["stage_status"] == "failed" and "terminated (SIGTERM" in record["error"]["message"]
    assert record["error"]["type"] == "Terminated"  # one name for SIGTERM, however it reached the flow

    resumed = subprocess.run([*cmd, "--resume"], env=env, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((workdir / "output" / "term" / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["resumed"] == 1


# --- checkpoints ---------------------------------------------------------------------------------------------


def write_checkpoint(path: Path, **meta: object) -> Path:
    """A flowerkit checkpoint of a fresh testing model at 32 px (the trainer's payload keys); ``meta`` mislabels it."""
    from flowerkit.data.flowers102 import NUM_CLASSES, labelmap
    from flowerkit.engine.checkpoint import save_checkpoint
    from flowerkit.models.vit import build_model

    weights = build_model("testing", 32, NUM_CLASSES).state_dict()
    payload = {"model": weights, "model_type": "testing", "img_size": 32, "num_classes": NUM_CLASSES,
               "step": 10, "labelmap": labelmap()} | meta
    return save_checkpoint(path, payload)


@pytest.mark.parametrize("meta, words", [
    ({"model_type": "ViT-Ti_16"}, "its weights are not those of ViT-Ti_16"),
    ({"img_size": 64}, "a testing model at img_size 64 with 102 classes needs"),
    ({"num_classes": 10}, "with 10 classes needs"),
    ({"img_size": "abc"}, "img_size 'abc' is not a positive multiple"),
    ({"step": -1}, "step -1 is not a non-negative integer"),
    ({"step": [1, 2]}, "step [1, 2] is not a non-negative integer"),
    ({"model_type": 3}, "model_type 3 is not one of"),
])
def test_checkpoint_that_does_not_fit_its_metadata_exits_2(flowers_root: Path, workdir: Path, meta: dict,
                                                           words: str) -> None:
    ckpt = write_checkpoint(workdir / "ckpt.bin", **meta)
    result = runner.invoke(app, ["eval", "--name", "e", "--dataset", "flower102", "--data_root", str(flowers_root),
                                 "--checkpoint", str(ckpt), "--dry_run"])
    assert result.exit_code == 2, result.output
    assert f"--checkpoint {ckpt} does not fit its own record" in flat(result.output) and words in flat(result.output)
    assert not (workdir / "output").exists()


def test_a_fitting_checkpoint_passes_and_a_zero_byte_one_exits_2(flowers_root: Path, workdir: Path) -> None:
    ckpt = write_checkpoint(workdir / "ckpt.bin")
    args = ["eval", "--name", "e", "--dataset", "flower102", "--data_root", str(flowers_root), "--dry_run"]
    assert runner.invoke(app, [*args, "--checkpoint", str(ckpt)]).exit_code == 0
    (workdir / "empty.bin").write_bytes(b"")
    result = runner.invoke(app, [*args, "--checkpoint", str(workdir / "empty.bin")])
    assert result.exit_code == 2 and "is empty (0 bytes)" in flat(result.output), result.output


def test_test_after_checks_the_test_split_before_training(flowers_root: Path, workdir: Path) -> None:
    """--test_after reads the test split once training is over; a test split without images failed only then
    (after all the training) and --dry_run passed. Every split a run will read is selected by its plan."""
    import json

    from flowerkit.data.flowers102 import open_flowers102

    splits = open_flowers102(flowers_root).splits
    manifest = workdir / "no-test.json"
    manifest.write_text(json.dumps({"train": [int(i) for i in splits["train"][:4]],
                                    "val": [int(i) for i in splits["val"][:2]]}))
    args = ["train", "--name", "late", "--dataset", "flower102", "--data_root", str(flowers_root), "--model_type",
            "testing", "--img_size", "32", "--num_steps", "2", "--eval_every", "2", "--train_batch_size", "4",
            "--eval_batch_size", "2", "--tiny_train_subset", str(manifest), "--tiny_infer_subset", str(manifest),
            "--test_after"]
    for extra in (["--dry_run"], []):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 2, result.output
        assert "no ids for the test split" in flat(result.output) and result.output.count("Error:") == 1
    assert not (workdir / "output").exists()  # refused before anything was written: no training happened
