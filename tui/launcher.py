"""Start a run from the dashboard's forms: the CLI's validation, then the real CLI in the background.

A form offers every option of its config model (``TrainConfig`` / ``EvalConfig``, and ``PredictRunConfig`` for
predicting a folder with the model of the run being viewed), grouped by each field's ``group``, except
``output_dir``: a dashboard shows one output directory, and its runs are launched there. Values are validated
exactly as the CLI does before a run (``load_config`` then ``prepare_plan``; ``load_predict_config`` then
``prepare_predict_run``: a missing data root, folder or checkpoint, a taken name ... are refused with the CLI's
message), and the run is a detached ``python -m flowerkit`` subprocess whose output goes to
``OUTPUT_DIR/.dashboard/<name>-<time>.log``, so it keeps running after the dashboard quits.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flowerkit.fields import option_type
from flowerkit.config import CONFIG_CLASSES, PredictRunConfig, RunConfig, load_config, load_predict_config
from flowerkit.layout import RunLayout
from flowerkit.runs import read_json_or_none, run_status

LAUNCH_LOG_DIR = ".dashboard"
FORM_CLASSES: dict[str, type[BaseModel]] = {**CONFIG_CLASSES, "predict": PredictRunConfig}
# What a form does not offer: the dashboard's own output directory, and, to predict, the model: the run viewed.
NOT_IN_FORM = {"train": {"output_dir"}, "eval": {"output_dir"}, "predict": {"output_dir", "run", "checkpoint"}}
GROUP_ORDER = ["run", "inputs", "data", "model", "training", "execution", "output"]


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
    fields = [(name, field) for name, field in FORM_CLASSES[flow].model_fields.items()
              if name not in NOT_IN_FORM[flow]]
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
    return start_detached(config.name, flow, cli_args(flow, values, output_dir, resume), output_dir)


def predict_config(run: str, values: dict[str, Any], output_dir: Path) -> PredictRunConfig:
    """The predict form's values as the CLI's ``--name`` run takes them: its one folder (or image) as the
    inputs, and the run being viewed as the model; ConfigError (exit 2's message) naming each bad option."""
    given = {**values, "run": run, "output_dir": output_dir}
    if "inputs" in given:
        given["inputs"] = [str(given["inputs"])]
    return load_predict_config(given)


def predict_cli_args(config: PredictRunConfig, values: dict[str, Any]) -> list[str]:
    """``python -m flowerkit predict --run RUN --name NAME [--option value ...] -- INPUT``: only the options the
    form gave (predict's switches are off unless given); ``--`` so that a folder named ``-x`` stays a folder."""
    args = [sys.executable, "-m", "flowerkit", "predict", "--run", str(config.run), "--name", config.name]
    for name, value in values.items():
        if name in ("name", "inputs"):
            continue
        if isinstance(value, bool):
            args += [f"--{name}"] if value else []
        else:
            args += [f"--{name}", str(value)]
    return args + ["--output_dir", str(config.output_dir), "--", *config.inputs]


def launch_predict(run: str, values: dict[str, Any], output_dir: Path) -> LaunchedRun:
    """Predict a folder with ``run``'s selected checkpoint as the recorded run ``values["name"]``: the CLI's
    checks (the name is free, the folder holds images, the checkpoint loads), then the CLI, detached.

    Loads the model to check it, so call it off the UI thread. Raises FlowerkitError.
    """
    from flowerkit.predict.run import prepare_predict_run

    config = predict_config(run, values, output_dir)
    prepare_predict_run(config)
    return start_detached(config.name, "predict", predict_cli_args(config, values), output_dir)


def start_detached(name: str, flow: str, args: list[str], output_dir: Path) -> LaunchedRun:
    """Run ``args`` in its own session with its output in OUTPUT_DIR/.dashboard/NAME-TIME.log."""
    started = datetime.now(timezone.utc)
    log_dir = Path(output_dir) / LAUNCH_LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return LaunchedRun(name=name, flow=flow, process=process, log_path=log_path,
                       started_utc=started.isoformat(timespec="seconds").replace("+00:00", "Z"))
