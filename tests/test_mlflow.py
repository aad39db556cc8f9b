"""MLflow tracking against a real ``mlflow server`` (sqlite backend, local artifact root), read back with
MlflowClient: params, metric histories, artifacts and the logged model of real runs; a server that goes
away mid-run; ``runs sync-mlflow``; and the missing extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.tracking import run_data
from tests.servers import MlflowServer, free_port

# MLflow is imported where it is used: every pytest-xdist process collects this file, and only one runs it.
pytestmark = pytest.mark.skipif(find_spec("mlflow") is None,
                                reason="the mlflow extra is part of the dev install (make setup)")

runner = CliRunner()
TINY = dict(dataset="flower102", model_type="testing", img_size=32, num_steps=6, eval_every=3, train_batch_size=4,
            eval_batch_size=2, tiny_train_subset="flower102_tiny", tiny_infer_subset="flower102_tiny")


@pytest.fixture(scope="module")
def server(mlflow_server: MlflowServer) -> MlflowServer:
    return mlflow_server


@pytest.fixture(autouse=True)
def tracking_env(server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a stopped server fails at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mlflow.set_tracking_uri(server.uri)


def client(server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(server.uri)


def train(flowers_root: Path, output: Path, name: str, **extra):
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.flows.train import train_flow

    config = load_config(TrainConfig, TINY | dict(name=name, data_root=flowers_root, output_dir=output,
                                                  tracker="mlflow") | extra)
    return config, train_flow(config)


def mlflow_entry(run_dir: Path) -> dict:
    return json.loads((run_dir / "run_record.json").read_text())["mlflow"]


def histories(server: MlflowServer, run_id: str) -> dict[str, list[tuple[int, float]]]:
    c = client(server)
    return {key: sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))
            for key in c.get_run(run_id).data.metrics}


def expected_histories(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from flowerkit.run.layout import RunLayout

    found = defaultdict(list)
    for point in run_data.metric_points(RunLayout.for_run(run_dir)):
        found[point.key].append((point.step, point.value))
    return {key: sorted(values) for key, values in found.items()}


def artifact_paths(server: MlflowServer, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for info in client(server).list_artifacts(run_id, path):
        found |= artifact_paths(server, run_id, info.path) if info.is_dir else {info.path}
    return found


@pytest.fixture(scope="module")
def tracked(prefect_harness, server: MlflowServer, flowers_root: Path, tmp_path_factory) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", server.uri)
        _, result = train(flowers_root, tmp_path_factory.mktemp("tracked"), "tracked")
    return Path(result.run_dir)


def test_a_train_run_is_in_mlflow(tracked: Path, server: MlflowServer) -> None:
    entry = mlflow_entry(tracked)
    assert entry["complete"] is True and entry["not_sent"] == [] and entry["error"] is None
    assert entry["url"] == f"{server.uri}/#/experiments/{entry['experiment_id']}/runs/{entry['run_id']}"
    run = client(server).get_run(entry["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert (tracked / "run.log").read_text().count(f"MLflow run {entry['run_id']}") == 1  # said once
    assert client(server).get_experiment(run.info.experiment_id).name == "flowerkit"

    config = yaml.safe_load((tracked / "config_resolved.yaml").read_text())
    assert run.data.params == {k: run_data.param_value(v) for k, v in config.items()}
    assert run.data.params["tracker"] == "mlflow" and run.data.params["num_steps"] == "6"

    record = json.loads((tracked / "run_record.json").read_text())
    stamp = json.loads((tracked / "env_stamp.json").read_text())
    tags = run.data.tags
    assert tags["flowerkit.run_id"] == record["run_id"] and tags["flowerkit.config_hash"] == record["config_hash"]
    assert tags["flowerkit.flow"] == "train" and tags["flowerkit.device"] == record["device"]
    assert tags["flowerkit.git_commit"] == stamp["git_commit"]
    assert tags["flowerkit.checkpoint"] == str((tracked / "checkpoints" / "ckpt.bin").resolve())


def test_metric_histories_equal_metrics_jsonl(tracked: Path, server: MlflowServer) -> None:
    got = histories(server, mlflow_entry(tracked)["run_id"])
    assert got == expected_histories(tracked)
    assert [step for step, _ in got["train/loss"]] == list(range(1, 7))
    assert [step for step, _ in got["val/accuracy"]] == [3, 6]
    assert len([k for k in got if k.startswith("val_per_class/f1/")]) == 102
    assert "val_per_class/f1/000_pink primrose" in got
    assert "val_per_class/f1/019_giant white arum lily" in got


def logged_onnx_model(run_id: str, name: str, folder: Path):
    """The run's logged model ``name``, checked to be an onnx-flavour model with no pickled file; as onnx's
    ModelProto."""
    import mlflow.onnx

    info = mlflow.models.get_model_info(f"runs:/{run_id}/{name}")
    assert set(info.flavors) == {"onnx", "python_function"}, info.flavors  # no pytorch flavour
    assert info.flavors["python_function"]["loader_module"] == "mlflow.onnx"
    assert info.signature is not None and info.saved_input_example_info is not None
    local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{name}", dst_path=str(folder)))
    assert not [p.name for p in local.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".pth", ".pt2")]
    return mlflow.onnx.load_model(f"runs:/{run_id}/{name}")


def test_artifacts_and_model(tracked: Path, server: MlflowServer, tmp_path: Path) -> None:
    """The model is the ONNX export, in MLflow's onnx flavour: no pickle, and no pickle warning."""
    import numpy as np
    import onnxruntime
    import torch

    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.predict.onnx_export import served_model

    run_id = mlflow_entry(tracked)["run_id"]
    paths = artifact_paths(server, run_id)
    assert {"fiftyone/predictions.jsonl", "fiftyone/per_class_metrics.json", "labelmap.json", "metrics.json",
            "env_stamp.json", "RETENTION.txt", "config_resolved.yaml", "val/confusion_matrix.png"} <= paths
    local = Path(client(server).download_artifacts(run_id, "metrics.json", str(tracked.parent / "dl")))
    assert local.read_bytes() == (tracked / "metrics.json").read_bytes()

    proto = logged_onnx_model(run_id, "model", tmp_path)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    side = session.get_inputs()[0].shape[1]
    pixels = np.random.default_rng(0).integers(0, 256, (3, side, side, 3), dtype=np.uint8)
    ours, _ = served_model(load_checkpoint(tracked / "checkpoints" / "ckpt.bin"))
    with torch.no_grad():
        expected = ours(torch.from_numpy(pixels)).numpy()
    assert np.abs(session.run(None, {"pixels": pixels})[0] - expected).max() <= 1e-4
    assert "pickle" not in (tracked / "run.log").read_text().lower()


def test_without_the_onnx_extra_the_model_is_its_weights_alone(tracked: Path, server: MlflowServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from flowerkit import optional
    from flowerkit.tracking.model import log_model

    monkeypatch.setattr(optional, "ONNX", optional.Extra("onnx", ("flowerkit_absent_module",), "ONNX", "onnx"))
    mlflow_client = client(server)
    run_id = mlflow_client.create_run(mlflow_entry(tracked)["experiment_id"], run_name="weights-only").info.run_id
    checkpoint = tracked / "checkpoints" / "ckpt.bin"
    assert log_model(mlflow_client, run_id, checkpoint) == "weights"
    assert artifact_paths(server, run_id) == {"model/ckpt.bin"}
    local = Path(mlflow_client.download_artifacts(run_id, "model/ckpt.bin", str(tracked.parent / "weights")))
    assert local.read_bytes() == checkpoint.read_bytes()


def test_an_onnx_export_is_logged_to_the_runs_mlflow_run(tracked: Path, server: MlflowServer,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "tracked-best.onnx"
    result = runner.invoke(app, ["export", "tracked", "--format", "onnx", "--output_dir", str(tracked.parent),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    entry = mlflow_entry(tracked)
    assert f"Logged to the run's MLflow run as the onnx model onnx-best: {entry['url']}" in result.output
    logged = logged_onnx_model(entry["run_id"], "onnx-best", tmp_path / "dl")
    assert logged.SerializeToString() == out.read_bytes()  # the very file the export wrote


def test_eval_run_links_to_its_training_run(tracked: Path, server: MlflowServer, flowers_root: Path) -> None:
    from flowerkit.run.config import EvalConfig, load_config
    from flowerkit.flows.eval import eval_flow

    config = load_config(EvalConfig, dict(name="tracked_eval", dataset="flower102", data_root=flowers_root,
                                          checkpoint=tracked / "checkpoints" / "ckpt.bin", eval_batch_size=2,
                                          tiny_infer_subset="flower102_tiny", output_dir=tracked.parent,
                                          tracker="mlflow", mlflow_experiment="flowerkit-eval"))
    eval_flow(config)
    entry = mlflow_entry(config.layout.run_dir)
    run = client(server).get_run(entry["run_id"])
    assert entry["complete"] is True and run.data.tags["flowerkit.flow"] == "eval"
    assert run.data.tags[run_data.TRAIN_LINK_TAG] == mlflow_entry(tracked)["run_id"]
    assert client(server).get_experiment(run.info.experiment_id).name == "flowerkit-eval"
    assert "model" not in {p.split("/")[0] for p in artifact_paths(server, entry["run_id"])}
    assert histories(server, entry["run_id"]) == expected_histories(config.layout.run_dir)


def test_dashboard_and_summary_show_the_mlflow_link(tracked: Path) -> None:
    from flowerkit.tui.run_view import summary_line
    from flowerkit.tui.runs_reader import MetricsTail, read_detail

    url = mlflow_entry(tracked)["url"]
    assert f"MLflow: {url}" in summary_line(read_detail(tracked, MetricsTail(tracked / "metrics.jsonl")))


def test_resume_continues_the_same_mlflow_run(prefect_harness, server: MlflowServer, flowers_root: Path,
                                              tmp_path: Path) -> None:
    """A run that failed after training is resumed: one MLflow run, FAILED then FINISHED, no metric twice."""
    from flowerkit.errors import ConfigError
    from flowerkit.flows.train import train_flow
    from flowerkit.tasks import evaluation as tasks_evaluation

    def broken_export(*args, **kwargs):
        raise ConfigError("export refused (test)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks_evaluation, "export_evaluation", broken_export)
        with pytest.raises(ConfigError):
            train(flowers_root, tmp_path, "resumed")
    run_dir = tmp_path / "resumed"
    first = mlflow_entry(run_dir)
    assert client(server).get_run(first["run_id"]).info.status == "FAILED"

    from flowerkit.run.config import TrainConfig, load_config

    config = load_config(TrainConfig, TINY | dict(name="resumed", data_root=flowers_root, output_dir=tmp_path,
                                                  tracker="mlflow"))
    train_flow(config, resume=True)
    entry = mlflow_entry(run_dir)
    assert entry["run_id"] == first["run_id"] and entry["complete"] is True
    assert client(server).get_run(entry["run_id"]).info.status == "FINISHED"
    assert histories(server, entry["run_id"]) == expected_histories(run_dir)


@pytest.mark.slow  # real processes, each importing torch
def test_server_stopped_mid_run_then_sync(prefect_harness, server: MlflowServer, flowers_root: Path,
                                          tmp_path: Path) -> None:
    """The server goes away once the MLflow run is open: training completes, the record says what is missing,
    and ``runs sync-mlflow`` completes the same MLflow run, twice without duplicating a metric."""
    import threading

    output, name = tmp_path / "output", "outage"
    record = output / name / "run_record.json"

    def stop_when_open() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads(record.read_text()).get("mlflow", {}).get("run_id"):
                    server.stop()
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=stop_when_open)
    watcher.start()
    try:
        _, result = train(flowers_root, output, name, num_steps=12)
    finally:
        watcher.join()
        server.start()
    run_dir = Path(result.run_dir)
    assert json.loads(record.read_text())["stage_status"] == "complete"
    entry = mlflow_entry(run_dir)
    assert entry["complete"] is False and entry["error"] and entry["run_id"]
    assert "model" in entry["not_sent"] and "run status" in entry["not_sent"]
    assert "runs sync-mlflow outage" in (run_dir / "run.log").read_text()

    for attempt in range(2):
        synced = runner.invoke(app, ["runs", "sync-mlflow", name, "--output-dir", str(output)])
        assert synced.exit_code == 0, synced.output
        assert entry["run_id"] in synced.output
        assert histories(server, entry["run_id"]) == expected_histories(run_dir), f"sync {attempt + 1}"
    after = mlflow_entry(run_dir)
    assert after["complete"] is True and after["run_id"] == entry["run_id"]
    assert client(server).get_run(entry["run_id"]).info.status == "FINISHED"
    run = client(server).get_run(entry["run_id"])
    models = client(server).search_logged_models([run.info.experiment_id],
                                                 filter_string=f"source_run_id = '{entry['run_id']}'")
    assert len(models) == 1 and run.data.tags[run_data.MODEL_TAG] == "true"  # logged once over two syncs
    verified = runner.invoke(app, ["runs", "verify", name, "--output-dir", str(output)])
    assert verified.exit_code == 0, verified.output


def test_missing_extra_is_exit_2_naming_the_install(tmp_path: Path) -> None:
    """Without MLflow importable, --tracker mlflow is a configuration error; flowerkit itself never needs it."""
    code = ("import sys; sys.modules['mlflow'] = None\n"  # what Python reports for a package that is absent
            "import flowerkit.flows.train, flowerkit.tracking, flowerkit.artifacts.scalars\n"
            "from flowerkit.cli import main\n"
            "sys.argv = ['flowerkit', 'train', '--name', 'x', '--tracker', 'mlflow', '--dry_run']\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join((proc.stdout + proc.stderr).split())
    assert "--tracker" in message and "pip install 'flowerkit[mlflow]'" in message


# --- sweeps, Prefect links, an unreachable server -------------------------------------------------------------
@pytest.fixture(scope="module")
def tracked_sweep(prefect_harness, server: MlflowServer, flowers_root: Path, tmp_path_factory) -> Path:
    """A two-trial sweep whose base tracks with MLflow, run locally (subflows); returns its sweep folder."""
    from flowerkit.flows.sweep import sweep_flow

    folder = tmp_path_factory.mktemp("tracked-sweep")
    base = TINY | {"num_steps": 2, "eval_every": 2, "data_root": str(flowers_root),
                   "output_dir": str(folder / "out"), "tracker": "mlflow", "mlflow_experiment": "flowerkit-sweeps"}
    path = folder / "nest.yaml"
    path.write_text(yaml.safe_dump({"name": "nest", "base": base, "grid": {"seed": [1, 2]}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", server.uri)
        patch.delenv(run_data.PARENT_ENV, raising=False)
        sweep_flow(str(path))
        assert run_data.PARENT_ENV not in os.environ  # the sweep's parent id does not outlive it
    return folder / "out" / "sweeps" / "nest"


def test_a_sweep_is_a_parent_run_with_one_nested_run_per_trial(tracked_sweep: Path, server: MlflowServer) -> None:
    parent_id = json.loads((tracked_sweep / "mlflow.json").read_text())["run_id"]
    parent = client(server).get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "nest"
    assert parent.data.tags["flowerkit.sweep"] == "nest" and parent.data.tags["flowerkit.prefect_flow_run_id"]
    assert client(server).get_experiment(parent.info.experiment_id).name == "flowerkit-sweeps"
    assert artifact_paths(server, parent_id) == {"results.md", "results.json"}
    local = client(server).download_artifacts(parent_id, "results.md", str(tracked_sweep.parent / "dl"))
    assert Path(local).read_text() == (tracked_sweep / "results.md").read_text()
    results = json.loads((tracked_sweep / "results.json").read_text())["trials"]
    assert parent.data.metrics == {"trials": 2.0, "trials_complete": 2.0,
                                   "best_val_accuracy": results[0]["monitor_value"]}
    assert parent.data.tags["flowerkit.best_trial"] == results[0]["trial"]
    ranking = json.loads(Path(client(server).download_artifacts(parent_id, "results.json",
                                                                str(tracked_sweep.parent / "dl"))).read_text())
    assert [row["rank"] for row in ranking["trials"]] == [1, 2]

    children = client(server).search_runs([parent.info.experiment_id],
                                          filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(run.info.run_name for run in children) == ["nest-000", "nest-001"]
    output = tracked_sweep.parent.parent
    for run in children:  # each trial's nested run is the one its own training opened and recorded
        entry = mlflow_entry(output / run.info.run_name)
        assert entry["run_id"] == run.info.run_id and entry["parent_run_id"] == parent_id
        assert entry["complete"] is True and run.info.status == "FINISHED"
        assert run.info.experiment_id == parent.info.experiment_id


def test_rerunning_the_sweep_reopens_the_same_parent(tracked_sweep: Path, server: MlflowServer) -> None:
    from flowerkit.flows.sweep import sweep_flow

    before = json.loads((tracked_sweep / "mlflow.json").read_text())["run_id"]
    rows = sweep_flow(str(tracked_sweep.parent.parent.parent / "nest.yaml"))
    assert {row["action"] for row in rows} == {"skip"}
    assert json.loads((tracked_sweep / "mlflow.json").read_text())["run_id"] == before
    assert client(server).get_run(before).info.status == "FINISHED"


@pytest.mark.slow  # two `flowerkit train` processes, each importing torch
def test_trials_in_processes_nest_too(prefect_harness, server: MlflowServer, flowers_root: Path,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--max_parallel 2: each trial is a `flowerkit train` process, which inherits the parent's id."""
    from flowerkit.flows.sweep import sweep_flow

    base = TINY | {"num_steps": 1, "eval_every": 1, "data_root": str(flowers_root), "output_dir": str(tmp_path),
                   "tracker": "mlflow", "mlflow_experiment": "flowerkit-sweeps"}
    path = tmp_path / "procs.yaml"
    path.write_text(yaml.safe_dump({"name": "procs", "base": base, "grid": {"seed": [3, 4]}}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.delenv(run_data.PARENT_ENV, raising=False)
    sweep_flow(str(path), max_parallel=2)
    parent_id = json.loads((tmp_path / "sweeps" / "procs" / "mlflow.json").read_text())["run_id"]
    from flowerkit.flows.sweep import _current_api_url

    ui = _current_api_url().removesuffix("/api")  # the processes report to this server, named in their env
    for trial in ("procs-000", "procs-001"):
        entry = mlflow_entry(tmp_path / trial)
        assert entry["parent_run_id"] == parent_id and entry["complete"] is True
        tags = client(server).get_run(entry["run_id"]).data.tags
        assert tags["mlflow.parentRunId"] == parent_id
        flow_run_id = json.loads((tmp_path / trial / "run_record.json").read_text())["flow_run_id"]
        assert tags[run_data.PREFECT_URL_TAG] == f"{ui}/runs/flow-run/{flow_run_id}"


def test_pool_trials_get_the_parent_through_job_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowerkit.tracking.sweep_run import trial_job_variables

    monkeypatch.delenv(run_data.PARENT_ENV, raising=False)
    assert trial_job_variables() is None  # outside a tracked sweep: the deployment's own job variables
    monkeypatch.setenv(run_data.PARENT_ENV, "abc123")
    assert trial_job_variables() == {"env": {"MLFLOW_PARENT_RUN_ID": "abc123"}}


def test_prefect_summary_links_the_mlflow_run(tracked: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    entry = mlflow_entry(tracked)
    key = "flowerkit-train-tracked-summary"  # by key: other files' runs fill the session's server meanwhile
    with get_client(sync_client=True) as prefect:
        (summary,) = prefect.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key])))
    assert f"- MLflow run: [{entry['run_id']}]({entry['url']}) (experiment `flowerkit`)" in summary.data


def test_the_mlflow_run_links_the_prefect_flow_run_when_the_ui_is_known(tracked: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from flowerkit.run.layout import RunLayout

    record = json.loads((tracked / "run_record.json").read_text())
    layout = RunLayout.for_run(tracked, record)
    for unset in ("PREFECT_UI_URL", "PREFECT_API_URL"):
        monkeypatch.delenv(unset, raising=False)
    assert run_data.PREFECT_URL_TAG not in run_data.tags(layout, record)  # a temporary server's UI is gone
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    expected = f"http://127.0.0.1:4200/runs/flow-run/{record['flow_run_id']}"
    assert run_data.tags(layout, record)[run_data.PREFECT_URL_TAG] == expected
    monkeypatch.setenv("PREFECT_UI_URL", "https://prefect.example.org/")
    assert run_data.tags(layout, record)[run_data.PREFECT_URL_TAG] == expected.replace(
        "http://127.0.0.1:4200", "https://prefect.example.org")


@pytest.mark.slow  # real processes, each importing torch
def test_an_unreachable_server_is_one_warning_line(prefect_harness, flowers_root: Path, tmp_path: Path) -> None:
    """`flowerkit train --tracker mlflow` against a port nothing listens on, with MLflow's default retries: the
    run completes, and its output has one warning about the tracker and none of urllib3's retry lines."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "PREFECT_API_URL": PREFECT_API_URL.value()}
    flags = [f"--{key}={value}" for key, value in TINY.items()]
    cmd = [sys.executable, "-m", "flowerkit", "train", "--name", "unreachable", "--data_root", str(flowers_root),
           "--output_dir", str(tmp_path), "--tracker", "mlflow", *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "urllib3" not in output and "Retrying" not in output
    warnings = [line for line in output.splitlines() if "WARNING" in line or "Warning" in line]
    assert len(warnings) == 1, "\n".join(warnings)
    assert "MLflow tracking of unreachable" in warnings[0] and "no server answers" in warnings[0]
    assert "sync-mlflow unreachable" in warnings[0]
    entry = mlflow_entry(tmp_path / "unreachable")
    assert entry["complete"] is False and entry["run_id"] is None
