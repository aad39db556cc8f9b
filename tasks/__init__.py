"""Prefect tasks: thin wrappers over ``flowerkit`` functions that pass paths and small records, never tensors.

The tasks are imported on first use (``from flowerkit.tasks import train``), so the package's light modules
(``watcher``, ``crashed_runs``) start without torch or the flows' imports.
"""

from importlib import import_module
from typing import Any

_MODULE_OF = {"detect_device": "setup", "load_subset": "setup", "train": "training", "evaluate": "evaluation",
              "export_predictions": "evaluation", "write_stamp": "provenance", "write_retention": "provenance",
              "publish_results": "reporting", "write_predict_stamp": "provenance",
              "predict_images": "prediction"}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
