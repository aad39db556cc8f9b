"""Start FiftyOne reliably: find its database's libraries, fail fast with a clear message.

FiftyOne is imported lazily (``import_fiftyone``), never when this module is imported: it takes seconds
and the rest of flowerkit must work without it.

On Linux, the ``mongod`` of the pinned fiftyone-db wheel (0.4.5, MongoDB 6.0) needs OpenSSL 1.1, which
``scripts/setup_fiftyone_db.sh VENV`` unpacks into ``VENV/opt/libssl1.1/`` and writes into mongod's RPATH.
So mongod finds it by itself, whoever starts it (flowerkit, a plain ``import fiftyone``, ``fiftyone app
launch``): no environment variable is needed, and nothing is changed system-wide. This module only checks
that mongod runs, to fail with what to do instead of FiftyOne's 60-second timeout.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Iterator

from flowerkit.errors import FlowerkitError

LIBSSL_SUBDIR = Path("opt") / "libssl1.1"
SETUP_HINT = (
    "Run `make setup` (or, for an existing virtual environment, `scripts/setup_fiftyone_db.sh .venv`) "
    "to install FiftyOne and the OpenSSL 1.1 libraries its database needs on Linux."
)


class _DropOldMongoNotice(logging.Filter):
    """fiftyone-db 0.4.5 (MongoDB 6.0) is pinned on purpose; FiftyOne warns about it on every start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("You are running the oldest supported major version of MongoDB")


_NOTICE_FILTER = _DropOldMongoNotice()


class FiftyOneUnavailableError(FlowerkitError):
    """FiftyOne, or the database it starts, is not usable here (a missing runtime dependency)."""

    exit_code = 3


def prepare_fiftyone_environment() -> None:
    """Quiet FiftyOne before importing it: no usage tracking unless asked for, no pinned-MongoDB notice."""
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    db_logger = logging.getLogger("fiftyone.core.odm.database")
    if _NOTICE_FILTER not in db_logger.filters:
        db_logger.addFilter(_NOTICE_FILTER)


def find_mongod() -> Path | None:
    """Path of the ``mongod`` shipped by the installed fiftyone-db package, without importing FiftyOne."""
    try:
        dist = importlib.metadata.distribution("fiftyone-db")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name in ("mongod", "mongod.exe") and f.parent.name == "bin":
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def check_mongod() -> None:
    """Raise ``FiftyOneUnavailableError`` if FiftyOne's own ``mongod`` cannot run in this environment.

    Runs ``mongod --version`` (a fraction of a second) so that a missing library fails at once with a
    useful message instead of FiftyOne's 60-second "failed to bind to port" timeout. Skipped when
    ``FIFTYONE_DATABASE_URI`` points FiftyOne at an existing MongoDB.
    """
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return
    mongod = find_mongod()
    if mongod is None:
        raise FiftyOneUnavailableError(
            "FiftyOne's database (the package fiftyone-db, which carries `mongod`) is not installed in "
            f"this environment ({sys.prefix}). {SETUP_HINT} Alternatively set FIFTYONE_DATABASE_URI to "
            "an existing MongoDB."
        )
    try:
        proc = subprocess.run(
            [str(mongod), "--version"], capture_output=True, text=True, timeout=30, env=os.environ.copy()
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FiftyOneUnavailableError(
            f"FiftyOne's database program {mongod} cannot be started: {exc}. {SETUP_HINT}"
        ) from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {proc.returncode}"
        hint = SETUP_HINT
        if "libssl.so.1.1" in proc.stderr or "libcrypto.so.1.1" in proc.stderr:
            where = sys.prefix / LIBSSL_SUBDIR
            hint = (
                f"It needs OpenSSL 1.1, which it does not find (expected in {where}, through its RPATH). "
                f"Run `scripts/setup_fiftyone_db.sh {sys.prefix}` (part of `make setup`) to install it "
                "into the virtual environment and point mongod at it; nothing is changed system-wide."
            )
        raise FiftyOneUnavailableError(
            f"FiftyOne's database program {mongod} cannot start: {reason}. {hint}"
        )


def import_fiftyone(check_database: bool = True) -> ModuleType:
    """Prepare the environment, import ``fiftyone`` and (by default) make sure its database starts.

    Returns the ``fiftyone`` module. Raises ``FiftyOneUnavailableError`` (exit code 3) with what to
    install when FiftyOne or its database is not usable.
    """
    prepare_fiftyone_environment()
    try:
        import fiftyone as fo
    except ImportError as exc:
        raise FiftyOneUnavailableError(
            f"FiftyOne cannot be imported ({exc}). {SETUP_HINT}"
        ) from exc
    if check_database:
        check_mongod()
        try:
            fo.list_datasets()  # starts (or attaches to) the database
        except Exception as exc:  # noqa: BLE001 - FiftyOne raises many unrelated types here
            raise FiftyOneUnavailableError(
                f"FiftyOne's database could not be started or reached ({type(exc).__name__}: {exc}). "
                f"Database folder: {fo.config.database_dir}; log: "
                f"{Path(fo.config.database_dir) / 'log' / 'mongo.log'}. {SETUP_HINT}"
            ) from exc
    return fo


def shutdown_database() -> None:
    """Disconnect from the database and stop the ``mongod`` this process started, if any.

    When other processes use the same database service, it keeps running for them.
    """
    if "fiftyone" not in sys.modules:
        return
    import fiftyone.core.odm.database as fod

    with contextlib.suppress(Exception):
        fod._disconnect()
    service = getattr(fod, "_db_service", None)
    if service is not None:
        child = service.child
        attached = getattr(service, "attached", False)
        with contextlib.suppress(Exception):
            service.stop()
        if child is not None and not attached:
            with contextlib.suppress(Exception):
                child.wait(timeout=30)
        fod._db_service = None
    os.environ.pop("FIFTYONE_PRIVATE_DATABASE_PORT", None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_database(database_dir: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """Run a ``mongod`` of our own on ``database_dir`` and point FiftyOne at it (for tests).

    FiftyOne's own service attaches to *any* FiftyOne database already running for the same user,
    whatever ``FIFTYONE_DATABASE_DIR`` says; a private ``mongod`` reached through
    ``FIFTYONE_DATABASE_URI`` is the only way to be sure a test never touches another database.
    Must be entered before FiftyOne connects. Yields the URI; stops ``mongod`` on exit.
    """
    prepare_fiftyone_environment()
    os.environ.pop("FIFTYONE_DATABASE_URI", None)
    check_mongod()
    mongod = find_mongod()
    assert mongod is not None
    database_dir = Path(database_dir)
    (database_dir / "log").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(mongod), "--dbpath", str(database_dir), "--port", str(port), "--bind_ip", "127.0.0.1",
            "--nounixsocket", "--logpath", str(database_dir / "log" / "mongo.log"),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise FiftyOneUnavailableError(
                f"A private mongod on {database_dir} exited with status {proc.returncode}: {err.strip()} "
                f"(log: {database_dir / 'log' / 'mongo.log'})."
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise FiftyOneUnavailableError(f"A private mongod did not listen on port {port} in {timeout_s} s.")
        time.sleep(0.1)
    uri = f"mongodb://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("FIFTYONE_DATABASE_URI", "FIFTYONE_DATABASE_DIR")}
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    os.environ["FIFTYONE_DATABASE_DIR"] = str(database_dir)
    if "fiftyone" in sys.modules:  # already imported: its config was read at import time
        fo = sys.modules["fiftyone"]
        fo.config.database_uri = uri
        fo.config.database_dir = str(database_dir)
    try:
        yield uri
    finally:
        shutdown_database()
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


__all__ = [
    "FiftyOneUnavailableError",
    "check_mongod",
    "find_mongod",
    "import_fiftyone",
    "prepare_fiftyone_environment",
    "private_database",
    "shutdown_database",
]
