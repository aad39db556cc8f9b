"""The real servers the suite runs against, each started once per session (tests/conftest.py's fixtures).

Starting a Prefect or an MLflow server costs seconds on a small machine; every module that needs one shares
the session's, and tests that must not see each other's runs tell them apart by id or name.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PREFECT = [sys.executable, "-m", "prefect"]  # this environment's Prefect, whether or not its script is installed
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never through a proxy
STOP_WAIT_S = 5  # a server that ignores SIGTERM that long is killed: teardown must not dominate the suite


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def default_sigint() -> Iterator[None]:
    """Processes started inside get SIGINT's default action, as a shell gives a foreground job, even where
    pytest itself ignores SIGINT (a CI runner or script that started it in the background): exec resets a
    handled signal to its default but keeps an ignored one ignored, and a test's Ctrl-C would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start(cmd: list[str], env: dict[str, str] | None, log: Path, cwd: Path) -> subprocess.Popen:
    """A process in a session of its own, so that stopping it also stops its children (a worker's flow runs,
    the uvicorn workers of a server), and that Ctrl-C (SIGINT) stops as it would in a terminal."""
    with default_sigint():
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = STOP_WAIT_S) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, what: str, timeout_s: float = 90) -> None:
    """Until ``url`` answers 200 (the app itself, not only the port), or fail naming the server's log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with DIRECT.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not healthy after {timeout_s} s:\n{tail(log)}")


def migrated_database(root: Path) -> Path:
    """An empty Prefect SQLite database with every migration applied, made once in ``root`` (the pytest-xdist
    workers share it, under a lock). A server started on a copy skips the migrations: 4-5 s to healthy instead
    of 11-12 s on the 2-core machine, and a new database's start is what `prefect server start` tests anyway."""
    root.mkdir(parents=True, exist_ok=True)
    template = root / "prefect-migrated.db"
    with open(root / "database.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            partial = root / "prefect-migrating.db"
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env |= {"PREFECT_HOME": str(root / "prefect-migrating-home"),
                    "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{partial}"}
            done = subprocess.run([*PREFECT, "server", "database", "upgrade", "-y"], env=env, capture_output=True,
                                  text=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(f"prefect server database upgrade failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            partial.rename(template)  # its connections are closed: no -wal file is left beside it
    return template


@dataclass
class PrefectServer:
    """``prefect server start`` on a free port of 127.0.0.1, with its own home and SQLite database."""

    url: str
    env: dict[str, str]  # for clients of this server: the CLI, a worker and its flow-run subprocesses
    logs: Path
    proc: subprocess.Popen | None  # None in the pytest-xdist workers that did not start it

    @classmethod
    def start(cls, root: Path, database: Path | None = None) -> PrefectServer:
        """``database``: a migrated one to start from (``migrated_database``), copied; else a new one."""
        if database is not None:
            shutil.copyfile(database, root / "prefect.db")
        port = free_port()
        url = f"http://127.0.0.1:{port}/api"
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        base |= {"PREFECT_HOME": str(root / "home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                 "PREFECT_LOGGING_EXTRA_LOGGERS": "flowerkit"}
        server_env = base | {"PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{root / 'prefect.db'}",
                             "PREFECT_UI_ENABLED": "false"}
        log = root / "server.log"
        proc = start([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], server_env, log,
                     root)
        try:
            wait_healthy(f"{url}/health", proc, log, "prefect server")
        except BaseException:
            stop(proc)
            raise
        # A worker polls every second instead of every 10 s.
        env = base | {"PREFECT_API_URL": url, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        return cls(url, env, root, proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    @classmethod
    def shared(cls, root: Path, database: Path | None = None) -> PrefectServer:
        """Under pytest-xdist: the first worker to need a server starts it in ``root`` (a folder all workers
        share) and records it; the others use that one. The controller stops it (``stop_shared``), after
        every worker is done with it."""
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "server.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # held while a server starts: the others wait, then read it
            recorded = root / SHARED_RECORD
            if recorded.exists():
                facts = json.loads(recorded.read_text())
                return cls(facts["url"], facts["env"], Path(facts["logs"]), None)
            server = cls.start(root, database)
            recorded.write_text(json.dumps({"url": server.url, "env": server.env, "logs": str(server.logs),
                                            "pid": server.proc.pid}))
            return server


SHARED_RECORD = "prefect-server.json"


def drain_prefect_workers() -> None:
    """Send this process's queued Prefect logs and events now, while the server they are for still runs.

    A worker whose server has stopped retries with back-off when it is drained later (at the session's end
    or the interpreter's exit): a minute of nothing after a module with a server of its own."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        for drain_one in (lambda: APILogWorker.instance().drain(), EventsWorker.drain_all):
            try:
                result = drain_one()
                if inspect.isawaitable(result):
                    await result
            except RuntimeError:  # never started
                pass

    run_coro_as_sync(drain())


def stop_shared(root: Path) -> None:
    """The controller's end of ``PrefectServer.shared``: stop the server the workers shared, if one started."""
    recorded = root / SHARED_RECORD
    if not recorded.exists():
        return
    pid = json.loads(recorded.read_text())["pid"]
    recorded.unlink()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # started in a session of its own: its group is its id
        deadline = time.monotonic() + STOP_WAIT_S
        while time.monotonic() < deadline:
            os.killpg(pid, 0)  # raises once the group is gone
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)


class MlflowServer:
    """A real ``mlflow server`` (SQLite backend, local artifact root); ``stop`` and ``start`` again keep its
    database and artifacts (a server that goes away mid-run, and comes back)."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        # `python -m mlflow`: the environment's MLflow, whether or not its script is on PATH.
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--artifacts-destination", str(self.root / "artifacts"), "--workers", "1"]
        log = self.root / "server.log"
        # No job runner: its seven consumer processes serve MLflow's GenAI jobs, which flowerkit never submits,
        # and cost seconds of start-up and a steady share of the two cores.
        env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = start(cmd, env, log, self.root)
        wait_healthy(f"{self.uri}/health", self.proc, log, "mlflow server")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)  # the server and its uvicorn worker
        self.proc = None
