"""One training run on two CPU processes (gloo): the same training as one process with the same global batch,
rank 0 alone writing, a killed rank failing the run in one paragraph, and torchrun resuming it.

The model is the tiny "testing" ViT with its dropout set to 0 in every process of these tests (a
``sitecustomize`` on PYTHONPATH, so spawned workers and torchrun's processes get it too): dropout draws its
masks per process, so two processes and one can only agree without it. The data is a manifest of 7 training
and 5 validation images, so the last batch of every epoch (3 images) and the evaluation (5) split unevenly
over the two ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from flowerkit.run.config import TrainConfig, load_config
from flowerkit.data.selection import Selection
from flowerkit.data.pipeline import BatchPlan, shard_bounds
from flowerkit.engine.checkpoint import load_checkpoint
from flowerkit.run.plan import RunPlan

pytestmark = pytest.mark.distributed

NO_DROPOUT = """\
import dataclasses
from flowerkit.models import configs
configs.MODEL_CONFIGS["testing"] = dataclasses.replace(configs.MODEL_CONFIGS["testing"], dropout=0.0)
"""
STEPS, EVAL_EVERY = 20, 5


def flat(text: str) -> str:
    return " ".join(text.split())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def no_dropout(tmp_path_factory: pytest.TempPathFactory):
    """Dropout 0 for the testing model in this process and in every process started from it."""
    from flowerkit.models import configs

    folder = tmp_path_factory.mktemp("site")
    (folder / "sitecustomize.py").write_text(NO_DROPOUT)
    import dataclasses

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(configs.MODEL_CONFIGS, "testing", dataclasses.replace(configs.MODEL_CONFIGS["testing"],
                                                                           dropout=0.0))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
        yield


@pytest.fixture(scope="module")
def manifest(flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flowerkit.data.flowers102 import open_flowers102

    splits = open_flowers102(flowers_root).splits
    path = tmp_path_factory.mktemp("subset") / "uneven.yaml"
    path.write_text(json.dumps({"train": [int(i) for i in splits["train"][:7]],
                                "val": [int(i) for i in splits["val"][:5]]}))
    return path


def flags(flowers_root: Path, manifest: Path) -> list[str]:
    return ["--dataset", "flower102", "--data_root", str(flowers_root), "--model_type", "testing", "--img_size",
            "32", "--num_steps", str(STEPS), "--eval_every", str(EVAL_EVERY), "--train_batch_size", "4",
            "--eval_batch_size", "3", "--tiny_train_subset", str(manifest), "--tiny_infer_subset", str(manifest),
            "--device", "cpu"]


def train_config(flowers_root: Path, manifest: Path, output_dir: Path, name: str, **extra) -> TrainConfig:
    options = dict(zip(*[iter(flags(flowers_root, manifest))] * 2))
    return load_config(TrainConfig, {k.removeprefix("--"): v for k, v in options.items()} | dict(
        name=name, output_dir=output_dir, **extra))


def selections(config: TrainConfig) -> tuple[Selection, Selection]:
    from flowerkit.run.plan import select, split_requests

    train, val = (select(config, request) for request in split_requests(config))
    return train, val


def plan_of(config: TrainConfig, device: str = "cpu") -> RunPlan:
    """The plan the flow would run (its device as given, its images selected)."""
    from flowerkit.device import DeviceChoice
    from flowerkit.run.plan import split_requests

    return RunPlan(flow="train", config=config, resume=False, device=DeviceChoice(device, device, "test"),
                   precision="fp32", splits=split_requests(config), selections=dict(zip(("train", "val"),
                                                                                       selections(config))))


def train_in_one_process(config: TrainConfig, device: str = "cpu") -> Path:
    """The run in this process, through the trainer itself (as the train task calls it); returns its folder."""
    from flowerkit.engine import trainer
    from flowerkit.run.rundir import RunLock, claim_run_dir

    lock = RunLock(config.layout)
    claim_run_dir(config, "train", False, None, config.num_steps, lock)
    try:
        train, val = selections(config)
        trainer.seed_everything(config.seed, config.deterministic)
        trainer.train(config, torch.device(device), "fp32", train.table(), val.table(), config.layout)
    finally:
        lock.release()
    return config.layout.run_dir


def train_in_processes(config: TrainConfig, device: str = "cpu", reports: list | None = None) -> dict | None:
    """The run in ``config.nproc_per_node`` workers started by ``launch`` (as the train task starts them)."""
    from flowerkit.engine import distributed
    from flowerkit.run.rundir import RunLock, claim_run_dir

    lock = RunLock(config.layout)
    claim_run_dir(config, "train", False, None, config.num_steps, lock)
    try:
        plan = plan_of(config, device)
        return distributed.launch(plan, plan.selections["train"], plan.selections["val"],
                                  on_progress=None if reports is None else reports.append)
    finally:
        lock.release()


@pytest.fixture(scope="module")
def reference(no_dropout, flowers_root: Path, manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run in one process (global batch 4); returns its run directory."""
    return train_in_one_process(train_config(flowers_root, manifest, tmp_path_factory.mktemp("one"), "one"))


def weights(run_dir: Path, name: str = "ckpt.bin") -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / name, map_location="cpu")["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()  # the same checkpoint format: DDP's wrapper leaves no trace
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=atol, msg=key)


def assert_same_rows(a: Path, b: Path, rel: float = 1e-4) -> None:
    """metrics.jsonl: every step's train row and every evaluation, once each, with the same numbers."""
    rows_a, rows_b = read_jsonl(a / "metrics.jsonl"), read_jsonl(b / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in rows_a] == [(r["kind"], r["step"]) for r in rows_b]
    assert [r["step"] for r in rows_a if r["kind"] == "train"] == list(range(1, STEPS + 1))
    for row_a, row_b in zip(rows_a, rows_b):
        for key in ("loss", "accuracy", "lr"):
            if key in row_a:
                assert row_a[key] == pytest.approx(row_b[key], rel=rel, abs=1e-6), (row_a, row_b)


def test_batches_and_evaluations_shard_into_what_one_process_sees(flowers_root: Path, manifest: Path) -> None:
    config = train_config(flowers_root, manifest, Path("unused"), "plan")
    plan = BatchPlan(selections(config)[0].table(), 4, seed=3)
    for k in range(4):  # a full batch (4) and an epoch's short last one (3), twice
        whole = plan.batch(k)
        shares = [plan.batches(k, k + 1, rank, 2)[0] for rank in range(2)]
        assert np.concatenate([s.positions for s in shares]).tolist() == whole.positions.tolist()
        assert torch.equal(torch.cat([s.boxes for s in shares]), whole.boxes)
        assert torch.equal(torch.cat([s.flips for s in shares]), whole.flips)
        assert sum(len(s.positions) for s in shares) == plan.batch_length(k) == (4 if k % 2 == 0 else 3)
    assert [shard_bounds(5, r, 2) for r in range(2)] == [(0, 3), (3, 5)]
    assert [shard_bounds(1, r, 3) for r in range(3)] == [(0, 1), (1, 1), (1, 1)]  # a rank may get nothing
    with pytest.raises(Exception, match="must be divisible by the number of processes"):
        plan.batches(0, 1, 0, 3)


def test_two_processes_train_as_one_with_the_same_global_batch(reference: Path, flowers_root: Path,
                                                               manifest: Path, tmp_path: Path) -> None:
    """``launch``: two gloo workers, rank 0 writing; weights, logged rows and the selected checkpoint's
    predictions equal one process's, and rank 0's progress reaches the launching process."""
    from flowerkit.artifacts.record import read_record

    config = train_config(flowers_root, manifest, tmp_path, "two", nproc_per_node=2)
    reports: list = []
    result = train_in_processes(config, reports=reports)
    two = config.layout.run_dir
    assert result is not None and result.steps == STEPS and result.start_step == 0
    assert_same_weights(weights(reference), weights(two))
    assert_same_rows(reference, two)
    np.testing.assert_allclose(best_logits(reference, config), best_logits(two, config), rtol=1e-4, atol=1e-5)
    assert reports and reports[-1].step == STEPS and reports[-1].last_eval["step"] == STEPS
    assert read_record(two)["progress"]["images_per_second"] > 0  # what rank 0 wrote for the launcher
    assert "[rank 0]" in (two / "run.log").read_text()
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.bin", "ckpt.bin"]


def best_logits(run_dir: Path, config: TrainConfig) -> np.ndarray:
    """The selected checkpoint's logits over the validation images, in table order, in this process."""
    from flowerkit.engine.evaluator import evaluate_checkpoint
    from flowerkit.engine.trainer import make_pipeline

    table = selections(config)[1].table()
    return evaluate_checkpoint(load_checkpoint(run_dir / "checkpoints" / "best.bin"),
                               make_pipeline(config, table, config.img_size, torch.device("cpu")), 3, "fp32")


def _rank_process(parent: int, rank: int):
    import psutil

    for child in psutil.Process(parent).children(recursive=True):
        try:
            if child.name() == f"flowerkit-r{rank}":
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_and_torchrun_resumes_it(prefect_harness, reference: Path,
                                                             flowers_root: Path, manifest: Path,
                                                             workdir: Path) -> None:
    """``flowerkit train --nproc_per_node 2`` (a real CLI process): rank 1's worker is killed after the first
    checkpoint: exit 1, one paragraph naming rank 1, the record failed. ``torchrun ... -m flowerkit train
    --resume`` then completes it, to the weights, rows and predictions of the one-process run."""
    from prefect.settings import PREFECT_API_URL

    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}  # the session's server: no ephemeral start
    args = ["train", "--name", "split", *flags(flowers_root, manifest)]
    proc = subprocess.Popen([sys.executable, "-m", "flowerkit", *args, "--nproc_per_node", "2"], env=env,
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = workdir / "output" / "split"
    deadline = time.monotonic() + 300  # spawning the workers is slow on a busy machine
    victim = None
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        if (run / "checkpoints" / "ckpt.bin").exists():
            victim = _rank_process(proc.pid, 1)
        time.sleep(0.02)
    assert victim is not None, "no checkpoint while rank 1 was alive: " + (proc.stderr.read() or "")[-3000:]
    victim.kill()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]  # the CLI's own paragraph
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    paragraph = flat(stderr.split("\nError:")[1])
    assert "Training rank 1 of 2 failed" in paragraph and "SIGKILL" in paragraph and "--resume" in paragraph
    record = json.loads((run / "run_record.json").read_text())
    assert record["stage_status"] == "failed" and "rank 1 of 2" in record["error"]["message"]
    assert record["tasks"]["train"]["state"] == "failed" and record["tasks"]["train"]["attempt"] == 1  # no retry

    torchrun = Path(sys.executable).with_name("torchrun")
    resumed = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "flowerkit", *args,
                              "--resume"], env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["resumed"] == 1
    assert record["distributed"] == {"world_size": 2, "backend": "gloo", "per_rank_batch": 2, "nnodes": 1}
    stamp = json.loads((run / "env_stamp.json").read_text())
    assert (stamp["world_size"], stamp["distributed_backend"], stamp["per_rank_batch_size"]) == (2, "gloo", 2)
    assert_same_weights(weights(reference), weights(run))
    assert_same_rows(reference, run)
    config = train_config(flowers_root, manifest, workdir, "split")
    rows = read_jsonl(run / "fiftyone" / "predictions.jsonl")
    assert [r["image_id"] for r in rows] == selections(config)[1].image_ids  # one row per sample, in order
    expected = best_logits(reference, config)
    assert [r["prediction"] for r in rows] == expected.argmax(1).tolist()
    confidence = torch.softmax(torch.from_numpy(expected), 1).max(1).values.tolist()
    assert [r["confidence"] for r in rows] == pytest.approx(confidence, abs=1e-5)
    assert "resuming from" in (run / "run.log").read_text()


def test_sigterm_to_a_multi_process_run_is_exit_143_and_resumable(prefect_harness, flowers_root: Path,
                                                                  manifest: Path, workdir: Path) -> None:
    """A scheduler stops the launching process: torch's agent stops the workers and raised SignalException,
    which was a DistributedError (exit 1). Now: exit 143, one paragraph with the resume hint, record marked."""
    import signal

    from prefect.settings import PREFECT_API_URL

    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "flowerkit", "train", "--name", "stopped",
                             *flags(flowers_root, manifest), "--nproc_per_node", "2"], env=env, cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = workdir / "output" / "stopped"
    deadline = time.monotonic() + 300
    while proc.poll() is None and not (run / "checkpoints" / "ckpt.bin").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, (proc.stderr.read() or "")[-3000:]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "Terminated (SIGTERM" in errors[0] and "--resume" in flat(stderr.split("\nError:")[1])
    record = json.loads((run / "run_record.json").read_text())
    assert record["stage_status"] == "failed" and "terminated (SIGTERM" in record["error"]["message"]
    assert record["tasks"]["train"]["attempt"] == 1  # not retried


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between processes needs two CUDA GPUs")
def test_ddp_over_nccl_trains_as_one_gpu(no_dropout, flowers_root: Path, manifest: Path, tmp_path: Path) -> None:
    """Every GPU present, one process each (NCCL), against one process on one GPU with the same global batch."""
    gpus = torch.cuda.device_count()
    options = dict(train_batch_size=2 * gpus, device="cuda")  # 2 samples per GPU (7 training images: capped)
    one = train_in_one_process(train_config(flowers_root, manifest, tmp_path / "one", "one", **options), "cuda:0")
    config = train_config(flowers_root, manifest, tmp_path / "many", "many", nproc_per_node=gpus, **options)
    result = train_in_processes(config, "cuda:0")
    assert result is not None and result.steps == STEPS
    # Looser than on the CPU: TF32 convolutions and GPU reductions round differently for other batch shapes.
    assert_same_weights(weights(one), weights(config.layout.run_dir), atol=1e-3)
    assert_same_rows(one, config.layout.run_dir, rel=1e-3)
