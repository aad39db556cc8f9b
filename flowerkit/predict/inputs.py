"""What to predict: files, folders, globs and lists of paths, enumerated lazily in a fixed order.

``INPUT`` arguments, each one of:

- an image file (always tried, whatever its extension: a file that is not an image gets an error row);
- a folder: every file below it with an image extension (``IMAGE_EXTENSIONS``), recursively, sorted by name
  within each folder (sub-folders after the folder's own files); hidden files and folders, other files,
  broken links, pipes and devices and links to folders are skipped and counted by kind (``SKIPPED``), and a
  sub-folder that cannot be read or a symbolic link that loops is an error row: nothing passes unsaid;
- a glob (``photos/*.jpg``, ``**/*.png``; quote it so the shell leaves it alone), matches sorted (``**``
  does not descend into links to folders);
- ``@FILE``: a text file listing one input per line (blank lines and lines starting with ``#`` skipped;
  relative paths are relative to the current folder); ``-``: the same list read from standard input.

Paths are yielded one at a time, so a folder of any size is never held in memory as decoded images (only
one folder's directory listing at a time is sorted).
"""

from __future__ import annotations

import errno
import glob
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from flowerkit.errors import ConfigError
from flowerkit.io.inputs import read_utf8

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif",
                              ".tif", ".tiff", ".heic", ".heif", ".hif"})
GLOB_CHARS = frozenset("*?[")
STDIN = "-"
LIST_PREFIX = "@"
LIST_MAX_BYTES = 64 * 1024 * 1024  # half a million paths; standard input (-) streams a list of any length


# Why a file met below a folder (or matched by a pattern) is passed over: no row, but the summary counts it
# under these words, so that no file disappears without a word.
SKIPPED = {
    "hidden": "hidden",
    "extension": "without an image extension",
    "broken link": "broken link(s)",
    "special": "special file(s) (pipe, device or socket)",
    "folder link": "link(s) to folders (not followed)",
    "folder": "folder(s) matched by a pattern",
}


@dataclass(frozen=True)
class InputItem:
    """One thing to predict: a path, or (``error`` set) an input that names no readable file, or (``skipped``
    set, a key of ``SKIPPED``) a file passed over on purpose.

    ``warn``: the error also hides files (a folder that cannot be read): the run says so on stderr as it
    meets it, besides the row."""

    path: Path
    error: str | None = None
    skipped: str | None = None
    warn: bool = False

    @property
    def counts(self) -> bool:
        """Whether it gets a row (a file to try or an error), rather than only a count among the skipped."""
        return self.skipped is None


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
            # A regular UTF-8 file within LIST_MAX_BYTES: a FIFO or /dev/zero is refused (exit 2), never read.
            read_utf8(Path(arg[1:]), "The list file", "@FILE names a text file with one image path "
                      "per line; a longer list can be piped on standard input (-).", max_bytes=LIST_MAX_BYTES)
    return args


def peek_stdin(kept: list[str]) -> Iterator[str]:
    """Standard input's lines for a check before a run, each one kept in ``kept``: standard input can be read
    once only, so the run reads the kept lines first (``stdin_lines``), then the rest."""
    for line in sys.stdin:
        kept.append(line)
        yield line


def stdin_lines(read_ahead: Iterable[str] = ()) -> Iterator[str]:
    """Standard input's lines: first those a check read ahead (``peek_stdin``), then the rest."""
    yield from read_ahead
    yield from sys.stdin


def iter_inputs(args: Iterable[str], stdin: Iterable[str] | None = None) -> Iterator[InputItem]:
    """Every input in order; an argument that names nothing yields one item with its ``error``."""
    for arg in args:
        if arg == STDIN:
            yield from _from_lines(stdin if stdin is not None else stdin_lines(), "standard input")
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
    try:
        mode: int | None = os.stat(path).st_mode
        problem: OSError | None = None
    except OSError as exc:  # a loop, a broken link, a folder above it that this user may not enter
        mode, problem = None, exc
    if mode is not None and stat.S_ISDIR(mode):
        found = False
        for item in walk_images(path):
            found = found or item.counts
            yield item
        if not found:
            yield InputItem(path, f"the folder {path}{where} holds no image files (extensions: "
                                  f"{', '.join(sorted(IMAGE_EXTENSIONS))}).")
    elif mode is not None and stat.S_ISREG(mode):
        yield InputItem(path)
    elif is_glob(arg):
        items = [_file_item(Path(m), pattern=True) for m in glob_matches(arg)]  # names only, not images
        if not any(item.counts for item in items):
            yield InputItem(path, f"the pattern {arg}{where} matches no file.")
        yield from items
    elif mode is not None:
        yield InputItem(path, f"{path}{where} is not a regular file or folder (a pipe, device or socket).")
    elif problem is not None and problem.errno not in (errno.ENOENT, errno.ENOTDIR):
        yield InputItem(path, f"{path}{where}: {_unreachable(problem)}")
    elif os.path.islink(path):
        yield InputItem(path, f"{path}{where} is a symbolic link to {os.readlink(path)}, which does not exist.")
    else:
        yield InputItem(path, f"{path}{where} does not exist.")


def glob_matches(pattern: str) -> list[str]:
    """The pattern's matches, sorted, as ``glob.glob(pattern, recursive=True)`` gives them, except that ``**``
    does not descend into symbolic links to folders (as a folder's walk): glob's would, so a link to a parent
    folder repeated every file forty times over (until the system's limit on links), and two of them took
    forever. pathlib's ``**`` does not follow them; its ``*`` also matches hidden names, which glob's leaves
    out unless the pattern names them (a part starting with a dot), so they are left out here too."""
    pattern = os.path.expanduser(pattern)
    if "**" not in pattern:
        return sorted(glob.iglob(pattern))
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if any(c in GLOB_CHARS for c in part))
    anchor, rest = Path(*parts[:fixed]) if fixed else Path("."), list(parts[fixed:])
    if rest[-1] == "**":  # glob's "folder/**": everything below the folder, files too
        rest.append("*")
    hidden_named = any(part.startswith(".") for part in rest)
    matches = []
    for match in anchor.glob("/".join(rest)):
        if hidden_named or not any(part.startswith(".") for part in match.relative_to(anchor).parts):
            matches.append(str(match))
    return sorted(matches)


def _unreachable(exc: OSError) -> str:
    """Why ``stat`` could not reach a path, in a sentence ending with what to do."""
    if exc.errno == errno.ELOOP:
        return ("a symbolic link that loops (it points back to itself, directly or through other links), so it "
                "names no file. Fix or remove the link.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (a folder on its path may not be entered by this user). Check its permissions."
    return f"cannot be reached ({exc.strerror}). Check the drive and run again."


def _file_item(path: Path, pattern: bool = False) -> InputItem:
    """A symbolic link met in a folder, or a pattern's match: what it points to decides (``stat`` follows it).

    A loop is an error row (a link that can never work); a broken link, a pipe or device, a folder (a link to
    one is not followed: a folder's walk stays below it) are counted as skipped."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return InputItem(path, skipped="broken link")
        if exc.errno == errno.ELOOP and not pattern and path.suffix.lower() not in IMAGE_EXTENSIONS:
            return InputItem(path, skipped="broken link")  # a loop not even named as an image: a broken link
        return InputItem(path, f"{path.name}: {_unreachable(exc)}")
    if stat.S_ISREG(mode):
        if pattern or path.suffix.lower() in IMAGE_EXTENSIONS:
            return InputItem(path)
        return InputItem(path, skipped="extension")
    if stat.S_ISDIR(mode):
        return InputItem(path, skipped="folder" if pattern else "folder link")
    return InputItem(path, skipped="special")


def walk_images(folder: Path) -> Iterator[InputItem]:
    """Image files below ``folder``: each folder's files sorted, then its sub-folders, sorted, recursively.

    Every entry is accounted for: image files are items to predict; other entries are items ``skipped`` (a
    reason of ``SKIPPED``, counted in the summary); a sub-folder that cannot be listed and a symbolic link
    that loops are error rows. Symbolic links to folders are not followed (a walk never loops)."""
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        yield InputItem(folder, f"the folder {folder} cannot be read ({exc.strerror}), so the images in it are not "
                                "predicted. Check its permissions (ls -ld) and run again.", warn=True)
        return
    dirs = []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            yield InputItem(path, skipped="hidden")
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                dirs.append(path)
            elif entry.is_symlink():
                yield _file_item(path)
            elif not entry.is_file(follow_symlinks=False):
                yield InputItem(path, skipped="special")
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                yield InputItem(path)
            else:
                yield InputItem(path, skipped="extension")
        except OSError as exc:  # its type was not in the listing, and stat was refused
            yield InputItem(path, f"{path.name}: {_unreachable(exc)}")
    for sub in dirs:
        yield from walk_images(sub)


def skipped_words(counts: dict[str, int]) -> str:
    """``{"hidden": 2, "extension": 1}`` as "2 hidden, 1 without an image extension" (``SKIPPED``'s order)."""
    return ", ".join(f"{counts[key]} {words}" for key, words in SKIPPED.items() if counts.get(key))
