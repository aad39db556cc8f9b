"""Regenerate the README's option tables from the config models: `python scripts/update_readme_options.py`.

tests/test_docs.py fails when the README and the models drift apart.
"""

from pathlib import Path

from flowerkit.cli.readme_tables import render_option_tables

README = Path(__file__).resolve().parent.parent / "README.md"

if __name__ == "__main__":
    README.write_text(render_option_tables(README.read_text()))
    print(f"updated {README}")
