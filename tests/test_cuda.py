"""What only a CUDA GPU runs: the train and eval flows on it with bf16 autocast and torch.compile, channels-last
inputs, and resume continuing exactly (the GPU's random state included). CI has no GPU, so these skip there;
each path that also runs on the CPU has its CPU test elsewhere (test_train_flow, test_eval_flow,
test_run_contract, test_distributed; DDP over NCCL: test_distributed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowerkit.run.config import EvalConfig, TrainConfig, load_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def tiny(flowers_root: Path, output_dir: Path, name: str, **extra) -> TrainConfig:
    return load_config(TrainConfig, dict(
        name=name, dataset="flower102", data_root=flowers_root, model_type="testing", img_size=32, num_steps=6,
        eval_every=3, train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
        tiny_infer_subset="flower102_tiny", device="cuda", output_dir=output_dir) | extra)


def test_train_and_eval_flows_on_cuda_with_bf16_and_compile(prefect_harness, flowers_root: Path,
                                                            tmp_path: Path) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    from flowerkit.flows.eval import eval_flow
    from flowerkit.flows.train import train_flow

    trained = train_flow(tiny(flowers_root, tmp_path, "gpu", precision="bf16", compile=True))
    assert trained.device.device == "cuda:0" and trained.precision == "bf16"
    run = Path(trained.run_dir)
    record = json.loads((run / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["distributed"]["backend"] == "none"
    stamp = json.loads((run / "env_stamp.json").read_text())
    assert stamp["gpu_count"] >= 1 and "not applicable" not in stamp["driver_version"]
    assert len((run / "fiftyone" / "predictions.jsonl").read_text().splitlines()) == 4

    evaluated = eval_flow(load_config(EvalConfig, dict(
        name="gpu-eval", dataset="flower102", data_root=flowers_root, checkpoint=run / "checkpoints" / "best.bin",
        tiny_infer_subset="flower102_tiny", eval_batch_size=2, device="cuda", output_dir=tmp_path)))
    assert evaluated.metrics["num_samples"] == 4 and evaluated.precision == "bf16"


def test_inputs_and_weights_are_channels_last_on_cuda() -> None:
    from flowerkit.engine.evaluator import prepare_input, prepare_model
    from flowerkit.models.vit import build_model

    model = prepare_model(build_model("testing", 32, 102), torch.device("cuda"))
    assert model.conv_proj.weight.is_contiguous(memory_format=torch.channels_last)
    x = prepare_input(torch.randn(2, 3, 32, 32, device="cuda"))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert model(x).shape == (2, 102)


class _Stop(Exception):
    pass


def _train(config: TrainConfig, stop_at: int | None = None) -> None:
    """Through the trainer, as the train task calls it; ``stop_at``: fail after that step (a killed run)."""
    from flowerkit.engine import trainer
    from flowerkit.run.plan import select, split_requests

    def stop(report) -> None:
        if report.step == stop_at:
            raise _Stop

    train, val = (select(config, r).table() for r in split_requests(config))
    trainer.seed_everything(config.seed, config.deterministic)
    trainer.train(config, torch.device("cuda:0"), "fp32", train, val, config.layout, on_progress=stop)


def test_resume_on_cuda_continues_exactly(flowers_root: Path, tmp_path: Path) -> None:
    """Dropout draws from the GPU's generator: a resumed run restores it and ends where an uninterrupted
    run ends."""
    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.run.rundir import RunLock, claim_run_dir

    runs = {}
    for name, stop_at in (("straight", None), ("stopped", 4)):
        config = tiny(flowers_root, tmp_path, name, deterministic=True, precision="fp32")
        lock = RunLock(config.layout)
        claim_run_dir(config, "train", False, None, config.num_steps, lock)
        try:
            if stop_at is not None:
                with pytest.raises(_Stop):
                    _train(config, stop_at)  # after the checkpoint of step 3
            _train(config)
        finally:
            lock.release()
        runs[name] = load_checkpoint(config.layout.checkpoint)
    assert runs["stopped"]["step"] == runs["straight"]["step"] == 6 and "cuda" in runs["straight"]["rng"]
    for key, value in runs["straight"]["model"].items():
        torch.testing.assert_close(runs["stopped"]["model"][key], value, msg=key)
