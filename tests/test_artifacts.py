"""Artifact writers: metrics agree with scikit-learn, the stamp never has an empty field, atomic records."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from flowerkit.artifacts.classification import classification_report
from flowerkit.artifacts.files import atomic_write_json, read_json
from flowerkit.artifacts.retention import read_expiry, retention_text
from flowerkit.artifacts.stamp import STAMP_FIELDS, build_stamp, env_hash, missing_fields, package_version
from flowerkit.run.layout import RunLayout


def test_classification_report_agrees_with_scikit_learn() -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, top_k_accuracy_score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=200)
    logits = rng.normal(size=(200, 10)) + 2.0 * np.eye(10)[labels]
    report = classification_report(logits, labels, [f"c{i}" for i in range(10)])
    predictions = logits.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=range(10),
                                                                     zero_division=0)
    assert report["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-6)
    assert report["top5_accuracy"] == pytest.approx(top_k_accuracy_score(labels, logits, k=5), abs=1e-6)
    assert report["macro_f1"] == pytest.approx(f1_score(labels, predictions, average="macro"), abs=1e-6)
    for c, row in enumerate(report["per_class"]):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[c], recall[c], f1[c]),
                                                                             abs=1e-6)
        assert row["support"] == support[c]
    assert report["confusion"].sum() == 200


def test_absent_package_is_recorded_as_missing_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert package_version("surely-not-an-installed-package") == "missing"
    assert "not installed" in caplog.text


def test_stamp_fields_are_never_empty_on_a_cpu_machine() -> None:
    stamp = build_stamp("run-1", "abc", 42, "cpu", "fp32", "not used (eval-only run)", "flower102_tiny.yaml")
    assert missing_fields(stamp) == [] and set(STAMP_FIELDS) <= set(stamp)
    assert stamp["fp16"] is False and stamp["precision"] == "fp32"
    if stamp["gpu_count"] == 0:
        assert stamp["gpu_name"] == "none (CPU only)" and "not applicable" in stamp["driver_version"]


def test_retention_must_be_at_least_90_days(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    text = retention_text("r", "r-1", created, 90, RunLayout.default(tmp_path, "r"))
    (tmp_path / "RETENTION.txt").write_text(text)
    assert read_expiry(tmp_path / "RETENTION.txt") == datetime(2026, 4, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        retention_text("r", "r-1", created, 30, RunLayout.default(tmp_path, "r"))


def test_atomic_json_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert read_json(tmp_path / "a.json") == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: int) -> None:
    from flowerkit.artifacts.files import atomic_write_json

    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_json_artifacts_are_strict_json(tmp_path: Path) -> None:
    from flowerkit.artifacts.files import atomic_write_json

    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert not any(tmp_path.iterdir())


def test_env_hash_is_the_installed_pins_cached_until_a_distribution_changes(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import sys
    from importlib import metadata

    def pins_hash() -> str:  # the definition, computed the slow way
        pins = sorted({f"{d.metadata['Name'].lower()}=={d.version}" for d in metadata.distributions()
                       if d.metadata["Name"]})
        return hashlib.sha256("\n".join([sys.version, *pins]).encode()).hexdigest()

    monkeypatch.setenv("FLOWERKIT_CACHE_DIR", str(tmp_path / "cache"))
    first = env_hash()
    assert first == pins_hash() and len(list((tmp_path / "cache" / "env-hash").iterdir())) == 1
    assert env_hash() == first  # from the cache
    site = tmp_path / "site"
    (site / "flowerkit_probe-1.0.dist-info").mkdir(parents=True)
    (site / "flowerkit_probe-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: flowerkit-probe\n"
                                                                     "Version: 1.0\n")
    monkeypatch.syspath_prepend(str(site))  # a package installed meanwhile
    second = env_hash()
    assert second != first and second == pins_hash()


def test_a_signal_during_a_tensorboard_write_waits_until_the_write_is_over(tmp_path: Path) -> None:
    """A SIGTERM (or Ctrl-C) whose exception is raised just after TensorBoard's queue has taken its lock, before
    the with-block is entered, leaves that lock held for good: close() then deadlocked in flush() (a sweep
    trial hung after SIGTERM). The signal is now held until the call is over. Here it arrives at that moment."""
    import signal
    import threading

    from flowerkit.artifacts.scalars import ScalarLog
    from flowerkit.cli.errors import sigterm_as_interrupt
    from flowerkit.errors import Terminated

    log = ScalarLog(tmp_path / "metrics.jsonl", tmp_path / "tb")
    log.log("train", 1, 2, {"loss": 1.0}, "train")  # opens the writer
    pending = log.writer.file_writer.event_writer._async_writer._byte_queue

    class SignalledOnEntry(threading.Condition):
        fired = False

        def __enter__(self):
            entered = super().__enter__()
            if not SignalledOnEntry.fired:
                SignalledOnEntry.fired = True
                signal.raise_signal(signal.SIGTERM)  # the lock is taken, the block not yet entered
            return entered

    pending.not_full = SignalledOnEntry(pending.mutex)
    with sigterm_as_interrupt(), pytest.raises(Terminated):
        log.log("train", 2, 2, {"loss": 0.5}, "train")
    assert SignalledOnEntry.fired
    closing = threading.Thread(target=log.close, daemon=True)
    closing.start()
    closing.join(20)
    assert not closing.is_alive(), "close() deadlocked on the lock the signal left held"
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_held_interrupts_deliver_ctrl_c_once_the_block_is_over() -> None:
    import signal

    from flowerkit.interrupts import held_interrupts
    from tests.servers import default_sigint

    finished = []
    with default_sigint(), pytest.raises(KeyboardInterrupt):  # Python's own Ctrl-C handler, wherever pytest runs
        with held_interrupts():
            signal.raise_signal(signal.SIGINT)
            finished.append(True)  # not interrupted halfway
        finished.append(False)  # raised here, at the block's end
    assert finished == [True]


def test_closing_the_scalar_log_never_waits_out_tensorboards_flush_timer(tmp_path: Path) -> None:
    """A SIGTERM whose exception lands inside TensorBoard's queue put (after the item, before the notify)
    leaves the writer thread asleep until its next timed flush, and close() waits for it: with TensorBoard's
    default of 120 s, a stopped sweep trial took two minutes to end. Here the lost notify is made by hand."""
    import time

    from tensorboard.compat.proto.event_pb2 import Event

    from flowerkit.artifacts.scalars import ScalarLog

    log = ScalarLog(tmp_path / "metrics.jsonl", tmp_path / "tb")
    log.log("train", 1, 2, {"loss": 1.0}, "train")  # opens the writer
    pending = log.writer.file_writer.event_writer._async_writer._byte_queue
    time.sleep(0.2)  # the writer thread is asleep on the empty queue
    with pending.mutex:  # an item queued whose wake-up was lost
        pending._put(Event(wall_time=time.time(), step=2).SerializeToString())
        pending.unfinished_tasks += 1
    started = time.monotonic()
    log.close()
    assert time.monotonic() - started < 10
