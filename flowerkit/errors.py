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
    configuration diverges again from the same checkpoint."""

    exit_code = 1

    def __init__(self, step: int, what: str = "loss") -> None:
        super().__init__(
            f"training diverged at step {step}: the {what} is not finite (NaN or infinity). The run stopped without "
            "saving that step; its last checkpoint holds finite weights. Try a lower --learning_rate, a smaller "
            "--max_grad_norm, or --precision fp32, then start a new run (or --resume with the same options to "
            "continue from the last checkpoint).")
        self.step = step


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
