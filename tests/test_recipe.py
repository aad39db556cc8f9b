"""The recipe changes exactly what it should: decay groups, layer-wise rates, mixing, smoothing, EMA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowerkit.run.config import TrainConfig, load_config
from flowerkit.data.flowers102 import open_flowers102
from flowerkit.data.pipeline import build_table
from flowerkit.engine import trainer
from flowerkit.engine.augment import BatchMixer
from flowerkit.engine.checkpoint import load_checkpoint
from flowerkit.engine.ema import make_ema
from flowerkit.engine.recipe import build_optimizer, param_groups
from flowerkit.errors import ConfigError
from flowerkit.models.vit import build_model


def test_weight_decay_skips_norms_biases_embeddings_and_class_token() -> None:
    model = build_model("ViT-Ti_16", 32, 102)
    groups = param_groups(model, weight_decay=0.05)
    decayed = {n for g in groups if g["weight_decay"] for n in g["names"]}
    plain = {n for g in groups if not g["weight_decay"] for n in g["names"]}
    assert decayed | plain == {n for n, _ in model.named_parameters()} and not decayed & plain
    assert {"class_token", "encoder.pos_embedding", "conv_proj.bias", "encoder.ln.weight"} <= plain
    assert all(n.endswith(("weight", "in_proj_weight")) and not n.startswith("encoder.ln") for n in decayed)
    assert "heads.head.weight" in decayed and "encoder.layers.encoder_layer_0.ln_1.weight" in plain


def test_layer_decay_scales_each_block_rate_as_timm_does() -> None:
    model = build_model("ViT-Ti_16", 32, 102)  # 12 blocks
    optimizer = build_optimizer(model, "adamw", 1e-3, 0.05, layer_decay=0.75)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["heads.head.weight"])] == pytest.approx(1e-3)
    assert rate[id(named["encoder.ln.weight"])] == pytest.approx(1e-3)
    for i in range(12):  # timm: scale = decay ** (num_layers + 1 - layer_id), layer_id = block + 1
        assert rate[id(named[f"encoder.layers.encoder_layer_{i}.mlp.0.weight"])] == pytest.approx(1e-3 * 0.75 ** (12 - i))
    assert rate[id(named["class_token"])] == pytest.approx(1e-3 * 0.75 ** 13)
    assert isinstance(optimizer, torch.optim.AdamW)
    sgd = build_optimizer(model, "sgd", 0.03, 0.0)
    assert {g["lr"] for g in sgd.param_groups} == {0.03} and sgd.defaults["momentum"] == 0.9


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_the_mixer_is_torchvisions_seeded_by_batch_index(mixup: float, cutmix: float) -> None:
    images, labels = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 5])
    mixer = BatchMixer(mixup, cutmix, 10, seed=3)
    before = torch.get_rng_state()
    x, target = mixer(images, labels, 7)
    assert torch.equal(torch.get_rng_state(), before)  # the global stream does not move
    x2, target2 = mixer(images, labels, 7)
    assert torch.equal(x, x2) and torch.equal(target, target2)  # a resumed run mixes the same
    assert not torch.equal(mixer(images, labels, 8)[0], x)
    assert torch.allclose(target.sum(1), torch.ones(6)) and target.shape == (6, 10)
    from torchvision.transforms import v2  # here, not at the top: every pytest-xdist process collects this file

    torch.default_generator.manual_seed((3 * 1_000_033 + 7) % 2**63)  # the reference: torchvision itself
    choices = ([v2.MixUp(alpha=mixup, num_classes=10)] if mixup else []) + (
        [v2.CutMix(alpha=cutmix, num_classes=10)] if cutmix else [])
    ref = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)
    ref_x, ref_target = ref(images, labels)
    torch.set_rng_state(before)
    assert torch.equal(x, ref_x) and torch.equal(target, ref_target)


def test_label_smoothing_and_mixing_change_the_loss_as_torch_defines_it() -> None:
    model = build_model("testing", 32, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        logits = model(x)
    trainable = trainer.Trainable(model=model, optimizer=optimizer, scheduler=scheduler)
    step = trainer.TrainStep(trainable, labels, trainer.StepSettings(precision="fp32", max_grad_norm=1.0,
                                                                      label_smoothing=0.1))
    assert step([(x, np.arange(4))]).loss == pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.1).item(),
                                                           rel=1e-5)
    mixer = BatchMixer(0.8, 0.0, 10, seed=0)
    mixed = trainer.TrainStep(trainable, labels, trainer.StepSettings(precision="fp32", max_grad_norm=1.0,
                                                                       label_smoothing=0.1, mixer=mixer))
    index = scheduler.last_epoch
    mx, target = mixer(x, labels, index)
    with torch.no_grad():
        expected = F.cross_entropy(model(mx), target, label_smoothing=0.1).item()
    stats = mixed([(x, np.arange(4))])
    assert stats.loss == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():  # accuracy counts the label with the larger share of each mixed image
        assert stats.accuracy == (model(mx).argmax(1) == target.argmax(1)).float().mean().item()


def test_ema_is_torchs_exponential_average_of_the_weights() -> None:
    model = torch.nn.Linear(2, 1)
    ema = make_ema(model, 0.9)
    first = model.weight.detach().clone()
    ema.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update_parameters(model)
    assert torch.allclose(ema.module.weight, 0.9 * first + 0.1 * model.weight)


@pytest.mark.parametrize("option, value", [("optimizer", "lamb"), ("layer_decay", 0.0), ("layer_decay", 1.5),
                                           ("mixup_alpha", -1), ("cutmix_alpha", float("inf")),
                                           ("label_smoothing", 1.0), ("ema_decay", 1.0)])
def test_recipe_options_are_validated(option: str, value, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"--{option}"):
        load_config(TrainConfig, {"name": "x", option: value, "output_dir": tmp_path})


class Interrupt(Exception):
    pass


def test_a_resumed_modern_recipe_run_equals_the_uninterrupted_one(flowers_root: Path, tmp_path: Path) -> None:
    """AdamW + layer decay + smoothing + mixup/cutmix + EMA: killed at step 4 and resumed, the run ends with the
    same weights, EMA and selection as one that ran through (every piece of state is checkpointed)."""
    flowers = open_flowers102(flowers_root)
    table = build_table(flowers, flowers.splits["train"][:8])

    def run(name: str, stop_at: int | None = None):
        config = load_config(TrainConfig, dict(
            name=name, data_root=flowers_root, model_type="testing", img_size=32, num_steps=6, eval_every=2,
            train_batch_size=4, eval_batch_size=8, output_dir=tmp_path, optimizer="adamw", learning_rate=1e-3,
            weight_decay=0.05, layer_decay=0.75, label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0,
            ema_decay=0.5, monitor="val_loss"))
        config.layout.run_dir.mkdir(parents=True, exist_ok=True)

        def hook(progress) -> None:
            if progress.step == stop_at:
                raise Interrupt

        trainer.seed_everything(config.seed, deterministic=False)
        try:
            trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout, hook)
        except Interrupt:
            trainer.seed_everything(config.seed + 1, deterministic=False)  # the resumed process's RNG differs
            trainer.train(config, torch.device("cpu"), "fp32", table, table, config.layout)
        return load_checkpoint(config.layout.checkpoint), load_checkpoint(config.layout.best_checkpoint)

    (whole, whole_best), (resumed, resumed_best) = run("whole"), run("resumed", stop_at=4)
    for key in ("model", "ema"):
        assert all(torch.equal(whole[key][k], v) for k, v in resumed[key].items()), key
    assert whole["selection"] == resumed["selection"] and whole_best["selection"] == resumed_best["selection"]
    assert whole_best["selection"]["weights"] in ("raw", "ema")


@pytest.mark.parametrize("recipe", ["vit_paper_flowers", "vit_modern_flowers"])
def test_named_recipes_load_and_validate(recipe: str, tmp_path: Path) -> None:
    path = Path(__file__).parent.parent / "configs" / f"{recipe}.yaml"
    config = load_config(TrainConfig, {"name": "r", "output_dir": tmp_path}, path)
    assert (config.img_size, config.num_steps, config.train_batch_size, config.max_grad_norm) == (384, 500, 512, 1.0)
    assert config.optimizer == ("sgd" if "paper" in recipe else "adamw")
