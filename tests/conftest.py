"""Shared fixtures: a generated Flowers-102 in the official layout, an isolated cache, one Prefect harness.

Everything a test writes lives under pytest's tmp folders; nothing touches the user's ~/.cache, ~/.prefect
or ~/.fiftyone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: our logs through Prefect's handlers, no telemetry.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "flowerkit")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Under pytest-xdist, each worker's torch (and the runs it starts) gets its share of the cores: two workers
# each running two threads on two cores spend their time waiting on each other (a 5 s test took 50 s).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

SEED_FLAGS = ["--model_type", "testing", "--img_size", "64", "--num_steps", "10", "--eval_every", "5",
              "--train_batch_size", "4", "--eval_batch_size", "2", "--tiny_train_subset", "flower102_tiny",
              "--tiny_infer_subset", "flower102_tiny", "--prefer_mps"]


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point every cache and state folder of the session at a temporary directory."""
    home = tmp_path_factory.mktemp("home")
    os.environ["FLOWERKIT_CACHE_DIR"] = str(home / "flowerkit-cache")
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    for key in [k for k in os.environ if k.startswith("FLOWERKIT_") and k != "FLOWERKIT_CACHE_DIR"]:
        del os.environ[key]  # a developer's own settings must not leak into tests
    return home


@pytest.fixture(autouse=True)
def no_leaked_server_address():
    """A test that makes the CLI find a local server (its main() sets PREFECT_API_URL for its process) must not
    send every later test to that server once it is gone."""
    before = os.environ.get("PREFECT_API_URL")
    yield
    if os.environ.get("PREFECT_API_URL") != before:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


@pytest.fixture(autouse=True)
def no_temporary_prefect_server():
    """The session's server serves every test: a temporary server started in pytest's own process (the CLI
    does that when it sees no server) costs its start-up for nothing and keeps running to the end."""
    yield
    import sys

    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    running = [server for server in server_module.SubprocessASGIServer._instances.values() if server.running]
    for server in running:
        server.stop()
    assert not running, "this test started Prefect's temporary server in pytest's process; use prefect_harness"


@pytest.fixture(scope="session")
def flowers_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Flowers-102 (3 images per class, 96 px): official files, keys, dtypes and shapes."""
    from flowerkit.data.synth import SynthSpec, generate

    return generate(tmp_path_factory.mktemp("data") / "flower102", SynthSpec(images_per_class=3, size=96, seed=1))


def shared_root(controller_basetemp: Path) -> Path:
    """Where pytest-xdist's workers meet: under the controller's temporary folder, which holds theirs
    (``popen-gw<N>``)."""
    return controller_basetemp / "shared"


def meeting_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What this session's processes share: pytest-xdist's ``shared_root``, or the basetemp without xdist."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return shared_root(tmp_path_factory.getbasetemp().parent)
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="session")
def prefect_database(isolated_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty Prefect database made once per session (tests/servers.py: migrated_database), which
    every test server starts from. The session's PREFECT_HOME gets a copy too, so a temporary server the CLI
    starts itself (the tests of that path) skips the migrations as well."""
    from tests.servers import migrated_database

    database = migrated_database(meeting_root(tmp_path_factory))
    home_database = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    if not home_database.exists():
        home_database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(database, home_database)
    return database


@pytest.fixture(scope="session")
def prefect_server(prefect_database: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real `prefect server start` (SQLite in a temp folder) for the whole session, shared by every
    pytest-xdist worker: flows run in this process, the CLI's subprocesses, workers and deployments all report
    to it. Starting one costs seconds."""
    from tests.servers import PrefectServer

    if os.environ.get("PYTEST_XDIST_WORKER"):
        yield PrefectServer.shared(meeting_root(tmp_path_factory), prefect_database)  # the controller stops it
        return
    server = PrefectServer.start(tmp_path_factory.mktemp("prefect-server"), prefect_database)
    try:
        yield server
    finally:
        server.stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    """In pytest-xdist's controller, once every worker has finished: stop the server they shared."""
    factory = getattr(config, "_tmp_path_factory", None)
    if hasattr(config, "workerinput") or factory is None or getattr(factory, "_basetemp", None) is None:
        return  # a worker, or a run that made no temporary folder (so no worker started a server)
    from tests.servers import stop_shared

    stop_shared(shared_root(factory.getbasetemp()))


@pytest.fixture(scope="session")
def prefect_harness(prefect_server):
    """This process's flows and clients report to the session's Prefect server, as Prefect's own test
    harness points them at its server: also in contexts copied before this fixture (an async test's loop,
    a dashboard's worker threads). Logs and events are drained before the server stops.

    The flows run here as the CLI runs them (``watching`` in flows/orchestration/watcher.py): without
    Prefect's flow heartbeat thread, whose join at the end of every flow run (a sweep's trials included)
    waited up to a second, for nothing: about 40 s of the suite's test time (test_sweeps: 41-55 s, now 28 s)."""
    import prefect.context
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from tests.servers import drain_prefect_workers

    updates = {PREFECT_API_URL: prefect_server.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    with temporary_settings(updates=updates), \
            prefect.context._temporary_global_settings_context(prefect.context.get_settings_context()):
        yield prefect_server
        drain_prefect_workers()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """One real `mlflow server` for the whole session (every module that tracks to MLflow)."""
    pytest.importorskip("mlflow", reason="the mlflow extra is part of the dev install (make setup)")
    from tests.servers import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so a stray .env or output/ of the repo never interferes."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_run(prefect_harness, flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed training command's run, made once per session through the real train flow; returns its dir."""
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.flows.train import train_flow

    out = tmp_path_factory.mktemp("tiny-run-output")
    config = load_config(TrainConfig, dict(
        name="flower_mps", dataset="flower102", data_root=flowers_root, model_type="testing", img_size=64,
        num_steps=10, eval_every=5, train_batch_size=4, eval_batch_size=2, tiny_train_subset="flower102_tiny",
        tiny_infer_subset="flower102_tiny", output_dir=out, prefer_mps=True, test_after=True))
    train_flow(config)
    return config.layout.run_dir


SMALL_MODEL_TYPE = "ViT-small_8"  # tests/small_models.py's shrunk ViT family, registered for the session


@pytest.fixture(scope="session")
def small_run(prefect_harness, flowers_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of a shrunk ViT (patch 8, 48 wide, 2 blocks) at 64 px through the real train flow, with
    --export_logits. Unlike the `testing` model (1 wide: its logits do not depend on the image), its logits
    differ from image to image, so predict/export tests comparing numbers can fail. The 96 px images cap the
    pixel cache at 96 px (not the 2 x 64 rule), so the recorded evaluation transform matters."""
    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.flows.train import train_flow
    from tests.small_models import small_vit_registered

    out = tmp_path_factory.mktemp("small-run-output")
    with small_vit_registered(SMALL_MODEL_TYPE):
        config = load_config(TrainConfig, dict(
            name="small", dataset="flower102", data_root=flowers_root, model_type=SMALL_MODEL_TYPE, img_size=64,
            num_steps=10, eval_every=5, train_batch_size=8, eval_batch_size=4, learning_rate=0.1,
            tiny_train_subset="flower102_tiny", tiny_infer_subset="flower102_tiny", output_dir=out,
            export_logits=True, pretrained=None))
        train_flow(config)
        yield config.layout.run_dir


REAL_PROCESS_MARKS = ("slow", "prefect_server", "distributed")
# `make test-fast` runs the tests marked `fast` (`-m fast`): every test that carries none of these markers and
# needs none of these fixtures, which start a server or a process of their own (the session's Prefect server,
# and through it prefect_harness, tiny_run and small_run; the MLflow server). A new test joins the tier by
# itself unless it uses one of them, or starts a real process importing torch (then it is marked `slow`).
HEAVY_MARKS = ("slow", "prefect_server", "distributed", "fiftyone", "cuda")
HEAVY_FIXTURES = ("prefect_database", "mlflow_server")


def is_fast(item: pytest.Item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    return not any(item.get_closest_marker(m) for m in HEAVY_MARKS) and not any(f in fixtures
                                                                                for f in HEAVY_FIXTURES)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: the `fast` marker is there to be selected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the `fast` tier. Under pytest-xdist (``make test``), files go to the workers whole and in collection
    order: hand out the files with the most real-process tests first, so that no long file starts last while
    the other workers sit idle. A plain ``pytest`` keeps the files' order."""
    for item in items:
        if is_fast(item):
            item.add_marker(pytest.mark.fast)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    weight: dict[Path, int] = {}
    for item in items:
        weight[item.path] = weight.get(item.path, 0) + any(item.get_closest_marker(m) for m in REAL_PROCESS_MARKS)
    items.sort(key=lambda item: -weight[item.path])  # stable: tests keep their order in a file
