"""Prefect's part of a run's environment: checked before the flow starts, so a problem there is one paragraph
and exit 3 instead of minutes of server tracebacks and an "unexpected error".

- ``PREFECT_HOME`` (default ``~/.prefect``) holds the ephemeral server's database and persisted task results:
  it must be writable (a read-only HOME used to end in 120 s of server tracebacks blaming a timeout).
- ``PREFECT_API_URL``, when set, must answer (a short HTTP request; any HTTP answer counts as reachable).
- Without it, Prefect starts a temporary server subprocess. We start it ourselves before the flow, in its own
  session: a terminal's Ctrl-C signals the whole foreground process group, and a server that dies with the
  run turns a clean interrupt (exit 130, run marked failed, resumable) into connection errors. Its start-up
  may take longer than Prefect's default 20 s on a busy machine, so the default here is generous.
- The train and eval commands launch that server's process (``launch_ephemeral_server``) before they import
  torch and plan the run, and hand it to Prefect when the flow starts: its start-up (about 5 s of its own CPU,
  measured in docs/performance.md, section 7) runs beside theirs instead of after it.

The checks before the run read the process environment only (importing Prefect to read its settings costs
a second and a half); when the run starts, a server named by Prefect's own settings (the active profile, a
``.env`` or ``prefect.toml``) is used and checked instead of starting a temporary one.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flowerkit.errors import ConfigError, MissingInputError
from flowerkit.io.writable import check_writable_folder
from flowerkit.flows.orchestration.local_server import free_port

STARTUP_TIMEOUT_VAR = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_S = 120
API_CHECK_TIMEOUT_S = 5.0
SERVER_FIX = (f"Set PREFECT_API_URL to a running Prefect server (`prefect server start` in another terminal "
              f"prints it), or raise {STARTUP_TIMEOUT_VAR} (now {{timeout}} s).")


def set_environment_defaults() -> None:
    """Before Prefect is imported: a start-up timeout that a busy machine can meet, unless the user set one."""
    os.environ.setdefault(STARTUP_TIMEOUT_VAR, str(DEFAULT_STARTUP_TIMEOUT_S))


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def check_prefect_home() -> None:
    home = prefect_home()
    check_writable_folder(home, f"PREFECT_HOME ({home}), where Prefect keeps its database and task results,",
                          "Set PREFECT_HOME to a writable folder (for example `export PREFECT_HOME=$PWD/.prefect`).")


def check_api_url() -> str:
    """One line for the plan; raises MissingInputError (exit 3) when PREFECT_API_URL is set but nothing answers."""
    url = os.environ.get("PREFECT_API_URL", "").strip()
    if not url:
        return "a temporary local Prefect server, started for the run (no PREFECT_API_URL)"
    _require_answer(url, "PREFECT_API_URL")
    return f"the Prefect server at {url}"


def _require_answer(url: str, where: str) -> None:
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=API_CHECK_TIMEOUT_S)
    except (httpx.HTTPError, ValueError) as exc:
        raise MissingInputError(
            f"{where} is {url}, but no Prefect server answers there ({type(exc).__name__}: {exc}). Start "
            "the server (`prefect server start`), point PREFECT_API_URL at a running one, or unset it to let the "
            "run start a temporary local server.") from None


def check_prefect_environment() -> str:
    """Every Prefect check that needs no server start; returns the plan's line."""
    check_prefect_home()
    return check_api_url()


def _die_with_parent() -> None:
    """In the server's child process (Linux): end it when flowerkit dies, even by SIGKILL (no orphan)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _own_session_popen(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(*args, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


# What Prefect's SubprocessASGIServer runs (3.x): uvicorn on its app factory, without the UI.
EPHEMERAL_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def _uvicorn_command(port: int) -> list[str]:
    app_dir = Path(importlib.util.find_spec("prefect").origin).parent.parent  # found, not imported (seconds)
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]


class EarlyServer:
    """Prefect's temporary server process, launched before the run is planned; ``start_ephemeral_server``
    hands it to Prefect. Stopped at exit when it was never handed over (a plan that failed, a dry run).

    Its output goes to a temporary file, not the terminal: launched before Prefect's settings are checked, a
    server that refuses them would print its own traceback beside flowerkit's one paragraph about them."""

    def __init__(self) -> None:
        self.port = free_port(0)
        self.output = tempfile.TemporaryFile()
        self.process = _own_session_popen(_uvicorn_command(self.port), env=os.environ | EPHEMERAL_ENV,
                                          stdout=self.output, stderr=subprocess.STDOUT)
        atexit.register(self.stop)

    def last_line(self) -> str:
        """The last line the server printed (why it did not start), or ''."""
        self.output.seek(0)
        lines = self.output.read().decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_ephemeral_server() -> EarlyServer | None:
    """Launch the temporary server's process now, when the run will need one (no PREFECT_API_URL); its
    start-up then overlaps the imports and the plan. A server named by Prefect's own settings (a profile) is
    only known once Prefect is imported: ``start_ephemeral_server`` stops this one then."""
    if os.environ.get("PREFECT_API_URL", "").strip():
        return None
    check_prefect_home()  # a read-only PREFECT_HOME: one paragraph, not the server's tracebacks
    return EarlyServer()


def check_prefect_settings() -> Any:
    """Prefect's settings (environment, profile, ``prefect.toml``, ``.env``); a value Prefect refuses is a
    ConfigError (exit 2) naming it, before the run starts, instead of an unexpected error inside it."""
    from prefect.settings import get_current_settings
    from pydantic import ValidationError

    try:
        return get_current_settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))} = {error.get('input')!r}: {error['msg']}"
                             for error in exc.errors())
        raise ConfigError(f"Prefect's settings are not valid ({exc.title}: {problems}). Fix or unset that "
                          "PREFECT_... setting in your environment, your Prefect profile (`prefect config view` "
                          "lists them), prefect.toml or .env.") from None


def start_ephemeral_server(early: EarlyServer | None = None) -> None:
    """Start Prefect's temporary server (when no PREFECT_API_URL) outside our process group; exit 3 if it fails.

    Prefect keeps one server instance per process and reuses it, so the flow then talks to this one. Prefect's
    settings are checked first, whichever server the run reports to. ``early``: the server's process, launched
    before the run was planned; Prefect's instance takes it over and waits until it answers.
    """
    settings = check_prefect_settings()
    if os.environ.get("PREFECT_API_URL", "").strip():
        return  # checked with the plan
    configured = (settings.api.url or "").strip()
    if configured:  # a profile's, a .env's or prefect.toml's server: Prefect will use it
        if early is not None:
            early.stop()
        _require_answer(configured, "The PREFECT_API_URL of your Prefect settings (`prefect config view`)")
        return
    from prefect.server.api import server as prefect_server

    # SubprocessASGIServer._run_uvicorn_command calls ``subprocess.Popen``; for this one call, that name
    # resolves to a Popen that starts a new session. Prefect offers no option for it (3.x).
    real = prefect_server.subprocess
    prefect_server.subprocess = SimpleNamespace(**{**vars(real), "Popen": _own_session_popen})
    server = prefect_server.SubprocessASGIServer()
    if early is not None:
        _adopt(server, early)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - Prefect raises RuntimeError or httpx errors here
        server.stop()  # a server still starting up must not outlive this error
        timeout = os.environ.get(STARTUP_TIMEOUT_VAR, DEFAULT_STARTUP_TIMEOUT_S)
        first = str(exc).split(" stdout:")[0].splitlines()[0] if str(exc) else type(exc).__name__
        said = early.last_line() if early is not None else ""
        first += f"; it said: {said}" if said else ""
        raise MissingInputError(f"Prefect's temporary local server did not start ({first}). "
                                + SERVER_FIX.format(timeout=timeout)) from None
    finally:
        prefect_server.subprocess = real


def _adopt(server: Any, early: EarlyServer) -> None:
    """Have Prefect's ``start`` take the early process as its first launch: it then waits for it as for its
    own, and launches its own on another port only if that one exits because its port was taken."""
    own, launches = server._run_uvicorn_command, iter([lambda: early.process])
    server.port = early.port
    atexit.unregister(early.stop)  # Prefect's instance stops it from now on
    server._run_uvicorn_command = lambda: next(launches, own)()
