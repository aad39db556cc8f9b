"""`flowerkit runs show` renders a run's record as sections, read back from a real run, within 80 columns."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flowerkit.cli import app


def squeezed(text: str) -> str:
    """The text without spaces, line ends and table rules: a value wrapped inside its cell reads whole again."""
    return "".join(c for c in text if not c.isspace() and c not in "│┃")


def test_runs_show_renders_sections_not_json_within_80_columns(tiny_run: Path) -> None:
    record = json.loads((tiny_run / "run_record.json").read_text())
    shown = CliRunner().invoke(app, ["runs", "show", tiny_run.name, "--output_dir", str(tiny_run.parent)],
                               env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    text, flat = shown.output, squeezed(shown.output)
    assert max(map(len, text.splitlines())) <= 80, "\n".join(line for line in text.splitlines() if len(line) > 80)
    assert not any(line.lstrip().startswith(("{", "}", '"')) for line in text.splitlines())  # no raw JSON
    for section in (f"run '{tiny_run.name}'", "tasks", "metrics", "files", "configuration"):
        assert section in text
    assert record["run_id"] in flat and record["config_hash"] in flat and "complete" in text
    assert f"{record['metrics']['accuracy']:.4f}" in text and all(task in text for task in record["tasks"])
    assert "--num_steps" in text and f"{len(record['artifact_index'])}withsha256" in flat
    assert str(tiny_run.absolute()) in flat and "checkpoints/best.bin" in text  # whole, then inside the run
    selection = record["selection"]
    assert squeezed(f"{selection['selected_step']} ({selection['selected_weights']})") in flat  # the selected one
    assert squeezed(f"{selection['monitor']} {selection['monitor_value']:.4f}") in flat
    assert "selected checkpoint" in text
