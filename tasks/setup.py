"""Tasks that run before the run directory exists: they record the plan's decisions, and write nothing.

The plan decided the device and selected every split's images once (``flowerkit.run.prepare``); these tasks make
those decisions visible as task runs (in the Prefect UI and the run record) and hand them on as typed records.
"""

from __future__ import annotations

import logging

from flowerkit.data.selection import Selection
from flowerkit.device import DeviceChoice
from flowerkit.run.plan import RunPlan, SplitRequest, select
from flowerkit.tasks.common import run_task

log = logging.getLogger("flowerkit")


@run_task("detect_device", retries=0, recorded=False, persist_result=True)
def detect_device(plan: RunPlan) -> DeviceChoice:
    """The device and precision the plan chose, and why."""
    device = plan.device
    log.info("device: %s (%s; %s), %s", device.device, device.name, device.reason, plan.precision)
    return device


# One run per split: the run name says which, so the UI and the dashboard tell them apart.
@run_task("load_subset", recorded=False, task_run_name="load_subset[{request.split}]", persist_result=True)
def load_subset(plan: RunPlan, request: SplitRequest) -> Selection:
    """The images of one split (or its tiny subset) as the plan selected them; the synthetic set, when the
    plan found it not yet generated, is generated once here and then selected (retried on I/O errors)."""
    return plan.selections.get(request.split) or select(plan.config, request)
