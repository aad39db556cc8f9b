"""Retries that resume, retries only for what can heal, and result reuse when a crashed run is resumed.

Faults are injected in-process by wrapping library functions the tasks call (no fault hooks in production
code); the flows, tasks, Prefect retries and result storage are the real ones, on the session's Prefect
test server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowerkit.artifacts.record import read_record
from flowerkit.errors import ConfigError, MissingInputError

SEED_CONFIG = dict(dataset="flower102", model_type="testing", img_size=64, num_steps=10, eval_every=5,
                   train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
                   tiny_infer_subset="flower102_tiny", prefer_mps=True, test_after=True)


class Calls:
    """Wraps ``fn``: counts calls and raises ``fail_with(call_number)`` when that returns an exception."""

    def __init__(self, fn: Callable, fail_with: Callable[[int], BaseException | None] = lambda n: None,
                 after: bool = False) -> None:
        self.fn, self.fail_with, self.after, self.count = fn, fail_with, after, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        error = self.fail_with(self.count)
        if error is not None and not self.after:
            raise error
        result = self.fn(*args, **kwargs)
        if error is not None:
            raise error  # after the real call: e.g. the checkpoint is on disk, then the step fails
        return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def interrupted_run(prefect_harness, flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The seed training run, interrupted twice, then resumed.

    1st flow run: the train task fails right after its first checkpoint (step 5) and is retried; then
    export_predictions keeps failing with an I/O error until its retries are spent, so the flow fails.
    2nd flow run (``resume=True``, no faults): continues the run.
    """
    from flowerkit.engine import evaluation as engine_evaluation
    from flowerkit.tasks import evaluation as tasks_evaluation
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.engine import trainer
    from flowerkit.flows.train import train_flow

    config = load_config(TrainConfig, SEED_CONFIG | dict(
        name="interrupted", data_root=flowers_root, output_dir=tmp_path_factory.mktemp("interrupted")))
    with pytest.MonkeyPatch.context() as patch:
        # Fails right after the first latest-checkpoint save (best.bin saves pass through, uncounted).
        save = Calls(trainer.save_checkpoint, lambda n: OSError("disk hiccup") if n == 1 else None, after=True)
        real_save = trainer.save_checkpoint
        export = Calls(tasks_evaluation.export_evaluation, lambda n: OSError("storage unavailable"))
        patch.setattr(trainer, "save_checkpoint",
                      lambda path, payload: (save if path.name == "ckpt.bin" else real_save)(path, payload))
        patch.setattr(tasks_evaluation, "export_evaluation", export)
        with pytest.raises(OSError, match="storage unavailable"):
            train_flow(config)
        after_crash = read_record(config.layout.run_dir)
    with pytest.MonkeyPatch.context() as patch:
        trains = Calls(trainer.train)
        evaluations = Calls(engine_evaluation.evaluate_checkpoint)
        patch.setattr(trainer, "train", trains)
        patch.setattr(engine_evaluation, "evaluate_checkpoint", evaluations)
        result = train_flow(config, resume=True)
    return {"run_dir": config.layout.run_dir, "result": result, "after_crash": after_crash, "saves": save.count,
            "exports": export.count, "trains_on_resume": trains.count,
            "evaluations_on_resume": evaluations.count}


def test_train_retry_resumes_from_the_last_checkpoint(interrupted_run: dict) -> None:
    run_dir = interrupted_run["run_dir"]
    trained = interrupted_run["result"].train
    assert (trained.start_step, trained.steps) == (5, 10)
    assert interrupted_run["after_crash"]["tasks"]["train"]["state"] == "completed"
    assert interrupted_run["after_crash"]["tasks"]["train"]["attempt"] == 2
    assert interrupted_run["saves"] == 2  # step 5 (then the failure), and step 10 in the retry
    assert "resuming from" in (run_dir / "run.log").read_text()
    assert "at step 5 of 10" in (run_dir / "run.log").read_text()


def test_resumed_run_equals_an_uninterrupted_one(interrupted_run: dict, tiny_run: Path) -> None:
    run_dir = interrupted_run["run_dir"]
    assert read_record(run_dir)["stage_status"] == "complete"
    rows, reference = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(tiny_run / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in rows] == [(r["kind"], r["step"]) for r in reference]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in reference])

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert files(run_dir) == files(tiny_run)

    def numbers(run: Path) -> dict:
        metrics = json.loads((run / "metrics.json").read_text())
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    assert numbers(run_dir) == pytest.approx(numbers(tiny_run))


def test_a_resumed_flow_reuses_completed_task_results(interrupted_run: dict) -> None:
    assert interrupted_run["after_crash"]["stage_status"] == "failed"
    export = interrupted_run["after_crash"]["tasks"]["export_predictions"]
    assert (export["state"], export["attempt"]) == ("failed", 3)
    assert interrupted_run["exports"] == 3  # the first try and both retries
    # Training and evaluation had completed: the resumed flow took their persisted results.
    assert interrupted_run["trains_on_resume"] == 0
    assert interrupted_run["evaluations_on_resume"] == 1  # only the test split's (--test_after), never run yet
    assert read_record(interrupted_run["run_dir"])["tasks"]["export_predictions"]["state"] == "completed"


def _load_subset_in_a_flow(dataset: str, data_root: Path, split: str, subset: str | None, batch_size: int) -> Any:
    """load_subset as the flows call it: inside a flow run, for a plan that has not selected the split yet.
    (Called bare, after another flow in this process, Prefect records the task run under that earlier flow
    run, which other tests read back.)"""
    from prefect import flow

    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.device import DeviceChoice
    from flowerkit.run.plan import RunPlan, SplitRequest
    from flowerkit.tasks import setup as tasks_setup

    config = load_config(TrainConfig, dict(name="load-subset", dataset=dataset, data_root=data_root,
                                           tiny_infer_subset=subset, eval_batch_size=batch_size))
    request = SplitRequest(split, subset, batch_size)
    plan = RunPlan(flow="train", config=config, resume=False, device=DeviceChoice("cpu", "CPU", "test"),
                   precision="fp32", splits=(request,))
    return flow(name="load_subset_only")(lambda: tasks_setup.load_subset(plan, request))()


def test_transient_io_error_in_load_subset_is_retried(prefect_harness, flowers_root: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from flowerkit.tasks import setup as tasks_setup

    flaky = Calls(tasks_setup.select, lambda n: OSError("NFS timeout") if n == 1 else None)
    monkeypatch.setattr(tasks_setup, "select", flaky)
    selection = _load_subset_in_a_flow("flower102", flowers_root, "val", "flower102_tiny", 2)
    assert flaky.count == 2
    assert selection.split == "val" and len(selection.image_ids) == 4


@pytest.mark.parametrize("data_root, subset, error", [
    ("missing", None, MissingInputError),
    (None, "no_such_subset", ConfigError),
])
def test_user_errors_are_not_retried(prefect_harness, flowers_root: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch, data_root: str | None, subset: str | None,
                                     error: type[Exception]) -> None:
    from flowerkit.tasks import setup as tasks_setup

    calls = Calls(tasks_setup.select)
    monkeypatch.setattr(tasks_setup, "select", calls)
    root = tmp_path / data_root if data_root else flowers_root
    with pytest.raises(error):
        _load_subset_in_a_flow("flower102", root, "val", subset, 2)
    assert calls.count == 1


class Killed(BaseException):
    """Stands for the process being killed at that point: not an Exception, so nothing retries or handles it."""


def scalars_of(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, round(e.value, 5)) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _kill_after_jsonl_row(patch: pytest.MonkeyPatch) -> None:
    from flowerkit.artifacts.scalars import ScalarLog

    patch.setattr(ScalarLog, "per_class", Calls(ScalarLog.per_class, lambda n: Killed()))


def _kill_after_events_published(patch: pytest.MonkeyPatch) -> None:
    from flowerkit.artifacts import export

    def close_then_die(self) -> None:
        real_close(self)
        raise Killed()

    real_close = export.ScalarLog.close
    patch.setattr(export.ScalarLog, "close", close_then_die)


def _kill_between_export_and_stamp(patch: pytest.MonkeyPatch) -> None:
    from flowerkit.tasks import provenance

    patch.setattr(provenance, "build_stamp", Calls(provenance.build_stamp, lambda n: Killed()))


@pytest.mark.parametrize("kill", [_kill_after_jsonl_row, _kill_after_events_published,
                                  _kill_between_export_and_stamp])
def test_a_run_killed_in_or_after_export_resumes_exactly(kill: Callable, prefect_harness, flowers_root: Path,
                                                         tiny_run: Path, tmp_path: Path) -> None:
    """Wherever the final stage dies, --resume gives the uninterrupted run's rows, scalars and predictions."""
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.flows.train import train_flow
    from flowerkit.run.runs import verify_run

    config = load_config(TrainConfig, SEED_CONFIG | dict(name="killed", data_root=flowers_root, output_dir=tmp_path))
    with pytest.MonkeyPatch.context() as patch:
        kill(patch)
        with pytest.raises(Killed):
            train_flow(config)
    train_flow(config, resume=True)
    run_dir = config.layout.run_dir
    rows, reference = read_jsonl(run_dir / "metrics.jsonl"), read_jsonl(tiny_run / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in rows] == [(r["kind"], r["step"]) for r in reference]
    assert scalars_of(config.layout.tb_dir) == scalars_of(tiny_run.parent / "tb" / tiny_run.name)
    assert (run_dir / "fiftyone" / "predictions.jsonl").read_text().replace(str(run_dir), "") == \
        (tiny_run / "fiftyone" / "predictions.jsonl").read_text().replace(str(tiny_run), "")
    assert verify_run(tmp_path, "killed").ok


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs: a real filesystem that can be filled up. Needs the right to mount (root on Linux)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                          capture_output=True, check=False)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}): needs root on Linux")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until the filesystem has no room left; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_fails_the_run_cleanly_and_resume_finishes_it(prefect_harness, flowers_root: Path,
                                                                   small_disk: Path) -> None:
    """The disk fills up just before the first checkpoint: the run is marked failed with 'disk full at <path>',
    no temporary file is left or indexed, and --resume after freeing space completes a verifiable run."""
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.engine import trainer
    from flowerkit.errors import DiskFullError
    from flowerkit.flows.train import train_flow
    from flowerkit.run.runs import verify_run

    output = small_disk / "output"
    config = load_config(TrainConfig, SEED_CONFIG | dict(name="full", data_root=flowers_root, output_dir=output))
    fillers: list[Path] = []
    with pytest.MonkeyPatch.context() as patch:
        real_save = trainer.save_checkpoint
        patch.setattr(trainer, "save_checkpoint", lambda *a, **k: (fillers.append(fill(small_disk)),
                                                                   real_save(*a, **k))[1])
        # The checkpoint's write, or TensorBoard's writer thread flushing the evaluation's events, meets it first.
        with pytest.raises(DiskFullError, match="disk full at .*(checkpoints/|tb/full)"):
            train_flow(config)
    record = read_record(config.layout.run_dir)
    assert record["stage_status"] == "failed" and "disk full at" in record["error"]["message"]
    assert record["tasks"]["train"]["attempt"] == 1  # a full disk is never retried
    assert config.layout.temp_files() == [] and not config.layout.checkpoint.exists()
    fillers[0].unlink()
    train_flow(config, resume=True)
    assert read_record(config.layout.run_dir)["stage_status"] == "complete"
    assert verify_run(output, "full").ok


def test_a_full_disk_met_by_tensorboards_writer_thread_is_named(small_disk: Path) -> None:
    """TensorBoard writes from a thread and raises the OSError it met at a later call: that is a full disk too
    (DiskFullError naming the TensorBoard folder, never retried), not an I/O error to retry."""
    from flowerkit.artifacts.scalars import ScalarLog
    from flowerkit.errors import DiskFullError

    scalars = ScalarLog(small_disk / "metrics.jsonl", small_disk / "tb")
    rows = [{"class_id": i, "class_name": f"c{i}", "precision": 0.5, "recall": 0.5, "f1": 0.5} for i in range(102)]
    scalars.per_class(0, rows, "val")
    fill(small_disk)
    with pytest.raises(DiskFullError, match=f"disk full at {small_disk / 'tb'}:"):
        for step in range(1, 200):
            scalars.per_class(step, rows, "val")
        scalars.close()
