"""A local Prefect server in the background, used by later runs (``flowerkit server start | stop | status``).

Without a server, each ``flowerkit train`` / ``eval`` starts Prefect's ephemeral server (seconds of its start-up
time) and stops it at the end. ``flowerkit server start`` runs ``prefect server start`` on 127.0.0.1 once, in
the background, and records its pid and port in ``$PREFECT_HOME/flowerkit-server.json`` (``~/.prefect`` by
default). While that server answers, every ``flowerkit`` command whose environment has no ``PREFECT_API_URL``
reports to it (``use_local_server``), and its UI shows the runs. ``PREFECT_API_URL``, when set, always wins.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from flowerkit.artifacts.files import atomic_write_json, process_exists

STATE_NAME = "flowerkit-server.json"
DEFAULT_PORT = 4200
START_TIMEOUT_S = 120.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never through a proxy


@dataclass(frozen=True)
class LocalServer:
    pid: int
    port: int
    log: str

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def prefect_home() -> Path:
    # Read from the environment, not Prefect's settings: importing Prefect costs seconds and this runs first.
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def state_path() -> Path:
    return prefect_home() / STATE_NAME


def recorded() -> LocalServer | None:
    try:
        return LocalServer(**json.loads(state_path().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def healthy(server: LocalServer, timeout_s: float = 1.0) -> bool:
    try:
        with _DIRECT.open(f"{server.api_url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def listening(server: LocalServer, timeout_s: float = 1.0) -> bool:
    """Whether something accepts connections on the server's port (the kernel completes the handshake even
    while the server is too busy to answer a request)."""
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s):
            return True
    except OSError:
        return False


def use_local_server() -> str | None:
    """Point this process at the recorded server when PREFECT_API_URL is not set and it runs; its URL.

    The recorded process alive and its port open is enough (about a millisecond). An HTTP health request
    with a 1 s limit used to decide this: a server busy with other runs missed it, and the command fell back to
    an ephemeral server without a word, several seconds slower (15.1 s instead of 7.8 s, measured) and
    invisible in the UI. Prefect's client waits for a busy server's answers like any other.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None
    server = recorded()
    if server is None or not process_exists(server.pid) or not listening(server):
        return None  # no server, a stale record, or one still starting: ephemeral mode as usual
    os.environ["PREFECT_API_URL"] = server.api_url
    return server.api_url


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def start_server(port: int, timeout_s: float) -> LocalServer:
    """Start ``prefect server start`` on 127.0.0.1 (``port``, or another free one) in its own session, wait
    until it answers, and record it; raises RuntimeError naming its log when it does not start."""
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    chosen = free_port(port)
    log = home / "flowerkit-server.log"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with open(log, "ab") as out:  # appended by the server itself, not a file of ours to write atomically
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                    "--port", str(chosen)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # outlives this command
    server = LocalServer(process.pid, chosen, str(log))
    deadline = time.monotonic() + timeout_s
    while not healthy(server):
        if process.poll() is not None or time.monotonic() > deadline:
            terminate(process.pid)
            raise RuntimeError(f"The Prefect server did not start (see {log}).")
        time.sleep(0.3)
    atomic_write_json(state_path(), asdict(server))
    return server


def terminate(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the server's process group (uvicorn and its workers), SIGKILL after ``timeout_s``."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while process_exists(pid) and time.monotonic() < deadline:
            reap(pid)
            time.sleep(0.2)
        if not process_exists(pid):
            return


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # our own child when started by this process (tests): no zombie
    except ChildProcessError:
        pass
