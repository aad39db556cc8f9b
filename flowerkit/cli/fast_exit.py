"""End the CLI's process without the interpreter's teardown, once everything that must happen at exit has.

After a train or eval command, Python's finalisation (clearing torch's, Prefect's and numpy's modules and
collecting what they hold) took about 1 s on an idle 2-core machine and 5-7 s under load (measured:
docs/performance.md, section 3), after the command's work was done and its output printed. ``exit_now`` runs
the exit handlers (Prefect's log and event workers drain to the server, logging flushes its files, temporary
folders go), flushes stdout and stderr, and ends the process with the command's exit code. It steps aside
(a normal exit) while any non-daemon thread still runs, since those are joined before the exit handlers, and
under a profiler or debugger (``python -m cProfile -m flowerkit ...`` writes its profile after the command).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_code(code: object) -> int:
    """``SystemExit.code`` as a process exit status (a message is printed and is status 1, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def skip_torch_compile_report() -> None:
    # torch._dynamo registers an exit handler that formats a table of torch.compile times for its INFO log,
    # which is off unless TORCH_LOGS asks for it; importing torchvision (MixUp, downloads) or compiling
    # imports torch._dynamo, and such a run paid for it (0.3-0.6 s measured here) without a compile.
    dynamo_utils = sys.modules.get("torch._dynamo.utils")
    if dynamo_utils is not None and not os.environ.get("TORCH_LOGS") and hasattr(dynamo_utils, "dump_compile_times"):
        atexit.unregister(dynamo_utils.dump_compile_times)


def drain_prefect_workers() -> None:
    """Send what Prefect's log and event workers still hold while its server is up: a temporary server is
    stopped by an exit handler, and logs queued behind it then fail ("Error logging to API")."""
    handlers = sys.modules.get("prefect.logging.handlers")
    if handlers is None:
        return
    from prefect.events.worker import EventsWorker

    for worker in (handlers.APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10)
        except Exception:  # noqa: BLE001 - exiting: whatever could not be sent is in run.log
            pass


def stop_temporary_server() -> None:
    """Signal Prefect's temporary server to stop without waiting for its shutdown: the run's calls are answered
    and its log and event workers drained, and the server, in its own session, ends by itself. Prefect's own
    exit handler waits for it (0.2-0.5 s measured, docs/performance.md section 7)."""
    module = sys.modules.get("prefect.server.api.server")
    if module is None:
        return
    for server in list(module.SubprocessASGIServer._instances.values()):
        process = server.server_process
        if process is not None and process.poll() is None:
            module.subprocess_server_logger.info(f"Stopping temporary server on {server.address}")
            process.terminate()
        server.server_process = None  # what Prefect's exit handler would wait for


def exit_now(code: object) -> NoReturn:
    """Exit with ``code`` after the exit handlers, skipping the interpreter's teardown when that is safe."""
    status = exit_code(code)
    drain_prefect_workers()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)  # a thread that must finish: the interpreter joins it first
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(status)  # python -m cProfile / a debugger: they report after this returns, not at exit
    skip_torch_compile_report()
    stop_temporary_server()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing left to say
            pass
    os._exit(status)
