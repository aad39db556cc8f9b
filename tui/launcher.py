"""Start a train or eval run from the dashboard's form: the CLI's validation, then the real CLI in the background.

The form is built from the config models' fields, its values are validated with ``load_config`` (the CLI's
messages, naming ``--option``), and the run is a detached ``python -m flowerkit`` subprocess whose output goes
to ``OUTPUT_DIR/.dashboard/<name>.log``, so it keeps running after the dashboard quits.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from flowerkit.fields import option_type
from flowerkit.config import CONFIG_CLASSES, RunConfig, load_config
from flowerkit.rundir import check_claimable

# The options the form offers (the list plus the seed command's flags); the CLI has them all.
LAUNCH_FIELDS: dict[str, list[str]] = {
    "train": ["name", "dataset", "data_root", "model_type", "img_size", "num_steps", "eval_every", "train_batch_size",
              "eval_batch_size", "tiny_train_subset", "tiny_infer_subset", "pretrained", "seed", "device",
              "prefer_mps"],
    "eval": ["name", "dataset", "data_root", "checkpoint", "split", "model_type", "img_size", "eval_batch_size",
             "tiny_infer_subset", "seed", "device", "prefer_mps"],
}
LAUNCH_LOG_DIR = ".dashboard"


@dataclass
class LaunchedRun:
    """A run started by this dashboard: shown in the list before its run record exists."""

    name: str
    flow: str
    process: subprocess.Popen
    log_path: Path
    started_utc: str


def form_fields(flow: str) -> list[tuple[str, FieldInfo]]:
    fields = CONFIG_CLASSES[flow].model_fields
    return [(name, fields[name]) for name in LAUNCH_FIELDS[flow]]


def field_kind(field: FieldInfo) -> Any:
    """int, float, bool, str or Path, as the CLI types the option (a Literal is a str)."""
    return option_type(field.annotation)


def coerce(field: FieldInfo, text: str) -> Any:
    """A number as the CLI would parse it; text that is not a number is left for pydantic to reject by name."""
    kind = field_kind(field)
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            return text
    return text


def form_values(flow: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Only the options the user gave (blank inputs and unchanged switches are left to the config's sources)."""
    fields = dict(form_fields(flow))
    values: dict[str, Any] = {}
    for name, value in raw.items():
        field = fields[name]
        if isinstance(value, bool):
            if value != field.get_default():
                values[name] = value
        elif value is not None and str(value).strip():
            values[name] = coerce(field, str(value).strip())
    return values


def validate(flow: str, values: dict[str, Any], output_dir: Path) -> RunConfig:
    """The CLI's checks: ConfigError naming ``--option``, RunExistsError for a taken name."""
    config = load_config(CONFIG_CLASSES[flow], {**values, "output_dir": output_dir})
    check_claimable(config, resume=False)
    return config


def cli_args(flow: str, values: dict[str, Any], output_dir: Path) -> list[str]:
    """``python -m flowerkit FLOW --opt value ...`` with only the given options."""
    args = [sys.executable, "-m", "flowerkit", flow]
    for name, value in values.items():
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no_{name}")
        else:
            args += [f"--{name}", str(value)]
    return args + ["--output_dir", str(output_dir)]


def launch(flow: str, values: dict[str, Any], output_dir: Path) -> LaunchedRun:
    """Validate, then start the run detached (its own session, output to a file); raises FlowerkitError."""
    config = validate(flow, values, output_dir)
    started = datetime.now(timezone.utc)
    log_dir = Path(output_dir) / LAUNCH_LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{config.name}-{started.strftime('%Y%m%dT%H%M%SZ')}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cli_args(flow, values, output_dir), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return LaunchedRun(name=config.name, flow=flow, process=process, log_path=log_path,
                       started_utc=started.isoformat(timespec="seconds").replace("+00:00", "Z"))
