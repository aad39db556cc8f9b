"""Resumable, verified downloads: a file only ever appears under its final name once it has been verified.

Bytes stream into ``NAME.partial`` next to the destination with huggingface_hub's ``http_get`` (ranged
requests, retries on a dropped connection, a progress bar); an interrupted download leaves the partial file,
and the next call resumes it with ``Range``. The caller's ``verify`` then checks the complete file: on
failure the partial file is deleted (so nothing that could pass for good data stays behind) and the
ConfigError is raised; on success it is renamed into place.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from flowerkit.errors import ConfigError, MissingInputError

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def fetch(url: str, dest: Path, verify: Callable[[Path], None]) -> Path:
    """Download ``url`` to ``dest`` (resuming a partial download); ``verify(path)`` raises ConfigError."""
    from huggingface_hub.file_download import http_get

    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    with open(partial, "ab") as fh:
        resume = fh.tell()
        if resume:
            log.info("resuming %s from byte %d", dest.name, resume)
        try:
            http_get(url, fh, resume_size=resume, displayed_filename=dest.name)
        except Exception as exc:  # noqa: BLE001 - httpx, OS and Hub errors all mean "not fetched"
            if isinstance(exc, KeyboardInterrupt):
                raise
            fh.flush()
            raise MissingInputError(_interrupted(url, dest, partial, exc)) from None
    try:
        verify(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, dest)
    return dest


def _interrupted(url: str, dest: Path, partial: Path, exc: Exception) -> str:
    kept = partial.stat().st_size if partial.exists() else 0
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if "offline mode is enabled" in reason:
        reason += " (unset HF_HUB_OFFLINE to download)"
    if not kept:  # nothing to resume from: leave no empty file behind
        partial.unlink(missing_ok=True)
        return (f"Downloading {url} failed ({reason}). Nothing was written; check the URL (--mirror) and the "
                "connection, then run the same command again.")
    return (f"Downloading {url} failed ({reason}). {kept} bytes are kept in {partial}; run the same command "
            f"again to resume, or delete that file to start over. {dest.name} was not written.")


def checksum_error(name: str, url: str, algorithm: str, expected: str, actual: str) -> ConfigError:
    return ConfigError(f"{name} from {url} failed verification: expected {algorithm} {expected}, got {actual}. "
                       "The downloaded bytes were deleted. If you used --mirror, the mirror serves a different "
                       "file; otherwise run the command again.")
