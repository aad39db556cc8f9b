"""A sweep's progress, one log line per trial event: submitted, started, finished (with its monitored value) or
failed, each with the trial's Prefect flow run link when a server UI is known, and the sweep's ETA.

A sweep of a few trials used to print nothing between Prefect's "Beginning flow run" and the final table
(a minute and more). The lines go through the ``flowerkit.sweep`` logger, so Prefect's console handler prints
them (and ``--quiet`` hides them with every other INFO line). The ``sweep`` flow makes the reporter of its run
and hands it to whatever runs the trials.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
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


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class SweepProgress:
    """Counts a sweep's trials as they go and logs each event; safe to call from the trials' threads."""

    def __init__(self, sweep_name: str, trials: int, parallel: int, skipped: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.total, self.parallel, self._clock = sweep_name, trials, max(1, parallel), clock
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}
        self._durations: list[float] = []
        self._done = 0
        if trials:
            log.info("sweep '%s': %d trial(s) to run, %d at once%s", sweep_name, trials, self.parallel,
                     f"; {skipped} complete or busy, not run again" if skipped else "")

    def submitted(self, trial: Trial, flow_run_id: str | None = None) -> None:
        self._say(trial, "submitted", flow_run_id)

    def started(self, trial: Trial, flow_run_id: str | None = None) -> None:
        with self._lock:
            self._started[trial.name] = self._clock()
        self._say(trial, "started", flow_run_id)

    def ended(self, trial: Trial, outcome: Outcome) -> None:
        """A trial's final state: finished with its monitored value, or failed with why."""
        try:
            self._ended(trial, outcome)
        except Exception:  # noqa: BLE001 - a progress line never costs a trial its outcome
            log.debug("could not report the end of trial %s", trial.name, exc_info=True)

    def _ended(self, trial: Trial, outcome: Outcome) -> None:
        with self._lock:
            began = self._started.pop(trial.name, None)
            took = None if began is None else self._clock() - began
            if took is not None:
                self._durations.append(took)
            self._done += 1
            eta = self.eta_s()
        took_text = f" in {duration(took)}" if took is not None else ""
        progress = f"[{self._done}/{self.total}, ETA {'?' if eta is None else duration(eta)}]"
        flow_run_id = outcome.flow_run_id or recorded_flow_run_id(trial)  # a `flowerkit train` process's
        if outcome.state == "COMPLETED":
            value = monitored_value(trial)
            self._say(trial, f"finished{took_text}: {value or 'no monitored value'} {progress}", flow_run_id)
        else:
            why = " ".join((outcome.message or "").split())[:300] or "no message"
            self._say(trial, f"{outcome.state.lower()}{took_text}: {why} {progress}", flow_run_id,
                      level=logging.WARNING)

    def eta_s(self) -> float | None:
        """The rest of the sweep: the mean trial time so far, times the rounds of ``parallel`` trials left."""
        if not self._durations:
            return None
        left = self.total - self._done
        return sum(self._durations) / len(self._durations) * math.ceil(left / self.parallel)

    def _say(self, trial: Trial, what: str, flow_run_id: str | None, level: int = logging.INFO) -> None:
        try:
            url = flow_run_url(flow_run_id)
        except Exception:  # noqa: BLE001 - no link rather than no line (or a failed trial thread)
            url = None
        log.log(level, "trial %s %s%s", trial.name, what, f" ({url})" if url else "")

