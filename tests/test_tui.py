"""The dashboard (``tui/``), driven headlessly with Textual's pilot, on run directories in the documented format.

Fixture runs are written by ``write_run`` (fixed timestamps and values, so snapshots are stable); one test
launches a real tiny training run from the form through the real CLI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import SEED_FLAGS
from flowerkit.tui.app import DashboardApp
from flowerkit.tui.runs_reader import MetricsTail, RunsIndex

STARTED = "2026-01-15T09:30:00Z"
CLASSES = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"]
GAMMA_RECIPE = {"optimizer": "adamw", "learning_rate": 0.001, "ema_decay": 0.998}
TRAIN_TASKS = ["detect_device", "load_subset", "train", "evaluate", "export_predictions", "write_stamp",
               "write_retention"]


def train_rows(steps: int, total: int, loss0: float = 4.6) -> list[dict[str, Any]]:
    rows = []
    for step in range(1, steps + 1):
        rows.append({"kind": "train", "step": step, "total_steps": total, "loss": round(loss0 - 0.05 * step, 4),
                     "lr": round(0.03 * (1 - step / total), 5), "time_utc": STARTED, "elapsed_s": step * 0.1})
        if step % 5 == 0:
            rows.append({"kind": "eval", "step": step, "total_steps": total, "loss": round(loss0 - 0.04 * step, 4),
                         "accuracy": 0.05 * step, "top5_accuracy": 0.1 * step, "macro_f1": 0.03 * step,
                         "time_utc": STARTED, "elapsed_s": step * 0.1})
    return rows


def resolved_config(name: str, output: Path, recipe: dict[str, Any]) -> str:
    """config_resolved.yaml as a train run writes it: every option, the recipe's on top of the defaults."""
    from flowerkit.run.config import TrainConfig, load_config

    options = {"dataset": "flower102_synthetic", "model_type": "testing", "img_size": 64, "num_steps": 10}
    return load_config(TrainConfig, {**options, **recipe, "name": name, "output_dir": output}).resolved_yaml()


def write_run(output: Path, name: str, *, status: str = "complete", step: int = 10, total: int = 10,
              tasks_done: int = 7, retrying: str | None = None, evaluated: bool = True,
              device: str = "cpu", loss0: float = 4.6, recipe: dict[str, Any] | None = None,
              selection: dict[str, Any] | None = None, distributed: dict[str, Any] | None = None) -> Path:
    """A run directory as the flows leave it (docs/artifacts.md), with fixed timestamps.

    A complete, evaluated run has selected its last evaluation (raw weights, val_accuracy) unless
    ``selection`` says otherwise; ``distributed`` is the record's multi-process entry (absent: one process).
    """
    run = output / name
    (run / "fiftyone").mkdir(parents=True)
    tasks = {t: {"state": "completed", "attempt": 1, "updated_utc": STARTED} for t in TRAIN_TASKS[:tasks_done]}
    if retrying:
        tasks[retrying] = {"state": "retrying", "attempt": 2, "updated_utc": STARTED}
    rows = train_rows(step, total, loss0)
    final = [r for r in rows if r["kind"] == "eval"][-1] if evaluated else {}
    metrics = {k: final[k] for k in ("loss", "accuracy", "top5_accuracy", "macro_f1")} if evaluated else {}
    record = {"schema_version": 1, "run_id": f"{name}-20260115T093000Z-abc123", "name": name, "flow": "train",
              "flow_run_id": None, "stage_status": status, "stage": "train", "started_utc": STARTED,
              "ended_utc": STARTED if status in ("complete", "failed") else None, "config_hash": "0" * 64,
              "device": device, "progress": {"step": step, "total_steps": total}, "tasks": tasks,
              "metrics": metrics, "determinism": {}, "error": None, "artifact_index": []}
    if status == "complete" and evaluated:
        record["selection"] = {"selected_step": final["step"], "selected_checkpoint": f"{name}/checkpoints/best.bin",
                               "selected_weights": "raw", "monitor": "val_accuracy",
                               "monitor_value": final["accuracy"], "last_step": step, "stopped_early": False,
                               "stop_reason": None} | (selection or {})
        record["metrics"] |= record["selection"]  # metrics.json carries the selection too
    if distributed is not None:
        record["distributed"] = distributed
    (run / "run_record.json").write_text(json.dumps(record))
    (run / "config_resolved.yaml").write_text(resolved_config(name, output, recipe or {}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "run.log").write_text("".join(f"2026-01-15 09:30:0{i} INFO flowerkit: line {i}\n" for i in range(5)))
    if evaluated:
        f1s = [0.8, 0.1, 0.5, 0.3]
        per_class = {"classes": [{"class_id": i, "class_name": c, "precision": f, "recall": f, "f1": f, "support": 2}
                                 for i, (c, f) in enumerate(zip(CLASSES, f1s))], "accuracy": 0.5, "macro_f1": 0.425}
        (run / "fiftyone" / "per_class_metrics.json").write_text(json.dumps(per_class))
        predictions = [(0, 0, 0.9), (1, 2, 0.7), (2, 3, 0.95), (3, 1, 0.4)]
        (run / "fiftyone" / "predictions.jsonl").write_text("".join(json.dumps(
            {"sample_id": f"image_{i:05d}", "image_id": i, "label": label, "label_name": CLASSES[label],
             "prediction": pred, "prediction_name": CLASSES[pred], "confidence": conf}) + "\n"
            for i, (label, pred, conf) in enumerate(predictions, start=1)))
    return run


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio


@pytest.fixture
def output(workdir: Path) -> Path:
    """Three runs: a finished one, one still training (torn last metrics line) with a retrying task, another."""
    out = Path("output")  # relative, so the header (and the snapshots) do not show a tmp path
    write_run(out, "alpha")
    beta = write_run(out, "beta", status="running", step=7, total=20, tasks_done=2, retrying="train",
                     evaluated=False)
    with open(beta / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "step": 8, "tot')  # the writer is mid-append
    # Another recipe (AdamW, a lower rate, EMA), whose EMA weights were selected.
    write_run(out, "gamma", device="cuda:0", loss0=4.8, recipe=GAMMA_RECIPE,
              selection={"selected_weights": "ema", "monitor_value": 0.55})
    (out / "tb" / "alpha").mkdir(parents=True)  # TensorBoard's folder is not a run
    return out


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the app run (its workers and timers) until ``condition`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the dashboard did not reach the expected state in time"
        await pilot.pause(0.1)


def table_rows(app: DashboardApp) -> dict[str, list[str]]:
    table = app.screen.query_one("RunsTable")
    return {str(key.value): [str(c) for c in table.get_row(key)] for key in table.rows}


def test_reader_keeps_last_row_per_step_and_waits_for_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1, "loss": 2.0}\n{"kind": "train", "step": 2, "loss": 1.5}\n'
                    '{"kind": "train", "step": 2, "loss": 1.4}\n{"kind": "train", "st')
    tail = MetricsTail(path)
    assert tail.poll()
    assert [(r["step"], r["loss"]) for r in tail.rows("train")] == [(1, 2.0), (2, 1.4)]
    with open(path, "a") as fh:
        fh.write('ep": 3, "loss": 1.0}\n')
    assert tail.poll()
    assert [r["step"] for r in tail.rows("train")] == [1, 2, 3]
    assert not tail.poll()


def test_index_lists_runs_with_status(output: Path) -> None:
    runs = {r.name: r for r in RunsIndex(output).scan()}
    assert sorted(runs) == ["alpha", "beta", "gamma"]
    assert (runs["alpha"].status, runs["alpha"].accuracy, runs["alpha"].loss) == ("complete", 0.5, 4.1)
    assert (runs["beta"].status, runs["beta"].step, runs["beta"].total_steps) == ("retrying", 7, 20)
    assert runs["gamma"].device == "cuda:0"


def test_runs_list_cli_reads_runs_as_the_dashboard_does(output: Path) -> None:
    from flowerkit.cli import app as cli
    from flowerkit.run.runs import find_runs

    (output / ".launch").mkdir()
    (output / ".launch" / "run_record.json").write_text("{}")  # the dashboard's launch logs are not a run
    (output / "delta").mkdir()
    (output / "delta" / "run_record.json").write_text('{"name": "del')  # records are written atomically: damaged
    expected = {"alpha": "complete", "beta": "retrying", "gamma": "complete", "delta": "damaged"}
    assert {r.name: r.status for r in find_runs(output)} == expected
    assert {r.name: r.status for r in RunsIndex(output).scan()} == expected
    listed = CliRunner().invoke(cli, ["runs", "list", "--output-dir", str(output)])
    assert listed.exit_code == 0 and "retrying" in listed.output, listed.output


@pytest.mark.anyio
async def test_list_shows_runs_and_follows_them_live(output: Path) -> None:
    app = DashboardApp(output, refresh_s=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        rows = table_rows(app)
        assert rows["alpha"][1:] == ["alpha", "train", "complete", "cpu", "10/10", "4.1000", "0.500", "01-15 09:30"]
        assert rows["beta"][3:6] == ["retrying", "cpu", "7/20"]

        # The torn line is completed and a step appended by "another process": no key press needed.
        with open(output / "beta" / "metrics.jsonl", "a") as fh:
            fh.write('al_steps": 20, "loss": 4.2, "lr": 0.01}\n')
            fh.write(json.dumps({"kind": "train", "step": 9, "total_steps": 20, "loss": 4.15, "lr": 0.01}) + "\n")
        await wait_for(pilot, lambda: table_rows(app)["beta"][5] == "9/20")
        assert table_rows(app)["beta"][6] == "4.1500"

        # A run started elsewhere after the dashboard opened appears; one that is deleted goes, without a crash.
        write_run(output, "delta")
        await wait_for(pilot, lambda: "delta" in table_rows(app))
        import shutil

        shutil.rmtree(output / "gamma")
        await wait_for(pilot, lambda: "gamma" not in table_rows(app))


@pytest.mark.anyio
async def test_enter_opens_run_view_with_its_numbers(output: Path) -> None:
    app = DashboardApp(output, refresh_s=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        await pilot.press("enter")  # the cursor starts on the first run, alpha
        await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        screen = app.screen
        summary = str(screen.query_one("#summary").render())
        assert "alpha" in summary and "step 10/10" in summary and "loss 4.1000" in summary
        assert "eval acc 0.500 @ 10" in summary
        bar = screen.query_one("ProgressBar")
        assert (bar.progress, bar.total) == (10, 10)
        tasks = screen.query_one("TasksTable")
        assert [str(tasks.get_row_at(i)[1]) for i in range(tasks.row_count)] == ["completed"] * 7
        per_class = screen.query_one("PerClassTable")
        assert [per_class.get_row_at(i)[3] for i in range(4)] == ["0.100", "0.300", "0.500", "0.800"]
        await pilot.press("s")
        assert per_class.get_row_at(0)[0] == "0 pink primrose"
        worst = screen.query_one("WorstTable")
        assert [worst.get_row_at(i)[0] for i in range(worst.row_count)] == ["image_00003", "image_00002",
                                                                            "image_00004"]
        assert worst.get_row_at(0)[1:] == ["canterbury bells", "sweet pea", "0.950"]
        await pilot.press("escape")
        assert type(app.screen).__name__ == "RunsScreen"


@pytest.mark.anyio
async def test_run_view_shows_retrying_task_with_attempt(output: Path) -> None:
    app = DashboardApp(output, refresh_s=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        tasks = app.screen.query_one("TasksTable")
        states = {str(tasks.get_row_at(i)[0]): (str(tasks.get_row_at(i)[1]), tasks.get_row_at(i)[2])
                  for i in range(tasks.row_count)}
        assert states["train"] == ("retrying", "2")
        assert states["evaluate"] == ("pending", "-")
        assert "No evaluation yet." in str(app.screen.query_one("#classes-empty").render())


@pytest.mark.anyio
async def test_compare_shows_marked_runs_side_by_side(output: Path) -> None:
    app = DashboardApp(output, refresh_s=0.1)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        await pilot.press("c")
        assert type(app.screen).__name__ == "RunsScreen"  # fewer than two marked: a warning, no screen
        await pilot.press("space", "down", "space", "c")
        await wait_for(pilot, lambda: app.screen.query_one("DataTable").row_count > 0)
        table = app.screen.query_one("DataTable")
        assert [str(c.label) for c in table.columns.values()] == ["run", "alpha", "beta"]
        rows = compare_rows(table)
        assert rows["val accuracy"] == ["0.5000", "0.2500"]  # beta is still training: its last evaluation
        assert rows["steps"] == ["10/10", "7/20"]
        assert rows["selected step"] == ["10 (raw)", "-"]  # beta has selected nothing yet


def compare_rows(table) -> dict[str, list[str]]:
    """The compare table as {row label: [one cell per run]}, cells as plain text."""
    rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
    return {row[0]: row[1:] for row in rows}


@pytest.mark.anyio
async def test_compare_puts_differing_recipe_options_beside_what_each_run_selected(output: Path) -> None:
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_compare(pilot)  # alpha (SGD, the defaults) and gamma (AdamW, lower rate, EMA)
        table = app.screen.query_one("CompareTable")
        rows = compare_rows(table)
        assert rows["selected step"] == ["10 (raw)", "10 (ema)"]
        assert rows["monitor"] == ["val_accuracy", "val_accuracy"]
        assert rows["monitored value"] == ["0.5000", "0.5500"]
        assert rows["val accuracy"] == ["0.5000", "0.5000"] and rows["test accuracy"] == ["-", "-"]
        # Only the recipe options that differ, as each run's config_resolved.yaml has them; never the run's
        # own name or paths, which always differ.
        options = [label for label in rows if label.startswith("--")]
        assert options == ["--learning_rate", "--optimizer", "--ema_decay"]  # declaration order
        assert rows["--optimizer"] == ["sgd", "adamw"] and rows["--learning_rate"] == ["0.03", "0.001"]
        assert rows["--ema_decay"] == ["0", "0.998"]
        # The best monitored value (val_accuracy: higher is better) is marked: the recipe that won.
        winner = table.get_cell("monitored value", "gamma")
        assert winner.style == "bold green" and not hasattr(table.get_cell("monitored value", "alpha"), "style")
        # The recipe rows are on screen at 80x24 without scrolling, right under the outcome.
        labels = list(rows)
        assert labels.index("--ema_decay") < 14


@pytest.mark.anyio
async def test_run_view_shows_the_selected_checkpoint_and_the_processes(output: Path) -> None:
    from flowerkit.tui.run_view import RunScreen

    write_run(output, "ddp", distributed={"world_size": 2, "backend": "gloo", "per_rank_batch": 8, "nnodes": 1},
              selection={"selected_step": 5, "monitor_value": 0.25, "stopped_early": True,
                         "stop_reason": "no improvement of val_accuracy in 1 evaluations"})
    write_run(output, "solo", distributed={"world_size": 1, "backend": "none", "per_rank_batch": 16, "nnodes": 1})
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        for name, expected in [
            ("ddp", ["selected step 5 (raw)  val_accuracy 0.2500  stopped early", "processes: 2 x gloo, 8 per rank"]),
            ("solo", ["selected step 10 (raw)  val_accuracy 0.5000"]),  # one process: nothing to say
            ("alpha", ["selected step 10 (raw)  val_accuracy 0.5000"]),  # recorded before `distributed`
            ("beta", []),  # still training: nothing selected yet
        ]:
            await app.push_screen(RunScreen(output / name))
            await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
            await pilot.pause(0.1)
            summary = str(app.screen.query_one("#summary").render()).splitlines()
            assert summary[2:] == expected and all(len(line) <= 78 for line in summary), summary
            await pilot.press("escape")


def write_sweep(output: Path, name: str, trials: list[tuple[dict[str, Any], float | None]]) -> list[str]:
    """A sweep's folder as ``flowerkit sweep`` writes it (trials.json) and a run per trial; a trial scored
    None has not started (no run directory). Returns the trials' names."""
    from flowerkit.run.layout import SweepLayout

    entries = []
    for index, (values, score) in enumerate(trials):
        trial = f"{name}-{index:03d}"
        if score is not None:
            write_run(output, trial, recipe=values, selection={"monitor_value": score})
        entries.append({"index": index, "name": trial, "values": values, "config_hash": "0" * 64})
    layout = SweepLayout(output, name)
    layout.trials.parent.mkdir(parents=True)
    layout.trials.write_text(json.dumps({"sweep": name, "trials": entries}))
    return [entry["name"] for entry in entries]


@pytest.mark.anyio
async def test_sweep_trials_are_grouped_filtered_ranked_and_compared(output: Path) -> None:
    write_sweep(output, "lr", [({"learning_rate": 0.01}, 0.6), ({"learning_rate": 0.03}, 0.8),
                               ({"learning_rate": 0.1}, 0.4), ({"learning_rate": 0.3}, None)])
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: "sweep:lr" in table_rows(app))
        # All runs: the sweep's trials together, under the sweep's own row.
        rows = table_rows(app)
        assert list(rows) == ["alpha", "beta", "gamma", "sweep:lr", "lr-000", "lr-001", "lr-002"]
        assert rows["sweep:lr"][1:4] == ["lr", "sweep", "3/4 done"]
        assert "w picks a sweep" in str(screen.query_one("#hint").render())

        # w: only this sweep's trials, best val_accuracy first (the order of `flowerkit runs list --sweep`).
        await pilot.press("w")
        await wait_for(pilot, lambda: list(table_rows(app)) == ["lr-001", "lr-000", "lr-002"])
        assert str(screen.query_one("#hint").render()).startswith(
            "sweep lr: 3/4 trials, best val_accuracy first; c compares")
        assert screen.sub_title == f"{output} (sweep lr)"

        # c with nothing marked compares every trial, ranked, with the value each sets.
        await pilot.press("c")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CompareScreen")
        table = app.screen.query_one("CompareTable")
        await wait_for(pilot, lambda: table.row_count > 0)
        assert [str(c.label) for c in table.columns.values()] == ["run", "lr-001", "lr-000", "lr-002"]
        rows = compare_rows(table)
        assert rows["rank"] == ["1", "2", "3"] and rows["monitored value"] == ["0.8000", "0.6000", "0.4000"]
        assert [label for label in rows if label.startswith("--")] == ["--learning_rate"]
        assert rows["--learning_rate"] == ["0.03", "0.01", "0.1"]
        assert table.get_cell("monitored value", "lr-001").style == "bold green"

        # Back: escape leaves compare, then the filter; enter on the sweep's row filters again.
        await pilot.press("escape")
        assert app.screen is screen and screen.sweep == "lr"
        await pilot.press("escape")
        await wait_for(pilot, lambda: "alpha" in table_rows(app))
        assert screen.sweep is None and screen.sub_title == str(output)
        table = screen.query_one("RunsTable")
        table.move_cursor(row=list(table_rows(app)).index("sweep:lr"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: list(table_rows(app)) == ["lr-001", "lr-000", "lr-002"])
        await pilot.press("w")  # the only sweep: w comes back round to every run
        await wait_for(pilot, lambda: "alpha" in table_rows(app))


@pytest.mark.anyio
async def test_w_without_sweeps_says_how_to_start_one(output: Path) -> None:
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        await pilot.press("w")
        await pilot.pause(0.1)
        assert app.screen.sweep is None and len(table_rows(app)) == 3
        assert any("No sweeps under" in str(n.message) for n in app._notifications)


async def fill(pilot, screen, values: dict[str, str]) -> None:
    """Type into each field as a user would (the form scrolls to a focused field)."""
    for name, text in values.items():
        field = screen.query_one(f"#train-{name}")
        field.focus()
        field.value = ""
        await pilot.press(*text)


@pytest.mark.anyio
async def test_launch_form_rejects_negative_steps_with_the_cli_message(output: Path) -> None:
    from flowerkit.cli import app as cli

    result = CliRunner().invoke(cli, ["train", "--name", "neg", "--num_steps", "-3", "--output_dir", str(output)])
    assert result.exit_code == 2
    app = DashboardApp(output, refresh_s=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await fill(pilot, app.screen, {"name": "neg", "num_steps": "-3"})
        await pilot.press("ctrl+s")
        message = str(app.screen.query_one("#error").render())
        assert "--num_steps: Input should be greater than 0 (got -3)" in message
        assert " ".join(message.split()) in " ".join(result.output.split())
        assert type(app.screen).__name__ == "LaunchScreen" and not (output / "neg").exists()


@pytest.mark.slow
@pytest.mark.anyio
async def test_launch_starts_a_real_run_that_completes(prefect_harness, output: Path, flowers_root: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL

    # The launched run reports to the session's Prefect server (as it would to a team's), which also spares
    # it starting an ephemeral one; the dashboard then reads task states from that server's API.
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    flags = dict(zip(SEED_FLAGS[0::2], SEED_FLAGS[1::2]))  # all but the trailing --prefer_mps switch
    app = DashboardApp(output, refresh_s=0.3)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("n")
        form = app.screen
        for option, value in [("name", "launched"), ("data_root", str(flowers_root))] + list(flags.items()):
            form.query_one(f"#train-{option.removeprefix('--')}").value = value
        form.query_one("#train-prefer_mps").value = "true"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunsScreen")
        await wait_for(pilot, lambda: "launched" in table_rows(app), timeout=5)  # at once, before its record
        launched = app.launched["launched"]
        try:
            await wait_for(pilot, lambda: table_rows(app)["launched"][3] in ("complete", "failed"), timeout=90)
        finally:
            if launched.process.poll() is None:
                launched.process.kill()
        assert table_rows(app)["launched"][3] == "complete", launched.log_path.read_text()[-2000:]
        assert table_rows(app)["launched"][5] == "10/10"
        await wait_for(pilot, lambda: launched.process.returncode is not None)  # reaped while the app runs
    from flowerkit.run.prepare import load_plan

    planned = load_plan(Path(launched.process.args[-1]))  # `flowerkit run PLAN`: the form's values, planned once
    assert planned.config.prefer_mps and planned.config.num_steps == int(flags["--num_steps"])


@pytest.mark.anyio
async def test_launch_form_offers_every_option_grouped(output: Path) -> None:
    from flowerkit.run.config import CONFIG_CLASSES

    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        for flow, cls in CONFIG_CLASSES.items():
            form = app.screen.query_one(f"#form-{flow}")
            offered = {w.id.removeprefix(f"{flow}-") for w in form.query("Input, Select")}
            assert offered == set(cls.model_fields) - {"output_dir"}  # runs go to the dashboard's output dir
            headings = [str(h.render()) for h in form.query(".group")]
            groups = {f.json_schema_extra["group"] for n, f in cls.model_fields.items() if n != "output_dir"}
            assert sorted(headings) == sorted(groups)  # each group once: its fields are together
        # A switch reads as plain text, and can be left blank (the config's sources decide).
        switch = app.screen.query_one("#train-prefer_mps")
        assert switch.prompt == "default: false" and [str(o[0]) for o in switch._options[1:]] == ["true", "false"]


@pytest.mark.anyio
async def test_launch_form_shows_the_environments_values_as_the_defaults(output: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A blank field takes what FLOWERKIT_* gives the run, as the CLI would: the form shows that, not the
    model's default (it showed ViT-B_16 and 224 px while the launched run trained ViT-Ti/16 at 32 px)."""
    monkeypatch.setenv("FLOWERKIT_MODEL_TYPE", "ViT-Ti_16")
    monkeypatch.setenv("FLOWERKIT_PREFER_MPS", "true")
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        assert app.screen.query_one("#train-model_type").placeholder == "ViT-Ti_16 (environment)"
        assert app.screen.query_one("#train-prefer_mps").prompt == "default: true (environment)"
        assert app.screen.query_one("#train-img_size").placeholder == "224"  # not set: the model's default


@pytest.mark.anyio
async def test_launch_form_first_tab_lands_on_the_first_field(output: Path) -> None:
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("tab")
        assert app.focused is not None and app.focused.id == "train-name"


@pytest.mark.anyio
async def test_launch_form_refuses_a_missing_data_root_as_the_cli_does(output: Path) -> None:
    from flowerkit.cli import app as cli

    missing = str(Path("no-such-folder").absolute())
    result = CliRunner().invoke(cli, ["train", "--name", "nodata", "--data_root", missing,
                                      "--output_dir", str(output)])
    assert result.exit_code == 3
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await fill(pilot, app.screen, {"name": "nodata", "data_root": missing})
        await pilot.press("ctrl+s")
        message = " ".join(str(app.screen.query_one("#error").render()).split())
        assert message and message in " ".join(result.output.split())
        assert type(app.screen).__name__ == "LaunchScreen" and not app.launched
        assert not (output / "nodata").exists()


@pytest.mark.anyio
async def test_launch_form_offers_resume_only_for_an_existing_run(output: Path) -> None:
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        row = app.screen.query_one("#resume-row")
        assert not row.display
        await fill(pilot, app.screen, {"name": "beta"})  # a run of the fixture, still running
        assert row.display
        await fill(pilot, app.screen, {"name": "alpha"})  # complete: nothing to resume
        assert not row.display
        await fill(pilot, app.screen, {"name": "fresh"})
        assert not row.display


def test_launcher_sends_resume_to_the_run(output: Path) -> None:
    """The plan the dashboard writes for a launch carries --resume (an incomplete run of that name exists)."""
    from flowerkit.tui.launcher import plan_run

    from flowerkit.run.config import TrainConfig, load_config

    values = {"name": "again", "dataset": "flower102_synthetic", "num_steps": 3}
    assert not plan_run("train", values, output).resume
    config_hash = load_config(TrainConfig, {**values, "output_dir": output}).config_hash()
    (output / "again").mkdir()
    (output / "again" / "run_record.json").write_text(json.dumps({"stage_status": "failed",
                                                                  "config_hash": config_hash}))
    assert plan_run("train", values, output, resume=True).resume


@pytest.mark.anyio
async def test_a_launched_process_is_reaped_while_the_dashboard_runs(output: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from flowerkit.tui.launcher import LaunchedRun

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        app.track(LaunchedRun("short", "train", process, tmp_path / "short.log", STARTED))
        await wait_for(pilot, lambda: process.returncode is not None)
        assert not Path(f"/proc/{process.pid}").exists() or "Z" not in Path(f"/proc/{process.pid}/stat").read_text()


def write_photo(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (80, 60), (200, 40, 120)).save(path)
    return path


@pytest.mark.anyio
async def test_predict_key_explains_a_run_without_a_checkpoint_as_the_cli_does(output: Path) -> None:
    from flowerkit.cli import app as cli

    photo = str(write_photo(Path("photos") / "rose.jpg"))
    result = CliRunner().invoke(cli, ["predict", photo, "--run", "alpha", "--output_dir", str(output)])
    assert result.exit_code == 3
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_run_view(pilot)  # alpha: a fixture run, which wrote no checkpoint files
        await pilot.press("p")
        assert type(app.screen).__name__ == "RunScreen"
        shown = [" ".join(str(n.message).split()) for n in app._notifications]
        assert shown and shown[-1] in " ".join(result.output.split())


@pytest.mark.slow
@pytest.mark.anyio
async def test_predict_a_folder_from_the_run_view_records_a_predict_run(prefect_harness, output: Path,
                                                                        tiny_run: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from flowerkit.cli import app as cli_app
    from flowerkit.run.config import PredictRunConfig

    monkeypatch.setenv("PREFECT_API_URL", prefect_harness.url)  # the session's server: no temporary one
    shutil.copytree(tiny_run, output / tiny_run.name)
    photos = [write_photo(Path("photos") / f"p{i}.png") for i in range(3)]
    app = DashboardApp(output, refresh_s=0.3)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: tiny_run.name in table_rows(pilot.app))
        table = app.screen.query_one("RunsTable")
        table.move_cursor(row=table.get_row_index(tiny_run.name))
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        await pilot.press("p")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "PredictScreen")
        form = app.screen
        assert form.query_one("#predict-name").value.startswith(f"{tiny_run.name}-predict-")
        offered = {w.id.removeprefix("predict-") for w in form.query("Input, Select")}
        assert offered == set(PredictRunConfig.model_fields) - {"run", "checkpoint", "output_dir"}

        # A folder that does not exist is refused with the CLI's message, and nothing starts.
        form.query_one("#predict-inputs").value = "no-such-folder"
        form.query_one("#predict-name").value = "scored"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not form.query_one("#predict").disabled)
        refused = " ".join(str(form.query_one("#error").render()).split())
        cli = CliRunner().invoke(cli_app, ["predict", "no-such-folder", "--run", tiny_run.name, "--name", "scored",
                                           "--output_dir", str(output)])
        assert cli.exit_code == 3 and refused in " ".join(cli.output.split())
        assert not app.launched and not (output / "scored").exists()

        form.query_one("#predict-inputs").value = "photos"
        form.query_one("#predict-top_k").value = "2"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RunScreen", timeout=30)
        launched = app.launched["scored"]
        await pilot.press("escape")
        try:
            await wait_for(pilot, lambda: table_rows(app).get("scored", [""] * 4)[3] in ("complete", "failed"),
                           timeout=90)
        finally:
            if launched.process.poll() is None:
                launched.process.kill()
        assert table_rows(app)["scored"][2:4] == ["predict", "complete"], launched.log_path.read_text()[-2000:]
    rows = [json.loads(line) for line in (output / "scored" / "fiftyone" / "predictions.jsonl").open()]
    assert sorted(Path(row["filepath"]).name for row in rows) == [p.name for p in photos]
    assert all(len(row["top_k"]) == 2 for row in rows)


def test_predict_form_values_reach_the_run_as_given(tmp_path: Path) -> None:
    """The form's values, with a switch on and a folder named like an option, are the run's config as given."""
    from flowerkit.tui.launcher import predict_config

    values = {"name": "scored", "inputs": "-odd folder", "tta": True, "export_logits": False, "top_k": 3,
              "retention_days": 120}
    config = predict_config("trained", values, tmp_path)
    assert config.inputs == ["-odd folder"]
    assert (config.run, config.name, config.tta, config.export_logits, config.top_k,
            config.retention_days) == ("trained", "scored", True, False, 3, 120)


def snapshot_app(output: Path) -> DashboardApp:
    return DashboardApp(output, refresh_s=30)  # one read on open; the fixture does not change


async def open_list(pilot) -> None:
    await wait_for(pilot, lambda: len(table_rows(pilot.app)) == 3)


async def open_run_view(pilot) -> None:
    await open_list(pilot)
    await pilot.press("enter")
    await wait_for(pilot, lambda: getattr(pilot.app.screen, "detail", None) is not None)
    await pilot.pause(0.2)


async def open_compare(pilot) -> None:
    await open_list(pilot)
    await pilot.press("space", "down", "down", "space", "c")
    await wait_for(pilot, lambda: pilot.app.screen.query_one("DataTable").row_count > 0)
    # Rows widen their columns when the table next idles: a busy machine can take a snapshot before that.
    await wait_for(pilot, lambda: pilot.app.screen.query_one("DataTable").ordered_columns[0].content_width
                   >= len("final train loss"))
    await pilot.pause(0.2)


SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_list(snap_compare, output: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_app(output), terminal_size=size, run_before=open_list)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_run_view(snap_compare, output: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_app(output), terminal_size=size, run_before=open_run_view)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_compare(snap_compare, output: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_app(output), terminal_size=size, run_before=open_compare)


def snapshot_sweep(output: Path) -> DashboardApp:
    write_sweep(output, "lr", [({"learning_rate": 0.01, "seed": 1}, 0.6), ({"learning_rate": 0.03, "seed": 1}, 0.8),
                               ({"learning_rate": 0.1, "seed": 2}, 0.4), ({"learning_rate": 0.3, "seed": 2}, None)])
    return snapshot_app(output)


async def open_grouped_list(pilot) -> None:
    await wait_for(pilot, lambda: "sweep:lr" in table_rows(pilot.app))
    await pilot.pause(0.2)


async def open_sweep(pilot) -> None:
    await open_grouped_list(pilot)
    await pilot.press("w")
    await wait_for(pilot, lambda: list(table_rows(pilot.app)) == ["lr-001", "lr-000", "lr-002"])
    await pilot.pause(0.2)


async def open_sweep_compare(pilot) -> None:
    await open_sweep(pilot)
    await pilot.press("c")
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "CompareScreen"
                   and pilot.app.screen.query_one("CompareTable").row_count > 0)
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_sweep_grouped(snap_compare, output: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_sweep(output), terminal_size=size, run_before=open_grouped_list)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_sweep(snap_compare, output: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_sweep(output), terminal_size=size, run_before=open_sweep)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "120x40"])
def test_snapshot_sweep_compare(snap_compare, output: Path, size: tuple[int, int]) -> None:
    assert snap_compare(snapshot_sweep(output), terminal_size=size, run_before=open_sweep_compare)


def test_a_launch_writes_its_plan_for_the_real_cli(tmp_path: Path) -> None:
    """What a launch runs is `flowerkit run PLAN` on the plan built from the form (a switch off included), and
    the CLI reads that plan back as it was written."""
    from typer.main import get_command

    from flowerkit.cli import app
    from flowerkit.run.prepare import load_plan
    from flowerkit.tui.launcher import launch_command, plan_run

    values = {"name": "parsed", "dataset": "flower102_synthetic", "prefer_mps": False, "num_steps": 3}
    plan = plan_run("train", values, tmp_path / "out")
    plan_file = tmp_path / "parsed.plan.json"
    plan_file.write_text(plan.to_json())
    args = launch_command(plan_file)[3:]  # drop `python -m flowerkit`
    parsed = get_command(app).commands[args[0]].make_context(args[0], args[1:]).params
    assert load_plan(parsed["plan_file"]) == plan
    assert (plan.config.name, plan.config.prefer_mps, plan.config.num_steps) == ("parsed", False, 3)


@pytest.mark.anyio
async def test_classes_tab_breaks_ties_by_class_id_as_a_number(output: Path) -> None:
    ids_f1 = [(100, 0.5), (16, 0.5), (19, 0.5), (2, 0.5), (5, 0.1)]
    (output / "alpha" / "fiftyone" / "per_class_metrics.json").write_text(json.dumps({"classes": [
        {"class_id": i, "class_name": f"class {i}", "precision": f, "recall": f, "f1": f, "support": 1}
        for i, f in ids_f1]}))
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        table = app.screen.query_one("PerClassTable")
        order = lambda: [str(table.get_row_at(i)[0]).split()[0] for i in range(table.row_count)]  # noqa: E731
        assert order() == ["5", "2", "16", "19", "100"]  # worst F1 first, ties by id: 2 < 16 < 19 < 100
        await pilot.press("s")
        assert order() == ["2", "16", "19", "100", "5"]


@pytest.mark.anyio
async def test_run_view_at_80x24_keeps_its_header_and_wraps_log_lines(output: Path) -> None:
    long_line = "2026-01-15 09:30:09 INFO flowerkit: " + "word " * 20 + "THE-END"
    with open(output / "alpha" / "run.log", "a") as fh:
        fh.write(long_line + "\n")
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        summary = str(app.screen.query_one("#summary").render()).splitlines()
        assert len(summary) == 3 and all(len(line) <= 78 for line in summary), summary
        assert summary[0] == "alpha  train complete on cpu  step 10/10"
        assert summary[1] == "loss 4.1000  lr 0.00000  eval acc 0.500 @ 10  started 01-15 09:30 UTC"
        assert summary[2] == "selected step 10 (raw)  val_accuracy 0.5000"
        app.screen.query_one("TabbedContent").active = "log"
        await pilot.pause(0.3)
        shown = [strip.text.rstrip() for strip in app.screen.query_one("#log-view").lines]
        assert any(line.endswith("THE-END") for line in shown) and max(map(len, shown)) <= 80


def test_tasks_from_the_server_name_the_split_and_list_pending_ones(tiny_run: Path) -> None:
    from flowerkit.tui.prefect_states import fetch_task_states, with_pending
    from flowerkit.tui.runs_reader import flow_run_id

    states = fetch_task_states(flow_run_id(tiny_run))
    names = [name for name, _, _ in states]
    assert names.count("load_subset[train]") == names.count("load_subset[val]") == 1
    assert "load_subset" not in names and all(state == "completed" for _, state, _ in states)
    assert with_pending(states, "train") == states  # nothing left to run
    started = [s for s in states if s[0] in ("detect_device", "load_subset[train]")]
    pending = with_pending(started, "train")[len(started):]
    assert [name for name, _, _ in pending] == ["train", "evaluate", "export_predictions", "write_stamp",
                                                "write_retention", "publish_results"]
    assert {state for _, state, _ in pending} == {"pending"}


@pytest.mark.anyio
async def test_tasks_tab_shows_split_labels_as_text(output: Path) -> None:
    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: len(table_rows(app)) == 3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "detail", None) is not None)
        app.screen.query_one("TabbedContent").active = "tasks"
        app.screen.query_one("TasksTable").show([("load_subset[train]", "completed", 1)])
        await pilot.pause(0.3)
        assert "load_subset[train]" in app.export_screenshot().replace("&#160;", " ")


@pytest.mark.anyio
async def test_a_read_that_lands_after_the_run_view_closed_is_dropped(output: Path) -> None:
    """The view re-reads in a thread; escape can close it while a read is in flight, whose result then
    arrives at a screen without widgets. It must be dropped, not crash the dashboard."""
    from flowerkit.tui.runs_reader import metrics_tail, read_detail

    app = DashboardApp(output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_run_view(pilot)
        view = app.screen
        detail = read_detail(view.run_dir, metrics_tail(view.run_dir))
        await pilot.press("escape")
        view._show(detail, "run_record.json")  # what call_from_thread delivers while the close goes on
        view._gone()
        await pilot.pause()
        view._show(detail, "run_record.json")  # and once the screen is gone
        assert type(app.screen).__name__ == "RunsScreen"


# Names as long as real ones: a recipe and seed in a train run's, `RUN-predict-TIME` in a predict run's (the
# predict form's suggestion). At 80x24 the list, the header and the run view show each whole or shortened in the
# middle, and every status stays in view.
LONG_TRAIN = "vit-ti16-flowers-modern-recipe-seed-7"
LONG_PREDICT = f"{LONG_TRAIN}-predict-20260115T093000"


def write_predict_run(output: Path, name: str) -> Path:
    """A predict run's directory as ``flowerkit predict --run R --name N`` leaves it (docs/artifacts.md): two
    photos named alike in two folders, one below --min_confidence, a file that is no image, one file skipped."""
    run = output / name
    (run / "fiftyone").mkdir(parents=True)
    tasks = {t: {"state": "completed", "attempt": 1, "updated_utc": STARTED}
             for t in ("predict_images", "write_stamp", "write_retention")}
    record = {"schema_version": 1, "run_id": f"{name}-20260115T093000Z-abc123", "name": name, "flow": "predict",
              "flow_run_id": None, "stage_status": "complete", "stage": "write_retention", "started_utc": STARTED,
              "ended_utc": STARTED, "config_hash": "0" * 64, "device": "cpu",
              "progress": {"step": 3, "total_steps": 3}, "tasks": tasks, "determinism": {}, "error": None,
              "metrics": {"inputs": 3, "predicted": 2, "failed": 1, "unknown": 1, "skipped": 1},
              "artifact_index": []}
    (run / "run_record.json").write_text(json.dumps(record))
    rows = [{"sample_id": "photo_000001", "filepath": "/photos/a/broken.jpg",
             "error": "broken.jpg is not an image file Pillow can read (JPEG, PNG, WebP, BMP, GIF, TIFF, HEIC)."},
            {"sample_id": "photo_000002", "filepath": "/photos/a/rose.jpg", "prediction": 0,
             "prediction_name": CLASSES[0], "confidence": 0.91, "unknown": False},
            {"sample_id": "photo_000003", "filepath": "/photos/b/rose.jpg", "prediction": 3,
             "prediction_name": CLASSES[3], "confidence": 0.42, "unknown": True}]
    (run / "fiftyone" / "predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run / "run.log").write_text("2026-01-15 09:30:00 INFO flowerkit: 2 of 3 image(s) predicted, 1 could not be.\n")
    return run


@pytest.fixture
def named_output(workdir: Path) -> Path:
    """A train run and a predict run of its model, both with long names."""
    out = Path("output")
    write_run(out, LONG_TRAIN)
    write_predict_run(out, LONG_PREDICT)
    return out


def screen_lines(app: DashboardApp) -> list[str]:
    """The screen as a person sees it, line by line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def shows_name(line: str, name: str) -> bool:
    """The name is on the line whole, or with its middle replaced by "…": its start and end kept, not cut."""
    for word in line.split():
        head, _, tail = word.partition("…")
        if word == name or (head and tail and name.startswith(head) and name.endswith(tail)):
            return True
    return False


async def open_named_list(pilot) -> None:
    await wait_for(pilot, lambda: len(table_rows(pilot.app)) == 2)
    await pilot.pause(0.2)


async def open_named_run(pilot, row: int) -> None:
    await open_named_list(pilot)
    await open_run_view_at(pilot, row)


async def open_run_view_at(pilot, row: int) -> None:
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "RunsScreen")
    pilot.app.screen.query_one("RunsTable").move_cursor(row=row)
    await pilot.press("enter")
    await wait_for(pilot, lambda: getattr(pilot.app.screen, "detail", None) is not None)
    await pilot.pause(0.2)


def test_a_long_name_keeps_its_start_and_end() -> None:
    from flowerkit.columns import shorten_middle

    assert shorten_middle(LONG_PREDICT, len(LONG_PREDICT)) == LONG_PREDICT
    assert shorten_middle(LONG_PREDICT, 21) == "vit-ti16-f…115T093000"
    assert [len(shorten_middle(LONG_PREDICT, width)) for width in (1, 2, 16)] == [1, 2, 16]


@pytest.mark.anyio
async def test_at_80x24_no_name_is_cut_and_every_status_is_in_view(named_output: Path) -> None:
    app = DashboardApp(named_output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_named_list(pilot)
        lines = screen_lines(app)
        labels = lines[1].split()  # each column whole or left out: never "s" for "started UTC"
        assert set(labels) <= {"name", "flow", "status", "device", "step", "loss", "acc", "started", "UTC"}, lines
        assert ("started" in labels) == ("UTC" in labels) and "status" in labels, lines
        for name in (LONG_TRAIN, LONG_PREDICT):
            line = next(line for line in lines[2:4] if shows_name(line, name))
            assert "complete" in line, lines
        for row, name in enumerate((LONG_TRAIN, LONG_PREDICT)):
            await open_run_view_at(pilot, row)
            lines = screen_lines(app)
            assert shows_name(lines[0], name) and shows_name(lines[1], name) and "complete" in lines[1], lines
            assert not lines[1].rstrip().endswith("…"), lines
            await pilot.press("escape")


@pytest.mark.anyio
async def test_compare_shortens_long_names_in_the_middle(named_output: Path) -> None:
    from flowerkit.tui.formatting import NAME_MIN

    app = DashboardApp(named_output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_named_list(pilot)
        await pilot.press("space", "down", "space", "c")
        await wait_for(pilot, lambda: pilot.app.screen.query_one("DataTable").row_count > 0)
        labels = [str(column.label) for column in app.screen.query_one("CompareTable").columns.values()]
        assert [shows_name(label, name) for label, name in zip(labels[1:], (LONG_TRAIN, LONG_PREDICT))] == [True] * 2
        assert all(NAME_MIN <= len(label) < 20 for label in labels[1:]), labels  # as wide as the values below


@pytest.mark.anyio
async def test_a_narrower_terminal_shortens_the_header_s_name_in_the_middle(named_output: Path) -> None:
    app = DashboardApp(named_output, refresh_s=30)
    async with app.run_test(size=(120, 24)) as pilot:
        await open_named_run(pilot, 1)
        assert "flowerkit dashboard" in screen_lines(app)[0] and shows_name(screen_lines(app)[0], LONG_PREDICT)
        await pilot.resize_terminal(60, 24)
        await pilot.pause(0.3)
        header = screen_lines(app)[0]
        assert shows_name(header, LONG_PREDICT) and LONG_PREDICT not in header, header
        assert shows_name(screen_lines(app)[1], LONG_PREDICT) and "complete" in screen_lines(app)[1]


@pytest.mark.anyio
async def test_a_predict_run_view_shows_its_counts_and_rows_not_training_plots(named_output: Path) -> None:
    app = DashboardApp(named_output, refresh_s=30)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_named_run(pilot, 1)
        screen = app.screen
        summary = str(screen.query_one("#summary").render()).splitlines()
        assert summary[1] == "predicted 2 of 3  errors 1  skipped 1  unknown 1  started 01-15 09:30 UTC"
        tabs = screen.query_one("TabbedContent")
        shown = [pane for pane in ("plots", "rows", "tasks", "log", "classes", "worst")
                 if tabs.get_tab(pane).display]
        assert (shown, tabs.active) == (["rows", "tasks", "log"], "rows")
        table = screen.query_one("PredictedTable")
        rows = [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]
        assert [row[0] for row in rows] == ["a/broken.jpg", "a/rose.jpg", "b/rose.jpg"]  # from the shared folder
        assert rows[1:] == [["a/rose.jpg", "pink primrose", "0.910"], ["b/rose.jpg", "sweet pea?", "0.420"]]
        assert rows[0][1].startswith("broken.jpg is not an image") and rows[0][2] == "-"
        await pilot.pause()
        keys = {active.binding.action for active in screen.active_bindings.values()}
        assert "sort_f1" not in keys and "predict" not in keys and "refresh" in keys  # nothing there to sort


@pytest.mark.parametrize("row", [0, 1], ids=["train", "predict"])
def test_snapshot_long_named_run_view(snap_compare, named_output: Path, row: int) -> None:
    async def open_run(pilot) -> None:
        await open_named_run(pilot, row)

    assert snap_compare(snapshot_app(named_output), terminal_size=(80, 24), run_before=open_run)


def test_snapshot_long_named_list(snap_compare, named_output: Path) -> None:
    assert snap_compare(snapshot_app(named_output), terminal_size=(80, 24), run_before=open_named_list)
