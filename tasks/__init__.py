"""Prefect tasks: thin wrappers over ``flowerkit`` functions that pass paths and small records, never tensors."""

from tasks.evaluation import evaluate, export_predictions
from tasks.provenance import write_retention, write_stamp
from tasks.reporting import publish_results
from tasks.setup import detect_device, load_subset
from tasks.training import train

__all__ = ["detect_device", "evaluate", "export_predictions", "load_subset", "publish_results", "train",
           "write_retention", "write_stamp"]
