"""Immutable run directories: claim a fresh one, or resume an incomplete one with the same config."""

from __future__ import annotations

import os
from pathlib import Path

from flowerkit.artifacts.files import atomic_write_text
from flowerkit.artifacts.record import (
    RECORD_NAME,
    new_record,
    owner,
    read_record,
    write_record,
)
from flowerkit.config import RunConfig
from flowerkit.errors import ConfigError, RunExistsError


def check_claimable(config: RunConfig, resume: bool) -> None:
    """Raise (touching nothing) unless the run can start: a new name, or ``--resume`` of an incomplete run."""
    run_dir, tb_dir = config.layout.run_dir, config.layout.tb_dir
    exists = run_dir.exists() or tb_dir.exists()
    if not exists:
        return
    if not resume:
        raise RunExistsError(
            f"The run '{config.name}' already exists ({run_dir if run_dir.exists() else tb_dir}); runs are never "
            "overwritten. Continue it with --resume (same configuration, incomplete run only), or start a new "
            "run with another --name.")
    if not (run_dir / RECORD_NAME).is_file():
        raise RunExistsError(f"--resume: {run_dir} has no {RECORD_NAME}, so it is not a flowerkit run that can be "
                             "resumed. Choose another --name.")
    record = read_record(run_dir)
    if record.get("stage_status") == "complete":
        raise RunExistsError(f"--resume: the run '{config.name}' is already complete; nothing to resume. Start a "
                             "new run with another --name.")
    if record.get("config_hash") != config.config_hash():
        raise ConfigError(f"--resume: the configuration differs from the one '{config.name}' was started with "
                          f"(see {config.layout.config}). Resume with the same options, or start a new run with "
                          "another --name.")


def claim_run_dir(config: RunConfig, flow: str, resume: bool, flow_run_id: str | None, total_steps: int) -> dict:
    """Create (or reopen for resume) the run directory; returns the run record."""
    check_claimable(config, resume)
    run_dir = config.layout.run_dir
    if resume and run_dir.exists():
        record = read_record(run_dir)
        record.update(stage_status="started", ended_utc=None, error=None, flow_run_id=flow_run_id, owner=owner())
        record.setdefault("resumed", 0)
        record["resumed"] += 1
        write_record(run_dir, record)
        return record
    config.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(run_dir)  # atomic: of two runs racing for one name, exactly one gets it
    except FileExistsError:
        raise RunExistsError(f"The run '{config.name}' was created by another process just now; runs are never "
                             "overwritten. Start this one with another --name.") from None
    atomic_write_text(config.layout.config, config.resolved_yaml())
    record = new_record(config.name, flow, config.config_hash(), flow_run_id, total_steps)
    record.update(layout=config.layout.to_record(), retention_days=config.retention_days)
    write_record(run_dir, record)
    return record


def output_dir_of(run_dir: Path) -> Path:
    return Path(run_dir).parent
