"""The one atomic writer and the content hashes, shared by every artifact writer.

Every file flowerkit writes goes through ``atomic_write`` (bytes, text, JSON, or a callback that writes to
a file object): the data goes to a temporary sibling named by ``flowerkit.layout.temp_name`` and is renamed
into place, so readers see the old file or the new one, never a torn one. The file gets the usual mode for
the process's umask (not mkstemp's 0600). A full disk raises ``DiskFullError`` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from flowerkit.errors import DiskFullError
from flowerkit.layout import temp_name

NEARLY_FULL_BYTES = 64 * 1024  # a write that fails with less room than this left failed for lack of room


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(fh)`` on a temporary sibling of ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open applies the umask to 0o666, as open() does; mkstemp would force 0600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException as exc:
        full = _out_of_space(exc, path.parent)  # asked before the partial file is removed
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(path) from None
        raise
    return path


@contextlib.contextmanager
def naming_a_full_disk(path: Path) -> Iterator[None]:
    """A write to ``path`` by any library (TensorBoard's writer thread, a plain append) that fails for lack of
    room raises DiskFullError naming ``path``: exit 3 and never retried, as for our own atomic writes."""
    try:
        yield
    except Exception as exc:
        if _out_of_space(exc, path if path.is_dir() else path.parent):
            raise DiskFullError(path) from None
        raise


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """ENOSPC, or a writer library's own error (torch.save raises RuntimeError) on a device with no room left."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, Exception):
        return False
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def to_json(data: Any) -> str:
    """Strict JSON (no NaN or Infinity tokens, which other readers reject); pretty, key order kept."""
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, to_json(data))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
