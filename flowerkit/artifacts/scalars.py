"""Scalars go to TensorBoard (``OUTPUT/tb/<run>``), to ``metrics.jsonl`` (read live by the dashboard) and, when
the flow opened one, to the run's tracker (the ``ScalarSink`` it hands down), under the same tags and steps.

The final report also writes the run's hparams (its configuration and final metrics) for TensorBoard's HParams
dashboard, which compares runs side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from flowerkit.artifacts.confusion_figure import CELL_PX, confusion_figure
from flowerkit.artifacts.files import atomic_write_text, naming_a_full_disk, utc_now
from flowerkit.artifacts.sinks import ScalarSink
from flowerkit.interrupts import held_interrupts
from flowerkit.run.layout import temp_name

# TensorBoard's writer thread also wakes up every flush interval (120 s by default). A signal whose exception
# lands inside its queue put (after the item, before the wake-up) leaves that thread asleep until then, and
# close() waits for it: a SIGTERM to a run took two minutes to end. A short interval bounds that, and a
# TensorBoard watching the run sees its scalars seconds after they are logged.
TB_FLUSH_SECS = 2

# The HParams dashboard's metrics: the final report's (metrics.json), one value per run under final/ (the val/
# tags hold every evaluation of a training run), and a held-out test split's after training under final/test_.
HPARAM_METRICS = ("accuracy", "top5_accuracy", "macro_f1", "loss")
FINAL_METRIC_TAGS = tuple(f"final/{split}{key}" for split in ("", "test_") for key in HPARAM_METRICS)


class ScalarLog:
    """One writer per run; TensorBoard's writer is imported on first use (it is slow to import).

    ``final_events`` makes the log idempotent, for the final evaluation that a retried or resumed task may write
    twice: its ``metrics.jsonl`` rows replace earlier rows of the same kind and step, and its TensorBoard events
    go to a private folder and are published on ``close`` as ``OUTPUT/tb/<run>/<final_events>`` by an atomic
    rename, replacing an earlier attempt's file instead of adding to it.
    """

    def __init__(self, jsonl_path: Path, tb_dir: Path, purge_step: int | None = None,
                 final_events: str | None = None, sink: ScalarSink | None = None) -> None:
        self.jsonl_path = Path(jsonl_path)
        self.tb_dir = Path(tb_dir)
        self.purge_step = purge_step  # a resumed run replaces TensorBoard events from this step on
        self.final_events = final_events
        self._writer = None
        self._staging: Path | None = None
        self._t0 = time.monotonic()
        self.sink = sink  # the run's tracker, when the flow opened one

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = self.tb_dir
            if self.final_events:
                self._staging = temp_name(self.tb_dir / self.final_events)
                log_dir = self._staging
            self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=self.purge_step,
                                         flush_secs=TB_FLUSH_SECS)
        return self._writer

    def log(self, kind: str, step: int, total_steps: int, values: dict[str, float], tb_prefix: str) -> None:
        """Append a ``metrics.jsonl`` row (flushed) and write each value as ``<tb_prefix>/<key>``."""
        row: dict[str, Any] = {"kind": kind, "step": step, "total_steps": total_steps}
        row.update({k: float(v) for k, v in values.items()})
        row.update(time_utc=utc_now(), elapsed_s=round(time.monotonic() - self._t0, 3))
        line = json.dumps(row, allow_nan=False) + "\n"
        if self.final_events:
            self._replace_row(kind, step, line)
        else:
            with naming_a_full_disk(self.jsonl_path), open(self.jsonl_path, "a", encoding="utf-8") as fh:
                fh.write(line)
        # TensorBoard writes from a thread of its own and raises what it met at the next call: a full disk
        # seen there is named like any other (this call's scalars are not what failed). Its queue takes a lock
        # per call: a signal is held until the call is over (flowerkit.interrupts).
        with naming_a_full_disk(self.tb_dir), held_interrupts():
            for key, value in values.items():
                self.writer.add_scalar(f"{tb_prefix}/{key}", float(value), step)
        if self.sink is not None:
            self.sink.scalars(step, {f"{tb_prefix}/{key}": float(value) for key, value in values.items()})

    def _replace_row(self, kind: str, step: int, line: str) -> None:
        old = self.jsonl_path.read_text(encoding="utf-8").splitlines(keepends=True) if self.jsonl_path.exists() else []
        kept = [row for row in old if _kind_step(row) != (kind, step)]
        atomic_write_text(self.jsonl_path, "".join(kept) + line)

    def per_class(self, step: int, per_class: list[dict[str, Any]], tb_prefix: str) -> None:
        with naming_a_full_disk(self.tb_dir), held_interrupts():
            for row in per_class:
                for metric in ("precision", "recall", "f1"):
                    self.writer.add_scalar(
                        f"{tb_prefix}_per_class/{metric}/{row['class_id']:03d}_{row['class_name']}", row[metric], step)
        if self.sink is not None:
            self.sink.per_class(step, per_class, tb_prefix)

    def confusion_image(self, step: int, confusion: np.ndarray, tag: str) -> None:
        """The row-normalised confusion matrix as a labelled picture (``confusion_figure``): true class down,
        predicted class across, class-id ticks every 10, a colour bar. A tracker gets the plain pixels."""
        if self.sink is not None:
            self.sink.image(tag, confusion_pixels(confusion), step)
        figure = confusion_figure(normalised_rows(confusion), step)
        with naming_a_full_disk(self.tb_dir), held_interrupts():
            self.writer.add_image(tag, figure, step, dataformats="HWC")

    def hparams(self, hparams: dict[str, tuple[type, Any]], metrics: dict[str, float], step: int) -> None:
        """The run's configuration (``run_hparams``) and final metrics (``final/<key>``) for the HParams
        dashboard, in the run's own events: torch's ``add_hparams`` would write them to a sub-folder, which
        TensorBoard lists as a run of its own, apart from the run's scalars."""
        with naming_a_full_disk(self.tb_dir), held_interrupts():
            for summary in hparams_summaries(hparams):
                self.writer.file_writer.add_summary(summary, step)
            for key, value in metrics.items():
                self.writer.add_scalar(f"final/{key}", float(value), step)

    def close(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        with naming_a_full_disk(self.tb_dir), held_interrupts():
            writer.flush()
            writer.close()
        if self._staging is not None:
            events = sorted(self._staging.glob("events.out.tfevents.*"))
            for path in events:  # one writer, so one file
                os.replace(path, self.tb_dir / self.final_events)
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def hparams_summaries(hparams: dict[str, tuple[type, Any]]) -> list[Any]:
    """The HParams plugin's experiment (every hparam, by its type, and the metrics to show), this run's values
    (``None`` left out) and its end, as the TensorBoard summaries its data provider reads."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    kinds = {bool: api_pb2.DATA_TYPE_BOOL, int: api_pb2.DATA_TYPE_FLOAT64, float: api_pb2.DATA_TYPE_FLOAT64}
    types = {name: kinds.get(kind, api_pb2.DATA_TYPE_STRING) for name, (kind, _) in hparams.items()}
    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=name, type=kind) for name, kind in types.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in FINAL_METRIC_TAGS])
    start = plugin_data_pb2.SessionStartInfo()
    for name, (_, value) in hparams.items():
        kind = types[name]
        if value is None:  # an option left unset: an empty cell
            continue
        if kind == api_pb2.DATA_TYPE_BOOL:
            start.hparams[name].bool_value = bool(value)
        elif kind == api_pb2.DATA_TYPE_FLOAT64:
            start.hparams[name].number_value = float(value)
        else:
            start.hparams[name].string_value = str(value)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS)
    data = {metadata.EXPERIMENT_TAG: plugin_data_pb2.HParamsPluginData(experiment=experiment),
            metadata.SESSION_START_INFO_TAG: plugin_data_pb2.HParamsPluginData(session_start_info=start),
            metadata.SESSION_END_INFO_TAG: plugin_data_pb2.HParamsPluginData(session_end_info=end)}
    return [Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(content))])
            for tag, content in data.items()]


def _kind_step(line: str) -> tuple[Any, Any] | None:
    try:
        row = json.loads(line)
        return row.get("kind"), row.get("step")
    except (ValueError, AttributeError):
        return None


def confusion_pixels(confusion: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: each row of ``confusion`` normalised, CELL_PX px per cell (102 classes: 408 px)."""
    return np.kron(normalised_rows(confusion), np.ones((CELL_PX, CELL_PX))).astype(np.float32)


def normalised_rows(confusion: np.ndarray) -> np.ndarray:
    """Each true class's row as shares of its samples (a class without samples stays 0)."""
    rows = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, rows, out=np.zeros(confusion.shape, dtype=np.float64), where=rows > 0)
