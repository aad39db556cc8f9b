"""Regenerate the docs' CLI reference from the Typer app: `python scripts/update_readme_options.py`.

It rewrites the generated part of docs/reference/cli.md (between `<!-- cli-reference -->` and
`<!-- /cli-reference -->`); `mkdocs build --strict` and tests/test_docs.py fail when the page and the commands
drift apart. (The name is historical: the option tables used to live in the README.)
"""

from pathlib import Path

from flowerkit.cli.readme_tables import GENERATED_PAGES, render_option_tables

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    for page in GENERATED_PAGES:
        path = ROOT / page
        path.write_text(render_option_tables(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"updated {page}")
