"""One source of a run's progress for every front end, and `runs list` fitted to the terminal's width."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flowerkit.cli import app
from flowerkit.run.runs import find_runs, last_train_row, run_progress
from tui.runs_reader import RunsIndex


def killed_run(output: Path, name: str = "killed-mid-way", record_step: int = 0, logged_steps: int = 2) -> Path:
    """A run killed at step ``logged_steps`` of 20 whose record was last written at ``record_step``."""
    run = output / name
    run.mkdir(parents=True)
    record = {"schema_version": 1, "run_id": f"{name}-1", "name": name, "flow": "train", "stage_status": "started",
              "started_utc": "2026-01-15T09:30:00Z", "progress": {"step": record_step, "total_steps": 20},
              "owner": {"host": socket.gethostname(), "pid": 2**22 + 7}, "tasks": {}, "metrics": {}}
    (run / "run_record.json").write_text(json.dumps(record))
    rows = [{"kind": "train", "step": s, "total_steps": 20, "loss": 4.6 - s / 10} for s in range(1, logged_steps + 1)]
    torn = '{"kind": "train", "step": 9'  # the writer died mid-append
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)
    return run


def test_runs_list_runs_show_and_the_dashboard_report_the_same_step(tmp_path: Path) -> None:
    killed_run(tmp_path)
    assert [(r.step, r.total_steps) for r in find_runs(tmp_path)] == [(2, 20)]
    assert [(r.step, r.total_steps) for r in RunsIndex(tmp_path).scan()] == [(2, 20)]
    listed = CliRunner().invoke(app, ["runs", "list", "--output-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "2/20" in listed.output and "0/20" not in listed.output, listed.output
    shown = CliRunner().invoke(app, ["runs", "show", "killed-mid-way", "--output-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "2/20" in shown.output, shown.output


def test_the_later_of_record_and_metrics_wins(tmp_path: Path) -> None:
    run = killed_run(tmp_path, record_step=5, logged_steps=3)  # rows dropped past a checkpoint on resume
    row = last_train_row(run / "metrics.jsonl")
    assert row is not None and row["step"] == 3
    assert run_progress({"progress": {"step": 5, "total_steps": 20}}, row) == (5, 20)
    assert run_progress({"progress": {"step": 1, "total_steps": 20}}, row) == (3, 20)
    assert run_progress({}, None) == (0, 0) and run_progress({}, row) == (3, 20)
    assert last_train_row(tmp_path / "absent.jsonl") is None


@pytest.mark.parametrize("columns", [80, 120])
def test_runs_list_fits_the_terminal_without_wrapping(tmp_path: Path, columns: int) -> None:
    for i, name in enumerate(["flowers-b16-lr0.003-seed42", "short", "sweep-lr-seed-017"]):
        killed_run(tmp_path, name, logged_steps=i + 1)
    listed = CliRunner().invoke(app, ["runs", "list", "--output-dir", str(tmp_path)], env={"COLUMNS": str(columns)})
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.output.splitlines() if line.strip()]
    table = [line for line in lines if not line.startswith("(")]
    assert max(map(len, lines)) <= columns, listed.output
    assert len(table) == 2 + 3, listed.output  # header, rule and one line per run: nothing wrapped
    assert all(name in listed.output for name in ("flowers-b16-lr0.003-seed42", "short", "sweep-lr-seed-017"))
    if columns == 120:
        assert "2026-01-15 09:30" in listed.output and "left out" not in listed.output
    else:
        assert "left out at 80 columns: started (UTC)" in listed.output and "2026-01-15" not in listed.output
        assert "status" in table[0] and "step" in table[0] and "age" in table[0]
