"""Input pipelines: the same batches, crops and flips from two implementations.

The batch plan (which samples, which random-resized-crop box, which flip) is computed in the main process
from ``(seed, epoch, batch)`` alone, so it is deterministic, resumable mid-epoch and identical for both
pipelines:

- ``pil`` (the reference): decode each JPEG with PIL every time, crop, resize, flip; DataLoader workers.
- ``cached`` (the default): decode each image once into a uint8 cache (``pixel_cache``), then crop,
  resize, flip and normalise whole batches on the device with ``affine_grid`` + ``grid_sample``.

Both hand the model float tensors normalised as the original ViT recipe does: ``(x / 255 - 0.5) / 0.5``.
Their evaluation transform (no crop, no flip) lives in ``eval_transform.py``, shared with ``flowerkit predict``.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flowerkit.data.eval_transform import EvalTransform, normalize, resize_batch, squash_for_pil
from flowerkit.data.eval_transform import cache_resolution
from flowerkit.data.pixel_cache import median_short_side, open_pixel_cache
from flowerkit.data.table import SampleTable, build_table
from flowerkit.errors import ConfigError

CROP_SCALE = (0.05, 1.0)  # the original ViT-pytorch RandomResizedCrop scale
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10


@dataclass(frozen=True)
class Batch:
    """One planned batch: positions into the table; crop boxes (x0, y0, w, h) in [0, 1]; flips."""

    positions: np.ndarray
    boxes: torch.Tensor | None  # None: the whole image (evaluation)
    flips: torch.Tensor | None

    def shard(self, rank: int, world_size: int) -> Batch:
        """Rank ``rank``'s contiguous slice: the ranks' slices, in rank order, are this batch again."""
        lo, hi = shard_bounds(len(self.positions), rank, world_size)
        return Batch(self.positions[lo:hi], None if self.boxes is None else self.boxes[lo:hi],
                     None if self.flips is None else self.flips[lo:hi])


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of ``n`` items held by ``rank``: contiguous, in rank order, sizes differing by at most one."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def check_shardable(batch_size: int, world_size: int) -> None:
    """Every full micro-batch splits evenly, so each process takes the same share of every step."""
    if batch_size % world_size:
        raise ConfigError(
            f"The micro-batch (--train_batch_size / --gradient_accumulation_steps = {batch_size}) must be divisible "
            f"by the number of processes ({world_size} = --nproc_per_node x --nnodes), so each takes an equal "
            "share. Change --train_batch_size, --gradient_accumulation_steps or the process count.")


def random_crop_boxes(sizes: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop parameters, vectorised, as fractions of each image's size."""
    n = sizes.shape[0]
    w_img = torch.as_tensor(sizes[:, 0], dtype=torch.float64)[:, None]
    h_img = torch.as_tensor(sizes[:, 1], dtype=torch.float64)[:, None]
    area = w_img * h_img
    scale = torch.empty(n, CROP_TRIES, dtype=torch.float64).uniform_(*CROP_SCALE, generator=generator)
    log_ratio = torch.empty(n, CROP_TRIES, dtype=torch.float64).uniform_(
        math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=generator)
    ratio = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * scale * ratio))
    h = torch.round(torch.sqrt(area * scale / ratio))
    ok = (w > 0) & (h > 0) & (w <= w_img) & (h <= h_img)
    first = torch.argmax(ok.to(torch.int8), dim=1)
    has = ok.any(dim=1)
    w = torch.where(has, w.gather(1, first[:, None])[:, 0], torch.minimum(w_img, h_img)[:, 0])
    h = torch.where(has, h.gather(1, first[:, None])[:, 0], torch.minimum(w_img, h_img)[:, 0])
    u = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    x0 = torch.floor(u[:, 0] * (w_img[:, 0] - w + 1))
    y0 = torch.floor(u[:, 1] * (h_img[:, 0] - h + 1))
    return torch.stack([x0 / w_img[:, 0], y0 / h_img[:, 0], w / w_img[:, 0], h / h_img[:, 0]], dim=1).float()


class BatchPlan:
    """Which samples form micro-batch ``k`` of training, and how each is augmented.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``; batch ``k`` of the whole run is batch
    ``k % per_epoch`` of epoch ``k // per_epoch``. A resumed run asks for batches from ``k`` on and gets
    exactly what the uninterrupted run would have seen.
    """

    def __init__(self, table: SampleTable, batch_size: int, seed: int) -> None:
        self.table, self.batch_size, self.seed = table, batch_size, seed
        self.per_epoch = max(1, math.ceil(len(table) / batch_size))

    def batch(self, k: int) -> Batch:
        epoch, index = divmod(k, self.per_epoch)
        order = torch.randperm(len(self.table), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        positions = order[index * self.batch_size:(index + 1) * self.batch_size].numpy()
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + k) % 2**63)
        boxes = random_crop_boxes(self.table.sizes[positions], gen)
        flips = torch.rand(positions.size, generator=gen) < 0.5
        return Batch(positions, boxes, flips)

    def batch_length(self, k: int) -> int:
        """How many samples micro-batch ``k`` holds (all ranks together): fewer only at an epoch's end."""
        index = k % self.per_epoch
        return min(self.batch_size, len(self.table) - index * self.batch_size)

    def batches(self, start: int, stop: int, rank: int = 0, world_size: int = 1) -> BatchRange:
        """Batches ``start..stop``; with ``world_size`` > 1, rank ``rank``'s share of each."""
        if world_size > 1:
            check_shardable(self.batch_size, world_size)
        return BatchRange(self, start, stop, rank, world_size)


@dataclass(frozen=True)
class BatchRange(Sequence):
    """Batches ``start..stop`` of a plan, computed on demand (picklable for DataLoader workers)."""

    plan: BatchPlan
    start: int
    stop: int
    rank: int = 0
    world_size: int = 1

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> Batch:  # type: ignore[override]
        if not 0 <= i < len(self):
            raise IndexError(i)
        batch = self.plan.batch(self.start + i)
        return batch if self.world_size == 1 else batch.shard(self.rank, self.world_size)


@dataclass(frozen=True)
class EvalRange(Sequence):
    """Evaluation batches: the table in order, in batches of ``batch_size``. Equal ranges compare equal, so
    a pipeline can keep one DataLoader (and its persistent workers) for every evaluation of a run."""

    size: int  # the range ends before sample ``size``
    batch_size: int
    start: int = 0  # a rank's share of a sharded evaluation starts here

    def __len__(self) -> int:
        return math.ceil((self.size - self.start) / self.batch_size)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = self.start + i * self.batch_size
        return Batch(np.arange(start, min(start + self.batch_size, self.size)), None, None)


def eval_batches(table: SampleTable, batch_size: int) -> EvalRange:
    return EvalRange(len(table), batch_size)


# --- the pil pipeline ---------------------------------------------------------------------------------------

class PilBatches(torch.utils.data.Dataset):
    """Item ``i`` is a whole decoded batch (uint8 NCHW at ``img_size``), so workers parallelise over batches."""

    def __init__(self, table: SampleTable, batches: Sequence[Batch], img_size: int) -> None:
        self.table, self.batches, self.img_size = table, batches, img_size

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batches[i]
        images = [self._load(int(p), None if batch.boxes is None else batch.boxes[j],
                             bool(batch.flips[j]) if batch.flips is not None else False)
                  for j, p in enumerate(batch.positions)]
        return torch.stack(images), torch.as_tensor(batch.positions)

    def _load(self, position: int, box: torch.Tensor | None, flip: bool) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.table.paths[position]) as im:
            im = im.convert("RGB")
            if box is not None:
                w, h = im.size
                x0, y0, bw, bh = box.tolist()
                im = im.crop((round(x0 * w), round(y0 * h), round((x0 + bw) * w), round((y0 + bh) * h)))
            im = squash_for_pil(im, self.img_size)
            if flip:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


# --- the cached pipeline ------------------------------------------------------------------------------------

def cached_transform(pixels: torch.Tensor, batch: Batch, img_size: int) -> torch.Tensor:
    """Crop, resize and flip a batch of cached uint8 NHWC images on their device; returns uint8-range floats."""
    x = pixels.permute(0, 3, 1, 2).float()
    if batch.boxes is None:
        return resize_batch(x, img_size)  # evaluation: the whole image (eval_transform.EvalTransform)
    boxes = batch.boxes.to(x.device)
    x0, y0, w, h = boxes.unbind(1)
    sign = 1.0 - 2.0 * batch.flips.to(x.device).float()
    theta = torch.zeros(x.shape[0], 2, 3, device=x.device)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = 2 * x0 + w - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * y0 + h - 1
    grid = F.affine_grid(theta, [x.shape[0], 3, img_size, img_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _Prefetch:
    """Runs an iterator one step ahead in a thread, so gathering the next batch overlaps the model."""

    _END = object()

    def __init__(self, source: Iterator, depth: int = 2) -> None:
        self._queue: queue.Queue = queue.Queue(depth)
        self._thread = threading.Thread(target=self._fill, args=(source,), daemon=True)
        self._thread.start()

    def _fill(self, source: Iterator) -> None:
        try:
            for item in source:
                self._queue.put(item)
        except BaseException as exc:  # re-raised in the consumer
            self._queue.put(exc)
        self._queue.put(self._END)

    def __iter__(self):
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item


@dataclass
class InputPipeline:
    """Yields ``(images, positions)`` per planned batch: normalised float NCHW on ``device``."""

    table: SampleTable
    img_size: int
    device: torch.device
    kind: str = "cached"
    num_workers: int = 0
    persistent_workers: bool = False
    cache_dir: Path | None = None
    cache_size: int | None = None  # the cache's short side (--cache_size); None: the default rule
    _cache: np.ndarray | None = None
    resolution: int | None = None  # the pixel cache's side (cached), resolved from the table's image sizes
    _loaders: dict = field(default_factory=dict)  # EvalRange -> DataLoader with persistent workers

    def __post_init__(self) -> None:
        if self.kind == "cached":

            self.resolution = cache_resolution(self.img_size, self.cache_size, median_short_side(self.table))
            self._cache = open_pixel_cache(self.table, self.resolution, self.cache_dir, workers=self.num_workers)

    def eval_transform(self) -> EvalTransform:
        """What this pipeline does to an image at evaluation: recorded in checkpoints for flowerkit predict."""
        return EvalTransform(self.img_size, self.kind, self.resolution if self.kind == "cached" else None)

    def __call__(self, batches: Sequence[Batch]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        return self._cached(batches) if self.kind == "cached" else self._pil(batches)

    def _cached(self, batches) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        pin = self.device.type == "cuda"

        def gather():
            for batch in batches:
                pixels = torch.from_numpy(self._cache[batch.positions])
                yield (pixels.pin_memory() if pin else pixels), batch

        for pixels, batch in _Prefetch(gather()):
            x = cached_transform(pixels.to(self.device, non_blocking=True), batch, self.img_size)
            yield normalize(x), batch.positions

    def _pil(self, batches: Sequence[Batch]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        persistent = self.persistent_workers and self.num_workers > 0
        loader = self._loaders.get(batches) if persistent and isinstance(batches, EvalRange) else None
        if loader is None:
            loader = torch.utils.data.DataLoader(
                PilBatches(self.table, batches, self.img_size), batch_size=None, shuffle=False,
                num_workers=self.num_workers, persistent_workers=persistent, pin_memory=self.device.type == "cuda")
            if persistent and isinstance(batches, EvalRange):
                self._loaders[batches] = loader  # later evaluations reuse its live workers
        for pixels, positions in loader:
            yield normalize(pixels.to(self.device, non_blocking=True)), positions.numpy()
