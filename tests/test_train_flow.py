"""The train flow end to end on the tiny subset, every artifact read back, and the CLI's failure paths."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flowerkit.artifacts.stamp import STAMP_FIELDS, missing_fields
from flowerkit.cli import app
from tests.conftest import SEED_FLAGS

runner = CliRunner()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]} | {
        "_images": acc.Tags()["images"]}


def test_tensorboard_scalars_are_readable_by_tensorboard(tiny_run: Path) -> None:
    tb = scalars(tiny_run.parent / "tb" / "flower_mps")
    assert [step for step, _ in tb["train/loss"]] == list(range(1, 11))
    assert len(tb["train/lr"]) == 10 and len(tb["train/accuracy"]) == 10
    assert [step for step, _ in tb["val/accuracy"]] == [5, 10]  # eval_every 5, then the final evaluation
    assert {"val/loss", "val/top5_accuracy", "val/macro_f1"} <= set(tb)
    assert "val_per_class/f1/000_pink primrose" in tb
    assert "val/confusion_matrix" in tb["_images"]


def hparams_of(tb_root: Path) -> dict[str, tuple[dict, dict[str, float]]]:
    """Each run's hparams and metrics as TensorBoard's HParams dashboard reads them from the logdir ``tb_root``:
    its plugin's experiment and session groups, by session (a run's folder), over TensorBoard's data provider."""
    from google.protobuf.json_format import MessageToDict
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tb_root))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(tb_root))
    backend = backend_context.Context(base_plugin.TBContext(logdir=str(tb_root), data_provider=provider,
                                                            multiplexer=multiplexer))
    ctx = context.RequestContext()
    experiment = get_experiment.Handler(ctx, backend, "", api_pb2.GetExperimentRequest()).run()
    request = api_pb2.ListSessionGroupsRequest(slice_size=100, include_metrics=True,
                                               allowed_statuses=[api_pb2.STATUS_SUCCESS])
    request.col_params.extend([api_pb2.ColParams(hparam=info.name) for info in experiment.hparam_infos])
    request.col_params.extend([api_pb2.ColParams(metric=info.name) for info in experiment.metric_infos])
    groups = list_session_groups.Handler(ctx, backend, "", request).run().session_groups
    return {session.name: ({name: MessageToDict(value) for name, value in group.hparams.items()},
                           {metric.name.tag: metric.value for metric in group.metric_values})
            for group in groups for session in group.sessions}


def check_hparams(run_dir: Path, tb_root: Path, flow: str, metric_keys: tuple[str, ...]) -> None:
    """The run is a session of its own folder, with its configuration (as config_resolved.yaml) and the final
    metrics of metrics.json."""
    config = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    hparams, values = hparams_of(tb_root)[run_dir.name]
    assert hparams == {"flow": flow} | {key: float(value) if isinstance(value, int) and not isinstance(value, bool)
                                        else value for key, value in config.items() if value is not None}
    assert values == {f"final/{key}": pytest.approx(metrics[key], abs=1e-6) for key in metric_keys}


def test_tensorboard_hparams_hold_the_config_and_final_metrics(tiny_run: Path) -> None:
    check_hparams(tiny_run, tiny_run.parent / "tb", "train", ("accuracy", "top5_accuracy", "macro_f1", "loss",
                                                              "test_accuracy", "test_top5_accuracy",
                                                              "test_macro_f1", "test_loss"))


def test_a_labelled_confusion_matrix_at_every_evaluation(tiny_run: Path) -> None:
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run.parent / "tb" / "flower_mps"), size_guidance={"images": 0})
    acc.Reload()
    images = acc.Images("val/confusion_matrix")
    assert [image.step for image in images] == [5, 10]  # the eval at step 5 and the final one
    for image in images:
        picture = Image.open(io.BytesIO(image.encoded_image_string))
        # A figure (axes, labels, colour bar) in colour, wider than the bare 102x102 matrix.
        assert picture.mode in ("RGB", "RGBA") and image.width > 408 and image.height > 408


def test_per_class_metrics_and_summary(tiny_run: Path) -> None:
    per_class = json.loads((tiny_run / "fiftyone" / "per_class_metrics.json").read_text())
    assert len(per_class["classes"]) == 102
    assert sum(c["support"] for c in per_class["classes"]) == 4
    assert set(per_class["classes"][0]) == {"class_id", "class_name", "precision", "recall", "f1", "support"}
    summary = json.loads((tiny_run / "metrics.json").read_text())
    assert summary["num_samples"] == 4 and summary["accuracy"] == per_class["accuracy"]


def test_env_stamp_has_every_field_non_empty(tiny_run: Path) -> None:
    stamp = json.loads((tiny_run / "env_stamp.json").read_text())
    assert missing_fields(stamp) == []
    assert set(STAMP_FIELDS) <= set(stamp)
    assert stamp["fp16"] is False and stamp["seed"] == 42
    assert stamp["tiny_train_subset_path"].endswith("flower102_tiny.yaml")
    record = json.loads((tiny_run / "run_record.json").read_text())
    assert stamp["run_id"] == record["run_id"] and stamp["config_hash"] == record["config_hash"]
    # One process: what the dashboard shows of a distributed run says so (test_distributed: two).
    assert (stamp["world_size"], stamp["distributed_backend"], stamp["per_rank_batch_size"]) == (1, "none", 4)
    assert record["distributed"] == {"world_size": 1, "backend": "none", "per_rank_batch": 4, "nnodes": 1}


def test_retention_declares_90_days_and_storage_locations(tiny_run: Path) -> None:
    text = (tiny_run / "RETENTION.txt").read_text()
    assert "retention_days: 90" in text and "expires_utc:" in text
    assert "tensorboard: " in text and str(Path("tb") / "flower_mps") in text
    assert "fiftyone: " in text and str(Path("flower_mps") / "fiftyone") in text


def test_checkpoint_holds_model_optimizer_step_config_and_labelmap(tiny_run: Path) -> None:
    from flowerkit.engine.checkpoint import load_checkpoint

    state = load_checkpoint(tiny_run / "checkpoints" / "ckpt.bin", map_location="cpu")
    assert state["step"] == 10 and state["model_type"] == "testing" and state["img_size"] == 64
    assert state["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert state["config"]["name"] == "flower_mps" and state["labelmap"]["0"] == "pink primrose"


def test_run_record_indexes_every_artifact(tiny_run: Path) -> None:
    record = json.loads((tiny_run / "run_record.json").read_text())
    assert record["stage_status"] == "complete" and record["flow"] == "train" and record["flow_run_id"]
    assert record["progress"] == {"step": 10, "total_steps": 10}
    paths = {e["relative_path"] for e in record["artifact_index"]}
    for rel in ("fiftyone/predictions.jsonl", "labelmap.json", "env_stamp.json", "RETENTION.txt",
                "checkpoints/ckpt.bin", "config_resolved.yaml", "metrics.jsonl"):
        assert f"flower_mps/{rel}" in paths
    assert any(p.startswith("tb/flower_mps/events.out.tfevents") for p in paths)
    assert all(task["state"] == "completed" for task in record["tasks"].values())
    assert len(record["tasks"]) == 7


def test_run_record_keeps_the_loops_own_seconds(tiny_run: Path) -> None:
    """What benchmarks/run_phases.py subtracts from a run's wall time to find its fixed cost."""
    phases = json.loads((tiny_run / "run_record.json").read_text())["phases"]
    assert set(phases) == {"training_loop_s", "evaluation_loops_s"}
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in phases.values())


def test_metrics_jsonl_streams_train_and_eval_rows(tiny_run: Path) -> None:
    rows = read_jsonl(tiny_run / "metrics.jsonl")
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 11))
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [5, 10]


def test_seed_command_through_the_cli(prefect_harness, flowers_root: Path, workdir: Path) -> None:
    result = runner.invoke(app, ["train", "--name", "flower_mps", "--dataset", "flower102", "--data_root",
                                 str(flowers_root), "--output_dir", "output", *SEED_FLAGS])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "predictions" in result.output
    assert "best.bin: step " in result.output and "weights), val_accuracy " in result.output  # the selection
    # Not a terminal: plain progress lines (the last step always), with rate, ETA and the latest evaluation.
    assert "progress: step 10/10 (100%), " in result.output and "eval at step 5: acc " in result.output
    assert len((workdir / "output/flower_mps/fiftyone/predictions.jsonl").read_text().splitlines()) == 4
    resolved = yaml.safe_load((workdir / "output/flower_mps/config_resolved.yaml").read_text())
    assert resolved["num_steps"] == 10 and resolved["warmup_steps"] == 1


@pytest.mark.parametrize("args, code, words", [
    (["--data_root", "nowhere"], 3, "does not exist"),
    ([], 3, "needs the dataset's location"),
    (["--model_type", "ViT-Z_9"], 2, "unknown model type"),
    (["--tiny_train_subset", "flower102_giant"], 2, "Unknown subset"),
    (["--pretrained_dir", "{bad_npz}"], 2, "could not be read as a Google .npz"),
    (["--device", "cuda"], 3, "no CUDA device"),
    (["--learning_rate", "-1"], 2, "--learning_rate"),
])
def test_bad_input_is_one_paragraph_and_writes_nothing(flowers_root: Path, workdir: Path, args: list[str],
                                                       code: int, words: str) -> None:
    bad_npz = workdir / "bad.npz"
    bad_npz.write_bytes(b"not an npz")
    data = [] if args and args[0] == "--data_root" or args == [] else ["--data_root", str(flowers_root)]
    args = [a.replace("{bad_npz}", str(bad_npz)) for a in args]
    flags = [f for f in SEED_FLAGS if f != "--prefer_mps"]
    if "--model_type" in args or "--tiny_train_subset" in args:
        flags = _without(flags, args)
    result = runner.invoke(app, ["train", "--name", "bad", "--dataset", "flower102", *data, *flags, *args])
    assert result.exit_code == code, result.output
    assert words in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (workdir / "output").exists()


def _without(flags: list[str], overrides: list[str]) -> list[str]:
    out, skip = [], False
    for i, f in enumerate(flags):
        if skip:
            skip = False
            continue
        if f in overrides:
            skip = True
            continue
        out.append(f)
    return out


def test_fine_tunes_from_a_google_npz(prefect_harness, flowers_root: Path, workdir: Path) -> None:
    import numpy as np

    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.models.configs import get_config
    from flowerkit.flows.train import train_flow
    from tests.test_models import google_npz

    npz = workdir / "ViT-testing.npz"
    np.savez(npz, **google_npz(get_config("testing"), grid=2, rng=np.random.default_rng(0)))  # 32 px grid
    config = load_config(TrainConfig, dict(name="finetune", dataset="flower102", data_root=flowers_root,
                                           model_type="testing", img_size=64, num_steps=2, eval_every=2,
                                           train_batch_size=4, eval_batch_size=2, pretrained_dir=npz,
                                           tiny_train_subset="flower102_tiny", tiny_infer_subset="flower102_tiny"))
    result = train_flow(config)
    # position embeddings resized 2x2 -> 4x4; the run says exactly which file it started from
    sha = hashlib.sha256(npz.read_bytes()).hexdigest()
    assert result.train.weights == f"pretrained from {npz} (npz, local file, sha256 {sha})"
    stamp = json.loads((Path(result.run_dir) / "env_stamp.json").read_text())
    assert stamp["pretrained_weights"]["sha256"] == sha and stamp["pretrained_weights"]["format"] == "npz"


def test_the_report_is_the_selected_checkpoint_and_test_is_kept_apart(tiny_run: Path) -> None:
    """metrics.json reports the step --monitor selected (validation only); --test_after adds test_* beside it."""
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    evals = {r["step"]: r["accuracy"] for r in read_jsonl(tiny_run / "metrics.jsonl") if r["kind"] == "eval"}
    best = max(evals, key=lambda s: (evals[s], -s))  # ties keep the earlier step
    assert metrics["monitor"] == "val_accuracy" and metrics["selected_step"] == best == metrics["step"]
    assert metrics["monitor_value"] == pytest.approx(evals[best]) == pytest.approx(metrics["accuracy"])
    assert metrics["selected_checkpoint"] == "flower_mps/checkpoints/best.bin" and not metrics["stopped_early"]
    assert metrics["last_step"] == 10 and metrics["split"] == "val" and metrics["test_step"] == best
    assert {"test_accuracy", "test_loss", "test_macro_f1", "test_num_samples"} <= set(metrics)
    val_rows = read_jsonl(tiny_run / "fiftyone/predictions.jsonl")
    test_rows = read_jsonl(tiny_run / "fiftyone/test_predictions.jsonl")
    assert {r["split"] for r in val_rows} == {"val"} and {r["split"] for r in test_rows} == {"test"}
    assert len(test_rows) == metrics["test_num_samples"]
    assert json.loads((tiny_run / "fiftyone/test_per_class_metrics.json").read_text())["split"] == "test"
    record = json.loads((tiny_run / "run_record.json").read_text())
    assert record["selection"]["selected_step"] == best and record["metrics"]["test_accuracy"] is not None
