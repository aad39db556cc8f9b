"""The run contract: precedence, validation, immutable run dirs, resume, records, verify, prune, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowerkit.artifacts import run_index
from flowerkit.artifacts.retention import TIME_FORMAT
from flowerkit.cli import app
from flowerkit.run.config import TrainConfig, load_config
from tests.conftest import SEED_FLAGS

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


def seed_args(flowers_root: Path, name: str = "run", *extra: str) -> list[str]:
    return ["train", "--name", name, "--dataset", "flower102", "--data_root", str(flowers_root), *SEED_FLAGS, *extra]


def tree_digest(*roots: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_precedence_cli_over_yaml_over_env_over_dotenv_over_defaults(workdir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def steps(**cli) -> int:
        config_file = workdir / "run.yaml" if (workdir / "run.yaml").exists() else None
        return load_config(TrainConfig, {"name": "p", **cli}, config_file).num_steps

    assert steps() == 10000
    (workdir / ".env").write_text("FLOWERKIT_NUM_STEPS=20\n")
    assert steps() == 20
    monkeypatch.setenv("FLOWERKIT_NUM_STEPS", "30")
    assert steps() == 30
    (workdir / "run.yaml").write_text("num_steps: 40\n")
    assert steps() == 40
    assert steps(num_steps=50) == 50


def test_precedence_through_the_cli(flowers_root: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWERKIT_LEARNING_RATE", "0.5")
    (workdir / "c.yaml").write_text("learning_rate: 0.25\nseed: 7\n")
    result = runner.invoke(app, [*seed_args(flowers_root), "--config", "c.yaml", "--dry_run"])
    assert result.exit_code == 0, result.output
    assert "lr 0.25" in result.output  # YAML beats the environment
    result = runner.invoke(app, [*seed_args(flowers_root), "--config", "c.yaml", "--learning_rate", "0.125",
                                 "--dry_run"])
    assert "lr 0.125" in result.output  # the flag beats YAML
    assert not (workdir / "output").exists()  # a dry run writes nothing


@pytest.mark.parametrize("flag, value, words", [
    ("--device", "tpu", "--device"),
    ("--learning_rate", "0", "--learning_rate"),
    ("--num_workers", "-1", "--num_workers"),
    ("--gradient_accumulation_steps", "0", "--gradient_accumulation_steps"),
    ("--train_batch_size", "0", "--train_batch_size"),
    ("--eval_batch_size", "-2", "--eval_batch_size"),
    ("--persistent_workers", None, "persistent_workers needs num_workers > 0"),
    ("--warmup_steps", "10", "warmup_steps (10) must be below num_steps (10)"),
    ("--num_steps", "-5", "--num_steps"),
    ("--retention_days", "30", "--retention_days"),
    ("--cache_size", "32", "--cache_size 32 is below --img_size 64"),
    ("--name", "../escape", "--name"),
])
def test_each_bad_setting_exits_2_naming_the_option(flowers_root: Path, workdir: Path, flag: str,
                                                    value: str | None, words: str) -> None:
    args = seed_args(flowers_root, "bad") + ([flag] if value is None else [flag, value])
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert words in flat(result.output)
    assert not (workdir / "output").exists()


def test_bad_yaml_config_file(flowers_root: Path, workdir: Path) -> None:
    (workdir / "c.yaml").write_text("num_stepz: 3\n")
    result = runner.invoke(app, [*seed_args(flowers_root), "--config", "c.yaml"])
    assert result.exit_code == 2 and "unknown option(s): num_stepz" in flat(result.output)
    result = runner.invoke(app, [*seed_args(flowers_root), "--config", "missing.yaml"])
    assert result.exit_code == 3


def test_resolved_config_is_byte_identical_for_the_same_inputs(flowers_root: Path) -> None:
    a = load_config(TrainConfig, {"name": "x", "data_root": flowers_root, "num_steps": 7})
    b = load_config(TrainConfig, {"name": "x", "data_root": flowers_root, "num_steps": 7})
    assert a.resolved_yaml() == b.resolved_yaml() and a.config_hash() == b.config_hash()
    assert "warmup_steps: 0" in a.resolved_yaml()  # defaults are resolved, not left out


def test_existing_run_is_never_overwritten(tiny_run: Path, flowers_root: Path) -> None:
    output = tiny_run.parent
    before = tree_digest(tiny_run, output / "tb" / "flower_mps")
    result = runner.invoke(app, [*seed_args(flowers_root, "flower_mps"), "--output_dir", str(output)])
    assert result.exit_code == 4
    assert "--resume" in result.output and "another --name" in flat(result.output)
    assert tree_digest(tiny_run, output / "tb" / "flower_mps") == before
    complete = runner.invoke(app, [*seed_args(flowers_root, "flower_mps"), "--output_dir", str(output), "--resume"])
    assert complete.exit_code == 4 and "already complete" in flat(complete.output)


def hold_run_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds the run's lock (as a live run does) until it is killed."""
    script = ("import sys, time; from flowerkit.run.layout import RunLayout; from flowerkit.run.rundir import RunLock; "
              "lock = RunLock(RunLayout.for_run(sys.argv[1])); lock.acquire(); print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_run_has_one_writer_at_a_time(tiny_run: Path, flowers_root: Path, tmp_path: Path) -> None:
    """--resume of a run another live process writes is refused with exit 4 naming the owner; once that
    process is gone (its lock file stays behind), the lock no longer blocks."""
    from flowerkit.run.layout import RunLayout
    from flowerkit.run.rundir import RunLock

    output = tmp_path / "out"
    copy_run(tiny_run, output, "flower_mps", started=datetime.now(timezone.utc))
    record_path = output / "flower_mps" / "run_record.json"
    record_path.write_text(json.dumps(json.loads(record_path.read_text()) | {"stage_status": "failed"}))
    holder = hold_run_lock(output / "flower_mps")
    try:
        result = runner.invoke(app, [*seed_args(flowers_root, "flower_mps"), "--output_dir", str(output), "--resume"])
        assert result.exit_code == 4, result.output
        assert f"pid {holder.pid} on host" in flat(result.output) and "one writer at a time" in flat(result.output)
    finally:
        holder.kill()
        holder.wait()
    layout = RunLayout.for_run(output / "flower_mps")
    assert layout.lock.exists() and not RunLock(layout).is_held_elsewhere()
    lock = RunLock(layout)
    lock.acquire()  # a dead owner's lock file does not block
    lock.release()


def test_a_damaged_record_shows_as_damaged_and_cannot_be_resumed(tiny_run: Path, flowers_root: Path,
                                                                 tmp_path: Path) -> None:
    output = tmp_path / "out"
    copy_run(tiny_run, output, "flower_mps", started=datetime.now(timezone.utc))
    (output / "flower_mps" / "run_record.json").write_text('{"stage_status": "comple')
    listed = runner.invoke(app, ["runs", "list", "--output-dir", str(output)])
    assert listed.exit_code == 0 and "damaged" in listed.output and "complete" not in listed.output
    resumed = runner.invoke(app, [*seed_args(flowers_root, "flower_mps"), "--output_dir", str(output), "--resume"])
    assert resumed.exit_code == 2 and "is damaged" in flat(resumed.output) and "Traceback" not in resumed.output


def test_runs_verify_catches_a_modified_predictions_file(tiny_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    shutil.copytree(tiny_run, output / "flower_mps")
    shutil.copytree(tiny_run.parent / "tb" / "flower_mps", output / "tb" / "flower_mps")
    ok = runner.invoke(app, ["runs", "verify", "flower_mps", "--output-dir", str(output)])
    assert ok.exit_code == 0, ok.output
    predictions = output / "flower_mps" / "fiftyone" / "predictions.jsonl"
    predictions.write_text(predictions.read_text().replace('"label": 0', '"label": 1', 1))
    (output / "flower_mps" / "extra.txt").write_text("not part of the run")
    bad = runner.invoke(app, ["runs", "verify", "flower_mps", "--output-dir", str(output)])
    assert bad.exit_code == 2
    assert "changed   flower_mps/fiftyone/predictions.jsonl" in bad.output
    assert "unlisted  flower_mps/extra.txt" in bad.output


def test_runs_list_and_show(tiny_run: Path) -> None:
    listed = runner.invoke(app, ["runs", "list", "--output-dir", str(tiny_run.parent)])
    assert listed.exit_code == 0 and "flower_mps" in listed.output and "complete" in listed.output
    shown = runner.invoke(app, ["runs", "show", "flower_mps", "--output-dir", str(tiny_run.parent)])
    assert shown.exit_code == 0 and "status" in shown.output and "complete" in shown.output
    missing = runner.invoke(app, ["runs", "show", "nope", "--output-dir", str(tiny_run.parent)])
    assert missing.exit_code == 3


def copy_run(source: Path, output: Path, name: str, started: datetime) -> None:
    """A copy of a finished run under another name, as if it had started at ``started``."""
    shutil.copytree(source, output / name)
    shutil.copytree(source.parent / "tb" / source.name, output / "tb" / name)
    record = json.loads((output / name / "run_record.json").read_text())
    for entry in record["artifact_index"]:
        head, _, rest = entry["relative_path"].partition("/")
        entry["relative_path"] = f"{name}/{rest}" if head == source.name else f"tb/{name}/{rest.partition('/')[2]}"
    record.update(name=name, started_utc=started.strftime(TIME_FORMAT), retention_days=90)
    (output / name / "run_record.json").write_text(json.dumps(record))
    run_index.write_entry(output, record)  # what claiming the run at ``started`` wrote


def test_prune_decides_from_the_record_not_from_an_edited_retention_file(tiny_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    copy_run(tiny_run, output, "young", started=datetime.now(timezone.utc) - timedelta(hours=1))
    retention = output / "young" / "RETENTION.txt"
    retention.write_text(retention.read_text().replace("expires_utc: 20", "expires_utc: 19"))
    result = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--output-dir", str(output)])
    assert result.exit_code == 0 and "No run" in result.output and (output / "young").exists()


def test_prune_keeps_an_expired_run_that_fails_verification_unless_forced(tiny_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    copy_run(tiny_run, output, "old", started=datetime.now(timezone.utc) - timedelta(days=91))
    (output / "old" / "labelmap.json").write_text("{}")
    kept = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--output-dir", str(output)])
    assert kept.exit_code == 2 and "keeping old" in flat(kept.output) and "1 changed" in flat(kept.output)
    assert (output / "old").exists()
    forced = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--force", "--output-dir", str(output)])
    assert forced.exit_code == 0 and not (output / "old").exists() and not (output / "tb" / "old").exists()


def test_prune_survives_a_damaged_record_and_reports_it(tiny_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    copy_run(tiny_run, output, "old", started=datetime.now(timezone.utc) - timedelta(days=91))
    copy_run(tiny_run, output, "broken", started=datetime.now(timezone.utc) - timedelta(days=91))
    (output / "broken" / "run_record.json").write_text('{"started_utc": "not a time", "retention_days": 90}')
    result = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--output-dir", str(output)])
    assert result.exit_code == 2 and "keeping broken" in flat(result.output)
    assert not (output / "old").exists() and (output / "broken").exists()


def test_an_edited_start_date_fails_verify_and_prune_keeps_the_run(tiny_run: Path, tmp_path: Path) -> None:
    """Editing started_utc made a young run prunable while verify still passed: the record's own fields are
    now checked against the run index, kept outside the run folder."""
    output = tmp_path / "out"
    copy_run(tiny_run, output, "young", started=datetime.now(timezone.utc) - timedelta(hours=1))
    ok = runner.invoke(app, ["runs", "verify", "young", "--output-dir", str(output)])
    assert ok.exit_code == 0 and "its record matches the run index" in flat(ok.output), ok.output
    record_path = output / "young" / "run_record.json"
    record = json.loads(record_path.read_text())
    record["started_utc"] = (datetime.now(timezone.utc) - timedelta(days=400)).strftime(TIME_FORMAT)
    record_path.write_text(json.dumps(record))

    bad = runner.invoke(app, ["runs", "verify", "young", "--output-dir", str(output)])
    assert bad.exit_code == 2 and "differs from the run index in started_utc" in flat(bad.output), bad.output
    for extra in ([], ["--force"]):
        kept = runner.invoke(app, ["runs", "prune", "--older-than-retention", *extra, "--output-dir", str(output)])
        assert kept.exit_code == 2 and "keeping young (expiry unknown): damaged:" in flat(kept.output), kept.output
        assert (output / "young").exists()
    listed = runner.invoke(app, ["runs", "list", "--output-dir", str(output)])
    assert "damaged" in listed.output


def test_a_run_from_before_the_index_verifies_but_is_pruned_only_with_force(tiny_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    copy_run(tiny_run, output, "old", started=datetime.now(timezone.utc) - timedelta(days=91))
    run_index.remove_entry(output, "old")  # as a run written before flowerkit kept a run index
    verified = runner.invoke(app, ["runs", "verify", "old", "--output-dir", str(output)])
    assert verified.exit_code == 0 and "not in the run index" in flat(verified.output), verified.output
    kept = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--output-dir", str(output)])
    assert kept.exit_code == 2 and "nothing vouches for its start date" in flat(kept.output)
    forced = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--force", "--output-dir", str(output)])
    assert forced.exit_code == 0 and not (output / "old").exists(), forced.output


def test_a_claimed_run_is_indexed(tiny_run: Path) -> None:
    record = json.loads((tiny_run / "run_record.json").read_text())
    assert run_index.check(tiny_run.parent, tiny_run.name, record).state == "ok"  # written by claim_run_dir


def test_prune_deletes_only_expired_runs(tiny_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    copy_run(tiny_run, output, "old", started=datetime.now(timezone.utc) - timedelta(days=91))
    copy_run(tiny_run, output, "fresh", started=datetime.now(timezone.utc) - timedelta(hours=1))
    dry = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--dry-run", "--output-dir", str(output)])
    assert dry.exit_code == 0 and "would delete old" in dry.output and "fresh" not in dry.output
    assert (output / "old").exists()
    real = runner.invoke(app, ["runs", "prune", "--older-than-retention", "--output-dir", str(output)])
    assert real.exit_code == 0
    assert not (output / "old").exists() and not (output / "tb" / "old").exists() and (output / "fresh").exists()
    assert not run_index.entry_path(output, "old").exists() and run_index.entry_path(output, "fresh").exists()


def test_two_identical_runs_give_identical_predictions(prefect_harness, flowers_root: Path, workdir: Path) -> None:
    from flowerkit.flows.train import train_flow

    results = []
    for name in ("same-a", "same-b"):
        config = load_config(TrainConfig, dict(name=name, dataset="flower102", data_root=flowers_root,
                                               model_type="ViT-Ti_16", img_size=32, num_steps=6, eval_every=3,
                                               train_batch_size=4, eval_batch_size=2, deterministic=True,
                                               tiny_train_subset="flower102_tiny", tiny_infer_subset="flower102_tiny"))
        results.append(train_flow(config))
    a, b = (Path(r.run_dir) / "fiftyone" / "predictions.jsonl" for r in results)
    assert a.read_bytes() == b.read_bytes()
    assert results[0].train.final_loss == results[1].train.final_loss
    record = json.loads((Path(results[0].run_dir) / "run_record.json").read_text())
    assert record["determinism"]["torch_deterministic_algorithms"] is True
    assert set(record["determinism"]["sample_ids_sha256"]) == {"train", "val"}


@pytest.mark.slow  # real processes, each importing torch
def test_resume_after_the_process_is_killed(prefect_harness, flowers_root: Path, workdir: Path) -> None:
    """Kill a real CLI run after its first checkpoint; --resume finishes it exactly as an uninterrupted run."""
    from prefect.settings import PREFECT_API_URL

    from flowerkit.flows.train import train_flow

    flags = ["--dataset", "flower102", "--data_root", str(flowers_root), "--model_type", "testing", "--img_size",
             "32", "--num_steps", "200", "--eval_every", "20", "--train_batch_size", "4", "--eval_batch_size", "2",
             "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset", "flower102_tiny"]
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's server: no ephemeral start-up
    cmd = [sys.executable, "-m", "flowerkit", "train", "--name", "killed", *flags]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    ckpt = workdir / "output" / "killed" / "checkpoints" / "ckpt.bin"
    deadline = time.monotonic() + 60
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    record = json.loads((workdir / "output" / "killed" / "run_record.json").read_text())
    assert record["stage_status"] != "complete", "the run finished before it could be killed"
    listed = runner.invoke(app, ["runs", "list", "--output-dir", str(workdir / "output")])
    assert "crashed" in listed.output  # its process is gone: not shown as running forever

    # The kill needs a process of its own; the resume runs here, on the same session server (workdir is the cwd).
    resumed = runner.invoke(app, [*cmd[3:], "--resume"])
    assert resumed.exit_code == 0, resumed.output[-2000:]
    record = json.loads((workdir / "output" / "killed" / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["progress"]["step"] == 200 and record["resumed"] == 1
    assert "resuming from" in (workdir / "output" / "killed" / "run.log").read_text()

    straight = train_flow(load_config(TrainConfig, dict(name="straight", **_as_kwargs(flags))))
    assert straight.train.steps == 200
    killed_rows = (workdir / "output" / "killed" / "fiftyone" / "predictions.jsonl").read_bytes()
    assert killed_rows == (Path(straight.run_dir) / "fiftyone" / "predictions.jsonl").read_bytes()


def _as_kwargs(flags: list[str]) -> dict[str, str]:
    return {flags[i].lstrip("-"): flags[i + 1] for i in range(0, len(flags), 2)}
