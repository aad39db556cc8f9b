"""A sweep's progress: each trial's state (status, step, monitored value, duration), a log line per trial event
(submitted, started, finished with its monitored value, failed), and the sweep's ETA from the steps its trials
have made.

The lines go through the ``flowerkit.sweep`` logger: the sweep's flow run logs in the Prefect UI get them, and
so does the console (``--quiet`` hides them with every other INFO line). Front ends read the trials' states
with ``poll`` (the CLI's live table). The ``sweep`` flow makes the reporter of its run and hands it to whatever
runs the trials.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from flowerkit.sweep import Outcome, Trial

log = logging.getLogger("flowerkit.sweep")


def flow_run_url(flow_run_id: str | None) -> str | None:
    """The flow run's page in the Prefect UI, when this process knows the UI's address (a real server)."""
    if not flow_run_id:
        return None
    from prefect.settings import get_current_settings

    ui_url = get_current_settings().ui_url
    return f"{str(ui_url).rstrip('/')}/runs/flow-run/{flow_run_id}" if ui_url else None


def monitored_value(trial: Trial) -> str | None:
    """``val_accuracy 0.8125`` (the trial's selected checkpoint's monitored value), from its run record."""
    from flowerkit.run.runs import describe_selection, summarize

    selected = describe_selection(summarize(Path(trial.config.output_dir) / trial.name).selection)
    return selected[1] if selected else None


def recorded_flow_run_id(trial: Trial) -> str | None:
    """The flow run id in the trial's run record (a trial run as its own process reports only its exit code)."""
    from flowerkit.run.layout import RunLayout
    from flowerkit.run.runs import read_json_or_none

    record = read_json_or_none(RunLayout.for_run(Path(trial.config.output_dir) / trial.name).record)
    return str(record["flow_run_id"]) if isinstance(record, dict) and record.get("flow_run_id") else None


def trial_step(trial: Trial) -> int:
    """The trial's step, as ``runs list`` reads it from its run directory (0 before it has one)."""
    from flowerkit.run.runs import last_train_row, read_json_or_none, run_progress

    layout = trial.config.layout
    record = read_json_or_none(layout.record)
    return run_progress(record if isinstance(record, dict) else {}, last_train_row(layout.metrics_jsonl))[0]


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


@dataclass(frozen=True)
class TrialState:
    """One trial of this pass, as a front end shows it."""

    name: str
    values: str  # what the trial sets, e.g. "seed=1, learning_rate=0.01"
    total: int  # its num_steps
    status: str = "waiting"  # waiting, submitted, running, then completed, failed, crashed ... (Prefect's words)
    step: int = 0
    first_step: int = 0  # where this pass found it (a resumed trial's last checkpoint)
    value: str | None = None  # the monitored value, once finished
    began: float | None = None
    took: float | None = None

    @property
    def ended(self) -> bool:
        return self.took is not None


class SweepProgress:
    """Follows a sweep's trials and logs each event; safe to call from the trials' threads."""

    def __init__(self, sweep_name: str, trials: list[Trial], parallel: int, skipped: int = 0,
                 clock: Callable[[], float] = time.monotonic, step_of: Callable[[Trial], int] = trial_step) -> None:
        self.name, self.total, self.parallel, self.skipped = sweep_name, len(trials), max(1, parallel), skipped
        self.clock, self._step_of = clock, step_of
        self._lock = threading.Lock()
        self._trials = {trial.name: trial for trial in trials}
        self._states = {trial.name: TrialState(trial.name, trial.describe(), trial.config.num_steps)
                        for trial in trials}
        self._began: float | None = None  # the first trial's start: the steps' rate is counted from it
        if trials:
            log.info("sweep '%s': %d trial(s) to run, %d at once%s", sweep_name, len(trials), self.parallel,
                     f"; {skipped} complete or busy, not run again" if skipped else "")

    def submitted(self, trial: Trial, flow_run_id: str | None = None) -> None:
        self._set(trial.name, status="submitted")
        self._say(trial, "submitted", flow_run_id)

    def started(self, trial: Trial, flow_run_id: str | None = None) -> None:
        first = self._read_step(trial)
        now = self.clock()
        with self._lock:
            self._began = now if self._began is None else self._began
        self._set(trial.name, status="running", began=now, step=first, first_step=first)
        self._say(trial, "started", flow_run_id)

    def ended(self, trial: Trial, outcome: Outcome) -> None:
        """A trial's final state: finished with its monitored value, or failed with why."""
        try:
            self._ended(trial, outcome)
        except Exception:  # noqa: BLE001 - a progress line never costs a trial its outcome
            log.debug("could not report the end of trial %s", trial.name, exc_info=True)

    def _ended(self, trial: Trial, outcome: Outcome) -> None:
        completed = outcome.state == "COMPLETED"
        value = monitored_value(trial) if completed else None
        with self._lock:
            state = self._states[trial.name]
        took = None if state.began is None else self.clock() - state.began
        self._set(trial.name, status=outcome.state.lower(), step=max(state.step, self._read_step(trial)),
                  value=value, took=took or 0.0)
        states = self.poll()  # every running trial's step: the ETA is as fresh as the line
        done, eta = sum(s.ended for s in states), self.eta_s(states)
        took_text = f" in {duration(took)}" if took is not None else ""
        progress = f"[{done}/{self.total}, ETA {'?' if eta is None else duration(eta)}]"
        flow_run_id = outcome.flow_run_id or recorded_flow_run_id(trial)  # a `flowerkit train` process's
        if completed:
            self._say(trial, f"finished{took_text}: {value or 'no monitored value'} {progress}", flow_run_id)
        else:
            why = " ".join((outcome.message or "").split())[:300] or "no message"
            self._say(trial, f"{outcome.state.lower()}{took_text}: {why} {progress}", flow_run_id,
                      level=logging.WARNING)

    def poll(self, read: bool = True) -> list[TrialState]:
        """Every trial's state, in trial order; ``read``: first read the running trials' steps from their run
        directories (a trial in another process or on a worker reports only its end)."""
        with self._lock:
            running = [name for name, state in self._states.items() if state.status == "running"]
        for name in running if read else ():
            step = self._read_step(self._trials[name])
            with self._lock:
                state = self._states[name]
                if not state.ended:
                    self._states[name] = replace(state, step=max(state.step, step))
        with self._lock:
            return list(self._states.values())

    def steps(self, states: list[TrialState] | None = None) -> tuple[int, int]:
        """(steps made in this pass, steps this pass has in all): an ended trial counts as all its steps."""
        states = self.poll(read=False) if states is None else states
        made = sum((s.total if s.ended else s.step) - s.first_step for s in states)
        return made, sum(s.total - s.first_step for s in states)

    def eta_s(self, states: list[TrialState] | None = None) -> float | None:
        """The rest of the sweep: the steps left at the rate the trials have made steps so far (every trial's
        start-up and evaluations included), so it moves with each step, not only as trials end."""
        made, total = self.steps(states)
        if self._began is None or made <= 0:
            return None
        return (total - made) * (self.clock() - self._began) / made

    def _read_step(self, trial: Trial) -> int:
        try:
            return self._step_of(trial)
        except Exception:  # noqa: BLE001 - a run directory mid-write: the step is read again at the next poll
            return 0

    def _set(self, name: str, **changes: object) -> None:
        with self._lock:
            self._states[name] = replace(self._states[name], **changes)

    def _say(self, trial: Trial, what: str, flow_run_id: str | None, level: int = logging.INFO) -> None:
        try:
            url = flow_run_url(flow_run_id)
        except Exception:  # noqa: BLE001 - no link rather than no line (or a failed trial thread)
            url = None
        log.log(level, "trial %s %s%s", trial.name, what, f" ({url})" if url else "")
