"""Sweeps: a base configuration plus a grid and/or a random search, expanded into ordinary train runs.

A sweep file (YAML) names the sweep and says what varies::

    name: lr-seed
    base: configs/vit_modern_flowers.yaml      # or a mapping of options
    grid: {seed: [1, 2], learning_rate: [0.01, 0.03]}
    random: {trials: 4, seed: 0, warmup_steps: {randint: [0, 50]}, label_smoothing: {uniform: [0.0, 0.2]}}

Each trial is one train run named ``<sweep>-<index>`` (three digits), with its own run directory and record.
The expansion is deterministic (the grid in the file's order, the random draws from ``random.seed``), and every
trial's configuration is validated with ``load_config(TrainConfig, ...)`` before anything runs. Whether a trial
still has to run is read from its run record, never from a ledger of the sweep's own. This module writes the
sweep's folder (``SweepLayout``): the sweep file, the expansion, each trial's resolved config and the ranked
results. It knows nothing of Prefect: ``flows/sweep.py`` runs the trials.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flowerkit.artifacts.files import atomic_write_json, atomic_write_text
from flowerkit.run.config import NAME_PATTERN, TrainConfig, _read_yaml_file, check_known_options, load_config
from flowerkit.errors import ConfigError, FlowerkitError, MissingInputError, RunExistsError
from flowerkit.io.inputs import USER_FILE_MAX_BYTES, read_utf8
from flowerkit.run.layout import RECORD_NAME, SweepLayout
from flowerkit.run.rundir import RunLock
from flowerkit.run.runs import as_float, read_json_or_none, summarize

RECIPE_OPTION = "config"  # a grid/random option whose values are recipe files, as `flowerkit train --config`
FIXED_OPTIONS = ("name", "output_dir")  # set by the sweep itself: trials are named for it and live together
MAX_TRIALS = 1000
LOWER_IS_BETTER = {"val_loss"}


class Distribution(BaseModel):
    """One random option: exactly one of choice / uniform / loguniform / randint (bounds inclusive)."""

    model_config = ConfigDict(extra="forbid")
    choice: list[Any] | None = Field(default=None, min_length=1)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        kinds = [k for k in ("choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of choice: [values], uniform: [low, high], loguniform: [low, high], "
                             "randint: [low, high]")
        low_high = getattr(self, kinds[0]) if kinds[0] != "choice" else None
        if low_high is not None and low_high[0] > low_high[1]:
            raise ValueError(f"{kinds[0]}: low ({low_high[0]}) is above high ({low_high[1]})")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be positive")
        return self

    def draw(self, rng: random.Random) -> Any:
        if self.choice is not None:
            return self.choice[rng.randrange(len(self.choice))]
        if self.uniform is not None:
            return rng.uniform(*self.uniform)
        if self.loguniform is not None:
            low, high = self.loguniform
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        assert self.randint is not None
        return rng.randint(*self.randint)


class RandomSearch(BaseModel):
    """``trials`` draws of every other key (an option name mapped to a Distribution), seeded by ``seed``."""

    model_config = ConfigDict(extra="allow")
    trials: int = Field(gt=0, le=MAX_TRIALS)
    seed: int = 0

    def options(self) -> dict[str, Distribution]:
        return {name: Distribution.model_validate(spec) for name, spec in (self.model_extra or {}).items()}

    @model_validator(mode="after")
    def _valid_options(self) -> RandomSearch:
        if not self.model_extra:
            raise ValueError("name at least one option to draw, e.g. learning_rate: {loguniform: [0.001, 0.03]}")
        self.options()
        return self


class SweepSpec(BaseModel):
    """The sweep file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, max_length=90)  # room for the trial suffix in a run name
    base: str | dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    random: RandomSearch | None = None

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [name for name, values in grid.items() if not values]
        if empty:
            raise ValueError(f"grid option(s) {', '.join(empty)} have no values")
        return grid

    @model_validator(mode="after")
    def _varied_once(self) -> SweepSpec:
        varied = list(self.grid) + list(self.random.options() if self.random else {})
        for name in FIXED_OPTIONS:
            if name in varied or (isinstance(self.base, dict) and name == "name" and name in self.base):
                raise ValueError(f"'{name}' is set by the sweep (trials are named <sweep>-<index> and share one "
                                 "output_dir); remove it from base/grid/random")
        twice = sorted({n for n in varied if varied.count(n) > 1})
        if twice:
            raise ValueError(f"option(s) {', '.join(twice)} appear in both grid and random")
        if self.size() > MAX_TRIALS:
            raise ValueError(f"the sweep expands to {self.size()} trials; at most {MAX_TRIALS}")
        return self

    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) * (self.random.trials if self.random else 1)


@dataclass(frozen=True)
class Trial:
    """One expanded trial: its run name, the values it sets on top of the base, and its validated config."""

    index: int
    name: str
    values: dict[str, Any]
    config: TrainConfig

    def describe(self) -> str:
        return short_values(self.values) or "(the base configuration)"


@dataclass
class Sweep:
    """A sweep file read, expanded and validated."""

    spec: SweepSpec
    text: str  # the file as given: kept in the sweep's folder
    trials: list[Trial]
    layout: SweepLayout = field(init=False)

    def __post_init__(self) -> None:
        output_dir = self.trials[0].config.output_dir
        self.layout = SweepLayout(output_dir, self.spec.name)

    @property
    def name(self) -> str:
        return self.spec.name


def trial_name(sweep: str, index: int) -> str:
    return f"{sweep}-{index:03d}"


def sweep_of(output_dir: Path, run_name: str) -> str | None:
    """The sweep whose trial the run OUTPUT_DIR/RUN_NAME is (the sweep's folder holds the trial's config),
    whichever way the trial was started; else None."""
    sweep, _, index = run_name.rpartition("-")
    if sweep and index.isdigit() and SweepLayout(output_dir, sweep).trial_config(run_name).is_file():
        return sweep
    return None


def read_sweep(path: Path) -> Sweep:
    """Read, expand and validate a sweep file; raises ConfigError (exit 2) / MissingInputError (exit 3)."""
    path = Path(path)
    # Bounded and regular files only: a FIFO would hang the sweep, /dev/zero would fill the memory (exit 2 now).
    text = read_utf8(path, "The sweep file", "Pass a YAML file with name, base and grid and/or random (see the "
                                             "README's Sweeps section).", max_bytes=USER_FILE_MAX_BYTES)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The sweep file {path} is not valid YAML: {exc}") from None
    try:
        spec = SweepSpec.model_validate(data if isinstance(data, dict) else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise ConfigError(f"The sweep file {path} is invalid: {problems}.") from None
    check_options(spec, path)
    return Sweep(spec, text, expand(spec, path.parent))


def check_options(spec: SweepSpec, path: Path) -> None:
    """Every key of base, grid and random must be a train option, exactly as ``train --config`` demands: a key
    train does not know would be dropped, and the trials would differ in nothing."""
    if isinstance(spec.base, dict):
        check_known_options(TrainConfig, spec.base, f"The sweep file {path} (base)")
    check_known_options(TrainConfig, spec.grid, f"The sweep file {path} (grid)", allowed=(RECIPE_OPTION,))
    if spec.random is not None:
        check_known_options(TrainConfig, spec.random.options(), f"The sweep file {path} (random)",
                            allowed=(RECIPE_OPTION,))


def expand(spec: SweepSpec, base_dir: Path) -> list[Trial]:
    """Every trial of ``spec``, validated; relative recipe paths are read from ``base_dir`` (the file's folder)."""
    base = _recipe(spec.base, base_dir, "base") if isinstance(spec.base, str) else dict(spec.base)
    draws = _random_draws(spec.random)
    points = [dict(zip(spec.grid, combo)) for combo in itertools.product(*spec.grid.values())]
    trials = []
    for index, (point, drawn) in enumerate(itertools.product(points, draws)):
        values = point | drawn
        name = trial_name(spec.name, index)
        trials.append(Trial(index, name, values, _trial_config(name, base, values, base_dir)))
    return trials


def _random_draws(search: RandomSearch | None) -> list[dict[str, Any]]:
    if search is None:
        return [{}]
    rng = random.Random(search.seed)
    options = search.options()
    return [{name: dist.draw(rng) for name, dist in options.items()} for _ in range(search.trials)]


def _recipe(value: Any, base_dir: Path, where: str) -> dict[str, Any]:
    path = Path(str(value)).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        return _read_yaml_file(TrainConfig, path)
    except (ConfigError, MissingInputError) as exc:
        raise type(exc)(f"{where}: {exc.message}") from None


def _trial_config(name: str, base: dict[str, Any], values: dict[str, Any], base_dir: Path) -> TrainConfig:
    """base < the trial's recipe file (option ``config``) < the trial's own values; then the CLI's validation."""
    options = dict(base)
    if RECIPE_OPTION in values:
        options |= _recipe(values[RECIPE_OPTION], base_dir, f"trial {name} ({RECIPE_OPTION}={values[RECIPE_OPTION]})")
    options |= {k: v for k, v in values.items() if k != RECIPE_OPTION} | {"name": name}
    try:
        config = load_config(TrainConfig, options)
    except ConfigError as exc:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in values.items()) or "the base configuration"
        raise ConfigError(f"Sweep trial {name} ({shown}) is invalid, so nothing was run. {exc.message}") from None
    assert isinstance(config, TrainConfig)
    return config


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def short_values(values: dict[str, Any]) -> str:
    """``seed=1, learning_rate=0.01``: what a trial sets, floats to 4 significant digits."""
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items())


class SweepFailedError(FlowerkitError):
    """Some trials did not complete; the others did, and the results say which and why."""

    exit_code = 1


# --- what each trial needs, from its run record -------------------------------------------------------------
def trial_status(trial: Trial) -> str:
    """new (no run directory yet), or the run's status as `flowerkit runs list` shows it."""
    run_dir = trial.config.layout.run_dir
    if not run_dir.exists():
        return "new"
    return summarize(run_dir).status


def action_for(trial: Trial) -> str:
    """run (new), skip (complete), busy (another process writes it now) or resume (failed, crashed, or
    'running' with nobody holding its lock, e.g. a worker that died on another machine)."""
    status = trial_status(trial)
    if status == "new":
        return "run"
    if status == "complete":
        return "skip"
    if status in ("running", "retrying") and RunLock(trial.config.layout).is_held_elsewhere():
        return "busy"
    return "resume"


BUSY = ("running", "retrying")  # a trial another process is writing now: not this sweep's failure


def failure_message(sweep: Sweep, rows: list[dict[str, Any]]) -> str | None:
    """The paragraph for trials that are not complete after a pass, or None when all are. A trial another
    process holds (someone ran ``flowerkit train`` on its config) is named as such, never as failed."""
    failed = [row for row in rows if row["status"] not in ("complete", *BUSY)]
    busy = [row for row in rows if row["status"] in BUSY]
    if not failed and not busy:
        return None
    parts = [f"Sweep '{sweep.name}':"]
    if failed:
        listed = "; ".join(f"{row['trial']} ({row['status']}: {row['error'] or 'no error recorded'})"
                           for row in failed)
        parts.append(f"{len(failed)} of {len(rows)} trials did not complete: {listed}.")
    if busy:
        parts.append(f"{', '.join(row['trial'] for row in busy)} {'is' if len(busy) == 1 else 'are'} being run by "
                     "another process right now (not failed; this sweep left them alone).")
    parts.append(f"The complete trials are ranked in {sweep.layout.table}. "
                 + ("Fix the cause and run" if failed else "Once those runs finish, run")
                 + " the same sweep again: complete trials are skipped, failed ones resumed from their last "
                   "checkpoint.")
    return " ".join(parts)


def failure_error(sweep: Sweep, rows: list[dict[str, Any]]) -> FlowerkitError | None:
    """SweepFailedError (exit 1) when a trial failed; RunExistsError (exit 4: one writer per run) when the
    only unfinished trials are another process's; None when every trial is complete."""
    message = failure_message(sweep, rows)
    if message is None:
        return None
    if any(row["status"] not in ("complete", *BUSY) for row in rows):
        return SweepFailedError(message)
    return RunExistsError(message)


class SweepLock(RunLock):
    """One writer per sweep: the process running a sweep holds ``OUTPUT_DIR/sweeps/NAME/.lock`` for the whole
    pass. Two processes running one sweep would claim the same trials (RunExistsError) and judge each other's
    trials from half-written records; the second is refused, naming the first."""

    reserve_bytes = 0  # a sweep writes its results with the disk's own room; its trials keep their reserves

    def __init__(self, layout: SweepLayout) -> None:
        super().__init__(layout)

    def busy_message(self, holder: str) -> str:
        return (f"The sweep '{self.layout.name}' is being run right now by {holder}; a sweep has one writer at a "
                "time. Wait for that process to finish (or stop it); running the same sweep again afterwards "
                "skips the complete trials and resumes the others.")

    def acquire(self) -> None:
        self.layout.sweep_dir.mkdir(parents=True, exist_ok=True)
        super().acquire()


def check_sweep_free(sweep: Sweep) -> None:
    """Raise RunExistsError (exit 4) naming the holder when another process runs this sweep; takes nothing."""
    lock = SweepLock(sweep.layout)
    if lock.is_held_elsewhere():
        raise RunExistsError(lock.busy_message(lock.holder()))


def check_same_sweep(sweep: Sweep) -> None:
    """A sweep is immutable: the same name must expand to the same trials (compared by config hash)."""
    stored = read_json_or_none(sweep.layout.trials)
    if isinstance(stored, dict):
        before = {t["name"]: t["config_hash"] for t in stored.get("trials", [])}
        now = {t.name: t.config.config_hash() for t in sweep.trials}
        if before != now:
            changed = sorted(n for n in before.keys() | now.keys() if before.get(n) != now.get(n))
            raise ConfigError(
                f"The sweep '{sweep.name}' already exists ({sweep.layout.sweep_dir}) with other trials (differing: "
                f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}). A sweep's trials never change: "
                "restore the sweep file, or give the changed sweep another name.")
    for trial in sweep.trials:
        record = read_json_or_none(trial.config.layout.record)
        if isinstance(record, dict) and record.get("config_hash") != trial.config.config_hash():
            raise ConfigError(f"The run '{trial.name}' under {trial.config.output_dir} was not started by this "
                              "sweep (its configuration differs). Give the sweep another name.")


def write_expansion(sweep: Sweep) -> None:
    """The sweep file, the trials and each trial's resolved config; written on every pass (same content)."""
    layout = sweep.layout
    if not layout.spec.exists():
        atomic_write_text(layout.spec, sweep.text)
    for trial in sweep.trials:
        atomic_write_text(layout.trial_config(trial.name), trial.config.resolved_yaml())
    atomic_write_json(layout.trials, {"sweep": sweep.name, "trials": [
        {"index": t.index, "name": t.name, "values": t.values, "config_hash": t.config.config_hash()}
        for t in sweep.trials]})


# --- results ------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What running a trial in this pass gave: skipped (complete already), or the final Prefect state."""

    action: str  # skip / run / resume
    state: str = "SKIPPED"  # COMPLETED, FAILED, CRASHED, ... or SKIPPED
    message: str | None = None
    flow_run_id: str | None = None


def _run_row(output_dir: Path, name: str, index: int, values: dict[str, Any]) -> dict[str, Any]:
    """A trial's row from its run directory: status, the selected checkpoint's monitored value, accuracy."""
    run_dir = Path(output_dir) / name
    record = read_json_or_none(run_dir / RECORD_NAME)
    record = record if isinstance(record, dict) else {}
    selection, metrics = record.get("selection") or {}, record.get("metrics") or {}
    status = summarize(run_dir).status if run_dir.exists() else "new"
    return {"trial": name, "index": index, "values": values, "status": status,
            "monitor": selection.get("monitor"), "monitor_value": as_float(selection.get("monitor_value")),
            "selected_step": selection.get("selected_step"), "accuracy": as_float(metrics.get("accuracy")),
            "flow_run_id": record.get("flow_run_id"),
            "error": None if status == "complete" else (record.get("error") or {}).get("message")}


def result_row(trial: Trial, outcome: Outcome | None) -> dict[str, Any]:
    """One trial's row: its run record's view, plus what this pass did and the Prefect state it ended in."""
    row = _run_row(trial.config.output_dir, trial.name, trial.index, trial.values)
    if outcome is None:
        return row | {"action": None, "prefect_state": None}
    if row["status"] == "new" and outcome.state not in ("SKIPPED", "COMPLETED"):
        row["status"] = "failed"  # it failed before claiming a run directory (e.g. a missing input)
    if row["status"] != "complete" and not row["error"]:
        row["error"] = outcome.message
    return row | {"action": outcome.action, "prefect_state": outcome.state,
                  "flow_run_id": outcome.flow_run_id or row["flow_run_id"]}


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete trials by their monitored validation value (best first; lower is better for val_loss), then
    the others in trial order; each row gets its rank (None when it has no value)."""
    def key(row: dict[str, Any]) -> tuple:
        value = row["monitor_value"]
        if row["status"] != "complete" or value is None:
            return (1, 0.0, row["index"])
        return (0, value if row["monitor"] in LOWER_IS_BETTER else -value, row["index"])

    ranked = sorted(rows, key=key)
    for position, row in enumerate(ranked, 1):
        row["rank"] = position if key(row)[0] == 0 else None
    return ranked


RESULT_COLUMNS = ("rank", "trial", "status", "values", "monitor", "value", "step", "accuracy")


def result_cells(row: dict[str, Any]) -> list[str]:
    """A ranked row's cells, in ``RESULT_COLUMNS`` order (results.md, the CLI's table)."""
    return [str(row["rank"] or "-"), row["trial"], row["status"], short_values(row["values"]) or "-",
            row["monitor"] or "-", _number(row["monitor_value"]),
            "-" if row["selected_step"] is None else str(row["selected_step"]), _number(row["accuracy"])]


def results_markdown(sweep_name: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# Sweep {sweep_name}", "", "| " + " | ".join(RESULT_COLUMNS) + " |",
             "| " + " | ".join("---" for _ in RESULT_COLUMNS) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(result_cells(row)) + " |")
    failed = [row for row in rows if row["status"] != "complete"]
    if failed:
        lines += ["", "## Not complete", ""]
        lines += [f"- {row['trial']} ({row['status']}): {row['error'] or 'no error recorded'}" for row in failed]
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_results(sweep: Sweep, outcomes: dict[str, Outcome]) -> list[dict[str, Any]]:
    """Rank every trial from its run record, write results.json and results.md; returns the ranked rows."""
    rows = rank([result_row(trial, outcomes.get(trial.name)) for trial in sweep.trials])
    atomic_write_json(sweep.layout.results, {"sweep": sweep.name, "trials": rows})
    atomic_write_text(sweep.layout.table, results_markdown(sweep.name, rows))
    return rows


def read_results(output_dir: Path, name: str) -> list[dict[str, Any]]:
    """A sweep's ranked rows as its trials' run records say now (`runs list --sweep`, the dashboard).

    Needs only the sweep's folder (trials.json); raises MissingInputError for an unknown sweep.
    """
    layout = SweepLayout(Path(output_dir), name)
    stored = read_json_or_none(layout.trials)
    if not isinstance(stored, dict):
        raise MissingInputError(f"No sweep named '{name}' under {output_dir} (no {layout.trials}). Pass "
                                "--output-dir if it lives elsewhere.")
    previous = read_json_or_none(layout.results) or {}
    before = {row["trial"]: row for row in previous.get("trials", []) if isinstance(row, dict)}
    rows = []
    for entry in stored["trials"]:
        row = _run_row(Path(output_dir), entry["name"], entry["index"], entry["values"])
        last = before.get(entry["name"], {})
        if row["status"] == "new" and last.get("status") == "failed":  # failed before it had a run directory
            row.update(status="failed", error=last.get("error"))
        rows.append(row)
    return rank(rows)
