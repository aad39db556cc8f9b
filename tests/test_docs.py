"""The README's option tables come from the config models; this fails when they drift."""

from pathlib import Path

from flowerkit.cli.readme_tables import render_option_tables

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_option_tables_match_the_config_models() -> None:
    text = README.read_text()
    assert "<!-- options:train -->" in text and "<!-- options:eval -->" in text
    assert "<!-- options:predict -->" in text and "<!-- options:export -->" in text
    assert render_option_tables(text) == text, "run: python scripts/update_readme_options.py"


def test_artifacts_doc_shows_the_metrics_rows_a_run_writes(tiny_run: Path) -> None:
    import json
    import re

    doc = (README.parent / "docs" / "artifacts.md").read_text()
    documented = {row["kind"]: set(row) for row in map(json.loads, re.findall(r'^\{"kind".*\}$', doc, re.M))}
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    written = {kind: set().union(*(set(r) for r in rows if r["kind"] == kind)) for kind in ("train", "eval")}
    assert documented == written


def test_readme_names_every_task_the_flows_run() -> None:
    from flowerkit.tui.runs_reader import SERVER_TASKS

    text = " ".join(README.read_text().split())
    tasks = {name for flow in ("train", "eval") for name in SERVER_TASKS[flow]}  # the sentence is about those
    assert len(tasks) == 8 and "made of eight small tasks" in text
    assert all(f"`{name}`" in text.split("## Two commands")[0] for name in tasks)
