"""`flowerkit runs show` renders a run's record as sections, read back from a real run."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flowerkit.cli import app


def test_runs_show_renders_sections_not_json(tiny_run: Path) -> None:
    record = json.loads((tiny_run / "run_record.json").read_text())
    shown = CliRunner().invoke(app, ["runs", "show", tiny_run.name, "--output-dir", str(tiny_run.parent)],
                               terminal_width=100)
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert not any(line.lstrip().startswith(("{", "}", '"')) for line in text.splitlines())  # no raw JSON
    for section in (f"run '{tiny_run.name}'", "tasks", "metrics", "files", "configuration"):
        assert section in text
    assert record["run_id"] in text and record["config_hash"] in text and "complete" in text
    assert f"{record['metrics']['accuracy']:.4f}" in text and all(task in text for task in record["tasks"])
    assert "--num_steps" in text and f"{len(record['artifact_index'])} with sha256" in text
    selection = record["selection"]
    assert f"{selection['selected_step']} ({selection['selected_weights']})" in text  # the selected checkpoint
    assert f"{selection['monitor']} {selection['monitor_value']:.4f}" in text and "selected checkpoint" in text
