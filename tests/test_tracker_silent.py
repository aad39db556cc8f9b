"""A tracking server that accepts connections and never answers must not hold a run (issues 22 and 29).

Light on purpose: no MLflow server (tests/test_mlflow.py has the real one), only a socket on 127.0.0.1 that
takes connections and never answers, and a tiny `flowerkit train` process. The run asks the server once, a
probe with a short limit; finding no answer, it tracks nothing and waits for nothing more (before, it waited
2 s for the MLflow run to open and 2 s more at its end, after importing MLflow: 7-7.5 s on a small machine).
Nothing here times the run: what it asked the server says whether it waited.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(find_spec("mlflow") is None, reason="the mlflow extra (make setup)")


class SilentServer:
    """A TCP port that takes every connection and never sends a byte (nor reads one while the client waits)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.uri = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._take, daemon=True).start()

    def _take(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            self.connections.append(conn)  # held open, unanswered

    def requests(self) -> list[str]:
        """The first line each client sent, read only once the client is done with the server."""
        lines = []
        for conn in self.connections:
            conn.settimeout(5)
            lines.append(conn.recv(4096).decode("latin-1").split("\r\n")[0])
        return lines

    def close(self) -> None:
        for conn in self.connections:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.slow  # a real process, importing torch
def test_a_silent_tracking_server_costs_one_probe(prefect_harness, flowers_root: Path, workdir: Path,
                                                 silent_server: SilentServer) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": silent_server.uri, "PREFECT_API_URL": PREFECT_API_URL.value()}
    cmd = [sys.executable, "-m", "flowerkit", "train", "--name", "tracked", "--dataset", "flower102", "--data_root",
           str(flowers_root), "--model_type", "testing", "--img_size", "32", "--num_steps", "2", "--eval_every", "2",
           "--train_batch_size", "4", "--eval_batch_size", "2", "--tiny_train_subset", "flower102_tiny",
           "--tiny_infer_subset", "flower102_tiny", "--tracker", "mlflow", "--quiet"]
    done = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # One question, the probe's, and nothing after it: no MLflow request ever waited on this server.
    assert silent_server.requests() == ["GET /health HTTP/1.1"]
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "did not answer within" in warnings[0], warnings
    assert "`flowerkit runs sync-mlflow tracked`" in warnings[0]
    run = workdir / "output" / "tracked"
    record = json.loads((run / "run_record.json").read_text())
    entry = record["mlflow"]
    assert record["stage_status"] == "complete" and entry["complete"] is False and entry["run_id"] is None
    assert entry["error"].startswith("open: the server did not answer within")
    assert {"open", "model", "run status"} <= set(entry["not_sent"])
    assert "runs sync-mlflow tracked --output-dir" in (run / "run.log").read_text()  # the re-send command


class _Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(404 if self.path != "/health" else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_the_probe_tells_a_silent_or_absent_server_from_one_that_answers(silent_server: SilentServer) -> None:
    from flowerkit.tracking.mlflow_sink import probe

    answering = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=answering.serve_forever, daemon=True).start()
    try:
        assert probe(f"http://127.0.0.1:{answering.server_port}", 5) is None
        assert probe(f"http://127.0.0.1:{answering.server_port}/behind/a/proxy", 5) is None  # a 404 answers too
    finally:
        answering.shutdown()
        answering.server_close()
    assert probe(silent_server.uri, 0.2) == "the server did not answer within 0.2 s"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        absent = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once closed
    assert probe(absent, 5) == "no server answers (Connection refused)"
    assert probe("file:///srv/mlruns", 0.2) is None and probe("databricks", 0.2) is None  # not servers: not probed
