"""Which images a run uses: resolve the dataset, select a split (or a tiny subset of it), hash the ids.

A ``Selection`` is a small record of plain values, so Prefect tasks can pass and persist it.
"""

from __future__ import annotations

import fcntl
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowerkit.data.flowers102 import (
    check_images_decode,
    check_images_exist,
    check_split_not_empty,
    open_flowers102,
)
from flowerkit.data.table import SampleTable, build_table
from flowerkit.data.subsets import ids_hash, resolve_subset, select_ids
from flowerkit.data.synth import SynthSpec, generate
from flowerkit.io.paths import cache_root

log = logging.getLogger(__name__)

SYNTHETIC_SPEC = SynthSpec(images_per_class=30, size=500, seed=0)


@dataclass(frozen=True)
class Selection:
    root: str
    split: str
    image_ids: list[int]
    ids_sha256: str
    subset: str  # the subset's manifest path, or "full <split> split"

    def table(self) -> SampleTable:
        return build_table(open_flowers102(Path(self.root)), np.asarray(self.image_ids, dtype=np.int64))


def synthetic_root_path(spec: SynthSpec = SYNTHETIC_SPEC) -> Path:
    return cache_root() / f"flower102_synthetic-{spec.images_per_class}x{spec.size}-s{spec.seed}"


def synthetic_root(spec: SynthSpec = SYNTHETIC_SPEC) -> Path:
    """The cached synthetic Flowers-102, generated on first use (under a lock, so parallel runs wait)."""
    root = synthetic_root_path(spec)
    if (root / "setid.mat").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / ".synthetic.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "setid.mat").is_file():
            log.info("generating the synthetic Flowers-102 once into %s", root)
            generate(root, spec)
    return root


def dataset_root(dataset: str, data_root: Path | None) -> Path:
    if dataset == "flower102_synthetic":
        return synthetic_root()
    return open_flowers102(data_root).root


def select_split(dataset: str, data_root: Path | None, split: str, subset: str | None,
                 batch_size: int) -> Selection:
    """Open the dataset, pick ``split`` (capped to the tiny subset when given) and check its images exist."""
    spec = resolve_subset(subset)
    flowers = open_flowers102(dataset_root(dataset, data_root))
    split_ids = flowers.splits[split]
    chosen = select_ids(spec, split, split_ids, flowers.label_of(split_ids), batch_size)
    subset_name = str(spec.path) if spec else f"full {split} split"
    # All before anything is written: no images, missing files, files that do not decode.
    check_split_not_empty(flowers, split, chosen, subset_name)
    check_images_exist(flowers, chosen)
    check_images_decode(flowers, chosen)
    return Selection(root=str(flowers.root.resolve()), split=split, image_ids=[int(i) for i in chosen],
                     ids_sha256=ids_hash(chosen), subset=subset_name)
