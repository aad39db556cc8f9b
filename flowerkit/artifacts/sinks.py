"""Where a run's scalars go besides its own files: a sink, such as an experiment tracker (``flowerkit.tracking``).

``ScalarLog`` writes TensorBoard events and ``metrics.jsonl``, then fans the same values out to the sink it was
given. The protocol lives here, below both, so the artifact writers know nothing of MLflow: the flow opens the
tracker and hands its sink down to the tasks that log scalars.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class ScalarSink(Protocol):
    """What ``ScalarLog`` sends a tracker: the values it writes to TensorBoard, under the same tags and steps."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def per_class(self, step: int, rows: list[dict[str, Any]], prefix: str) -> None: ...

    def image(self, tag: str, pixels: np.ndarray, step: int) -> None: ...
