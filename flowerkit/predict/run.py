"""A recorded predict run: the plan of ``flowerkit predict ... --name NAME`` and the files it writes.

``prepare_predict_run`` checks that the run can be claimed and prepares the predict plan (inputs, model,
device) once, before Prefect starts; the ``predict`` flow then claims OUTPUT_DIR/NAME with the same lifecycle
as train and eval runs and streams the rows into its ``fiftyone/predictions.jsonl``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flowerkit.artifacts.files import atomic_write, atomic_write_json
from flowerkit.run.config import PredictRunConfig
from flowerkit.device import DeviceChoice, detect_device
from flowerkit.errors import MissingInputError
from flowerkit.run.layout import RunLayout
from flowerkit.run.plan import Plan
from flowerkit.predict.inputs import STDIN, iter_inputs, peek_stdin, stdin_lines
from flowerkit.predict.plan import PredictOptions, PredictPlan, prepare_predict
from flowerkit.predict.rows import RowWriter
from flowerkit.predict.runner import PredictSummary, require_predictions, run_predictions
from flowerkit.run.rundir import check_claimable

FLOW = "predict"


@dataclass(frozen=True, kw_only=True)
class PredictRunPlan(Plan):
    """A recorded predict run's plan: its config and the prepared predict plan (inputs, model, options).

    A predict run is never resumed (it is short: run it again under another name), and its total is 0 steps
    because the number of images is known only once the inputs have been streamed.
    """

    config: PredictRunConfig
    predict: PredictPlan
    flow: str = FLOW
    precision: str = "fp32"  # the predict backends run the model in fp32
    # Lines of standard input (-) the plan's check read (it can be read once only): the run reads them first.
    stdin_read_ahead: tuple[str, ...] = ()

    @property
    def resumable(self) -> bool:
        return False

    def process_facts(self) -> dict[str, Any]:
        """One process taking its images a batch at a time."""
        return {"world_size": 1, "backend": "none", "per_rank_batch": self.config.batch_size, "nnodes": 1}

def prepare_predict_run(config: PredictRunConfig, workers: int = 0) -> PredictRunPlan:
    """Check the run name is free, then validate inputs and model (read once for its sha256 and what it says
    about itself; the predict task loads it). Raises FlowerkitError.

    ``workers`` (decoding threads) is not part of the config: it changes how fast, never what is predicted.
    """
    check_claimable(config, resume=False)  # exit 4 before the model is read
    read_ahead = check_something_to_predict(config.inputs)
    device = detect_device(config.device)
    options = PredictOptions(config.top_k, config.min_confidence, config.tta, config.export_logits,
                             config.batch_size, workers)
    plan = prepare_predict(config.inputs, run=config.run, checkpoint=config.checkpoint, output_dir=config.output_dir,
                           device=device, options=options, load=False)
    return PredictRunPlan(config=config, predict=plan, device=device, stdin_read_ahead=read_ahead)


def check_something_to_predict(inputs: list[str]) -> tuple[str, ...]:
    """MissingInputError (exit 3) when no input names a file to try (a missing or empty folder, a glob that
    matches nothing, standard input listing no existing path): a recorded run that could only fail is not
    started. Stops at the first file found. Unreadable files still get their error rows in the run. Returns the
    lines of standard input read here, which the run reads first (the plan's ``stdin_read_ahead``)."""
    errors: list[str] = []
    kept: list[str] = []
    for item in iter_inputs(inputs, stdin=peek_stdin(kept) if STDIN in inputs else None):
        if item.error is None and item.skipped is None:
            return tuple(kept)
        if item.error is not None:
            errors.append(item.error.rstrip("."))
    if not errors:
        errors.append("standard input (-) lists no path" if STDIN in inputs else "the inputs name no file")
    raise MissingInputError(f"Nothing to predict: {'; '.join(errors[:3])}. Give a folder holding images, image "
                            "files or a glob that matches some; the run was not started.")


def write_predictions(plan: PredictPlan, target: Path, stdin_read_ahead: tuple[str, ...] = ()) -> PredictSummary:
    """Stream every row into ``target`` (jsonl) through a temporary sibling renamed at the end: a failure, or
    no image predicted (MissingInputError), leaves no file. ``stdin_read_ahead``: the lines of standard input
    a check before the run read (they come first)."""
    result: list[PredictSummary] = []

    def write(fh: IO[bytes]) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        writer = RowWriter(text, "jsonl")
        stdin = stdin_lines(stdin_read_ahead) if STDIN in plan.inputs else None
        result.append(require_predictions(run_predictions(plan, writer.write, stdin)))
        text.flush()
        text.detach()  # atomic_write closes the binary file

    atomic_write(target, write)
    return result[0]


def write_labelmap(layout: RunLayout, class_names: tuple[str, ...]) -> Path:
    """The model's own class index -> name, as a train or eval run's ``labelmap.json``."""
    return atomic_write_json(layout.labelmap, {str(i): name for i, name in enumerate(class_names)})
