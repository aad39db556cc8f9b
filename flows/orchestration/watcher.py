"""A small detached process that ends a flow run Crashed when the process running it dies (even by SIGKILL).

A killed process cannot report its own end, so its flow run would stay Running on the server until some later
flowerkit command met the run (``crashed_runs.py`` beside this module). When a flow run starts on a real server
(``PREFECT_API_URL`` set: not the ephemeral one, which dies with the run), ``watch`` starts this module as a
process in a session of its own (so a terminal's Ctrl-C or the death of the run's process group does not take
it along). It

- checks every ``PID_POLL_S`` that the run's process is still the same process (pid and start time, so a reused
  pid is not mistaken for it), and every ``STATE_POLL_S`` asks the server for the flow run's state;
- exits when the flow run reaches a final state (the normal end);
- when the process is gone and the flow run is not final, sets it Crashed (``crashed_runs.mark_crashed``,
  forced) and exits; if the server does not answer it tries again for ``GIVE_UP_S``.

Why not Prefect's own heartbeats (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, formerly
``PREFECT_RUNNER_HEARTBEAT_FREQUENCY``): in Prefect 3.x they are only events, at least 30 s apart, and a server
marks nothing Crashed on missed heartbeats unless someone creates an automation for it; with a few missed
beats of margin that is over a minute, and it needs the server's event services.

Only the standard library is imported until a flow run has to be marked: the watcher lives as long as every
run, on machines where the run needs the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PID_POLL_S = 0.5
STATE_POLL_S = 3.0
GIVE_UP_S = 120.0  # a server that does not answer for this long after the death: leave it to crashed_runs
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local server never via a proxy


@contextlib.contextmanager
def watching() -> Iterator[None]:
    """Leave the flow runs of the block to their watchers (the CLI runs its flow in one).

    The watcher stands in for Prefect's own flow heartbeats (on by default, every 180 s), which add nothing
    here and cost time: the flow engine waits up to a second for its heartbeat thread at the end of every
    flow run. They are off in the block unless the user set a frequency (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
    in the environment, a profile or ``prefect.toml``), for an automation of their own, say."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    asked = "heartbeat_frequency" in get_current_settings().flows.model_fields_set
    with contextlib.nullcontext() if asked else temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``); None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def same_process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or process_start_time(pid) in (started, None)


def flow_run_state(api_url: str, flow_run_id: str) -> str | None:
    """The flow run's state type (``RUNNING``, ``COMPLETED``, ...), None when the server does not answer."""
    try:
        with _DIRECT.open(f"{api_url.rstrip('/')}/flow_runs/{flow_run_id}", timeout=10) as response:
            return (json.loads(response.read()).get("state") or {}).get("type")
    except (OSError, ValueError):
        return None


def watch_until_done(pid: int, started: str | None, api_url: str, flow_run_id: str, message: str) -> str:
    """Wait for the flow run's end or the process's death; returns what happened (for the log)."""
    next_state_check = 0.0
    while same_process_alive(pid, started):
        now = time.monotonic()
        if now >= next_state_check:
            if flow_run_state(api_url, flow_run_id) in FINAL_STATES:
                return "the flow run ended"
            next_state_check = now + STATE_POLL_S
        time.sleep(PID_POLL_S)
    # The process usually exits within a state poll of its flow run's end: ask once more before importing
    # Prefect (a second of CPU, on the machine the next run needs) to mark a run that ended normally.
    if flow_run_state(api_url, flow_run_id) in FINAL_STATES:
        return "the flow run ended"
    from flowerkit.flows.orchestration.crashed_runs import MARKED, UNREACHABLE, mark_crashed

    deadline = time.monotonic() + GIVE_UP_S
    while True:
        outcome = mark_crashed(flow_run_id, message)
        if outcome != UNREACHABLE or time.monotonic() > deadline:
            return f"process {pid} died: {outcome}" if outcome != MARKED else f"process {pid} died: marked Crashed"
        time.sleep(5.0)


def watch(flow_run_id: str | None, run_name: str, flow: str, api_url: str | None) -> int | None:
    """Start the watcher of this process's flow run; its pid, or None when there is nothing to watch (no flow
    run, or no real server: the ephemeral one dies with this process)."""
    if not flow_run_id or not api_url:
        return None
    pid = os.getpid()
    message = (f"The process of flowerkit run '{run_name}' (pid {pid}) died (found by its watcher); "
               f"`flowerkit {flow} --resume` continues it.")
    cmd = [sys.executable, "-m", "flowerkit.flows.orchestration.watcher", "--pid", str(pid),
           "--started", process_start_time(pid) or "", "--flow-run", flow_run_id, "--api-url", api_url,
           "--message", message]
    env = os.environ | {"PREFECT_API_URL": api_url}  # what mark_crashed's client talks to
    # Through a shell that starts it in the background and exits at once: the watcher is then nobody's child
    # (init reaps it), so a long-lived process running many flows (a sweep) collects no zombies, and its own
    # session keeps it out of the terminal's process group.
    shell = subprocess.run(["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", *cmd], env=env,
                           capture_output=True, text=True, start_new_session=True, check=True)
    return int(shell.stdout.strip())


def watch_current_flow_run(run_name: str, flow: str) -> int | None:
    """``watch`` the flow run this process is running, on the server Prefect is configured for (none in
    ephemeral mode); logs the watcher's pid.

    A deployment's flow run is left alone: the worker or ``flowerkit serve`` that started its process reports
    that process's death itself. Every other flow run (the CLI's, a sweep's trials, a test's) is watched."""
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings

    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow_run.deployment_id:
        return None
    try:
        pid = watch(str(context.flow_run.id), run_name, flow, get_current_settings().api.url or None)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:  # never fails the run it would watch
        logging.getLogger("flowerkit").warning("could not start the flow run's watcher (%s): if this process is "
                                               "killed, its flow run stays Running until flowerkit meets the run "
                                               "again", exc)
        return None
    if pid is not None:
        logging.getLogger("flowerkit").debug("flow run watched by process %d: it is marked Crashed if this "
                                             "process dies", pid)
    return pid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flowerkit.flows.orchestration.watcher",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--started", default="")
    parser.add_argument("--flow-run", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--message", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    watch_until_done(args.pid, args.started or None, args.api_url, args.flow_run, args.message)


if __name__ == "__main__":
    main()
