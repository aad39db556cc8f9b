"""The one atomic writer and the content hashes, shared by every artifact writer.

Every file flowerkit writes goes through ``atomic_write`` (bytes, text, JSON, or a callback that writes to
a file object): the data goes to a temporary sibling named by ``flowerkit.run.layout.temp_name`` and is renamed
into place, so readers see the old file or the new one, never a torn one. The file gets the usual mode for
the process's umask (not mkstemp's 0600). A full disk raises ``DiskFullError`` naming the path.

``clobber=False`` is for the writers that never overwrite a file (``flowerkit export``): the target's absence
is decided at the final publish, atomically (a hard link, which fails if the name exists), so of two writers
racing for one name exactly one wins and the other gets ``TargetExistsError`` (exit 4) with nothing lost.

A killed writer cannot remove its temporary file. The writer holds an ``flock`` on it while it writes, and its
name carries the writer's pid, so the next write of the same target removes the temporaries whose writer is
gone (``remove_stale_temps``): a hidden ``.NAME.tmp-*`` never outlives the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from flowerkit.errors import DiskFullError, FlowerkitError, RunExistsError
from flowerkit.run.layout import TEMP_MARK, temp_name

NEARLY_FULL_BYTES = 64 * 1024  # a write that fails with less room than this left failed for lack of room
# os.link's errors on a filesystem that has no hard links (some FUSE, SMB and FAT mounts).
NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


class TargetExistsError(RunExistsError):
    """A no-clobber write found its target already there at the moment of publishing (exit 4)."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} already exists: another process wrote it while this one was writing, and "
                         "flowerkit never overwrites it. This process's copy was discarded and that file was left "
                         "as it is; choose another name, or remove that file and run again.")
        self.path = path


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any], *, clobber: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary sibling of ``path``, then rename it over ``path``.

    ``clobber=False``: publish only if ``path`` does not exist at that moment, else raise TargetExistsError
    (the temporary file is removed, ``path`` is untouched)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        # os.open applies the umask to 0o666, as open() does; mkstemp would force 0600.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            _lock_while_writing(fh)
            write(fh)
            fh.flush()
            _publish(tmp, path, clobber)
    except BaseException as exc:
        # asked before the partial file is removed; our own errors (TargetExistsError) are never "disk full"
        full = not isinstance(exc, FlowerkitError) and _out_of_space(exc, path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(path) from None
        raise
    return path


def _lock_while_writing(fh: IO[bytes]) -> None:
    """flock the temporary until it is published, so that no other process takes a live writer's file for a
    stale one (``remove_stale_temps``). Where the filesystem has no locks, the pid in the name has to do."""
    with contextlib.suppress(OSError):
        fcntl.flock(fh, fcntl.LOCK_EX)


def _publish(tmp: Path, path: Path, clobber: bool) -> None:
    if clobber:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails with EEXIST if the name exists, whoever created it and whenever
    except FileExistsError:
        raise TargetExistsError(path) from None
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        # No hard links here: claim the name with an exclusive placeholder, then rename over our own
        # placeholder. A reader may see it empty for that moment; another no-clobber writer still loses.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
        except FileExistsError:
            raise TargetExistsError(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary siblings of ``path`` that a killed writer left behind; returns them.

    A temporary is stale when the pid in its name is not a live process of this host and no process holds its
    ``flock`` (the lock is what counts for a writer on another host sharing the folder, whose pid means nothing
    here; a filesystem without locks leaves the pid alone to decide). A file that cannot be opened is left."""
    prefix = f".{path.name}{TEMP_MARK}"
    removed = []
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        pid = entry.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or process_exists(int(pid)):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # gone already, a symlink, or not ours to open
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # locked: its writer is alive after all (on another host)
        except OSError:
            pass  # a filesystem without locks: the dead pid decides
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def process_exists(pid: int) -> bool:
    """Whether a process with this pid is alive (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except (OverflowError, OSError):
        return False
    return True


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


def atomic_write_bytes(path: Path, data: bytes, *, clobber: bool = True) -> Path:
    return atomic_write(path, lambda fh: fh.write(data), clobber=clobber)


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
