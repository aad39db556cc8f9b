"""The confusion matrix as a labelled picture for TensorBoard, drawn with Pillow.

True class down, predicted class across, a tick and its class id every ``TICK_EVERY`` classes on both axes, a
title with the step, and a colour bar. Pillow is already loaded by the data pipeline; matplotlib would add
about a third of a second of import and a fifth of a second per drawing to every run, for a picture that
needs none of its layout machinery.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TICK_EVERY = 10
CELL_PX = 4  # 102 classes: a 408 px matrix
MARGIN = {"left": 64, "top": 44, "right": 112, "bottom": 56}
BAR_WIDTH, BAR_GAP = 16, 16
# A sequential scale from white (no samples) to deep blue (all of a class's samples): anchors and their colours.
SCALE = ((0.0, (255, 255, 255)), (0.25, (198, 219, 239)), (0.5, (107, 174, 214)), (0.75, (33, 113, 181)),
         (1.0, (8, 48, 107)))
INK = (40, 40, 40)


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font (needs FreeType, as wheels have)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def colours(shares: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours of ``shares`` in [0, 1] on ``SCALE``."""
    stops = np.array([at for at, _ in SCALE])
    rgb = np.array([colour for _, colour in SCALE], dtype=np.float64)
    flat = np.clip(shares, 0.0, 1.0).ravel()
    channels = [np.interp(flat, stops, rgb[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8).reshape(*shares.shape, 3)


def _vertical_text(text: str, size: int) -> Image.Image:
    """``text`` turned a quarter to the left (read bottom to top), on white."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    strip = Image.new("RGB", (right - left + 2, bottom - top + 2), "white")
    ImageDraw.Draw(strip).text((1 - left, 1 - top), text, fill=INK, font=font)
    return strip.rotate(90, expand=True)


def _centred(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int) -> None:
    draw.text(xy, text, fill=INK, font=_font(size), anchor="mm")


def confusion_figure(norm: np.ndarray, step: int) -> np.ndarray:
    """(H, W, 3) uint8: the row-normalised confusion matrix ``norm`` (each row: shares of a true class)."""
    classes = len(norm)
    side = classes * CELL_PX
    width = MARGIN["left"] + side + MARGIN["right"]
    height = MARGIN["top"] + side + MARGIN["bottom"]
    picture = Image.new("RGB", (width, height), "white")
    x0, y0 = MARGIN["left"], MARGIN["top"]
    cells = np.kron(colours(norm), np.ones((CELL_PX, CELL_PX, 1), dtype=np.uint8))
    picture.paste(Image.fromarray(cells), (x0, y0))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((x0 - 1, y0 - 1, x0 + side, y0 + side), outline=INK)
    for tick in range(0, classes, TICK_EVERY):
        at = tick * CELL_PX + CELL_PX // 2
        draw.line((x0 + at, y0 + side, x0 + at, y0 + side + 4), fill=INK)  # predicted class, under the matrix
        _centred(draw, (x0 + at, y0 + side + 12), str(tick), 11)
        draw.line((x0 - 5, y0 + at, x0 - 1, y0 + at), fill=INK)  # true class, left of the matrix
        draw.text((x0 - 8, y0 + at), str(tick), fill=INK, font=_font(11), anchor="rm")
    _centred(draw, (x0 + side / 2, y0 + side + 36), "predicted class id", 13)
    _centred(draw, (width / 2, y0 / 2), f"confusion matrix at step {step} (each row: shares of a true class)", 13)
    label = _vertical_text("true class id", 13)
    picture.paste(label, (8, y0 + (side - label.height) // 2))
    _colour_bar(picture, draw, x0 + side + BAR_GAP, y0, side)
    return np.asarray(picture)


def _colour_bar(picture: Image.Image, draw: ImageDraw.ImageDraw, x: int, y: int, height: int) -> None:
    """The scale from 1 (top) to 0 (bottom), ticks every quarter, and what it measures."""
    shares = np.linspace(1.0, 0.0, height)[:, None].repeat(BAR_WIDTH, axis=1)
    picture.paste(Image.fromarray(colours(shares)), (x, y))
    draw.rectangle((x - 1, y - 1, x + BAR_WIDTH, y + height), outline=INK)
    for share in (0.0, 0.25, 0.5, 0.75, 1.0):
        at = y + round((1.0 - share) * (height - 1))
        draw.line((x + BAR_WIDTH, at, x + BAR_WIDTH + 4, at), fill=INK)
        draw.text((x + BAR_WIDTH + 7, at), f"{share:.2f}", fill=INK, font=_font(11), anchor="lm")
    label = _vertical_text("share of the true class's samples", 12)
    picture.paste(label, (x + BAR_WIDTH + 44, y + (height - label.height) // 2))
