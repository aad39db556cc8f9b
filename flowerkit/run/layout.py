"""Every path of a run, in one place: ``RunLayout`` is the only module that spells a run's file names.

A run lives in ``OUTPUT_DIR/NAME`` with its TensorBoard events in ``OUTPUT_DIR/tb/NAME`` (the documented
override of the spec's ``OUTPUT_DIR/NAME/tb``, so ``tensorboard --logdir OUTPUT_DIR/tb`` shows every run) and
its FiftyOne files in ``OUTPUT_DIR/NAME/fiftyone``. ``--tb_dir`` and ``--fiftyone_dir`` move those two
folders; the run record stores where they went, so every reader (``flowerkit runs``, the dashboard,
``verify``, ``prune``) follows them.

Temporary files follow one naming rule, ``.<name>.tmp-<pid>-<token>``, written by
``flowerkit.artifacts.files.atomic_write_*`` alone: ``is_temp`` recognises them, so they never enter the
artifact index and a resumed run removes the ones a killed process left behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TB_ROOT = "tb"  # OUTPUT_DIR/tb holds every run's TensorBoard folder; no run may be named so
SWEEPS_ROOT = "sweeps"  # OUTPUT_DIR/sweeps holds every sweep's folder; no run may be named so either
TEMP_MARK = ".tmp-"
RECORD_NAME = "run_record.json"  # a folder of OUTPUT_DIR holding one is a run
STAMP_NAME = "env_stamp.json"


def temp_name(path: Path) -> Path:
    """The temporary sibling an atomic write of ``path`` goes through (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")


def is_temp(path: Path) -> bool:
    """A temporary file, or anything inside a temporary folder."""
    return any(part.startswith(".") and TEMP_MARK in part for part in Path(path).parts)


@dataclass(frozen=True)
class RunLayout:
    """The files and folders of one run."""

    run_dir: Path
    tb_dir: Path
    fiftyone_dir: Path

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def default(cls, output_dir: Path, name: str) -> RunLayout:
        run_dir = Path(output_dir) / name
        return cls(run_dir, Path(output_dir) / TB_ROOT / name, run_dir / "fiftyone")

    @classmethod
    def for_config(cls, config: Any) -> RunLayout:
        """The layout a run of ``config`` (a RunConfig) writes, honouring ``--tb_dir`` / ``--fiftyone_dir``."""
        base = cls.default(config.output_dir, config.name)
        tb_dir = getattr(config, "tb_dir", None) or base.tb_dir
        fiftyone_dir = getattr(config, "fiftyone_dir", None) or base.fiftyone_dir
        return cls(base.run_dir, Path(tb_dir), Path(fiftyone_dir))

    @classmethod
    def for_run(cls, run_dir: Path, record: Mapping[str, Any] | None = None) -> RunLayout:
        """The layout of an existing run: the folders its record names, else the defaults."""
        run_dir = Path(run_dir)
        base = cls.default(run_dir.parent, run_dir.name)
        stored = (record or {}).get("layout") or {}
        if not isinstance(stored, Mapping):
            return base
        return cls(run_dir, Path(stored.get("tb_dir") or base.tb_dir),
                   Path(stored.get("fiftyone_dir") or base.fiftyone_dir))

    def to_record(self) -> dict[str, str]:
        """What the run record keeps so that readers find moved folders: only the overridden ones (absolute),
        so a run with the default layout can be moved or copied with its output directory."""
        base = RunLayout.default(self.output_dir, self.name)
        return {key: str(getattr(self, key).resolve()) for key in ("tb_dir", "fiftyone_dir")
                if getattr(self, key).resolve() != getattr(base, key).resolve()}

    # --- the run directory --------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def output_dir(self) -> Path:
        return self.run_dir.parent

    @property
    def tb_root(self) -> Path:
        return self.output_dir / TB_ROOT

    @property
    def record(self) -> Path:
        return self.run_dir / RECORD_NAME

    @property
    def lock(self) -> Path:
        return self.run_dir / ".lock"

    @property
    def config(self) -> Path:
        return self.run_dir / "config_resolved.yaml"

    @property
    def plan(self) -> Path:
        """Everything the run decided before it started (``flowerkit.run.plan``), as JSON."""
        return self.run_dir / "plan.json"

    @property
    def stamp(self) -> Path:
        return self.run_dir / STAMP_NAME

    @property
    def retention(self) -> Path:
        return self.run_dir / "RETENTION.txt"

    @property
    def metrics(self) -> Path:
        return self.run_dir / "metrics.json"

    @property
    def metrics_jsonl(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def labelmap(self) -> Path:
        return self.run_dir / "labelmap.json"

    @property
    def run_log(self) -> Path:
        return self.run_dir / "run.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def checkpoint(self) -> Path:
        """The latest checkpoint: what ``--resume`` and a task retry continue from."""
        return self.checkpoints_dir / "ckpt.bin"

    @property
    def best_checkpoint(self) -> Path:
        """The checkpoint selected on validation (``--monitor``): what the final evaluation reports."""
        return self.checkpoints_dir / "best.bin"

    def top_k_checkpoint(self, step: int) -> Path:
        """One of the ``--save_top_k`` best checkpoints."""
        return self.checkpoints_dir / f"best-{step}.bin"

    def top_k_checkpoints(self) -> list[Path]:
        return sorted(self.checkpoints_dir.glob("best-*.bin"))

    def split_prefix(self, split: str) -> str:
        """File-name prefix of a split's evaluation artifacts: none for validation (the run's main report),
        ``test_`` for the held-out test split (``--test_after``), so the two never mix."""
        return "" if split == "val" else f"{split}_"

    def eval_outputs_of(self, split: str) -> Path:
        return self.eval_outputs.with_name(self.split_prefix(split) + self.eval_outputs.name)

    def predictions_of(self, split: str) -> Path:
        return self.predictions.with_name(self.split_prefix(split) + self.predictions.name)

    def per_class_of(self, split: str) -> Path:
        return self.per_class.with_name(self.split_prefix(split) + self.per_class.name)

    @property
    def eval_outputs(self) -> Path:
        """Raw logits of the final evaluation, between the evaluate and export_predictions tasks."""
        return self.run_dir / "eval" / "outputs.npz"

    @property
    def predictions(self) -> Path:
        return self.fiftyone_dir / "predictions.jsonl"

    @property
    def per_class(self) -> Path:
        return self.fiftyone_dir / "per_class_metrics.json"

    @staticmethod
    def final_events_name(step: int, tag: str = "val") -> str:
        """The TensorBoard events file of the final evaluation of ``tag`` (val, test) at ``step``: a fixed name
        (TensorBoard reads any file whose name holds 'tfevents'; 'final' sorts after the timestamped files),
        so a retry replaces it."""
        return f"events.out.tfevents.final-{tag}-{step:08d}"

    # --- whole-run views ----------------------------------------------------------------------------
    def roots(self) -> list[Path]:
        """The folders that hold the run's files (the fiftyone folder only when it lies outside the run's)."""
        roots = [self.run_dir, self.tb_dir]
        if not _inside(self.fiftyone_dir, self.run_dir):
            roots.append(self.fiftyone_dir)
        return roots

    def files(self) -> list[Path]:
        """Every file of the run except the record itself, the lock and temporary files, sorted."""
        found = {path for path, rel in self._walk() if not is_temp(rel)}
        return sorted(p for p in found if p not in (self.record, self.lock))

    def temp_files(self) -> list[Path]:
        """Temporary files and folders a killed writer left behind (the outermost temporary path of each)."""
        stale = set()
        for root in self._existing_roots():
            for path in root.rglob("*"):
                rel = path.relative_to(root)
                if is_temp(rel):
                    first = next(i for i, part in enumerate(rel.parts) if is_temp(Path(part)))
                    stale.add(root.joinpath(*rel.parts[:first + 1]))
        return sorted(stale)

    def _existing_roots(self) -> list[Path]:
        return [root for root in self.roots() if root.is_dir()]

    def _walk(self) -> Iterator[tuple[Path, Path]]:
        """(file, its path relative to the root it was found under) for every file of the run's folders."""
        for root in self._existing_roots():
            for path in root.rglob("*"):
                if path.is_file():
                    yield path, path.relative_to(root)

    def key_files(self) -> list[Path]:
        """The files a reviewer opens first, in that order (those that exist)."""
        candidates = (self.record, self.config, self.plan, self.metrics, self.metrics_jsonl, self.labelmap,
                      self.stamp, self.retention, self.run_log, self.checkpoint, self.best_checkpoint,
                      self.eval_outputs, self.predictions, self.per_class, self.predictions_of("test"),
                      self.per_class_of("test"))
        return [p for p in candidates if p.exists()]

    def relative(self, path: Path) -> str:
        """``path`` relative to the output directory: the artifact index's key (``../`` for moved folders)."""
        return Path(os.path.relpath(Path(path).resolve(), self.output_dir.resolve())).as_posix()


@dataclass(frozen=True)
class SweepLayout:
    """The files of one sweep, ``OUTPUT_DIR/sweeps/NAME``; its trials are ordinary runs beside the others."""

    output_dir: Path
    name: str

    @property
    def sweep_dir(self) -> Path:
        return Path(self.output_dir) / SWEEPS_ROOT / self.name

    @property
    def spec(self) -> Path:
        """The sweep file as it was given, byte for byte."""
        return self.sweep_dir / "sweep.yaml"

    @property
    def trials(self) -> Path:
        """The expansion: each trial's name, the values it sets and its config hash."""
        return self.sweep_dir / "trials.json"

    @property
    def results(self) -> Path:
        """Each trial's state and final metrics, ranked, as of the sweep's latest pass."""
        return self.sweep_dir / "results.json"

    @property
    def table(self) -> Path:
        """The same ranking as a Markdown table."""
        return self.sweep_dir / "results.md"

    def trial_config(self, trial: str) -> Path:
        """A trial's resolved configuration (what `flowerkit train --config` would take)."""
        return self.sweep_dir / "configs" / f"{trial}.yaml"

    def trial_plan(self, trial: str) -> Path:
        """A trial's plan, for the process that runs it (`flowerkit run`): trials run in parallel processes."""
        return self.sweep_dir / "plans" / f"{trial}.json"

    @property
    def lock(self) -> Path:
        """The sweep's one-writer lock (``flock``), held by the process running the sweep."""
        return self.sweep_dir / ".lock"


def _inside(path: Path, parent: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
    except ValueError:
        return False
    return True

