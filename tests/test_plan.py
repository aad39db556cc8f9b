"""The run's plan: built once, written to the run folder as plan.json, and read back as an equal plan."""

from __future__ import annotations

import json
from pathlib import Path

from flowerkit.artifacts.record import read_record
from flowerkit.run.config import EvalConfig, PredictRunConfig, TrainConfig, load_config
from flowerkit.run.plan import RunPlan
from flowerkit.run.prepare import load_plan, prepare_plan
from flowerkit.predict.run import PredictRunPlan, prepare_predict_run

CLAIM = {"run_id": "planned-20261207T000000Z-abcdef", "started_utc": "2026-12-07T00:00:00Z"}


def round_trip(plan, tmp_path: Path):
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    return load_plan(path)


def test_a_train_plan_loads_back_equal(flowers_root: Path, tmp_path: Path) -> None:
    config = load_config(TrainConfig, dict(name="planned", dataset="flower102", data_root=flowers_root,
                                           model_type="testing", img_size=64, num_steps=4, eval_every=2,
                                           train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
                                           tiny_infer_subset="flower102_tiny", output_dir=tmp_path / "out",
                                           test_after=True))
    plan = prepare_plan("train", config, resume=False).claimed(CLAIM)
    loaded = round_trip(plan, tmp_path)
    assert isinstance(loaded, RunPlan) and isinstance(loaded.config, TrainConfig)
    assert loaded == plan
    assert set(loaded.selections) == {"train", "val", "test"} and loaded.run_id == CLAIM["run_id"]


def test_an_eval_plan_holds_its_checkpoint_hash_and_loads_back_equal(tiny_run: Path, flowers_root: Path,
                                                                     tmp_path: Path) -> None:
    config = load_config(EvalConfig, dict(name="planned-eval", dataset="flower102", data_root=flowers_root,
                                          checkpoint=tiny_run / "checkpoints" / "ckpt.bin",
                                          tiny_infer_subset="flower102_tiny", output_dir=tmp_path / "out"))
    plan = prepare_plan("eval", config, resume=False)
    assert plan.checkpoint is not None and len(plan.checkpoint.sha256) == 64
    assert round_trip(plan, tmp_path) == plan


def test_a_predict_plan_holds_no_model_and_loads_back_equal(tiny_run: Path, flowers_root: Path,
                                                            tmp_path: Path) -> None:
    config = PredictRunConfig(name="planned-predict", inputs=[str(flowers_root / "jpg")],
                              checkpoint=tiny_run / "checkpoints" / "ckpt.bin", output_dir=tmp_path / "out")
    plan = prepare_predict_run(config)
    assert plan.predict.backend is None  # a recorded run's task loads the model; the plan only read it
    assert plan.predict.model.sha256 is not None
    loaded = round_trip(plan.claimed(CLAIM), tmp_path)
    assert isinstance(loaded, PredictRunPlan) and loaded == plan.claimed(CLAIM)


def test_every_run_folder_has_its_plan_indexed(tiny_run: Path) -> None:
    record = read_record(tiny_run)
    plan = load_plan(tiny_run / "plan.json")
    assert plan.flow == "train" and plan.run_id == record["run_id"]
    assert plan.claim is not None and plan.claim.started_utc == record["started_utc"]
    indexed = {entry["relative_path"] for entry in record["artifact_index"]}
    assert f"{tiny_run.name}/plan.json" in indexed
    assert json.loads((tiny_run / "plan.json").read_text())["config"]["name"] == "flower_mps"

