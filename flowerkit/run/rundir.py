"""Immutable run directories with one writer: claim a fresh one, or resume an incomplete one with the same config.

A run directory has exactly one writer at a time. The writer holds an exclusive ``flock`` on the run's lock
file (``RunLayout.lock``) from claim to finish; a second process (on this host or, over NFS, another one) is
refused with exit 4 naming the live owner. The kernel drops the lock when its process dies, so a killed run
never blocks ``--resume``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import IO, Any, Protocol

from flowerkit.artifacts import run_index
from flowerkit.artifacts.files import atomic_write_text, utc_now
from flowerkit.artifacts.record import new_record, owner, read_record, write_record
from flowerkit.run.config import PredictRunConfig, RunConfig
from flowerkit.errors import ConfigError, DiskFullError, FlowerkitError, RunExistsError
from flowerkit.run.layout import RunLayout
from flowerkit.run.runs import CrashedRun, read_json_or_none, run_status


RESERVE_BYTES = 256 * 1024


class Lockable(Protocol):
    """What a lock needs of a layout: a name for messages and the lock file's path."""

    @property
    def name(self) -> str: ...

    @property
    def lock(self) -> Path: ...


class RunLock:
    """The exclusive lock of one run directory, held for the whole run.

    The lock file also reserves ``reserve_bytes`` of disk: when the disk fills up mid-run, ``free_reserve``
    gives them back so the run record can still be marked failed with what happened. Subclasses lock other
    things with one writer (a sweep) and say so in their own words (``busy_message``).
    """

    reserve_bytes = RESERVE_BYTES

    def __init__(self, layout: Lockable) -> None:
        self.layout = layout
        self._fh: IO[str] | None = None

    def busy_message(self, holder: str) -> str:
        return (f"The run '{self.layout.name}' is being written right now by {holder}; a run directory has one "
                "writer at a time. Wait for that run to finish (or stop it), or start this one with another --name.")

    def holder(self) -> str:
        """Who holds the lock, as its owner line says ("another process" when it says nothing readable)."""
        try:
            with open(self.layout.lock, encoding="utf-8") as fh:
                return _describe_holder(fh.readline())
        except (OSError, UnicodeDecodeError):
            return "another process"

    def acquire(self) -> None:
        """Take the lock or raise RunExistsError naming its owner; then record who holds it."""
        fh = open(self.layout.lock, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RunExistsError(self.busy_message(self.holder())) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({**owner(), "since_utc": utc_now()}) + "\n")
        fh.flush()
        self._fh = fh
        if not self.reserve_bytes:
            return
        try:
            os.posix_fallocate(fh.fileno(), 0, fh.tell() + self.reserve_bytes)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.release()
                raise DiskFullError(self.layout.lock) from None
            # any other error: a filesystem without fallocate; run without the reserve

    def release(self) -> None:
        if self._fh is not None:
            self.free_reserve()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def free_reserve(self) -> None:
        """Give the reserved bytes back (the lock file keeps only its owner line)."""
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate(len(self._fh.readline().encode()))

    def is_held_elsewhere(self) -> bool:
        """True when another process holds the lock right now (this one does not take it)."""
        if not self.layout.lock.is_file():
            return False
        with open(self.layout.lock, encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _describe_holder(text: str) -> str:
    try:
        info: dict[str, Any] = json.loads(text)
        return f"pid {info['pid']} on host {info['host']} since {info['since_utc']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


def check_claimable(config: RunConfig | PredictRunConfig, resume: bool) -> None:
    """Raise (touching nothing) unless the run can start: a new name, or ``--resume`` of an incomplete run."""
    layout = config.layout
    for option, path in (("--output_dir", layout.run_dir), ("--tb_dir", layout.tb_dir)):
        if path.exists() and not path.is_dir():  # a file in the way is a wrong path, not an existing run
            raise ConfigError(f"{option}: {path} is a file, not a folder; the run needs a folder there. Pass "
                              f"another {option} (or --name), or move the file.")
    existing = next((p for p in (layout.run_dir, layout.tb_dir) if p.exists()), None)
    if existing is None:
        return
    if not resume:
        if isinstance(config, PredictRunConfig):
            raise RunExistsError(_predict_run_exists(config, layout, existing))
        raise RunExistsError(
            f"The run '{config.name}' already exists ({existing}); runs are never overwritten. Continue it with "
            "--resume (same configuration, incomplete run only), or start a new run with another --name.")
    if RunLock(layout).is_held_elsewhere():
        RunLock(layout).acquire()  # raises, naming the live owner
    _check_resumable(config, layout)


def _predict_run_exists(config: PredictRunConfig, layout: RunLayout, existing: Path) -> str:
    """Why a predict run's name is taken, and what to do: a predict run has no --resume, so never suggest one."""
    lock = RunLock(layout)
    if lock.is_held_elsewhere():
        return lock.busy_message(lock.holder())
    record = read_json_or_none(layout.record)
    if isinstance(record, dict) and run_status(record) == "crashed":
        owner = record.get("owner") or {}
        return (f"The run '{config.name}' exists ({layout.run_dir}), but its process (pid {owner.get('pid', '?')}) "
                "died before it finished, and a predict run cannot be continued. `flowerkit runs prune --crashed "
                f"--output-dir {config.output_dir}` deletes it (with --dry-run first to see what else it deletes); "
                "then run this command again, or record this one under another --name.")
    return (f"The run '{config.name}' already exists ({existing}); runs are never overwritten, and a predict run "
            "cannot be continued. Record this one under another --name.")


def _check_resumable(config: RunConfig | PredictRunConfig, layout: RunLayout) -> dict[str, Any]:
    if not layout.record.is_file():
        raise RunExistsError(f"--resume: {layout.run_dir} has no {layout.record.name}, so it is not a flowerkit run "
                             "that can be resumed. Choose another --name.")
    try:
        record = read_record(layout.run_dir)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as exc:
        raise ConfigError(f"--resume: {layout.record} is damaged ({exc}), so what the run had done is unknown and "
                          "it cannot be resumed safely. Start a new run with another --name (the damaged run stays "
                          "as it is for inspection), or restore the record from a backup.") from None
    if record.get("stage_status") == "complete":
        raise RunExistsError(f"--resume: the run '{config.name}' is already complete; nothing to resume. Start a "
                             "new run with another --name.")
    if record.get("config_hash") != config.config_hash():
        raise ConfigError(f"--resume: the configuration differs from the one '{config.name}' was started with "
                          f"(see {layout.config}). Resume with the same options, or start a new run with "
                          "another --name.")
    return record


def claim_run_dir(config: RunConfig | PredictRunConfig, flow: str, resume: bool, flow_run_id: str | None,
                  total_steps: int, lock: RunLock) -> dict:
    """Create (or reopen for resume) the run directory under ``lock``; returns the run record.

    On return the caller holds ``lock`` and must release it when the run ends.
    """
    layout = config.layout
    if resume and layout.run_dir.exists():
        lock.acquire()
        try:
            record = _check_resumable(config, layout)
            for stale in layout.temp_files():  # left by a writer that was killed mid-write
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
            record.update(stage_status="started", ended_utc=None, error=None, flow_run_id=flow_run_id,
                          owner=owner())
            record["resumed"] = int(record.get("resumed") or 0) + 1
            write_record(layout.run_dir, record)
        except BaseException:
            lock.release()
            raise
        return record
    check_claimable(config, resume)
    config.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(layout.run_dir)  # atomic: of two runs racing for one name, exactly one gets it
    except FileExistsError:
        raise RunExistsError(f"The run '{config.name}' was created by another process just now; runs are never "
                             "overwritten. Start this one with another --name.") from None
    try:
        lock.acquire()
    except DiskFullError:
        os.rmdir(layout.run_dir)  # no room to start: leave nothing behind
        raise
    atomic_write_text(layout.config, config.resolved_yaml())
    record = new_record(config.name, flow, config.config_hash(), flow_run_id, total_steps)
    record.update(layout=layout.to_record(), retention_days=config.retention_days)
    write_record(layout.run_dir, record)
    run_index.write_entry(config.output_dir, record)  # the record's dates, vouched for outside the run folder
    return record


def delete_crashed(run: CrashedRun) -> bool:
    """Delete a crashed run under its lock, having checked again that it is still crashed: a ``--resume`` that
    took the run meanwhile (it holds the lock, or its record names a live owner) wins. False when kept."""
    class _Lock(RunLock):
        reserve_bytes = 0  # held only to delete the run: nothing to reserve

    layout = RunLayout.for_run(Path(run.output_dir) / run.name)
    lock = _Lock(layout)
    try:
        lock.acquire()
    except (FlowerkitError, OSError):
        return False
    try:
        record = read_json_or_none(layout.record)
        if not isinstance(record, dict) or run_status(record) != "crashed":
            return False
        for path in run.paths:
            if path.exists():
                shutil.rmtree(path)
        run_index.remove_entry(run.output_dir, run.name)
    finally:
        lock.release()
    return True
