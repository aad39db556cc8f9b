"""Can a run write where it is told to? Checked before anything is written, by really trying.

``os.access`` answers for the permission bits only: it says yes to root on a read-only mount and no to
nothing that ACLs or a full quota refuse. So the check creates (and at once removes) an empty probe file
in the nearest existing folder of the path: the only answer the file system cannot get wrong.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flowerkit.errors import ConfigError, MissingInputError

PROBE_PREFIX = ".flowerkit-probe-"


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (a dangling link counts as existing: it is in the way)."""
    path = path.expanduser().absolute()
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path


def check_writable_folder(path: Path, what: str, fix: str) -> None:
    """Raise ConfigError (exit 2) when a file sits where the folder must be, MissingInputError (exit 3) when
    the folder cannot be created or written; ``what`` names it (``--output_dir output``), ``fix`` says what to do."""
    try:
        existing = nearest_existing(Path(path))
    except PermissionError as exc:  # a folder on the way cannot even be looked into
        raise MissingInputError(f"{what} cannot be reached: {exc.filename} is not accessible (permission "
                                f"denied). {fix}") from None
    if not existing.is_dir():
        where = "is" if existing == Path(path).expanduser().absolute() else f"lies under {existing}, which is"
        raise ConfigError(f"{what} {where} a file, not a folder, so nothing can be written there. {fix}")
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=existing)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MissingInputError(f"{what} cannot be written: creating a file in {existing} failed ({reason}). "
                                f"{fix}") from None
    os.close(fd)
    os.unlink(probe)
