"""Start a run from the dashboard's forms: the run's plan, built as the CLI builds it, run in the background.

A form offers every option of its config model (``TrainConfig`` / ``EvalConfig``, and ``PredictRunConfig`` for
predicting a folder with the model of the run being viewed), grouped by each field's ``group``, except
``output_dir``: a dashboard shows one output directory, and its runs are launched there. The values become a
config and then the run's plan exactly as the CLI does (``load_config`` then ``prepare_plan``;
``load_predict_config`` then ``prepare_predict_run``: a missing data root, folder or checkpoint, a taken name ...
are refused with the CLI's message; no model is loaded here). The plan is written to
``OUTPUT_DIR/.dashboard/<name>-<time>.plan.json`` and run by a detached ``python -m flowerkit run PLAN`` whose
output goes to the ``.log`` beside it, so it keeps running after the dashboard quits.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flowerkit.fields import option_type
from flowerkit.run.config import CONFIG_CLASSES, PredictRunConfig, load_config, load_predict_config
from flowerkit.artifacts.files import atomic_write_text
from flowerkit.run.layout import RunLayout
from flowerkit.run.runs import read_json_or_none, run_status

if TYPE_CHECKING:  # the plan's modules import torch: imported when a run is planned
    from flowerkit.run.plan import Plan, RunPlan

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


def plan_run(flow: str, values: dict[str, Any], output_dir: Path, resume: bool = False) -> RunPlan:
    """The run's plan from the form's values, as the CLI builds it: ConfigError naming ``--option``,
    MissingInputError, RunExistsError ..."""
    from flowerkit.run.prepare import prepare_plan

    return prepare_plan(flow, load_config(CONFIG_CLASSES[flow], {**values, "output_dir": output_dir}), resume)


def launch(flow: str, values: dict[str, Any], output_dir: Path, resume: bool = False) -> LaunchedRun:
    """Plan the run, then start it detached (its own session, output to a file); raises FlowerkitError.

    The caller owns the returned process and must reap it (``DashboardApp.track``), or it stays a zombie.
    """
    return start_detached(plan_run(flow, values, output_dir, resume), output_dir)


def predict_config(run: str, values: dict[str, Any], output_dir: Path) -> PredictRunConfig:
    """The predict form's values as the CLI's ``--name`` run takes them: its one folder (or image) as the
    inputs, and the run being viewed as the model; ConfigError (exit 2's message) naming each bad option."""
    given = {**values, "run": run, "output_dir": output_dir}
    if "inputs" in given:
        given["inputs"] = [str(given["inputs"])]
    return load_predict_config(given)


def launch_predict(run: str, values: dict[str, Any], output_dir: Path) -> LaunchedRun:
    """Predict a folder with ``run``'s selected checkpoint as the recorded run ``values["name"]``: the CLI's
    checks (the name is free, the folder holds images, the checkpoint reads), then the run, detached.

    Reads the checkpoint (for its hash), so call it off the UI thread. Raises FlowerkitError.
    """
    from flowerkit.predict.run import prepare_predict_run

    return start_detached(prepare_predict_run(predict_config(run, values, output_dir)), output_dir)


def start_detached(plan: Plan, output_dir: Path) -> LaunchedRun:
    """Write the plan to OUTPUT_DIR/.dashboard/NAME-TIME.plan.json and run it in its own session, its output in
    the ``.log`` beside it."""
    started = datetime.now(timezone.utc)
    log_dir = Path(output_dir) / LAUNCH_LOG_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{plan.config.name}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    plan_file = atomic_write_text(log_dir / f"{stem}.plan.json", plan.to_json())
    log_path = log_dir / f"{stem}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(launch_command(plan_file), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return LaunchedRun(name=plan.config.name, flow=plan.flow, process=process, log_path=log_path,
                       started_utc=started.isoformat(timespec="seconds").replace("+00:00", "Z"))


def launch_command(plan_file: Path) -> list[str]:
    """``python -m flowerkit run PLAN``: the run as planned, with no option rendered again."""
    return [sys.executable, "-m", "flowerkit", "run", str(plan_file)]
