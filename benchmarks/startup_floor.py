"""The start-up floor of any flowerkit run: import torch and prefect, run one empty flow.

``benchmarks/startup.py`` times this script against the seed's tiny train command; the target is that
the command takes at most 1.5 times this floor on the same machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # as the flowerkit CLI sets it

import prefect  # noqa: E402
import torch  # noqa: E402, F401


@prefect.task
def empty_task() -> None:
    """Does nothing: the floor counts only Prefect's own task bookkeeping."""


@prefect.flow
def empty_flow() -> None:
    empty_task()


if __name__ == "__main__":
    empty_flow()
