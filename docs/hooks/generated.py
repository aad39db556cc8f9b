"""MkDocs hook: the generated parts of the docs must match what generates them.

docs/reference/cli.md is generated from the Typer app (flowerkit/cli/readme_tables.py). When the committed
page differs from what the commands give now, the build warns, so `mkdocs build --strict` (and the test suite,
which runs it) fails, naming the command that regenerates it; the site itself always shows the current
commands.
"""

from __future__ import annotations

import logging

from flowerkit.cli.readme_tables import GENERATED_PAGES, render_option_tables

log = logging.getLogger("mkdocs.plugins.flowerkit")


def on_page_markdown(markdown, page, config, files):
    if f"docs/{page.file.src_uri}" not in GENERATED_PAGES:
        return markdown
    generated = render_option_tables(markdown)
    if generated != markdown:
        log.warning("docs/%s is stale: the commands changed since it was generated. Run: python "
                    "scripts/update_readme_options.py", page.file.src_uri)
    return generated
