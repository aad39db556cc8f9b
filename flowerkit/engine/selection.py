"""Model selection on validation: the best evaluation so far, the top-k, and early stopping.

An evaluation offers one candidate per set of weights (the raw model, and the EMA weights when
``--ema_decay`` is on). ``Selector`` keeps the best candidate by ``--monitor``; a tie keeps the earlier
step (and, within a step, the raw weights), so selection never prefers a later checkpoint for nothing.
Its state is plain values, checkpointed with the run, so a resumed run selects exactly what the
uninterrupted run would have. Only validation reports ever reach it: the test split never takes part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# --monitor -> (key of the classification report, whether larger is better)
MONITORS: dict[str, tuple[str, bool]] = {
    "val_accuracy": ("accuracy", True),
    "val_loss": ("loss", False),
    "val_macro_f1": ("macro_f1", True),
}


@dataclass(frozen=True)
class Candidate:
    """One evaluated set of weights: the step, the monitored value, and which weights ("raw" or "ema")."""

    step: int
    value: float
    weights: str = "raw"


@dataclass(frozen=True)
class Decision:
    """What one evaluation changed: whether it is the new best, whether it entered the top-k, which
    top-k steps it pushed out, and whether the run should stop early."""

    candidate: Candidate
    improved: bool
    entered_top_k: bool
    evicted: list[Candidate]
    stop: bool


@dataclass
class Selector:
    monitor: str = "val_accuracy"
    top_k: int = 0
    patience: int | None = None
    best: Candidate | None = None
    top: list[Candidate] = field(default_factory=list)  # best first
    evals_without_improvement: int = 0

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"unknown monitor {self.monitor!r}; choose one of {', '.join(MONITORS)}")
        self.key, self.maximize = MONITORS[self.monitor]

    def better(self, a: float, b: float) -> bool:
        """Strictly better: equal values never replace the earlier candidate."""
        return a > b if self.maximize else a < b

    def candidate(self, step: int, reports: dict[str, dict[str, Any]]) -> Candidate:
        """The better of one evaluation's weight sets (``{"raw": report, "ema": report}``, raw first)."""
        chosen: Candidate | None = None
        for weights, report in reports.items():
            value = float(report[self.key])
            if chosen is None or self.better(value, chosen.value):
                chosen = Candidate(step, value, weights)
        assert chosen is not None, "an evaluation without a report"
        return chosen

    def update(self, candidate: Candidate) -> Decision:
        improved = self.best is None or self.better(candidate.value, self.best.value)
        if improved:
            self.best, self.evals_without_improvement = candidate, 0
        else:
            self.evals_without_improvement += 1
        entered, evicted = False, []
        if self.top_k:
            # Stable order: better value first, then the earlier step (ties keep the earlier one).
            ranked = sorted([*self.top, candidate], key=lambda c: (-c.value if self.maximize else c.value, c.step))
            self.top, evicted = ranked[:self.top_k], ranked[self.top_k:]
            entered = candidate in self.top
        stop = self.patience is not None and self.evals_without_improvement >= self.patience
        return Decision(candidate, improved, entered, evicted, stop)

    def stop_reason(self) -> str:
        return (f"no improvement of {self.monitor} in {self.evals_without_improvement} evaluations "
                f"(--early_stop_patience {self.patience}); best at step {self.best.step if self.best else '?'}")

    # --- checkpointed state (plain values, readable with weights_only=True) ----------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best": asdict(self.best) if self.best else None,
                "top": [asdict(c) for c in self.top], "evals_without_improvement": self.evals_without_improvement}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None:  # a checkpoint written before selection existed: nothing selected yet
            return
        if state.get("monitor") != self.monitor:
            raise ValueError(f"the checkpoint selected on {state.get('monitor')}, this run monitors {self.monitor}")
        self.best = Candidate(**state["best"]) if state.get("best") else None
        self.top = [Candidate(**c) for c in state.get("top", [])][:self.top_k] if self.top_k else []
        self.evals_without_improvement = int(state.get("evals_without_improvement", 0))
