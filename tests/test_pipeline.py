"""The cached pipeline feeds the model the same images as the PIL reference: same samples, crops and flips.

The two resample differently (PIL resizes the crop of the original JPEG; the cached path decodes once to a
small square and crops that on the device), so pixels agree up to resize rounding, not bit for bit. The
tests therefore compare against what a wrong crop or a missed flip would look like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowerkit.data.flowers102 import open_flowers102
from flowerkit.data.pipeline import BatchPlan, InputPipeline, eval_batches
from flowerkit.data.table import build_table

IMG_SIZE = 32
BATCH = 16


@pytest.fixture(scope="module")
def pipelines(flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[InputPipeline, InputPipeline]:
    dataset = open_flowers102(flowers_root)
    table = build_table(dataset, dataset.splits["train"][:48])
    cpu = torch.device("cpu")
    cache_dir = tmp_path_factory.mktemp("pixel-cache")
    return (InputPipeline(table, IMG_SIZE, cpu, kind="pil"),
            InputPipeline(table, IMG_SIZE, cpu, kind="cached", cache_dir=cache_dir))


def one(pipe: InputPipeline, batch) -> tuple[torch.Tensor, np.ndarray]:
    (images, positions), = list(pipe([batch]))
    return images, positions


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


def test_training_batches_match_the_pil_reference(pipelines) -> None:
    pil, cached = pipelines
    plan, other_seed = BatchPlan(pil.table, BATCH, seed=3), BatchPlan(pil.table, BATCH, seed=4)
    for k in range(3):  # three batches, across the epoch boundary (48 samples / 16)
        reference, ref_positions = one(pil, plan.batch(k))
        fast, fast_positions = one(cached, plan.batch(k))
        assert fast.shape == reference.shape == (BATCH, 3, IMG_SIZE, IMG_SIZE)
        assert fast.dtype == reference.dtype == torch.float32
        np.testing.assert_array_equal(fast_positions, ref_positions)
        same = mean_abs(fast, reference)
        # Inputs are in [-1, 1]: 0.05 is about 6 grey levels of 255 on average.
        assert same < 0.05, f"batch {k}: cached differs from pil by {same:.4f} on average"
        assert same < 0.5 * mean_abs(fast.flip(-1), reference), f"batch {k}: flips disagree"
        wrong_crops, _ = one(cached, other_seed.batch(k))
        assert same < 0.3 * mean_abs(wrong_crops, reference), f"batch {k}: crops disagree"


def test_evaluation_batches_match_the_pil_reference(pipelines) -> None:
    pil, cached = pipelines
    batch = eval_batches(pil.table, BATCH)[1]
    reference, _ = one(pil, batch)
    fast, _ = one(cached, batch)
    assert mean_abs(fast, reference) < 0.03
    shifted, _ = one(cached, eval_batches(pil.table, BATCH)[2])  # other images
    assert mean_abs(fast, reference) < 0.2 * mean_abs(shifted, reference)


def test_both_pipelines_are_deterministic_for_a_seed(pipelines) -> None:
    pil, cached = pipelines
    for pipe in (pil, cached):
        first, _ = one(pipe, BatchPlan(pipe.table, BATCH, seed=5).batch(2))
        again, _ = one(pipe, BatchPlan(pipe.table, BATCH, seed=5).batch(2))
        assert torch.equal(first, again)


def test_a_batch_range_is_the_same_batches_in_order(pipelines) -> None:
    _, cached = pipelines
    plan = BatchPlan(cached.table, BATCH, seed=7)
    streamed = list(cached(plan.batches(1, 3)))
    singles = [one(cached, plan.batch(k)) for k in (1, 2)]
    for (images, positions), (single_images, single_positions) in zip(streamed, singles, strict=True):
        np.testing.assert_array_equal(positions, single_positions)
        assert torch.equal(images, single_images)


def test_pil_evaluations_reuse_one_loader_with_persistent_workers(flowers_root) -> None:
    flowers = open_flowers102(flowers_root)
    table = build_table(flowers, flowers.splits["val"][:10])
    pipe = InputPipeline(table, 32, torch.device("cpu"), kind="pil", num_workers=1, persistent_workers=True)
    first = [x for x, _ in pipe(eval_batches(table, 4))]
    second = [x for x, _ in pipe(eval_batches(table, 4))]
    assert len(pipe._loaders) == 1  # the second evaluation used the same DataLoader and its live worker
    assert [x.shape[0] for x in first] == [4, 4, 2]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_cache_size_rule_and_option(pipelines, tmp_path: Path) -> None:
    from flowerkit.data.eval_transform import cache_resolution

    assert cache_resolution(32) == 64 and cache_resolution(224) == 448  # the measured default: 2x --img_size
    assert cache_resolution(384, short_side=500) == 500  # never more pixels than the JPEGs hold
    assert cache_resolution(384, short_side=300) == 384  # nor fewer than the input
    assert cache_resolution(32, 40, short_side=36) == 40  # an explicit --cache_size is taken as given
    pil, cached = pipelines
    assert cached._cache.shape[1:] == (64, 64, 3)  # 2 x 32, below the test images' 96 px
    small = InputPipeline(pil.table, IMG_SIZE, torch.device("cpu"), kind="cached", cache_dir=tmp_path, cache_size=37)
    assert small._cache.shape[1:] == (37, 37, 3)
    # What the default was chosen for: closer to the PIL reference than the old 256/224 margin.
    batch = BatchPlan(pil.table, BATCH, seed=3).batch(0)
    reference, _ = one(pil, batch)
    assert mean_abs(one(cached, batch)[0], reference) < 0.8 * mean_abs(one(small, batch)[0], reference)
