"""A synthetic Flowers-102 in exactly the official file layout, with classes a model can really learn.

Class ``c`` is a flower whose petal colour is one of 17 hues (``c % 17``) and whose petal count is one of six
(``c // 17``); the centre disc's colour repeats the class as a third cue. Pose, size, lighting, petal
shape and background vary per image, so the classes are separable but not trivially so.

A ``variant`` changes the class design, not the kind of image: ``shifted`` puts its 17 hues halfway between
the standard ones and uses other petal counts and disc colours, so its 102 classes are new classes of the
same kind of flower. Pre-training on it and fine-tuning on the standard set measures transfer of features,
not of labels.
"""

from __future__ import annotations

import colorsys
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowerkit.data.flowers102 import NUM_CLASSES, SPLIT_KEYS, image_relpath

PETAL_COUNTS = (3, 4, 5, 6, 8, 12)
HUES = 17
DISC_COLOURS = ((250, 210, 40), (110, 60, 20), (30, 25, 25))
OFFICIAL_TRAIN_PER_CLASS = 10
OFFICIAL_VAL_PER_CLASS = 10
BACKGROUND_SCALE = 4  # the background is rendered at 1/4 of the image size (see _background)


@dataclass(frozen=True)
class ClassDesign:
    """What tells the 102 classes apart: 6 petal counts x 17 hues (offset in hue steps), 3 disc colours."""

    petal_counts: tuple[int, ...]
    hue_offset: float
    disc_colours: tuple[tuple[int, int, int], ...]


DESIGNS: dict[str, ClassDesign] = {
    "standard": ClassDesign(PETAL_COUNTS, 0.0, DISC_COLOURS),  # flower102_synthetic
    "shifted": ClassDesign((2, 5, 7, 9, 10, 16), 0.5, ((235, 235, 225), (200, 40, 120), (40, 90, 200))),
}


@dataclass(frozen=True)
class SynthSpec:
    images_per_class: int = 30
    size: int = 500  # short side in pixels, as the real images
    seed: int = 0
    variant: str = "standard"  # a key of DESIGNS


def split_counts(images_per_class: int) -> tuple[int, int, int]:
    """Train/val/test images per class: the official 10/10/rest when there are enough, else a fair share."""
    if images_per_class >= OFFICIAL_TRAIN_PER_CLASS + OFFICIAL_VAL_PER_CLASS + 1:
        return OFFICIAL_TRAIN_PER_CLASS, OFFICIAL_VAL_PER_CLASS, images_per_class - 20
    n_train = max(1, images_per_class // 3)
    n_val = max(1, (images_per_class - n_train) // 2) if images_per_class > 1 else 0
    return n_train, n_val, images_per_class - n_train - n_val


def _class_colour(label: int, rng: np.random.Generator, hue_offset: float = 0.0) -> tuple[int, int, int]:
    hue = ((label % HUES) + hue_offset) / HUES + rng.uniform(-0.008, 0.008)
    sat = rng.uniform(0.65, 1.0)
    val = rng.uniform(0.7, 1.0)
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def render_flower(label: int, size: int, rng: np.random.Generator, design: ClassDesign = DESIGNS["standard"]):
    """One JPEG-ready PIL image of class ``label`` with the short side ``size``."""
    from PIL import ImageDraw

    long_side = int(size * rng.uniform(1.0, 1.5))
    width, height = (long_side, size) if rng.random() < 0.5 else (size, long_side)
    image = _background(width, height, size, rng)

    # The flower: petals as rotated ellipses (polygons) around a centre disc.
    draw = ImageDraw.Draw(image)
    n_petals = design.petal_counts[label // HUES]
    radius = size * rng.uniform(0.22, 0.36)
    cx = width / 2 + rng.uniform(-0.12, 0.12) * width
    cy = height / 2 + rng.uniform(-0.12, 0.12) * height
    rotation = rng.uniform(0, 2 * math.pi)
    petal_width = rng.uniform(0.25, 0.45) * (2 * math.pi * radius / n_petals) * (1.6 if n_petals <= 4 else 1.0)
    colour = _class_colour(label, rng, design.hue_offset)
    for k in range(n_petals):
        angle = rotation + 2 * math.pi * k / n_petals
        draw.polygon(_petal(cx, cy, radius, petal_width, angle), fill=colour, outline=tuple(c // 2 for c in colour))
    disc = design.disc_colours[label % len(design.disc_colours)]
    r_disc = radius * rng.uniform(0.18, 0.26)
    draw.ellipse((cx - r_disc, cy - r_disc, cx + r_disc, cy + r_disc), fill=disc)
    return image


def _background(width: int, height: int, size: int, rng: np.random.Generator):
    """A vertical gradient of foliage-like colours with blurred leaf blobs, ``width`` x ``height``.

    Drawn and blurred at 1/BACKGROUND_SCALE of the size, then upscaled: the blur leaves only low
    frequencies, which the upscale keeps, so it looks as if made at full size for ~1/10 of the cost. The
    noise is scaled down by the same factor so that its amplitude after the (smaller) blur stays the same.
    """
    from PIL import Image, ImageDraw, ImageFilter

    f = BACKGROUND_SCALE
    w, h = math.ceil(width / f), math.ceil(height / f)
    top = np.array([rng.integers(20, 90), rng.integers(60, 140), rng.integers(20, 80)], dtype=np.float32)
    bottom = top * rng.uniform(0.4, 0.9)
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    pixels = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1)
    pixels += rng.normal(0, 6 / f, size=(h, w, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy = rng.uniform(0, width) / f, rng.uniform(0, height) / f
        rx, ry = rng.uniform(0.05, 0.2) * size / f, rng.uniform(0.02, 0.08) * size / f
        shade = tuple(int(v) for v in rng.integers((10, 70, 10), (60, 160, 60)))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=shade)
    image = image.filter(ImageFilter.GaussianBlur(radius=size / 100 / f))
    return image.resize((width, height), Image.BILINEAR)


def _petal(cx: float, cy: float, length: float, width: float, angle: float, points: int = 16):
    """An ellipse-shaped petal from the centre outwards along ``angle``."""
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    outline = []
    for i in range(points):
        t = 2 * math.pi * i / points
        along = length * 0.5 * (1 + math.cos(t))  # 0..length
        across = width * 0.5 * math.sin(t)
        outline.append((cx + along * cos_a - across * sin_a, cy + along * sin_a + across * cos_a))
    return outline


def _write_images(job: tuple[Path, list[tuple[int, int]], int, int, str]) -> int:
    out, items, size, seed, variant = job
    for image_id, label in items:
        rng = np.random.default_rng([seed, image_id])
        render_flower(label, size, rng, DESIGNS[variant]).save(out / image_relpath(image_id), format="JPEG", quality=90)
    return len(items)


def generate(out: Path, spec: SynthSpec = SynthSpec(), workers: int | None = None) -> Path:
    """Write ``jpg/``, ``imagelabels.mat`` and ``setid.mat`` under ``out``; returns ``out``.

    Files are written to a temporary sibling and renamed into place, so an interrupted run leaves no
    half-written dataset behind.
    """
    from scipy.io import savemat

    if spec.images_per_class < 1 or spec.size < 16:
        raise ValueError("images_per_class must be >= 1 and size >= 16")
    if spec.variant not in DESIGNS:
        raise ValueError(f"variant must be one of {', '.join(DESIGNS)} (got {spec.variant!r})")
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    (staging / "jpg").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(spec.seed)
    labels = np.repeat(np.arange(NUM_CLASSES), spec.images_per_class)
    rng.shuffle(labels)  # like the official files, ids are not grouped by class
    image_ids = np.arange(1, labels.size + 1)
    n_train, n_val, _ = split_counts(spec.images_per_class)
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in range(NUM_CLASSES):
        ids = image_ids[labels == c]
        splits["train"] += ids[:n_train].tolist()
        splits["val"] += ids[n_train:n_train + n_val].tolist()
        splits["test"] += ids[n_train + n_val:].tolist()

    items = list(zip(image_ids.tolist(), labels.tolist()))
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = [(staging, items[i::workers], spec.size, spec.seed, spec.variant) for i in range(workers)]
    if workers == 1:
        _write_images(chunks[0])
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_images, chunks))

    # The official dtypes and shapes: labels uint8 (1, N); split ids uint16 (1, n).
    savemat(staging / "imagelabels.mat", {"labels": (labels + 1).astype(np.uint8)[None, :]})
    savemat(staging / "setid.mat",
            {SPLIT_KEYS[s]: np.sort(np.array(ids, dtype=np.uint16))[None, :] for s, ids in splits.items()})
    if out.exists():
        raise FileExistsError(f"{out} appeared while generating; the new set is left at {staging}")
    staging.rename(out)
    return out
