"""Cache keys that let a re-run of a crashed flow (``--resume``) reuse the task results it already has.

Prefect persists each keyed task result in its result storage: ``PREFECT_LOCAL_STORAGE_PATH``, by default
``$PREFECT_HOME/storage`` (docs/prefect.md). A later task run with the same key returns the stored result
instead of running.

Every key starts with the run's ``run_id`` (the claimed plan's): it is kept by ``--resume`` but new for
every fresh run, so a deleted and re-created run of the same name never reuses another run's results
(those results name files in the old run directory). The rest of each key is what the result depends on,
by content: the checkpoint's sha256, the selection's ids_sha256, the settings that change the numbers.
Keys are computed from paths, hashes and small JSON-able values only; pickled tensors are not stable across
processes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from flowerkit.artifacts.files import sha256_file
from flowerkit.data.selection import Selection
from flowerkit.run.plan import RunPlan


def _run_scoped_key(task: str, plan: RunPlan, *parts: Any) -> str | None:
    """sha256 of (task, run_id, parts); None (no caching) before the run directory is claimed."""
    if plan.claim is None:
        return None
    payload = json.dumps([task, plan.claim.run_id, *parts], sort_keys=True, default=str)
    return f"flowerkit-{task}-{hashlib.sha256(payload.encode()).hexdigest()}"


def _selection_key(selection: Selection) -> list:
    return [selection.root, selection.split, selection.ids_sha256]


def train_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Configuration (hash), device, precision and both selections of this run. None (always run) for a
    distributed run: every process takes part in the train task, even when its training is done (it then
    only loads the last checkpoint), or the other ranks (torchrun's, other machines') would wait for rank 0."""
    plan: RunPlan = parameters["plan"]
    if plan.train_config.world_size > 1:
        return None
    return _run_scoped_key("train", plan, plan.config.config_hash(), plan.device.device, plan.precision,
                           _selection_key(parameters["train_selection"]), _selection_key(parameters["val_selection"]))


def evaluate_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The checkpoint's content, the selection's ids and the settings that change the logits."""
    plan: RunPlan = parameters["plan"]
    checkpoint = Path(parameters["checkpoint"])
    planned = plan.checkpoint
    digest = planned.sha256 if planned is not None and planned.path == checkpoint else None
    if digest is None and not checkpoint.is_file():
        return None  # let the task raise its clear error
    return _run_scoped_key("evaluate", plan, digest or sha256_file(checkpoint),
                           _selection_key(parameters["selection"]), plan.device.device, plan.precision,
                           plan.config.data_pipeline, plan.config.eval_batch_size, parameters.get("held_out"))


def export_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """The evaluation it exports (which carries checkpoint and ids hashes) and the export settings."""
    plan: RunPlan = parameters["plan"]
    trained = parameters.get("trained")
    return _run_scoped_key("export_predictions", plan, parameters["evaluation"],
                           _selection_key(parameters["selection"]), plan.total_steps, plan.config.export_logits,
                           str(plan.layout.tb_dir), trained.selection(plan.layout) if trained else None,
                           parameters.get("held_out"), plan.flow)
