"""Decode any photo a phone or camera gives into the RGB image the evaluation transform takes.

JPEG, PNG, WebP, BMP, GIF (first frame), TIFF, 16-bit, grayscale, palette, CMYK, and HEIC/HEIF through the
optional ``pillow-heif`` (``pip install 'flowerkit[heif]'``). The EXIF orientation is applied (a phone stores
a portrait photo sideways with a rotation tag), and transparency is composited on white (a transparent PNG
shows what its viewer shows, not the black of its hidden pixels).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flowerkit.data.eval_transform import EvalTransform

if TYPE_CHECKING:
    from PIL import Image

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")
HEIF_HINT = "pip install 'flowerkit[heif]'"
WHITE = (255, 255, 255)

_heif_state: dict[str, bool] = {}


class ImageError(Exception):
    """A file that cannot be predicted on; the message says what is wrong and what to do."""


def heif_available() -> bool:
    """Register pillow-heif's opener once, when it is installed (an optional extra)."""
    if "ok" not in _heif_state:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            _heif_state["ok"] = False
        else:
            register_heif_opener()
            _heif_state["ok"] = True
    return _heif_state["ok"]


def looks_like_heif(path: Path) -> bool:
    """By extension, or by the ISO-BMFF ``ftyp`` brand (a HEIC renamed .jpg is still a HEIC)."""
    if path.suffix.lower() in HEIF_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha composited on white, 16/32-bit and float scaled, CMYK converted."""
    from PIL import Image

    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit samples (PNG, TIFF): PIL's convert would clip everything above 255 to white; scale instead.
        wide = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        scale = 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0  # [0, 1] floats or 0..255 floats
        im = Image.fromarray(np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, WHITE)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im if im.mode == "RGB" else im.convert("RGB")


def load_image(path: Path, transform: EvalTransform) -> np.ndarray:
    """``path`` decoded, oriented, made RGB and squashed by ``transform``: uint8 HWC at its decode size.

    Raises ``ImageError`` with a user-facing sentence for anything that is not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    heif = looks_like_heif(path)
    if heif and not heif_available():
        raise ImageError(f"{path.name} is a HEIC/HEIF photo, and reading those needs pillow-heif: "
                         f"{HEIF_HINT}.")
    try:
        with Image.open(path) as im:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # an animated GIF/WebP/TIFF: its first frame
            transform.before_load(im)  # the run's JPEG draft decode, before the pixels are read
            oriented = ImageOps.exif_transpose(im)
            return transform.squash(to_rgb(oriented))
    except UnidentifiedImageError:
        raise ImageError(f"{path.name} is not an image file Pillow can read (JPEG, PNG, WebP, BMP, GIF, TIFF"
                         f"{', HEIC' if heif_available() else ''}). Check that it is a photo, not another "
                         "kind of file.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"{path.name} cannot be decoded ({detail}): it is truncated or damaged. Copy it "
                         "again from its source.") from None
