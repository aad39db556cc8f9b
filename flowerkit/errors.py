"""Errors a user can act on, each mapped to the CLI's documented exit code.

0 success; 1 unexpected; 2 invalid configuration or input; 3 a required input is missing;
4 the run directory already exists (and --resume was not given); 130 interrupted (SIGINT, Ctrl-C);
143 terminated (SIGTERM).
"""

from __future__ import annotations


class FlowerkitError(Exception):
    """An error whose message is a complete, user-facing paragraph."""

    exit_code: int = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(FlowerkitError):
    """Invalid configuration or input: a bad value, an unknown model, a malformed file."""

    exit_code = 2


class MissingInputError(FlowerkitError):
    """A required input is absent: data root, checkpoint, subset manifest, a runtime dependency."""

    exit_code = 3


class RunExistsError(FlowerkitError):
    """The run directory exists; runs are never overwritten."""

    exit_code = 4


class DiskFullError(FlowerkitError):
    """No space left on the device while writing a run's file."""

    exit_code = 3

    def __init__(self, path: object) -> None:
        super().__init__(f"disk full at {path}: no space left on the device while writing it. Free space (or "
                         "point --output_dir at a disk with room), then run the same command with --resume; the "
                         "run continues from its last checkpoint.")
        self.path = path


class NonFiniteLossError(FlowerkitError):
    """Training diverged: a loss (or gradient norm, or weight) became NaN or infinite. Not retried: the same
    configuration diverges again from the same checkpoint.

    Raised where the value is checked, which does not know what the run has on disk; the training loop then
    says (``note_checkpoint``) which step its last checkpoint holds, or that it wrote none yet, so the message
    offers a finite checkpoint only when one exists."""

    exit_code = 1
    ADVICE = "Try a lower --learning_rate, a smaller --max_grad_norm, or --precision fp32"

    def __init__(self, step: int, what: str = "loss") -> None:
        self.step, self.what = step, what
        self.checkpoint_known, self.checkpoint_step = False, None
        super().__init__(self._text())

    def note_checkpoint(self, step: int | None) -> NonFiniteLossError:
        """The step of the run's last (finite) checkpoint, or None when none was written; returns this error."""
        self.checkpoint_known, self.checkpoint_step = True, step
        self.args = (self._text(),)
        return self

    def _text(self) -> str:
        head = f"training diverged at step {self.step}: the {self.what} is not finite (NaN or infinity)."
        if not self.checkpoint_known:
            return f"{head} The run stopped without saving that step. {self.ADVICE}."
        if self.checkpoint_step is None:
            return (f"{head} The run stopped before its first checkpoint, so there is nothing to resume. "
                    f"{self.ADVICE}, then start a new run (a new --name).")
        return (f"{head} The run stopped without saving that step; its last checkpoint (step "
                f"{self.checkpoint_step}) holds finite weights. {self.ADVICE}, then start a new run (or --resume "
                f"with the same options to continue from step {self.checkpoint_step}).")

    def __reduce__(self):  # pickled (Prefect's task results): rebuilt from its facts, not from the message
        return _rebuild_non_finite, (self.step, self.what, self.checkpoint_known, self.checkpoint_step)


def _rebuild_non_finite(step: int, what: str, known: bool, checkpoint_step: int | None) -> NonFiniteLossError:
    error = NonFiniteLossError(step, what)
    return error.note_checkpoint(checkpoint_step) if known else error


class DistributedError(FlowerkitError):
    """A process of a multi-process training run failed, or lost the others. Never retried: the whole process
    group would have to start again, and a dying GPU or host fails again; ``--resume`` continues the run."""

    exit_code = 1


class PeerStoppedError(DistributedError):
    """This rank stopped because rank 0 failed (its error is the run's error, not this one)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's stop, ``docker stop``, a Prefect cancel), raised by the CLI's handler.

    A KeyboardInterrupt, so everything that treats Ctrl-C as "the user stopped it" treats this alike: the task
    is not retried, the run record is marked failed, and ``--resume`` continues from the last checkpoint."""

    exit_code = 143


def is_termination(exc: BaseException) -> bool:
    """SIGTERM as the CLI raises it (Terminated) or as Prefect's flow engine does inside a flow run
    (``prefect.exceptions.TerminationSignal``, matched by name: this module imports nothing)."""
    return isinstance(exc, Terminated) or type(exc).__name__ == "TerminationSignal"
