"""The one reader of text files a user hands to flowerkit: sweep files, ``--config``, ``.env``, subset manifests,
label maps, predictions files.

Each failure is one paragraph with its exit code, never a traceback: a missing file is ``MissingInputError``
(exit 3); a directory, bytes that are not UTF-8, or a file the process may not read are ``ConfigError`` (exit 2).
Reading the bytes and decoding them in one step means a file that changes under us is judged as it was read.
"""

from __future__ import annotations

from pathlib import Path

from flowerkit.errors import ConfigError, MissingInputError


def read_utf8(path: Path, what: str, hint: str = "") -> str:
    """The text of ``path``; ``what`` names the file in the message ("The sweep file"), ``hint`` says what to
    pass instead (appended to the missing-file and directory messages)."""
    path = Path(path).expanduser()
    hint = f" {hint}" if hint else ""
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a file.{hint}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingInputError(f"{what} {path} does not exist.{hint}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror}). Check its permissions and run "
                          "again.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path.resolve()} is not UTF-8 text (byte {exc.start} cannot be decoded). Save "
                          "it as UTF-8 and run again.") from None
