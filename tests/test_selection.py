"""Model selection: the best validation step is kept and reported, early stopping stops, resume keeps both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowerkit.run.config import TrainConfig, load_config
from flowerkit.data.flowers102 import open_flowers102
from flowerkit.data.pipeline import build_table
from flowerkit.engine import trainer
from flowerkit.engine.checkpoint import load_checkpoint
from flowerkit.engine.selection import Candidate, Selector
from flowerkit.errors import ConfigError


def test_selector_keeps_the_best_earliest_on_ties_and_the_top_k() -> None:
    sel = Selector("val_accuracy", top_k=2, patience=2)
    for step, value in [(1, 0.5), (2, 0.7), (3, 0.7), (4, 0.6)]:
        decision = sel.update(Candidate(step, value))
    assert sel.best == Candidate(2, 0.7)  # the tie at step 3 keeps step 2
    assert [c.step for c in sel.top] == [2, 3] and decision.evicted == [Candidate(4, 0.6)]
    assert decision.stop and sel.evals_without_improvement == 2
    loss = Selector("val_loss")
    assert loss.candidate(5, {"raw": {"loss": 2.0}, "ema": {"loss": 1.5}}) == Candidate(5, 1.5, "ema")
    assert loss.candidate(5, {"raw": {"loss": 1.5}, "ema": {"loss": 1.5}}).weights == "raw"
    restored = Selector("val_accuracy", top_k=2, patience=2)
    restored.load_state_dict(sel.state_dict())
    assert (restored.best, restored.top, restored.evals_without_improvement) == (sel.best, sel.top, 2)


@pytest.mark.parametrize("option, value", [("monitor", "train_loss"), ("save_top_k", -1),
                                           ("early_stop_patience", 0)])
def test_selection_options_are_validated(option: str, value, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"--{option}"):
        load_config(TrainConfig, {"name": "x", option: value, "output_dir": tmp_path})


def _setup(flowers_root: Path, tmp_path: Path, name: str, **overrides):
    """lr 30 on 8 images: validation loss (same classes, other images) bottoms out at step 2, then rises."""
    values = dict(name=name, data_root=flowers_root, model_type="testing", img_size=32, num_steps=10, eval_every=1,
                  warmup_steps=0, learning_rate=30.0, train_batch_size=4, eval_batch_size=8, monitor="val_loss",
                  save_top_k=2, output_dir=tmp_path) | overrides
    config = load_config(TrainConfig, values)
    flowers = open_flowers102(flowers_root)
    train_table = build_table(flowers, flowers.splits["train"][:8])
    val_ids = flowers.splits["val"]
    val_table = build_table(flowers, val_ids[np.isin(flowers.label_of(val_ids), np.unique(train_table.labels))])
    config.layout.run_dir.mkdir(parents=True)
    trainer.seed_everything(config.seed, deterministic=False)  # as the flow does: same init for every run
    return config, train_table, val_table


def _eval_losses(config) -> dict[int, float]:
    rows = [json.loads(line) for line in config.layout.metrics_jsonl.read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "eval"}


class Interrupt(Exception):
    pass


def test_selection_picks_the_mid_run_best_and_a_resumed_run_selects_the_same(flowers_root: Path,
                                                                              tmp_path: Path) -> None:
    config, train_table, val_table = _setup(flowers_root, tmp_path, "whole")
    result = trainer.train(config, torch.device("cpu"), "fp32", train_table, val_table, config.layout)
    losses = _eval_losses(config)
    best_step = min(losses, key=lambda s: (losses[s], s))
    assert 1 < best_step < config.num_steps, losses  # validation peaks mid-run
    assert (result.selected.step, result.steps) == (best_step, config.num_steps)
    best = load_checkpoint(config.layout.best_checkpoint)
    assert best["step"] == best_step and best["selection"]["value"] == pytest.approx(losses[best_step])
    top_two = sorted(losses, key=lambda s: (losses[s], s))[:2]
    assert [p.name for p in config.layout.top_k_checkpoints()] == sorted(f"best-{s}.bin" for s in top_two)
    assert load_checkpoint(config.layout.checkpoint)["step"] == config.num_steps  # ckpt.bin stays the latest

    # Killed after its best step, then resumed: the same step is selected, with the same weights.
    killed, *_ = _setup(flowers_root, tmp_path, "killed")

    def stop_after(progress) -> None:
        if progress.step == best_step + 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        trainer.train(killed, torch.device("cpu"), "fp32", train_table, val_table, killed.layout, stop_after)
    resumed = trainer.train(killed, torch.device("cpu"), "fp32", train_table, val_table, killed.layout)
    assert resumed.start_step == best_step + 2 and resumed.selected.step == best_step
    again = load_checkpoint(killed.layout.best_checkpoint)
    assert all(torch.equal(again["model"][k], v) for k, v in best["model"].items())
    assert [p.name for p in killed.layout.top_k_checkpoints()] == [p.name for p in config.layout.top_k_checkpoints()]


def test_early_stopping_stops_after_patience_evaluations(flowers_root: Path, tmp_path: Path) -> None:
    config, train_table, val_table = _setup(flowers_root, tmp_path, "patient", early_stop_patience=2, save_top_k=0)
    result = trainer.train(config, torch.device("cpu"), "fp32", train_table, val_table, config.layout)
    assert result.stopped_early and result.steps == result.selected.step + 2 < config.num_steps
    assert "--early_stop_patience 2" in result.stop_reason
    assert max(_eval_losses(config)) == result.steps
    # A retry of the finished task does not train on.
    again = trainer.train(config, torch.device("cpu"), "fp32", train_table, val_table, config.layout)
    assert again.steps == result.steps and again.stopped_early and again.selected.step == result.selected.step
