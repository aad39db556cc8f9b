"""The evaluation transform, in one place: what turns a decoded RGB image into the model's input.

Both input pipelines (``pipeline.py``: ``pil`` and ``cached``), the pixel cache and ``flowerkit predict``
call these functions, so a photo predicted from a checkpoint goes through exactly the numbers the run's
evaluation gave its images:

- ``pil``: PIL bilinear resize of the whole image to ``img_size`` x ``img_size`` (uint8), then normalise.
- ``cached``: JPEG draft decode at reduced scale, PIL bilinear resize to ``resolution`` x ``resolution``
  (uint8, the pixel cache's content), then torch's antialiased bilinear resize to ``img_size`` (float),
  then normalise.

Normalisation is the original ViT recipe's ``(x / 255 - 0.5) / 0.5``, i.e. mean = std = 0.5 per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch and PIL are imported where used: the module is on flowerkit predict's start-up path
    import torch
    from PIL import Image

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
KINDS = ("cached", "pil")
# The cached pipeline's PIL resize: reducing_gap=3 lets PIL shrink by an integer factor first (fast, and the
# pixel cache's recorded content, so it must never change without a new CACHE_FORMAT).
CACHE_REDUCING_GAP = 3.0


def draft_for_cache(im: Image.Image, resolution: int) -> None:
    """Let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) that still covers ``resolution``; call before the
    pixels are loaded. A no-op for other formats."""
    im.draft("RGB", (resolution, resolution))


def squash_for_cache(im: Image.Image, resolution: int) -> np.ndarray:
    """An RGB image as the pixel cache holds it: ``resolution`` x ``resolution`` uint8 HWC."""
    from PIL import Image

    return np.asarray(im.resize((resolution, resolution), Image.BILINEAR, reducing_gap=CACHE_REDUCING_GAP))


def squash_for_pil(im: Image.Image, img_size: int) -> Image.Image:
    """The pil pipeline's resize of a (cropped) RGB image to the model's square input."""
    from PIL import Image

    return im.resize((img_size, img_size), Image.BILINEAR)


def resize_batch(x: torch.Tensor, img_size: int) -> torch.Tensor:
    """Float NCHW (uint8 range) to ``img_size`` square: the cached pipeline's evaluation resize."""
    import torch.nn.functional as F

    if x.shape[-1] == img_size and x.shape[-2] == img_size:
        return x
    return F.interpolate(x, size=(img_size, img_size), mode="bilinear", antialias=True, align_corners=False)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (or uint8-range float) NCHW to the model's float input: ``(x / 255 - MEAN) / STD`` with 0.5s."""
    return pixels.float().div_(127.5).sub_(1.0)


@dataclass(frozen=True)
class EvalTransform:
    """A run's evaluation transform, recorded in its checkpoints (``eval_transform``) and ONNX exports.

    ``resolution``: the pixel cache's side for ``cached`` (the rule of ``cache_resolution`` as the
    run resolved it, which depends on its images' sizes, hence recorded); ``None`` for ``pil``.
    """

    img_size: int
    kind: str = "cached"
    resolution: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown evaluation transform kind {self.kind!r} (one of {', '.join(KINDS)})")
        if self.kind == "cached" and (self.resolution is None or self.resolution < self.img_size):
            raise ValueError(f"the cached transform needs a resolution of at least img_size {self.img_size}")

    @property
    def decode_size(self) -> int:
        """The side of the uint8 square each image is decoded to, before the batch step."""
        return int(self.resolution) if self.kind == "cached" else self.img_size

    def before_load(self, im: Image.Image) -> None:
        """Call on a freshly opened image, before anything reads its pixels (the cached pipeline's draft)."""
        if self.kind == "cached":
            draft_for_cache(im, int(self.resolution))

    def squash(self, rgb: Image.Image) -> np.ndarray:
        """A decoded RGB image to ``decode_size`` square uint8 HWC, as the run's pipeline does."""
        if self.kind == "cached":
            return squash_for_cache(rgb, int(self.resolution))
        return np.asarray(squash_for_pil(rgb, self.img_size))

    def to_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC at ``decode_size`` to the model's normalised float NCHW at ``img_size``."""
        x = pixels.permute(0, 3, 1, 2).float()
        if self.kind == "cached":
            x = resize_batch(x, self.img_size)
        return normalize(x)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "img_size": self.img_size, "resolution": self.resolution,
                "mean": list(MEAN), "std": list(STD)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalTransform:
        """From ``to_dict``'s output; a mean/std other than the recipe's is refused (it is not what runs use)."""
        if list(data.get("mean", MEAN)) != list(MEAN) or list(data.get("std", STD)) != list(STD):
            raise ValueError(f"mean/std {data.get('mean')}/{data.get('std')} differ from flowerkit's {MEAN}/{STD}")
        resolution = data.get("resolution")
        return cls(int(data["img_size"]), str(data.get("kind", "cached")),
                   None if resolution is None else int(resolution))


def transform_of_checkpoint(state: dict[str, Any]) -> tuple[EvalTransform, bool]:
    """The checkpoint's evaluation transform and whether it was recorded (True) or derived from its config.

    Checkpoints written before the transform was recorded hold their run's config: the pipeline kind and
    ``--cache_size``; without ``--cache_size`` the default rule (2 x img_size) is assumed, which is what the
    run used unless its images' median short side was smaller.
    """
    recorded = state.get("eval_transform")
    if isinstance(recorded, dict):
        return EvalTransform.from_dict(recorded), True
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    img_size = int(state["img_size"])
    kind = str(config.get("data_pipeline", "cached"))
    if kind == "pil":
        return EvalTransform(img_size, "pil"), False
    return EvalTransform(img_size, "cached", cache_resolution(img_size, config.get("cache_size"))), False


# --cache_size's default, relative to --img_size. Measured (docs/performance.md, benchmarks/cache_size.py):
# against the PIL reference, 2x is closest; below it small crops are upsampled from too few pixels, above it
# grid_sample (bilinear, no antialiasing) aliases when it shrinks large crops.
DEFAULT_CACHE_FACTOR = 2.0


def cache_resolution(img_size: int, cache_size: int | None = None, short_side: int | None = None) -> int:
    """The cached short side: ``--cache_size`` when given, else ``DEFAULT_CACHE_FACTOR`` x ``img_size``, but
    not above the images' own ``short_side`` (more pixels than the JPEGs hold add bytes, not detail).

    Never below ``img_size``: a smaller cache would upsample every image, crop or not.
    """
    if cache_size is not None:
        return max(img_size, cache_size)
    size = round(img_size * DEFAULT_CACHE_FACTOR)
    if short_side is not None:
        size = min(size, short_side)
    return max(img_size, size)
