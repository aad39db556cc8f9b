"""One training run on several processes: launch them with torch's elastic launcher, or join torchrun's.

Every way ends in ``run_rank``: join the process group the environment describes, train this rank's share
(``trainer.train`` with a ``World``), leave. ``flowerkit.engine.run.run_training`` picks the way; the run's
flow, its other tasks, retries and the run record's lifecycle stay in one process, the one that holds rank 0:

- ``flowerkit train --nproc_per_node N``: ``launch`` starts N workers (``worker_main``) with
  ``torch.distributed.launcher`` and returns rank 0's result. With ``--nnodes M``, the command on every other
  machine (``--node_rank`` 1..M-1) trains its share (a plan of role "share"): it launches its own N workers,
  which meet rank 0's at ``--master_addr:--master_port``, and writes nothing.
- ``torchrun ... -m flowerkit train ...``: rank 0's command runs the flow, and its train task joins
  torchrun's process group in-process (``run_torchrun_rank``); every other rank's command trains its share.

Only rank 0 writes (metrics, TensorBoard, checkpoints, run.log, the record's progress). A rank that dies
fails the run with a ``DistributedError`` naming it; collectives time out after ``TIMEOUT_S``, so a peer that
hangs or vanishes never stalls the others for good.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from flowerkit.artifacts.record import read_record
from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.run.config import TrainConfig
from flowerkit.data.selection import Selection
from flowerkit.engine.progress import Progress, RecordProgress
from flowerkit.engine.trainer import TrainResult
from flowerkit.engine.world import World
from flowerkit.errors import ConfigError, DistributedError, FlowerkitError, Terminated
from flowerkit.run.plan import Execution, RunPlan, backend_for

log = logging.getLogger(__name__)

# Rendezvous and every collective. Longer than anything one rank legitimately waits for (rank 0 writing the
# largest model's checkpoints, one process per machine building the pixel cache, rank 0's flow starting a
# Prefect server under torchrun), short enough that a vanished peer fails the run within the quarter hour.
TIMEOUT_S = 900
FORWARD_INTERVAL_S = 0.5
ELASTIC_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# A rank that stopped because another one vanished says so in one of these ways; the vanished one is the cause.
PEER_LOST = ("PeerStoppedError", "DistBackendError", "Connection closed by peer", "Connection reset by peer",
             "Broken pipe", "timed out", "Timeout", "NCCL communicator was aborted")


# --- torchrun's environment ----------------------------------------------------------------------------------

def torchrun_env() -> dict[str, int] | None:
    """This process's place in a world started by torchrun (or another elastic agent) of more than one
    process; None otherwise (``torchrun --nproc_per_node 1`` is one ordinary process)."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    if not all(name in os.environ for name in names):
        return None
    env = {name.lower(): int(os.environ[name]) for name in names} | {
        "group_rank": int(os.environ.get("GROUP_RANK", "0"))}
    return env if env["world_size"] > 1 else None


def adopt_torchrun(config: TrainConfig) -> TrainConfig:
    """``config`` with the process layout torchrun started (so the record, the stamp and the config hash say
    what ran); options that contradict it are an error."""
    env = torchrun_env()
    if env is None:
        return config
    local, world = env["local_world_size"], env["world_size"]
    if world % local:
        raise ConfigError(f"torchrun started {world} processes with {local} on this machine; flowerkit needs the "
                          "same number of processes on every machine (torchrun --nproc_per_node).")
    layout = {"nproc_per_node": local, "nnodes": world // local}
    clash = [f"--{name} {getattr(config, name)}" for name, value in layout.items()
             if getattr(config, name) not in (1, value)]
    if clash:
        raise ConfigError(f"{' and '.join(clash)} disagree with torchrun, which started {local} process(es) on "
                          f"each of {world // local} machine(s). Under torchrun, leave them out: torchrun's own "
                          "--nproc_per_node and --nnodes set them.")
    where = {"node_rank": env["group_rank"]} | (
        {"master_addr": os.environ["MASTER_ADDR"]} if "MASTER_ADDR" in os.environ else {}) | (
        {"master_port": int(os.environ["MASTER_PORT"])} if "MASTER_PORT" in os.environ else {})
    from pydantic import ValidationError

    from flowerkit.run.config import describe_validation_error

    try:
        return TrainConfig.model_validate(config.model_dump() | layout | where)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, {name: "torchrun's environment" for name in layout})) \
            from None


def execution_of(config: TrainConfig) -> Execution:
    """The run's processes and this one's place, for its plan: torchrun's environment is read here, once."""
    env = torchrun_env()
    if env is not None:
        return Execution("torchrun", env["world_size"], config.nnodes, env["rank"], env["local_rank"],
                         env["local_world_size"])
    if config.world_size > 1:
        return Execution("flowerkit", config.world_size, config.nnodes, local_world_size=config.nproc_per_node)
    return Execution()


def launched_execution(config: TrainConfig) -> Execution:
    """A launched worker's place in the run, as the launch gave it (its environment, read once here)."""
    env = {name: int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    return Execution("flowerkit", env["WORLD_SIZE"], config.nnodes, env["RANK"], env["LOCAL_RANK"],
                     env["LOCAL_WORLD_SIZE"])


def is_follower(config: TrainConfig) -> bool:
    """Whether this command only takes part in training, leaving the run itself to rank 0's command."""
    env = torchrun_env()
    return env["rank"] != 0 if env is not None else config.node_rank != 0


# --- one rank ------------------------------------------------------------------------------------------------

def join(device_type: str, execution: Execution, timeout_s: float = TIMEOUT_S) -> tuple[World, torch.device]:
    """Join the run's process group as ``execution`` places this process (the launcher's rendezvous address
    and port, MASTER_ADDR and MASTER_PORT, are torch's to read); returns the world and this rank's device
    (CUDA: the GPU of its local rank)."""
    backend = backend_for(device_type)
    device = torch.device("cpu")
    if device_type == "cuda":
        device = torch.device("cuda", execution.local_rank)
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend, timeout=timedelta(seconds=timeout_s), rank=execution.rank,
                                         world_size=execution.world_size)
    return World(execution.rank, execution.world_size, execution.local_rank, backend), device


def leave() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_rank(plan: RunPlan, train: Selection, val: Selection,
             on_progress: Callable[[Progress], None] | None = None, sink: ScalarSink | None = None
             ) -> TrainResult | None:
    """Train this rank's share of the run; returns the TrainResult on rank 0, None elsewhere."""
    from flowerkit.engine import trainer

    config = plan.train_config
    world, rank_device = join(plan.device.type, plan.execution)
    try:
        trainer.seed_everything(config.seed, config.deterministic)  # every rank builds the same initial model
        return trainer.train(config, rank_device, plan.precision, train.table(), val.table(), plan.layout,
                             on_progress if world.is_main else None, world, plan.weights, sink)
    finally:
        leave()


def run_torchrun_rank(plan: RunPlan, train: Selection, val: Selection,
                      on_progress: Callable[[Progress], None] | None = None, sink: ScalarSink | None = None
                      ) -> TrainResult | None:
    """``run_rank`` inside a world torchrun started, with an unexpected error turned into one paragraph."""
    try:
        return run_rank(plan, train, val, on_progress, sink)
    except FlowerkitError:
        raise
    except Exception as exc:
        where = plan.execution
        raise DistributedError(
            f"Training rank {where.rank} of {where.world_size} failed: {type(exc).__name__}: {exc}. If another "
            "rank failed first, torchrun's output names it. Fix the cause, then run the same torchrun command "
            "with --resume to continue from the last checkpoint.") from exc


# --- launching workers ---------------------------------------------------------------------------------------

def worker_main(plan: RunPlan, train: Selection, val: Selection) -> TrainResult | None:
    """One worker process started by ``launch`` (module level, so the spawned interpreter can import it)."""
    plan = replace(plan, execution=launched_execution(plan.train_config))
    rank = plan.execution.rank
    _name_process(f"flowerkit-r{rank}")
    if plan.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # As torchrun does: the machine's cores shared among its training processes, not each taking all.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.execution.local_world_size))
    if rank != 0:
        return run_rank(plan, train, val)
    layout = plan.layout
    with _rank0_logging(layout.run_log):
        try:
            return run_rank(plan, train, val, on_progress=RecordProgress(layout.run_dir, detail=True))
        except Exception:
            log.error("rank 0 failed", exc_info=True)  # the traceback, in run.log; the launcher names the error
            raise


def _name_process(name: str) -> None:
    """Show which rank a worker is in ps, top and psutil (Linux: the process name, 15 characters at most);
    the launcher sets RANK inside the worker, so its environment as the OS sees it does not say."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):  # not Linux: the name stays python
        pass


@contextlib.contextmanager
def _rank0_logging(run_log: Path) -> Iterator[None]:
    """A worker's flowerkit log lines go to run.log (beside the launching process's), warnings also to the
    terminal, without tracebacks: the launching process prints the failure as one paragraph."""
    ours = logging.getLogger("flowerkit")
    to_file = logging.FileHandler(run_log)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [rank 0]: %(message)s"))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setLevel(logging.WARNING)
    to_terminal.setFormatter(logging.Formatter("rank 0: %(levelname)s %(message)s"))
    to_terminal.addFilter(lambda record: record.exc_info is None)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    for handler in (to_file, to_terminal):
        ours.addHandler(handler)
    try:
        yield
    finally:
        for handler in (to_file, to_terminal):
            ours.removeHandler(handler)
        to_file.close()


def launch_config(config: TrainConfig, log_dir: str | None = None) -> Any:
    """torch's LaunchConfig for this machine's ``--nproc_per_node`` workers: no restarts (a failure fails
    the run, and ``--resume`` continues it), a private free port on one machine, the static rendezvous at
    ``--master_addr:--master_port`` across several; the workers' error files in ``log_dir``."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig

    common: dict[str, Any] = dict(min_nodes=config.nnodes, max_nodes=config.nnodes,
                                  nproc_per_node=config.nproc_per_node, run_id=f"flowerkit-{config.name}",
                                  max_restarts=0, monitor_interval=0.1, start_method="spawn",
                                  logs_specs=DefaultLogsSpecs(log_dir=log_dir))
    if config.nnodes == 1:  # two runs on one machine never fight over a port
        return LaunchConfig(**common, rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", local_addr="127.0.0.1",
                            rdzv_configs={"timeout": TIMEOUT_S})
    return LaunchConfig(**common, rdzv_backend="static", rdzv_endpoint=f"{config.master_addr}:{config.master_port}",
                        rdzv_configs={"rank": config.node_rank, "timeout": TIMEOUT_S})


def launch(plan: RunPlan, train: Selection, val: Selection,
           on_progress: Callable[[Progress], None] | None = None) -> TrainResult | None:
    """Train in this machine's ``--nproc_per_node`` worker processes and wait for them (and for the other
    machines' workers); returns rank 0's TrainResult (None on a machine without rank 0). ``on_progress``
    hears rank 0's progress, read back from the run record."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch

    config = plan.train_config
    forward = on_progress if on_progress is not None and config.node_rank == 0 else None
    # The agent's error files live in a folder of our own, removed afterwards (its default one stays in /tmp).
    with tempfile.TemporaryDirectory(prefix="flowerkit-elastic-") as log_dir, _quiet_elastic_logs(), \
            _own_signal_handlers(), _forwarding(plan.layout.run_dir, forward):
        try:
            results = elastic_launch(launch_config(config, log_dir), worker_main)(plan, train, val)
        except ChildFailedError as exc:
            raise worker_failure(exc.failures, config.nproc_per_node * config.nnodes) from None
        except SignalException as exc:
            if exc.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None  # Ctrl-C: the CLI's exit 130; the workers were stopped
            if exc.sigval == signal.SIGTERM:
                raise Terminated from None  # a scheduler's stop: exit 143, resumable like Ctrl-C
            raise DistributedError(f"The launching process received {exc.sigval.name} and stopped its training "
                                   "processes. Run the same command with --resume to continue from the last "
                                   "checkpoint.") from None
    return results.get(0)


@contextlib.contextmanager
def _quiet_elastic_logs() -> Iterator[None]:
    """The agent logs every worker it stops; the run's failure is reported once, as one paragraph."""
    loggers = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.multiprocessing")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _own_signal_handlers() -> Iterator[None]:
    """The agent installs its own SIGTERM/SIGINT/SIGHUP/SIGQUIT handlers and leaves them behind; a
    long-lived launching process (``flowerkit serve``, a Prefect worker) gets its own back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the agent installs nothing off the main thread
        return
    saved = {sig: signal.getsignal(sig) for sig in ELASTIC_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def _forwarding(run_dir: Path, on_progress: Callable[[Progress], None] | None) -> Iterator[None]:
    """Hand rank 0's progress (as it writes it to the run record) to ``on_progress`` while the block runs,
    from a thread that carries this one's context (Prefect's task run, for its progress artifact)."""
    if on_progress is None:
        yield
        return
    stop = threading.Event()
    seen: list[int] = []

    def poll() -> None:
        try:
            progress = read_record(run_dir).get("progress") or {}
        except (OSError, ValueError):  # not written yet
            return
        step = progress.get("step")
        if isinstance(step, int) and step > 0 and (not seen or step != seen[-1]):
            seen.append(step)
            on_progress(Progress(step, int(progress.get("total_steps") or 0),
                                 float(progress.get("images_per_second") or 0.0), progress.get("last_eval")))

    def loop() -> None:
        while not stop.wait(FORWARD_INTERVAL_S):
            poll()

    thread = threading.Thread(target=contextvars.copy_context().run, args=(loop,), daemon=True,
                              name="flowerkit-progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    contextvars.copy_context().run(poll)  # the last step rank 0 wrote, after a run that succeeded


# --- a failed worker, in one paragraph -----------------------------------------------------------------------

def worker_failure(failures: dict[int, Any], world_size: int) -> DistributedError:
    """The launcher's ``ChildFailedError.failures`` (global rank -> ProcessFailure) as one paragraph naming the
    rank that failed first and why; the exit code of a flowerkit error it raised (a full disk: 3)."""
    rank, failure = min(failures.items(), key=lambda item: (_lost_a_peer(item[1]), item[1].timestamp, item[0]))
    what = _failure_text(failure)
    kind, _, detail = what.partition(": ")
    known = _flowerkit_error_codes()
    cause = detail if kind in known else what
    others = sorted(r for r in failures if r != rank)
    also = f" Rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} stopped with it." if others else ""
    return DistributedError(
        f"Training rank {rank} of {world_size} failed (pid {failure.pid}, exit code {failure.exitcode}): "
        f"{cause.rstrip('.')}.{also} The other training processes were stopped and the run is marked failed; its "
        "last checkpoint is intact. Fix the cause if one is named, then run the same command with --resume to "
        "continue from the last checkpoint.", exit_code=known.get(kind, 1))


def _failure_text(failure: Any) -> str:
    if failure.exitcode < 0:
        return f"it was killed by signal {failure.signal_name()}"
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    if not message or str(message).startswith("To enable traceback"):
        return f"it exited with code {failure.exitcode} without a Python error (killed? out of memory?)"
    return str(message)


def _lost_a_peer(failure: Any) -> bool:
    text = _failure_text(failure)
    return any(marker in text for marker in PEER_LOST)


def _flowerkit_error_codes() -> dict[str, int]:
    found, todo = {}, [FlowerkitError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls.exit_code
        todo += cls.__subclasses__()
    return found
