"""A tracking server that accepts connections and never answers must not hold a run (issue 22).

Light on purpose: no MLflow server (tests/test_mlflow.py has the real one), only a socket on 127.0.0.1 that
listens and never reads, and two tiny runs through the real train flow.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from flowerkit.config import TrainConfig, load_config

pytestmark = pytest.mark.skipif(find_spec("mlflow") is None, reason="the mlflow extra (make setup)")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that completes connections (the kernel's backlog) and never sends a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def timed_run(root: Path, output: Path, name: str, **extra: object) -> float:
    from flowerkit.flows.train import train_flow

    config = load_config(TrainConfig, dict(
        name=name, dataset="flower102", data_root=root, model_type="testing", img_size=32, num_steps=2,
        eval_every=2, train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
        tiny_infer_subset="flower102_tiny", output_dir=output) | extra)
    start = time.monotonic()
    train_flow(config)
    return time.monotonic() - start


@pytest.mark.slow  # real processes, each importing torch
def test_a_silent_tracking_server_does_not_hold_the_run(prefect_harness, flowers_root: Path, tmp_path: Path,
                                                        silent_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    timed_run(flowers_root, tmp_path, "warm")  # imports and caches, so the two timed runs compare alike
    base = timed_run(flowers_root, tmp_path, "plain")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", silent_server)
    import mlflow  # imported before timing: the import is MLflow's cost, not the server's

    mlflow.set_tracking_uri(silent_server)
    warnings = Warnings()
    logging.getLogger("flowerkit.tracking").addHandler(warnings)
    try:
        tracked = timed_run(flowers_root, tmp_path, "tracked", tracker="mlflow")
    finally:
        logging.getLogger("flowerkit.tracking").removeHandler(warnings)
    # Before, the run waited 15 s for the open and ~10 s more at its end. Now it never waits out one request's
    # timeout; the bound leaves room for a machine busy with other tests (the sink's own end is 2-4 s).
    from flowerkit.tracking.mlflow_sink import HTTP_DEFAULTS

    assert tracked - base < float(HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]), (base, tracked)
    assert len(warnings.messages) == 1 and "did not answer" in warnings.messages[0], warnings.messages
    record = json.loads((tmp_path / "tracked" / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["mlflow"]["complete"] is False
