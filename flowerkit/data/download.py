"""``flowerkit data download``: the official Flowers-102 files, verified against the official md5s, extracted.

The file names, URL and md5 table are torchvision's (``torchvision.datasets.Flowers102``; a test keeps them
equal), written out here because importing torchvision costs seconds that every run's plan would pay;
extraction uses torchvision's utility. Downloads are resumable and a file appears under its own name only
once verified (``flowerkit.io.fetch``); the images are extracted into a staging folder and renamed into
``DIR/jpg`` when complete. A second call finds everything verified and does nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from flowerkit.errors import ConfigError
from flowerkit.io.fetch import checksum_error, fetch

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
ARCHIVE = "102flowers.tgz"  # holds jpg/
OFFICIAL_MD5: dict[str, str] = {  # file name -> md5
    ARCHIVE: "52808999861908f626f3c1f4e79d11fa",
    "imagelabels.mat": "e0620be6f572b9609742df49c70aed4d",
    "setid.mat": "a5357ecc9cb78c4bef273ce3793fc85c",
}
IMAGES_DIR = "jpg"


def calculate_md5(path: Path | str) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()


@dataclass(frozen=True)
class FileStatus:
    name: str
    action: str  # "verified" (already there), "downloaded", "extracted"
    md5: str


def base_url(mirror: str | None) -> str:
    """The official Oxford URL, or a mirror holding the same file names."""
    return (mirror or OFFICIAL_URL).rstrip("/") + "/"


def download_flowers102(out: Path, mirror: str | None = None,
                        md5s: dict[str, str] | None = None) -> list[FileStatus]:
    """Fetch, verify and extract the official files into ``out``; returns what was done per file.

    ``md5s`` defaults to the official table; it exists so that tests can serve generated files through the
    very same code path.
    """
    md5s = OFFICIAL_MD5 if md5s is None else md5s
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    statuses = [_ensure_file(out, name, md5, base_url(mirror)) for name, md5 in md5s.items()]
    if ARCHIVE in md5s and not images_complete(out):
        extract_images(out / ARCHIVE, out)
        statuses.append(FileStatus(IMAGES_DIR + "/", "extracted", ""))
    return statuses


def _ensure_file(out: Path, name: str, md5: str, base: str) -> FileStatus:
    dest, url = out / name, base + name
    if dest.is_file():
        actual = calculate_md5(dest)
        if actual == md5:
            return FileStatus(name, "verified", md5)
        # Only verified downloads are ever renamed into place, so this file came from elsewhere: say so.
        raise ConfigError(f"{dest} exists but is not the official {name}: expected md5 {md5}, got {actual}. "
                          "Delete it (or choose another --out) and run the command again.")

    def verify(path: Path) -> None:
        actual = calculate_md5(path)
        if actual != md5:
            raise checksum_error(name, url, "md5", md5, actual)

    log.info("downloading %s", url)
    fetch(url, dest, verify)
    return FileStatus(name, "downloaded", md5)


def expected_image_count(root: Path) -> int:
    """How many images imagelabels.mat labels (8189 for the official set)."""
    from scipy.io import loadmat

    return int(loadmat(root / "imagelabels.mat", squeeze_me=True)["labels"].size)


def images_complete(root: Path) -> bool:
    folder = root / IMAGES_DIR
    if not folder.is_dir() or not (root / "imagelabels.mat").is_file():
        return False
    return sum(1 for _ in folder.glob("image_*.jpg")) == expected_image_count(root)


def extract_images(archive: Path, root: Path) -> None:
    """Extract ``jpg/`` from the archive into a staging folder, then rename it into place whole."""
    from torchvision.datasets.utils import extract_archive

    staging = root / f".extract-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract_archive(str(archive), str(staging))
        if not (staging / IMAGES_DIR).is_dir():
            raise ConfigError(f"{archive} holds no {IMAGES_DIR}/ folder; it is not the Flowers-102 image archive.")
        target = root / IMAGES_DIR
        if target.exists():  # an incomplete earlier copy, never a verified one (see images_complete)
            shutil.rmtree(target)
        os.replace(staging / IMAGES_DIR, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
