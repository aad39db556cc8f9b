"""Tasks that run before the run directory exists: they validate and select, and write nothing."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from flowerkit.data.selection import select_split
from flowerkit.device import detect_device as _detect_device
from flowerkit.tasks.common import retry_unless_user_error


@task(name="detect_device", persist_result=True)
def detect_device(request: str, prefer_mps: bool) -> dict:
    """Pick CPU / CUDA / MPS and say why."""
    choice = _detect_device(request, prefer_mps)
    return {"device": choice.device, "name": choice.name, "reason": choice.reason}


# One run per split: the run name says which, so the UI and the dashboard tell them apart.
@task(name="load_subset", task_run_name="load_subset[{split}]", retries=2, retry_delay_seconds=1,
      retry_condition_fn=retry_unless_user_error, persist_result=True)
def load_subset(dataset: str, data_root: Path | None, split: str, subset: str | None, batch_size: int) -> dict:
    """Resolve the dataset and the image ids of one split (or its tiny subset); retried on I/O errors."""
    return select_split(dataset, data_root, split, subset, batch_size).to_dict()
