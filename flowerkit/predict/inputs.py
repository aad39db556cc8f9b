"""What to predict: files, folders, globs and lists of paths, enumerated lazily in a fixed order.

``INPUT`` arguments, each one of:

- an image file (always tried, whatever its extension: a file that is not an image gets an error row);
- a folder: every file below it with an image extension (``IMAGE_EXTENSIONS``), recursively, sorted by name
  within each folder (sub-folders after the folder's own files), hidden files and folders skipped;
- a glob (``photos/*.jpg``, ``**/*.png``; quote it so the shell leaves it alone), matches sorted;
- ``@FILE``: a text file listing one input per line (blank lines and lines starting with ``#`` skipped;
  relative paths are relative to the current folder); ``-``: the same list read from standard input.

Paths are yielded one at a time, so a folder of any size is never held in memory as decoded images (only
one folder's directory listing at a time is sorted).
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flowerkit.errors import ConfigError, MissingInputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif",
                              ".tif", ".tiff", ".heic", ".heif", ".hif"})
GLOB_CHARS = frozenset("*?[")
STDIN = "-"
LIST_PREFIX = "@"


@dataclass(frozen=True)
class InputItem:
    """One thing to predict: a path, or (``error`` set) an input that names no readable file."""

    path: Path
    error: str | None = None


def is_glob(arg: str) -> bool:
    return any(c in GLOB_CHARS for c in arg) and not Path(arg).exists()


def check_inputs(args: Iterable[str]) -> tuple[str, ...]:
    """Validate the INPUT arguments before any work: at least one, list files readable. Returns them."""
    args = tuple(args)
    if not args:
        raise ConfigError("No INPUT given: pass image files, folders, globs, @LIST (a file of paths) or - "
                          "(paths on standard input), e.g. `flowerkit predict photos/ --run NAME`.")
    if sum(a == STDIN for a in args) > 1:
        raise ConfigError("- (read paths from standard input) may be given once only.")
    for arg in args:
        if arg.startswith(LIST_PREFIX) and not Path(arg).exists():
            listing = Path(arg[1:])
            if not listing.is_file():
                raise MissingInputError(f"The list file {listing} (from {arg}) does not exist or is not a file. "
                                        "@FILE names a text file with one image path per line.")
            try:
                listing.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"The list file {listing} cannot be read as UTF-8 text ({exc}). @FILE names a "
                                  "text file with one image path per line.") from None
    return args


def iter_inputs(args: Iterable[str], stdin: Iterable[str] | None = None) -> Iterator[InputItem]:
    """Every input in order; an argument that names nothing yields one item with its ``error``."""
    for arg in args:
        if arg == STDIN:
            yield from _from_lines(stdin if stdin is not None else sys.stdin, "standard input")
        elif arg.startswith(LIST_PREFIX) and not Path(arg).exists():
            with open(arg[1:], encoding="utf-8") as fh:
                yield from _from_lines(fh, arg[1:])
        else:
            yield from _expand(arg)


def _from_lines(lines: Iterable[str], source: str) -> Iterator[InputItem]:
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield from _expand(entry, source)


def _expand(arg: str, source: str | None = None) -> Iterator[InputItem]:
    path = Path(arg).expanduser()
    where = f" (listed in {source})" if source else ""
    if path.is_dir():
        found = False
        for file in walk_images(path):
            found = True
            yield InputItem(file)
        if not found:
            yield InputItem(path, f"the folder {path}{where} holds no image files (extensions: "
                                  f"{', '.join(sorted(IMAGE_EXTENSIONS))}).")
    elif path.is_file():
        yield InputItem(path)
    elif is_glob(arg):
        matches = sorted(glob.iglob(os.path.expanduser(arg), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]  # only the names: paths, not images
        if not files:
            yield InputItem(path, f"the pattern {arg}{where} matches no file.")
        for file in files:
            yield InputItem(file)
    elif path.exists():
        yield InputItem(path, f"{path}{where} is not a regular file or folder.")
    else:
        yield InputItem(path, f"{path}{where} does not exist.")


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files below ``folder``: each folder's files sorted, then its sub-folders, sorted, recursively."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    dirs = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            dirs.append(entry.path)
        elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            yield Path(entry.path)
    for sub in dirs:
        yield from walk_images(Path(sub))
