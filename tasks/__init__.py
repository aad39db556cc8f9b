"""Prefect tasks: thin wrappers over ``flowerkit`` functions that pass the run's plan, paths and small records,
never tensors. Each is declared once, with ``tasks.common.run_task``.

``FLOW_TASKS`` is the one list of the tasks each flow runs, in order (by task name): the flows run them, the
dashboard shows the ones a run has not reached yet as pending, and the docs name them.
"""

FLOW_TASKS: dict[str, tuple[str, ...]] = {
    "train": ("detect_device", "load_subset", "train", "evaluate", "export_predictions", "write_stamp",
              "write_retention", "publish_results"),
    "eval": ("detect_device", "load_subset", "evaluate", "export_predictions", "write_stamp", "write_retention",
             "publish_results"),
    "predict": ("predict_images", "write_stamp", "write_retention", "publish_results"),
}
# Run before the run directory exists: the record lists them as done once it does.
PLANNING_TASKS = ("detect_device", "load_subset")
# Publishes to the Prefect UI after the record's last update: the record does not list it.
UNRECORDED_TASKS = ("publish_results",)


def recorded_tasks(flow: str) -> list[str]:
    """The tasks of ``flow`` that its run record tracks, in order."""
    return [name for name in FLOW_TASKS.get(flow, ()) if name not in UNRECORDED_TASKS]
