"""A rich table that fits the terminal: whole cells on one line, columns dropped by priority when too wide."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from flowerkit.columns import fit_columns

UNLIMITED = 10_000  # a console this wide never wraps: what the table needs when nothing is squeezed


def fitted_table(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int,
                 drop_order: Sequence[str] = ()) -> tuple[Table, list[str]]:
    """A rule-less table of ``rows`` no wider than ``width``, and the headers it left out.

    Wrapped dates, ages or names are harder to read than a missing column, so no cell ever wraps: while the
    table is too wide, the next column of ``drop_order`` (least useful first) is left out. Columns not named
    there are always kept (the table may then still be wider than ``width``, and the terminal wraps it).
    """
    keep, dropped = fit_columns(headers, drop_order,
                                lambda kept: _natural_width(_table(headers, rows, kept)) <= width)
    return _table(headers, rows, keep), dropped


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], keep: list[str]) -> Table:
    index = [headers.index(name) for name in keep]
    table = Table(*keep, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in table.columns:
        column.no_wrap = True
    for row in rows:
        table.add_row(*(row[i] for i in index))
    return table


def _natural_width(table: Table) -> int:
    out = io.StringIO()
    Console(file=out, width=UNLIMITED, color_system=None).print(table)
    return max((len(line.rstrip()) for line in out.getvalue().splitlines()), default=0)
