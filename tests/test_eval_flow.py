"""The eval flow from a checkpoint: exact predictions, agreement with a direct forward pass, failure paths."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.run.config import EvalConfig, load_config
from flowerkit.data.flowers102 import open_flowers102
from flowerkit.data.table import build_table
from flowerkit.engine.checkpoint import load_checkpoint
from flowerkit.models.vit import build_model

runner = CliRunner()


def eval_args(flowers_root: Path, checkpoint: Path, name: str = "flower_eval") -> list[str]:
    return ["eval", "--name", name, "--dataset", "flower102", "--data_root", str(flowers_root),
            "--pretrained_dir", "/path/to/ViT-B_16.npz", "--checkpoint", str(checkpoint),
            "--tiny_infer_subset", "flower102_tiny", "--eval_batch_size", "2", "--output_dir", "output"]


@pytest.fixture(scope="module")
def eval_run(prefect_harness, tiny_run: Path, flowers_root: Path, tmp_path_factory) -> Path:
    """The seed eval command, run once through the CLI."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("eval"))
    checkpoint = tiny_run / "checkpoints" / "ckpt.bin"
    try:
        with pytest.MonkeyPatch.context() as patch:
            real_open = io.open

            def counting_open(file, *args, **kwargs):
                if Path(str(file)) == checkpoint if isinstance(file, (str, os.PathLike)) else False:
                    CHECKPOINT_READS.append(file)
                return real_open(file, *args, **kwargs)

            patch.setattr(io, "open", counting_open)
            patch.setattr(builtins, "open", counting_open)
            result = runner.invoke(app, eval_args(flowers_root, checkpoint))
        assert result.exit_code == 0, result.output
        return Path.cwd() / "output" / "flower_eval"
    finally:
        os.chdir(cwd)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "fiftyone" / "predictions.jsonl").read_text().splitlines()]


CHECKPOINT_READS: list = []


def test_an_eval_run_reads_its_checkpoint_once_to_plan_and_once_to_evaluate(eval_run: Path) -> None:
    # The plan reads it for its sha256 and model; the evaluation loads it and checks it is the same bytes.
    # No module-level cache carries the loaded state between them.
    assert len(CHECKPOINT_READS) == 2, CHECKPOINT_READS


def test_eval_writes_exactly_one_row_per_sample(eval_run: Path) -> None:
    predictions = rows(eval_run)
    assert len(predictions) == 4 and len({r["sample_id"] for r in predictions}) == 4
    for name in ("labelmap.json", "env_stamp.json", "RETENTION.txt", "metrics.json", "fiftyone/per_class_metrics.json"):
        assert (eval_run / name).is_file(), name
    assert not (eval_run / "checkpoints").exists()  # eval never trains
    record = json.loads((eval_run / "run_record.json").read_text())
    assert record["flow"] == "eval" and record["stage_status"] == "complete"
    assert "train" not in record["tasks"]
    stamp = json.loads((eval_run / "env_stamp.json").read_text())
    assert stamp["tiny_train_subset_path"] == "not used (eval-only run)"


def test_eval_tensorboard_has_metrics_and_a_confusion_matrix(eval_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(eval_run.parent / "tb" / "flower_eval"), size_guidance={"scalars": 0})
    acc.Reload()
    assert {"val/loss", "val/accuracy", "val/top5_accuracy", "val/macro_f1"} <= set(acc.Tags()["scalars"])
    assert "val/confusion_matrix" in acc.Tags()["images"]
    metrics = json.loads((eval_run / "metrics.json").read_text())
    assert acc.Scalars("val/accuracy")[-1].value == pytest.approx(metrics["accuracy"])
    assert {"accuracy", "top5_accuracy", "macro_f1", "worst_classes"} <= set(metrics)


def test_eval_tensorboard_hparams_hold_the_config_and_final_metrics(eval_run: Path) -> None:
    from tests.test_train_flow import check_hparams

    check_hparams(eval_run, eval_run.parent / "tb", "eval", ("accuracy", "top5_accuracy", "macro_f1", "loss"))


def test_predictions_agree_with_a_direct_forward_pass(eval_run: Path, tiny_run: Path, flowers_root: Path) -> None:
    state = load_checkpoint(tiny_run / "checkpoints" / "ckpt.bin")
    model = build_model(state["model_type"], state["img_size"], 102)
    model.load_state_dict(state["model"])
    model.eval()
    predictions = rows(eval_run)
    table = build_table(open_flowers102(flowers_root), np.array([r["image_id"] for r in predictions]))
    from PIL import Image

    images = []
    for path in table.paths:  # the reference transform: resize the whole image, scale to [-1, 1]
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((64, 64), Image.BILINEAR), dtype=np.float32)
        images.append(torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1)
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack(images)), dim=1)
    assert [r["prediction"] for r in predictions] == probs.argmax(1).tolist()
    assert [r["label"] for r in predictions] == table.labels.tolist()
    np.testing.assert_allclose([r["confidence"] for r in predictions], probs.max(1).values.numpy(), atol=2e-3)


def test_full_split_evaluation(prefect_harness, tiny_run: Path, flowers_root: Path, workdir: Path) -> None:
    from flowerkit.flows.eval import eval_flow

    config = load_config(EvalConfig, dict(name="full", dataset="flower102", data_root=flowers_root,
                                          checkpoint=tiny_run / "checkpoints" / "ckpt.bin", split="test",
                                          eval_batch_size=32))
    result = eval_flow(config)
    assert result.metrics["num_samples"] == 102
    assert len(rows(workdir / "output" / "full")) == 102


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _bad_checkpoints(tmp: Path, good: Path) -> dict[str, tuple[Path, int, str]]:
    truncated = tmp / "truncated.bin"
    truncated.write_bytes(good.read_bytes()[:1000])
    wrong_kind = tmp / "wrong.bin"
    torch.save({"weights": torch.zeros(2)}, wrong_kind)
    evil = tmp / "evil.bin"
    torch.save({"format": "flowerkit-checkpoint", "model": _Payload()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    text = tmp / "text.bin"
    text.write_text("junk\n")  # a few bytes of text: torch's legacy reader meets an unknown pickle memo key
    unreadable = tmp / "unreadable.bin"
    unreadable.write_bytes(good.read_bytes())
    unreadable.chmod(0)
    return {
        "missing": (tmp / "nope.bin", 3, "does not exist"),
        "truncated": (truncated, 2, "truncated"),
        "text": (text, 2, "not a torch checkpoint"),
        "wrong kind": (wrong_kind, 2, "not a flowerkit checkpoint"),
        "executes code": (evil, 2, "would execute code"),
        "unreadable": (unreadable, 3, "permission denied"),
    }


def test_bad_checkpoints_fail_before_any_output(tiny_run: Path, flowers_root: Path, workdir: Path) -> None:
    cases = _bad_checkpoints(workdir, tiny_run / "checkpoints" / "ckpt.bin")
    if os.geteuid() == 0:
        del cases["unreadable"]  # root reads any file
    for label, (path, code, words) in cases.items():
        result = runner.invoke(app, eval_args(flowers_root, path, name="bad"))
        assert result.exit_code == code, (label, result.output)
        assert words in " ".join(result.output.split()) and str(path.name) in result.output, label
        assert not (workdir / "output").exists(), label
    assert not (workdir / "pwned.txt").exists()


def test_model_type_conflict_with_the_checkpoint(tiny_run: Path, flowers_root: Path, workdir: Path) -> None:
    result = runner.invoke(app, [*eval_args(flowers_root, tiny_run / "checkpoints" / "ckpt.bin"), "--model_type",
                                 "ViT-B_16"])
    assert result.exit_code == 2 and "conflicts with the checkpoint" in " ".join(result.output.split())


def test_cache_below_the_checkpoints_resolution(tiny_run: Path, flowers_root: Path, workdir: Path) -> None:
    """The checkpoint's img_size (64) is known only once it is read: --cache_size is checked against it then."""
    result = runner.invoke(app, [*eval_args(flowers_root, tiny_run / "checkpoints" / "ckpt.bin"), "--cache_size",
                                 "32"])
    assert result.exit_code == 2 and "--cache_size 32 is below --img_size 64" in " ".join(result.output.split())
    assert not (workdir / "output").exists()


@pytest.mark.parametrize("tag", ["cuda:0", "mps"])
def test_checkpoint_saved_on_another_device_loads_on_cpu(tiny_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, tag: str) -> None:
    state = load_checkpoint(tiny_run / "checkpoints" / "ckpt.bin")
    foreign = tmp_path / f"{tag.replace(':', '')}.bin"
    with monkeypatch.context() as m:  # tag every storage as if it lived on that device
        m.setattr(torch.serialization, "location_tag", lambda storage: tag)
        torch.save(state, foreign)
    with pytest.raises(RuntimeError):
        torch.load(foreign, weights_only=True)  # proves the tag: without map_location this needs the device
    loaded = load_checkpoint(foreign, map_location="cpu")
    assert loaded["model"]["heads.head.weight"].device.type == "cpu"
    assert torch.equal(loaded["model"]["heads.head.weight"], state["model"]["heads.head.weight"])
