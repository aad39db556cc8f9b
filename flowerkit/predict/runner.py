"""``run_predictions``: stream inputs through decode, the shared transform and the model, row by row.

Each batch is decoded on a thread pool (PIL releases the GIL while it decodes and resizes): on a GPU, or where
the model leaves cores free, while the model runs on the previous batch; on a CPU whose cores the model's
threads all use, between model calls (``overlap_decoding``). At most two batches of decoded pixels exist at
any time, whatever the number of inputs. A file that cannot be predicted becomes an error row; it never stops
the others.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowerkit.errors import MissingInputError
from flowerkit.predict.images import ImageError, load_image
from flowerkit.predict.inputs import InputItem, iter_inputs, skipped_words
from flowerkit.predict.plan import PredictPlan, load_backend
from flowerkit.predict.rows import error_row, prediction_row

MAX_DEFAULT_WORKERS = 8
OVERLAP_ENV = "FLOWERKIT_PREDICT_OVERLAP"  # "1"/"0": force decoding to overlap the model or not (benchmarks)

Row = dict[str, Any]
log = logging.getLogger("flowerkit.predict")


@dataclass
class PredictSummary:
    inputs: int = 0
    predicted: int = 0
    failed: int = 0
    unknown: int = 0
    seconds: float = 0.0
    first_errors: list[str] = field(default_factory=list)  # a few, for the message when none was predicted
    skipped: dict[str, int] = field(default_factory=dict)  # files passed over below folders, by SKIPPED reason

    def line(self) -> str:
        unknown = f", {self.unknown} below --min_confidence (unknown)" if self.unknown else ""
        rate = f"; {self.seconds:.1f} s ({self.predicted / self.seconds:.1f} img/s)" if self.seconds > 0 else ""
        skipped = (f"; {sum(self.skipped.values())} other file(s) skipped: {skipped_words(self.skipped)}"
                   if self.skipped else "")
        return (f"{self.predicted} of {self.inputs} image(s) predicted, {self.failed} could not be{unknown}{rate}"
                f"{skipped}.")


def require_predictions(summary: PredictSummary) -> PredictSummary:
    """The summary, or MissingInputError (exit 3) when no input could be predicted."""
    if summary.predicted == 0:
        shown = " ".join(summary.first_errors)
        raise MissingInputError(f"None of the {summary.inputs} input(s) could be predicted: {shown} Pass image "
                                "files or folders holding images.")
    return summary


def _decode(item: InputItem, plan: PredictPlan) -> np.ndarray | str:
    """Decoded pixels, or the sentence saying why there are none."""
    if item.error is not None:
        return item.error
    try:
        return load_image(item.path, plan.info.transform)
    except ImageError as exc:
        return str(exc)
    except MemoryError:
        return f"{item.path.name} is too large to decode in memory."


def overlap_decoding(plan: PredictPlan) -> bool:
    """Decode the next batch while the model runs? Only where that takes no cores from the model.

    The torch model on the CPU runs one thread per core (OpenMP), and every parallel region waits for its
    slowest thread: a decoding thread taking one of those cores stalls the whole model, not just a share of
    it (measured on the 2-core machine, docs/performance.md). There, decoding runs between model calls on all
    cores; on a GPU, or with more cores than the model's threads, it overlaps.
    """
    if OVERLAP_ENV in os.environ:
        return os.environ[OVERLAP_ENV] == "1"
    if plan.device != "cpu":
        return True
    if plan.model.kind == "onnx":
        return False
    import torch

    return torch.get_num_threads() < (os.cpu_count() or 1)


def decoding_workers(plan: PredictPlan, overlap: bool) -> int:
    """``--workers``, else one decoding thread per core (at most 8), but only the cores the model leaves free
    when decoding overlaps a CPU model: a decoder on one of its cores slows every model call (measured,
    docs/performance.md)."""
    if plan.options.workers:
        return plan.options.workers
    cores = os.cpu_count() or 1
    if overlap and plan.device == "cpu" and plan.model.kind != "onnx":
        import torch

        cores -= torch.get_num_threads()
    return max(1, min(MAX_DEFAULT_WORKERS, cores))


def _rows_of(items: Iterable[InputItem], summary: PredictSummary) -> Iterator[InputItem]:
    """The items that get a row; the skipped ones are counted, and an error that hides files (a folder that
    cannot be read) is said on stderr as it is met (and in run.log for a recorded run), besides its row."""
    for item in items:
        if item.skipped is not None:
            summary.skipped[item.skipped] = summary.skipped.get(item.skipped, 0) + 1
            continue
        if item.warn:
            log.warning("Warning: %s", item.error)
        yield item


def _chunks(items: Iterator[tuple[int, InputItem]], size: int) -> Iterator[list[tuple[int, InputItem]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def run_predictions(plan: PredictPlan, sink: Callable[[Row], None], stdin: Iterable[str] | None = None) -> PredictSummary:
    """Predict every input of ``plan`` in order, handing each row to ``sink``; returns the counts."""
    backend = plan.backend or load_backend(plan.model, plan.device)
    opts, names = plan.options, plan.info.class_names
    overlap = overlap_decoding(plan)
    summary, started = PredictSummary(), time.perf_counter()
    chunks = _chunks(enumerate(_rows_of(iter_inputs(plan.inputs, stdin), summary), start=1), opts.batch_size)
    with ThreadPoolExecutor(decoding_workers(plan, overlap), thread_name_prefix="flowerkit-decode") as pool:
        def submit(chunk: list[tuple[int, InputItem]]) -> list[tuple[int, InputItem, Future]]:
            return [(i, item, pool.submit(_decode, item, plan)) for i, item in chunk]

        pending = [submit(c) for c in itertools.islice(chunks, 1)]
        while pending:
            current = pending.pop(0)
            decoded = [(i, item, future.result()) for i, item, future in current]
            following = next(chunks, None)
            if following is not None and overlap:  # decoded while the model runs on this batch
                pending.append(submit(following))
            good = [(i, item, px) for i, item, px in decoded if isinstance(px, np.ndarray)]
            logits = iter(())
            if good:
                logits = iter(backend.logits(np.stack([px for _, _, px in good]), tta=opts.tta))
            for i, item, px in decoded:  # rows in input order
                summary.inputs += 1
                if isinstance(px, str):
                    summary.failed += 1
                    if len(summary.first_errors) < 3:
                        summary.first_errors.append(px)
                    sink(error_row(i, item.path, px))
                    continue
                row = prediction_row(i, item.path, next(logits), names, opts.top_k, opts.min_confidence,
                                     opts.export_logits)
                summary.predicted += 1
                summary.unknown += bool(row.get("unknown"))
                sink(row)
            if following is not None and not overlap:  # decoded now, with every core, while the model rests
                pending.append(submit(following))
    summary.seconds = time.perf_counter() - started
    return summary
