"""The README's option tables come from the config models; this fails when they drift."""

from pathlib import Path

from flowerkit.cli.options import render_option_tables

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_option_tables_match_the_config_models() -> None:
    text = README.read_text()
    assert "<!-- options:train -->" in text and "<!-- options:eval -->" in text
    assert render_option_tables(text) == text, "run: python scripts/update_readme_options.py"
