"""Prefect tasks: thin wrappers over ``flowerkit`` functions that pass paths and small records, never tensors."""

from flowerkit.tasks.evaluation import evaluate, export_predictions
from flowerkit.tasks.provenance import write_retention, write_stamp
from flowerkit.tasks.reporting import publish_results
from flowerkit.tasks.setup import detect_device, load_subset
from flowerkit.tasks.training import train

__all__ = ["detect_device", "evaluate", "export_predictions", "load_subset", "publish_results", "train",
           "write_retention", "write_stamp"]
