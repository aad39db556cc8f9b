"""The one reader of files a user hands to flowerkit: sweep files, ``--config``, ``.env``, subset manifests,
``@LIST`` files, label maps, predictions files, ONNX models.

Each failure is one paragraph with its exit code, never a traceback: a missing file is ``MissingInputError``
(exit 3); a directory, a FIFO, a device (``/dev/zero``) or a socket, a file larger than its reader's bound,
bytes that are not UTF-8, or a file the process may not read are ``ConfigError`` (exit 2). Only regular files
are ever opened for reading: the kind of file is checked with ``stat`` before it is opened, and again on the
open descriptor (opened non-blocking, so a FIFO swapped in between cannot hang the open), so a pipe that never
ends or never starts cannot hang a command or exhaust its memory. Reading the bytes and decoding them in one
step means a file that changes under us is judged as it was read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from flowerkit.errors import ConfigError, MissingInputError

# Config, sweep and subset files are a few KB (a manifest of every Flowers-102 id is under 100 KB): anything
# past this is the wrong file, and is refused before it is read rather than parsed into memory.
USER_FILE_MAX_BYTES = 4 * 1024 * 1024


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular(path: Path, mode: int, what: str, hint: str) -> ConfigError:
    if stat.S_ISDIR(mode):
        return ConfigError(f"{what} {path} is a directory, not a file.{hint}")
    return ConfigError(f"{what} {path} is {_kind_of(mode)}, not a regular file; flowerkit reads only regular files "
                       f"here (a pipe or a device may never end, or never start).{hint}")


def open_regular(path: Path, what: str, hint: str = "") -> tuple[BinaryIO, int]:
    """``path`` open for reading in binary, and its size, if it is a regular file; else the error paragraph.

    ``what`` names the file in the message ("The sweep file"), ``hint`` says what to pass instead (appended to
    the missing-file and wrong-kind messages)."""
    path = Path(path).expanduser()
    hint = f" {hint}" if hint else ""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise MissingInputError(f"{what} {path} does not exist.{hint}") from None
    except OSError as exc:
        raise _unreadable(path, what, exc) from None
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode, what, hint)
    try:
        # O_NONBLOCK: if a FIFO replaced the file since the stat, the open returns at once instead of waiting for
        # a writer; the descriptor's own fstat below then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MissingInputError(f"{what} {path} does not exist.{hint}") from None
    except OSError as exc:
        raise _unreadable(path, what, exc) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _not_regular(path, info.st_mode, what, hint)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), info.st_size


def _unreadable(path: Path, what: str, exc: OSError) -> ConfigError:
    return ConfigError(f"{what} {path} cannot be read ({exc.strerror}). Check its permissions and run again.")


def read_bytes(path: Path, what: str, hint: str = "", max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (``open_regular``), at most ``max_bytes`` of them: a larger file is a
    ConfigError naming the bound, refused before it is read (and if it grows while read)."""
    path = Path(path).expanduser()
    fh, size = open_regular(path, what, hint)
    with fh:
        if max_bytes is not None and size > max_bytes:
            raise _too_large(path, what, hint, size, max_bytes)
        try:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise _unreadable(path, what, exc) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_large(path, what, hint, len(data), max_bytes, grew=True)
    return data


def _too_large(path: Path, what: str, hint: str, size: int, max_bytes: int, grew: bool = False) -> ConfigError:
    hint = f" {hint}" if hint else ""
    grown = " or more (it grew while it was read)" if grew else ""
    return ConfigError(f"{what} {path} is {size:,} bytes{grown}, past the {max_bytes / 2**20:g} MiB flowerkit reads "
                       f"from such a file; it is not the file you meant.{hint}")


def read_utf8(path: Path, what: str, hint: str = "", max_bytes: int | None = None) -> str:
    """The text of the regular file ``path``; ``what`` names the file in the message ("The sweep file"), ``hint``
    says what to pass instead, ``max_bytes`` bounds what is read (``USER_FILE_MAX_BYTES`` for a file of options:
    a FIFO, ``/dev/zero`` or a huge file is refused at once, never read into memory)."""
    path = Path(path).expanduser()
    data = read_bytes(path, what, hint, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path.resolve()} is not UTF-8 text (byte {exc.start} cannot be decoded). Save "
                          "it as UTF-8 and run again.") from None
