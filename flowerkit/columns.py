"""How the front ends fit text to a terminal's width: columns left out by priority, names shortened in the middle.

``flowerkit runs list`` and the dashboard's runs list leave columns out in the same way; the run name is the one
thing no front end cuts at its end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.cells import cell_len, set_cell_size

ELLIPSIS = "…"


def fit_columns(headers: Sequence[str], drop_order: Sequence[str],
                fits: Callable[[list[str]], bool]) -> tuple[list[str], list[str]]:
    """The headers to keep and those left out: while ``fits(kept)`` is false, the next column of ``drop_order``
    (least useful first) is left out. Columns not named there are always kept, even if they still do not fit."""
    keep, dropped = list(headers), []
    for name in drop_order:
        if fits(keep):
            break
        if name in keep:
            keep.remove(name)
            dropped.append(name)
    return keep, dropped


def shorten_middle(text: str, width: int) -> str:
    """``text`` within ``width`` cells, its middle replaced by "…" when too long.

    A run name's start says what it is and its end which one (a time stamp, a trial number), so both are kept;
    a name cut at its end ("tiny-predict-2026...") would hide the part that tells runs apart.
    """
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:max(width, 0)]
    tail = (width - 1) // 2
    head = width - 1 - tail
    return set_cell_size(text, head) + ELLIPSIS + set_cell_size(text[::-1], tail)[::-1]
