"""A stopped or failed command says so once: its exit code and one paragraph, nothing repeated above it (issue 29).

Real `flowerkit` processes and real signals, on the session's Prefect server. SIGTERM to a training run printed
Prefect's "Crash detected!" lines before the paragraph; a diverged run printed its message four times more
and offered a finite checkpoint that did not exist; SIGTERM to `flowerkit predict` (no --name) exited 130.
The record, run.log and the Prefect flow run keep everything they kept.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import default_sigint

TINY = ["--dataset", "flower102", "--model_type", "testing", "--img_size", "32", "--train_batch_size", "4",
        "--eval_batch_size", "2", "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset", "flower102_tiny"]


def flat(text: str) -> str:
    return " ".join(text.split())


def cli_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's server: no start-up


def log_lines(stderr: str, level: str) -> list[str]:
    """Log records of ``level`` as Prefect's console handler prints them (``12:00:00.000 | ERROR   | ...``)."""
    return [line for line in stderr.splitlines() if f"| {level}" in line]


def one_paragraph(stderr: str) -> str:
    """The CLI's paragraph, asserting it is the only one and nothing above it is an error or a traceback."""
    assert stderr.count("Error:") == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert log_lines(stderr, "ERROR") == [], stderr[-3000:]
    return flat(stderr.split("Error:")[1])


def flow_run_state(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state.type.value


@pytest.mark.slow  # real processes, each importing torch
def test_sigterm_in_training_prints_only_flowerkits_paragraph(prefect_harness, flowers_root: Path,
                                                             workdir: Path) -> None:
    cmd = [sys.executable, "-m", "flowerkit", "train", "--name", "stopped", "--data_root", str(flowers_root), *TINY,
           "--num_steps", "400", "--eval_every", "10"]
    proc = subprocess.Popen(cmd, env=cli_env(), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    run = workdir / "output" / "stopped"
    deadline = time.monotonic() + 300
    while proc.poll() is None and not (run / "checkpoints" / "ckpt.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)  # to the CLI alone, as a scheduler does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "Crash detected" not in stderr and "Crashed(" not in stderr, stderr[-3000:]
    paragraph = one_paragraph(stderr)
    assert paragraph.startswith("Terminated (SIGTERM") and "--resume" in paragraph
    # Marked as before: the record, the flow run on the server, and run.log's full account.
    record = json.loads((run / "run_record.json").read_text())
    assert record["stage_status"] == "failed" and record["error"]["type"] == "Terminated"
    assert flow_run_state(record["flow_run_id"]) == "CRASHED"
    log = (run / "run.log").read_text()
    assert "Crash detected! Execution was aborted by a termination signal." in log
    assert "run stopped failed: terminated (SIGTERM" in log


@pytest.mark.slow  # a real process, importing torch
def test_a_diverged_run_says_so_once_and_offers_no_checkpoint_it_never_wrote(prefect_harness, flowers_root: Path,
                                                                            workdir: Path) -> None:
    """AdamW at 1e38 diverges within a few steps, long before the first evaluation (the first checkpoint)."""
    cmd = [sys.executable, "-m", "flowerkit", "train", "--name", "diverged", "--data_root", str(flowers_root),
           *TINY, "--num_steps", "40", "--eval_every", "20", "--optimizer", "adamw", "--learning_rate", "1e38"]
    done = subprocess.run(cmd, env=cli_env(), cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.count("training diverged") == 1, done.stderr[-3000:]
    paragraph = one_paragraph(done.stderr)
    assert paragraph.startswith("training diverged at step") and "--learning_rate" in paragraph
    assert "before its first checkpoint" in paragraph and "holds finite weights" not in paragraph
    run = workdir / "output" / "diverged"
    assert not (run / "checkpoints" / "ckpt.bin").exists()
    record = json.loads((run / "run_record.json").read_text())
    assert record["stage_status"] == "failed" and record["error"]["type"] == "NonFiniteLossError"
    assert flow_run_state(record["flow_run_id"]) == "FAILED"
    assert "run diverged failed: training diverged" in (run / "run.log").read_text()  # run.log keeps the record


def test_a_divergence_after_a_checkpoint_names_its_step(flowers_root: Path, tmp_path: Path) -> None:
    """The message offers the checkpoint on disk, by its step (a sane warm-up, then a huge rate)."""
    import torch

    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.data.flowers102 import open_flowers102
    from flowerkit.data.table import build_table
    from flowerkit.engine import trainer
    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.errors import NonFiniteLossError

    config = load_config(TrainConfig, dict(name="late", data_root=flowers_root, model_type="testing", img_size=32,
                                           num_steps=8, eval_every=1, train_batch_size=4, eval_batch_size=8,
                                           output_dir=tmp_path, learning_rate=1e38, warmup_steps=4))
    flowers = open_flowers102(flowers_root)
    config.layout.run_dir.mkdir(parents=True)
    table = build_table(flowers, flowers.splits["train"][:8])
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout)
    saved = load_checkpoint(config.layout.checkpoint)["step"]
    assert 0 < saved < caught.value.step
    assert f"its last checkpoint (step {saved}) holds finite weights" in caught.value.message
    assert f"continue from step {saved}" in caught.value.message


@pytest.mark.slow  # real processes, each importing torch
@pytest.mark.parametrize("sig, code, words", [(signal.SIGTERM, 143, "Terminated (SIGTERM"),
                                              (signal.SIGINT, 130, "Interrupted (Ctrl-C)")])
def test_a_signal_while_predicting_is_its_exit_code_and_one_paragraph(flowers_root: Path, workdir: Path,
                                                                     sig: int, code: int, words: str) -> None:
    """`flowerkit predict -` (paths on standard input, which stays open) is stopped after its first row."""
    from tests.test_fail_closed_inputs import write_checkpoint

    checkpoint = write_checkpoint(workdir / "model.bin")
    out = workdir / "rows.jsonl"
    cmd = [sys.executable, "-m", "flowerkit", "predict", "-", "--checkpoint", str(checkpoint), "--batch_size", "1",
           "--out", str(out)]
    with default_sigint():  # as a terminal gives it, wherever pytest runs
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    proc.stdin.write(f"{flowers_root / 'jpg' / 'image_00001.jpg'}\n")
    proc.stdin.flush()
    seen = ""
    while "Model:" not in seen:  # the model is loaded: predicting, and waiting for more paths
        line = proc.stderr.readline()
        assert line, seen[-3000:]
        seen += line
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, (seen + stderr)[-3000:]
    paragraph = one_paragraph(stderr)
    assert paragraph.startswith(words) and "--resume" not in paragraph and "run_record" not in paragraph
    assert not out.exists()  # never half-written
