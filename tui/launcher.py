"""Start a train or eval run from the dashboard's form: the CLI's validation, then the real CLI in the background.

The form offers every option of the config model (``TrainConfig`` / ``EvalConfig``), grouped by each field's
``group``, except ``output_dir``: a dashboard shows one output directory, and its runs are launched there.
Values are validated exactly as the CLI does before a run (``load_config``, then ``prepare_plan``: a missing data
root or checkpoint, a taken name ... are refused with the CLI's message), and the run is a detached
``python -m flowerkit`` subprocess whose output goes to ``OUTPUT_DIR/.dashboard/<name>-<time>.log``, so it keeps
running after the dashboard quits.
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
from flowerkit.layout import RunLayout
from flowerkit.runs import read_json_or_none, run_status

LAUNCH_LOG_DIR = ".dashboard"
NOT_IN_FORM = {"output_dir"}  # the dashboard's own output directory
GROUP_ORDER = ["run", "data", "model", "training", "execution", "output"]


@dataclass
class LaunchedRun:
    """A run started by this dashboard: shown in the list before its run record exists."""

    name: str
    flow: str
    process: subprocess.Popen
    log_path: Path
    started_utc: str


def group_of(field: FieldInfo) -> str:
    return str((field.json_schema_extra or {}).get("group", "options"))  # type: ignore[union-attr]


def form_fields(flow: str) -> list[tuple[str, FieldInfo]]:
    """Every option of the flow's config model, group by group (GROUP_ORDER), in declaration order within one."""
    fields = [(name, field) for name, field in CONFIG_CLASSES[flow].model_fields.items() if name not in NOT_IN_FORM]
    rank = {group: i for i, group in enumerate(GROUP_ORDER)}
    return sorted(fields, key=lambda item: rank.get(group_of(item[1]), len(rank)))  # sorted() is stable


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
    """Only the options the user gave (blank fields are left to the config's sources, as the CLI leaves them)."""
    fields = dict(form_fields(flow))
    values: dict[str, Any] = {}
    for name, value in raw.items():
        field = fields[name]
        if isinstance(value, bool):  # a switch set either way overrides --config, FLOWERKIT_* and .env
            values[name] = value
        elif value is not None and str(value).strip():
            values[name] = coerce(field, str(value).strip())
    return values


def resumable(output_dir: Path, name: str) -> bool:
    """Whether an incomplete run of this name exists in ``output_dir`` (the runs --resume continues)."""
    if not name.strip():
        return False
    record = read_json_or_none(RunLayout.default(Path(output_dir), name.strip()).record)
    return isinstance(record, dict) and run_status(record) != "complete"


def validate(flow: str, values: dict[str, Any], output_dir: Path, resume: bool = False) -> RunConfig:
    """The CLI's pre-run checks: ConfigError naming ``--option``, MissingInputError, RunExistsError ..."""
    from flowerkit.prepare import prepare_plan

    config = load_config(CONFIG_CLASSES[flow], {**values, "output_dir": output_dir})
    prepare_plan(flow, config, resume)
    return config


def cli_args(flow: str, values: dict[str, Any], output_dir: Path, resume: bool = False) -> list[str]:
    """``python -m flowerkit FLOW --opt value ...`` with only the given options."""
    args = [sys.executable, "-m", "flowerkit", flow]
    for name, value in values.items():
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no_{name}")
        else:
            args += [f"--{name}", str(value)]
    return args + ["--output_dir", str(output_dir)] + (["--resume"] if resume else [])


def launch(flow: str, values: dict[str, Any], output_dir: Path, resume: bool = False) -> LaunchedRun:
    """Validate, then start the run detached (its own session, output to a file); raises FlowerkitError.

    The caller owns the returned process and must reap it (``DashboardApp.track``), or it stays a zombie.
    """
    config = validate(flow, values, output_dir, resume)
    started = datetime.now(timezone.utc)
    log_dir = Path(output_dir) / LAUNCH_LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{config.name}-{started.strftime('%Y%m%dT%H%M%SZ')}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cli_args(flow, values, output_dir, resume), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return LaunchedRun(name=config.name, flow=flow, process=process, log_path=log_path,
                       started_utc=started.isoformat(timespec="seconds").replace("+00:00", "Z"))
