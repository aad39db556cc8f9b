"""The samples of one split a run uses: ids, labels, image paths and sizes, in a fixed order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowerkit.data.flowers102 import Flowers102, check_images_exist


@dataclass(frozen=True)
class SampleTable:
    """The samples one split of a run uses, in a fixed order."""

    image_ids: np.ndarray
    labels: np.ndarray
    paths: list[Path]
    sizes: np.ndarray  # (N, 2) original width, height

    def __len__(self) -> int:
        return int(self.image_ids.size)

    def sample_ids(self) -> list[str]:
        return [f"image_{int(i):05d}" for i in self.image_ids]


def build_table(dataset: Flowers102, image_ids: np.ndarray) -> SampleTable:
    from PIL import Image

    image_ids = np.asarray(image_ids, dtype=np.int64)
    check_images_exist(dataset, image_ids)
    paths = [dataset.image_path(int(i)) for i in image_ids]
    sizes = np.empty((len(paths), 2), dtype=np.int64)
    for k, path in enumerate(paths):
        with Image.open(path) as im:  # reads the header only
            sizes[k] = im.size
    return SampleTable(image_ids, dataset.label_of(image_ids), paths, sizes)
