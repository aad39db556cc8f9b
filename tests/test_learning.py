"""Training really learns: the loss of a small ViT falls on the synthetic flowers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from flowerkit.config import TrainConfig, load_config
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
