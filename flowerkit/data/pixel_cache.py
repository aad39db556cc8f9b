"""Decode each image once: a memory-mapped uint8 array of every sample, squashed to ``S x S``.

Squashing keeps fractional crop boxes valid (a box in [0, 1] of the original is the same box of the cached
image), so the cached pipeline crops what the PIL pipeline crops. The file is keyed by the content hash of
the images and the resolution: changed files get a new cache, and an interrupted build leaves no file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from flowerkit.data.eval_transform import draft_for_cache, squash_for_cache
from flowerkit.data.flowers102 import undecodable_error
from flowerkit.data.table import SampleTable
from flowerkit.io.paths import cache_root

CACHE_FORMAT = 1
PARALLEL_BUILD_MIN = 256  # below this, worker start-up costs more than it saves




def median_short_side(table: SampleTable) -> int | None:
    """The typical short side of the table's images (from their headers), or None for an empty table."""
    return int(np.median(table.sizes.min(axis=1))) if len(table) else None


def content_key(table: SampleTable, resolution: int) -> str:
    digest = hashlib.sha256(f"flowerkit-pixels-v{CACHE_FORMAT}:{resolution}".encode())
    for image_id, path in zip(table.image_ids.tolist(), table.paths):
        with open(path, "rb") as fh:
            digest.update(f"{image_id}:".encode() + hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def decode(path: Path, resolution: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            draft_for_cache(im, resolution)  # let libjpeg decode at a reduced scale: much faster
            return squash_for_cache(im.convert("RGB"), resolution)
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        raise undecodable_error(path, exc) from None


def _decode_many(args: tuple[list[Path], int]) -> np.ndarray:
    paths, resolution = args
    return np.stack([decode(p, resolution) for p in paths])


def open_pixel_cache(table: SampleTable, resolution: int, cache_dir: Path | None = None,
                     workers: int = 0) -> np.ndarray:
    """The cache of ``table`` at ``resolution`` (N, S, S, 3), built on first use."""
    folder = (cache_dir or cache_root()) / "pixels"
    path = folder / f"{content_key(table, resolution)}.npy"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(len(table), resolution, resolution, 3))
        _fill(array, table.paths, resolution, workers)
        array.flush()
        del array
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def _fill(array: np.ndarray, paths: list[Path], resolution: int, workers: int) -> None:
    n_workers = workers or (os.cpu_count() or 1)
    if len(paths) < PARALLEL_BUILD_MIN or n_workers == 1:
        for i, p in enumerate(paths):
            array[i] = decode(p, resolution)
        return
    chunk = 64
    jobs = [(paths[i:i + chunk], resolution) for i in range(0, len(paths), chunk)]
    with ProcessPoolExecutor(n_workers) as pool:
        for j, block in enumerate(pool.map(_decode_many, jobs)):
            array[j * chunk:j * chunk + len(block)] = block
