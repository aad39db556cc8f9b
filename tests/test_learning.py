"""Training really learns: the loss of a small ViT falls on the synthetic flowers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from flowerkit.run.config import TrainConfig, load_config
from flowerkit.data.flowers102 import open_flowers102
from flowerkit.data.table import build_table
from flowerkit.engine import trainer


def test_loss_falls(flowers_root: Path, tmp_path: Path) -> None:
    config = load_config(TrainConfig, dict(name="learn", data_root=flowers_root, model_type="ViT-Ti_16", img_size=32,
                                           num_steps=40, eval_every=40, train_batch_size=16, eval_batch_size=16,
                                           learning_rate=0.05, output_dir=tmp_path))
    flowers = open_flowers102(flowers_root)
    ids = flowers.splits["train"][np.isin(flowers.label_of(flowers.splits["train"]), range(8))]  # 8 classes
    table = build_table(flowers, ids)
    config.layout.run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout)
    losses = [json.loads(line)["loss"] for line in (config.layout.run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_a_retry_before_the_first_checkpoint_relogs_from_step_0(flowers_root: Path, tmp_path: Path) -> None:
    """Rows an interrupted attempt logged (even a torn last line) are replaced, not duplicated."""
    config = load_config(TrainConfig, dict(name="again", data_root=flowers_root, model_type="testing", img_size=32,
                                           num_steps=4, eval_every=4, train_batch_size=4, eval_batch_size=4,
                                           output_dir=tmp_path))
    flowers = open_flowers102(flowers_root)
    table = build_table(flowers, flowers.splits["train"][:8])
    config.layout.run_dir.mkdir(parents=True)
    earlier = [json.dumps({"kind": "train", "step": s, "loss": 9.0}) + "\n" for s in (1, 2, 3)]
    (config.layout.run_dir / "metrics.jsonl").write_text("".join(earlier) + '{"kind": "train", "st')
    trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout)
    rows = [json.loads(line) for line in (config.layout.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert all(r["loss"] != 9.0 for r in rows)


def _tiny(flowers_root: Path, tmp_path: Path, **overrides) -> tuple[TrainConfig, object]:
    values = dict(name="tiny", data_root=flowers_root, model_type="testing", img_size=32, num_steps=6, eval_every=2,
                  train_batch_size=4, eval_batch_size=8, output_dir=tmp_path) | overrides
    config = load_config(TrainConfig, values)
    flowers = open_flowers102(flowers_root)
    config.layout.run_dir.mkdir(parents=True, exist_ok=True)
    return config, build_table(flowers, flowers.splits["train"][:8])


def test_a_diverging_run_stops_and_keeps_its_last_finite_checkpoint(flowers_root: Path, tmp_path: Path) -> None:
    """A huge rate (warmed up from 0, so the first steps are sane) blows the loss up: the run stops with
    NonFiniteLossError naming the step, writes no NaN anywhere, and its last checkpoint is finite and resumes."""
    import pytest

    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.errors import FlowerkitError, NonFiniteLossError

    config, table = _tiny(flowers_root, tmp_path, learning_rate=1e38, warmup_steps=4, num_steps=8, eval_every=1)
    with pytest.raises(NonFiniteLossError) as caught:
        trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout)
    error = caught.value
    assert isinstance(error, FlowerkitError) and error.exit_code == 1
    assert f"step {error.step}" in error.message and "--learning_rate" in error.message
    state = load_checkpoint(config.layout.checkpoint)
    assert 0 < state["step"] < error.step
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    text = config.layout.metrics_jsonl.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert max(json.loads(line)["step"] for line in text.splitlines()) <= error.step
    # The checkpoint resumes: training continues from it (and, same options, diverges at the same step).
    with pytest.raises(NonFiniteLossError) as again:
        trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout)
    assert again.value.step == error.step and again.value.message == error.message


def test_the_train_step_raises_on_a_non_finite_loss_before_returning_it() -> None:
    """A forward hook that turns the logits into inf: the step's one sync sees the loss and raises."""
    import pytest

    from flowerkit.engine.schedules import make_scheduler
    from flowerkit.errors import NonFiniteLossError
    from flowerkit.models.vit import build_model

    model = build_model("testing", 32, 102)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = make_scheduler(optimizer, 0, 10, "cosine")
    step = trainer.TrainStep(trainer.Trainable(model=model, optimizer=optimizer, scheduler=scheduler), torch.arange(4),
                             trainer.StepSettings(precision="fp32", max_grad_norm=1.0))
    batch = [(torch.randn(4, 3, 32, 32), np.arange(4))]
    assert np.isfinite(step(batch).loss)
    model.register_forward_hook(lambda module, args, out: out * float("inf"))
    with pytest.raises(NonFiniteLossError, match="diverged at step 2: the loss"):
        step(batch)


def test_an_overflow_inside_adamw_is_a_divergence(flowers_root: Path, tmp_path: Path) -> None:
    """AdamW at 1e38 overflows float32 inside its own update (a bare RuntimeError from torch): it was an
    'unexpected error', retried twice by Prefect; it is the run diverging, named with its step."""
    import pytest

    from flowerkit.errors import NonFiniteLossError

    config, table = _tiny(flowers_root, tmp_path, learning_rate=1e38, optimizer="adamw", warmup_steps=1)
    with pytest.raises(NonFiniteLossError, match="diverged at step 2: the optimizer's update") as caught:
        trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout)
    assert "--learning_rate" in caught.value.message and isinstance(caught.value.__cause__, RuntimeError)


def test_a_diverged_flow_is_recorded_as_diverged_and_not_retried(prefect_harness, flowers_root: Path,
                                                                 tmp_path: Path) -> None:
    import pytest

    from flowerkit.errors import NonFiniteLossError
    from flowerkit.flows.train import train_flow
    from flowerkit.run.runs import summarize

    config = load_config(TrainConfig, dict(
        name="diverge", dataset="flower102", data_root=flowers_root, model_type="testing", img_size=32,
        num_steps=4, eval_every=2, train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
        tiny_infer_subset="flower102_tiny", learning_rate=1e38, optimizer="adamw", output_dir=tmp_path))
    with pytest.raises(NonFiniteLossError):
        train_flow(config)
    record = json.loads(config.layout.record.read_text())
    assert record["stage_status"] == "failed" and record["error"]["type"] == "NonFiniteLossError"
    assert record["tasks"]["train"]["attempt"] == 1 and record["tasks"]["train"]["state"] == "failed"
    assert summarize(config.layout.run_dir).status == "diverged"
