"""Decode any photo a phone or camera gives into the RGB image the evaluation transform takes.

JPEG, PNG, WebP, BMP, GIF (first frame), TIFF, 16-bit, grayscale, palette, CMYK, and HEIC/HEIF through the
optional ``pillow-heif`` (``pip install 'flowerkit[heif]'``). The EXIF orientation is applied (a phone stores
a portrait photo sideways with a rotation tag), and transparency is composited on white (a transparent PNG
shows what its viewer shows, not the black of its hidden pixels).

Memory is bounded whatever the image: a JPEG is decoded at a reduced scale (``draft``), and an image above
``LARGE_PIXELS`` is reduced in its own mode's samples a strip at a time before it is widened to RGB (never a
float or 32-bit copy of a huge image); above ``MAX_PIXELS`` it is refused with its row's words.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from flowerkit.data.eval_transform import EvalTransform

if TYPE_CHECKING:
    from PIL import Image

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")
HEIF_HINT = "pip install 'flowerkit[heif]'"
WHITE = (255, 255, 255)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
ORIENTATION_TAG = 0x0112

# Above this many pixels (a 16-megapixel photo: 4096 x 4096), an image is decoded alone and reduced a strip
# at a time before it is made RGB (``load_image``); up to it, exactly the run's evaluation transform. A phone's
# 12-megapixel photo stays below; a JPEG is measured after the run's draft decode has shrunk it.
LARGE_PIXELS = 4096 * 4096
# What a large image is reduced to, at least, before the transform's own resize: as the pixel cache's reduce
# (CACHE_REDUCING_GAP), three times the decode size, so the final bilinear resize still sees every pixel.
LARGE_REDUCING_GAP = 3
STRIP_ROWS = 256
# Pillow's refusal threshold (twice its 89-megapixel DecompressionBombWarning): above it an image is refused
# with its row's words. A JPEG is measured once drafted, so a 200-megapixel phone photo is predicted.
MAX_PIXELS = 2 * 89_478_485
_LARGE_DECODE = threading.Lock()  # one large image decoded at a time: memory bounded whatever --workers is
_FILTER_LOCK = threading.Lock()
_malloc_trim: Callable[[int], int] | bool | None = None  # glibc's malloc_trim, once looked up (False: none)

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


def to_rgb(im: Image.Image, float_scale: float | None = None) -> Image.Image:
    """Any PIL mode to 8-bit RGB: alpha composited on white, 16/32-bit and float scaled, CMYK converted.

    ``float_scale``: for a float ('F') image, 255 for [0, 1] values and 1 for 0..255 ones; by default it is
    judged from this image's own maximum (``shrink`` judges it once for a whole image it converts in strips).
    """
    from PIL import Image

    if im.mode in SIXTEEN_BIT_MODES:
        # 16-bit samples (PNG, TIFF): PIL's convert would clip everything above 255 to white; scale instead,
        # through a table (one byte per pixel: never a wider copy of the image than its own samples).
        im = Image.fromarray(scale_16bit(np.asarray(im)), "L")
    elif im.mode == "F":
        values = np.asarray(im, dtype=np.float64)
        scale = float_scale if float_scale is not None else _float_scale(values)
        im = Image.fromarray(np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, WHITE)
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im if im.mode == "RGB" else im.convert("RGB")


def _float_scale(values: np.ndarray) -> float:
    return 255.0 if np.nanmax(values, initial=0.0) <= 1.0 else 1.0  # [0, 1] floats or 0..255 floats


def scale_16bit(samples: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit integer) samples to uint8 as ``clip(rint(v / 257), 0, 255)``, exactly, by table."""
    if samples.dtype.itemsize > 2 or samples.dtype.kind != "u":  # 'I': int32, possibly outside 0..65535
        samples = np.clip(samples, 0, 65535)
    return _SCALE_16BIT[samples]


# rint(v / 257) for v in 0..65535: v = 257 k + r rounds up exactly when r >= 129 (never a tie: 257 is odd).
_SCALE_16BIT = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)


def shrink(im: Image.Image, factor: tuple[int, int]) -> Image.Image:
    """``to_rgb(im).reduce(factor)``, computed a strip of rows at a time: the image is made RGB (3 bytes a
    pixel, 8 for a float) only a strip at a time, so a huge image costs its own decoded samples and little
    more. Strips are a multiple of the factor's rows tall, so the result is the same as in one piece."""
    from PIL import Image

    width, height = im.size
    fx, fy = factor
    out = Image.new("RGB", (-(-width // fx), -(-height // fy)))
    rows = max(1, STRIP_ROWS // fy) * fy
    float_scale = None
    if im.mode == "F":  # judged on the whole image, as to_rgb does in one piece
        peaks = [np.nanmax(np.asarray(im.crop((0, top, width, min(top + rows, height)))), initial=0.0)
                 for top in range(0, height, rows)]
        float_scale = 255.0 if max(peaks, default=0.0) <= 1.0 else 1.0
    for top in range(0, height, rows):
        band = to_rgb(im.crop((0, top, width, min(top + rows, height))), float_scale)
        out.paste(band.reduce(factor) if factor != (1, 1) else band, (0, top // fy))
    return out


def _orientation_method(im: Image.Image) -> Image.Transpose | None:
    """What ``ImageOps.exif_transpose`` does for this image's EXIF orientation tag (None: nothing)."""
    from PIL import Image

    try:
        orientation = im.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block is ignored, as exif_transpose's callers see it
        return None
    return {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}.get(orientation)


class NotRegularFileError(OSError):
    """A path that is a pipe, device or socket: it is never read (it may never end, or never start)."""


def _open_file(path: Path) -> BinaryIO:
    """``path`` open for reading if it is a regular file (opened non-blocking: a FIFO swapped in for a photo
    since it was listed cannot hang the decoding thread); an OSError says why not."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def unreadable_words(name: str, exc: OSError) -> str:
    """The row's sentence for a file the system would not hand over (not a damaged image: its bytes were never
    read)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (f"{name} cannot be read: permission denied (this user may not open it). Check its permissions "
                "(ls -l) or predict as a user who may read it.")
    if exc.errno == errno.ELOOP:
        return (f"{name} is a symbolic link that loops (it points back to itself, directly or through other "
                "links), so it names no file. Fix or remove the link.")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"{name} no longer exists: it was moved or deleted after it was listed. Run again to predict it."
    if exc.errno == errno.EISDIR:
        return f"{name} is a folder, not an image file. Pass the folder itself to predict the images in it."
    if isinstance(exc, NotRegularFileError):
        return f"{name} is not a regular file (a pipe, device or socket), so it is not read."
    return (f"{name} cannot be read ({exc.strerror or type(exc).__name__}): the disk or network share failed "
            "while reading it. Check the drive and run again.")


def too_large_words(name: str, pixels: int) -> str:
    return (f"{name} is {pixels / 1e6:.0f} megapixels, more than predict decodes ({MAX_PIXELS / 1e6:.0f} "
            "megapixels, Pillow's limit against decompression bombs: small files that expand to more pixels than "
            "memory holds). If it is a real photo, save a smaller copy (for instance 8000 pixels on its long "
            "side) and predict that.")


def _bomb_pixels(exc: Exception) -> int:
    """The pixel count in Pillow's DecompressionBombError message ("Image size (N pixels) exceeds ...")."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match.group(1)) if match else MAX_PIXELS + 1


def _return_freed_memory() -> None:
    """Hand a large image's freed samples back to the system (glibc's ``malloc_trim``), before the next one
    is decoded. Each decoding thread has its own malloc arena, which keeps what it freed for its own next
    allocation: without this, every thread that ever decoded a large image would hold its size for good
    (measured: two threads, 144-megapixel images, twice the memory of one)."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator does its own thing
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def _quiet_bomb_warning() -> None:
    """Sizes are checked here (MAX_PIXELS) and the row says what is refused: Pillow's warning about an image
    between its two limits is not a line for the user's terminal. Installed once per process (a filter list
    changed from several decoding threads at once could gain duplicates)."""
    from PIL import Image

    with _FILTER_LOCK:
        if not any(f[0] == "ignore" and f[2] is Image.DecompressionBombWarning for f in warnings.filters):
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _open_image(fh: BinaryIO) -> Image.Image:
    """``Image.open``, except that a JPEG above Pillow's decompression-bomb limit is opened too: it is decoded
    at a reduced scale (``draft``), so what it costs is checked after that, in ``load_image``."""
    from PIL import Image, JpegImagePlugin

    try:
        return Image.open(fh)
    except Image.DecompressionBombError:
        fh.seek(0)
        if fh.read(3) != b"\xff\xd8\xff":
            raise
        fh.seek(0)
        return JpegImagePlugin.jpeg_factory(fh)


def load_image(path: Path, transform: EvalTransform) -> np.ndarray:
    """``path`` decoded, oriented, made RGB and squashed by ``transform``: uint8 HWC at its decode size.

    Raises ``ImageError`` with a user-facing sentence for anything that is not a readable image.

    An image of up to ``LARGE_PIXELS`` (once a JPEG's draft has shrunk it) goes through exactly the run's
    evaluation transform. A larger one is decoded alone (one at a time, whatever ``--workers``), then made RGB
    and reduced by an integer factor a strip at a time (``shrink``), to no less than three times the decode
    size, before the transform: memory is its decoded samples and a strip, never a widened copy of the whole
    image. A JPEG that large is also drafted to a reduced scale first. Above ``MAX_PIXELS`` (once drafted) an
    image is refused with its row's words.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _quiet_bomb_warning()
    heif = looks_like_heif(path)
    if heif and not heif_available():
        raise ImageError(f"{path.name} is a HEIC/HEIF photo, and reading those needs pillow-heif: "
                         f"{HEIF_HINT}.")
    try:
        fh = _open_file(path)
    except OSError as exc:
        raise ImageError(unreadable_words(path.name, exc)) from None
    try:
        with fh, _open_image(fh) as im:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # an animated GIF/WebP/TIFF: its first frame
            transform.before_load(im)  # the run's JPEG draft decode, before the pixels are read
            side = int(LARGE_REDUCING_GAP * transform.decode_size)
            if im.width * im.height > LARGE_PIXELS and im.format in ("JPEG", "MPO"):
                im.draft(im.mode, (side, side))  # no-op where the run's draft already chose a scale
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(too_large_words(path.name, im.width * im.height))
            if im.width * im.height <= LARGE_PIXELS:
                return transform.squash(to_rgb(ImageOps.exif_transpose(im)))
            with _LARGE_DECODE:
                im.load()
                factor = (max(1, im.width // side), max(1, im.height // side))
                small = shrink(im, factor)
                method = _orientation_method(im)
                im.close()  # its samples freed before the next large image is decoded, not when this returns
                _return_freed_memory()
            return transform.squash(small.transpose(method) if method is not None else small)
    except UnidentifiedImageError:
        raise ImageError(f"{path.name} is not an image file Pillow can read (JPEG, PNG, WebP, BMP, GIF, TIFF"
                         f"{', HEIC' if heif_available() else ''}). Check that it is a photo, not another "
                         "kind of file.") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(too_large_words(path.name, _bomb_pixels(exc))) from None
    except OSError as exc:
        if exc.errno is not None:  # the system's error reading the file, not Pillow's about its bytes
            raise ImageError(unreadable_words(path.name, exc)) from None
        raise ImageError(_damaged_words(path.name, exc)) from None
    except (SyntaxError, ValueError) as exc:
        raise ImageError(_damaged_words(path.name, exc)) from None


def _damaged_words(name: str, exc: Exception) -> str:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{name} cannot be decoded ({detail}): it is truncated or damaged. Copy it again from its source."
