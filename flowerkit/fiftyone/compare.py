"""Compare runs in one FiftyOne dataset: the same samples, each run's predictions as a field of its own.

Every run must have evaluated the same samples (the same ``sample_id`` set, so the same split and subset);
otherwise there is nothing to put side by side and the comparison is refused. Each run's predictions field
(named after the run) is evaluated with ``evaluate_classifications`` under its own eval key; samples where
the runs predict different classes get the tag ``disagree`` (and the boolean field ``disagree``), and the
saved view ``disagreements`` shows them in the App. With exported logits (``--export_logits``), FiftyOne
Brain scores each run's predictions: ``mistakenness_<field>`` (how likely the ground truth is wrong, given
the confident predictions) and ``hardness_<field>``. Brain is optional: without it the rest still works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowerkit.errors import ConfigError
from flowerkit.fiftyone.load import (
    DatasetExistsError,
    PredictionRow,
    read_labelmap,
    read_predictions,
    read_run_info,
    require_run_dir,
)
from flowerkit.fiftyone.runtime import import_fiftyone

DISAGREE = "disagree"  # the tag and the boolean field of samples where the runs' predictions differ
DISAGREEMENTS_VIEW = "disagreements"
GROUND_TRUTH = "ground_truth"
SHOWN_IDS = 3  # sample ids named in a refusal


@dataclass
class RunPredictions:
    """One run's validated predictions and the dataset field they go in."""

    run_dir: Path
    run_name: str
    field: str
    rows: dict[str, PredictionRow]  # by sample_id

    @property
    def eval_key(self) -> str:
        return f"eval_{self.field}"

    @property
    def has_logits(self) -> bool:
        return all(row.logits is not None for row in self.rows.values())


@dataclass
class CompareResult:
    dataset_name: str
    runs: list[RunPredictions]
    num_samples: int
    accuracy: dict[str, float]  # by field
    disagreements: int
    brain_fields: list[str] = field(default_factory=list)
    brain_note: str | None = None  # why Brain scores are missing, when they are
    reused: bool = False


def field_names(run_names: list[str]) -> list[str]:
    """A valid, distinct FiftyOne field name per run (letters, digits, underscores; ``_2`` on a repeat)."""
    names: list[str] = []
    for run_name in run_names:
        base = re.sub(r"\W+", "_", run_name).strip("_") or "run"
        base = base if not base[0].isdigit() else f"run_{base}"
        name, n = base, 2
        while name in names or name in (GROUND_TRUTH, DISAGREE):
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


def read_runs(run_dirs: list[Path]) -> tuple[list[str], list[RunPredictions]]:
    """The shared label map and each run's predictions; a ConfigError when the runs cannot be compared."""
    if len(run_dirs) < 2:
        raise ConfigError("fiftyone compare needs at least two runs (RUN_A RUN_B ...).")
    dirs = [require_run_dir(d) for d in run_dirs]
    classes = read_labelmap(dirs[0])
    for other in dirs[1:]:
        if read_labelmap(other) != classes:
            raise ConfigError(f"The runs {dirs[0]} and {other} have different label maps (labelmap.json): their "
                              "predictions name different classes and cannot be compared.")
    names = [read_run_info(d)[0] for d in dirs]
    runs = [RunPredictions(d, name, fld, {r.sample_id: r for r in read_predictions(d, classes)})
            for d, name, fld in zip(dirs, names, field_names(names))]
    check_same_samples(runs)
    return classes, runs


def check_same_samples(runs: list[RunPredictions]) -> None:
    """Refuse (exit 2, one paragraph) runs that evaluated different samples or splits."""
    first = runs[0]
    for other in runs[1:]:
        if set(other.rows) == set(first.rows) and all(
                other.rows[i].split == first.rows[i].split and other.rows[i].label == first.rows[i].label
                for i in first.rows):
            continue
        only_first = sorted(set(first.rows) - set(other.rows))
        only_other = sorted(set(other.rows) - set(first.rows))
        raise ConfigError(
            f"Runs {first.run_name} and {other.run_name} evaluated different samples, so their predictions "
            f"cannot be compared sample by sample: {_describe(first)}; {_describe(other)}; "
            f"{len(only_first)} only in {first.run_name}{_some(only_first)}, {len(only_other)} only in "
            f"{other.run_name}{_some(only_other)}. Compare runs evaluated on the same split and subset (the "
            "same --tiny_infer_subset, or an eval run of each checkpoint on the same split), or load each run on "
            "its own with `flowerkit fiftyone load`.")


def _describe(run: RunPredictions) -> str:
    splits = sorted({r.split or "?" for r in run.rows.values()})
    return f"{run.run_name} has {len(run.rows)} samples of split {', '.join(splits)}"


def _some(ids: list[str]) -> str:
    return f" (e.g. {', '.join(ids[:SHOWN_IDS])})" if ids else ""


def default_compare_name(runs: list[RunPredictions]) -> str:
    return "flowerkit-compare-" + "-".join(run.field for run in runs)


def compare_runs(run_dirs: list[Path], dataset_name: str | None = None, overwrite: bool = False,
                 reuse: bool = False) -> CompareResult:
    """Build (or, with ``reuse``, open) the comparison dataset of ``run_dirs``; see the module doc."""
    classes, runs = read_runs(run_dirs)  # every input checked before FiftyOne starts
    name = dataset_name or default_compare_name(runs)
    fo = import_fiftyone()
    if fo.dataset_exists(name):
        if reuse and not overwrite and _is_comparison_of(fo.load_dataset(name), runs):
            return _summary(fo.load_dataset(name), runs, reused=True)
        if not overwrite:
            raise DatasetExistsError(f"The FiftyOne dataset {name!r} exists already. Pass --overwrite to replace "
                                     "it, or --dataset-name to compare under another name.")
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    try:
        _fill(fo, dataset, classes, runs)
        for run in runs:
            dataset.evaluate_classifications(pred_field=run.field, gt_field=GROUND_TRUTH, eval_key=run.eval_key,
                                             classes=list(classes), progress=False)
        _mark_disagreements(dataset, runs)
        brain_fields, note = _brain_scores(dataset, runs)
    except Exception:
        if fo.dataset_exists(name):  # leave no half-built dataset behind
            fo.delete_dataset(name)
        raise
    dataset.info = dict(dataset.info) | {"brain_fields": brain_fields, "brain_note": note}
    dataset.save()
    return _summary(dataset, runs)


def _fill(fo: Any, dataset: Any, classes: list[str], runs: list[RunPredictions]) -> None:
    dataset.info = {"flowerkit_compare": [{"run_name": r.run_name, "run_dir": str(r.run_dir.resolve()),
                                           "field": r.field, "eval_key": r.eval_key} for r in runs],
                    "classes": classes}
    dataset.default_classes = list(classes)
    samples = []
    for sample_id, first in runs[0].rows.items():
        sample = fo.Sample(filepath=first.filepath, tags=[first.split] if first.split else [], sample_id=sample_id,
                           image_id=first.image_id, split=first.split,
                           ground_truth=fo.Classification(label=first.label_name))
        for run in runs:
            row = run.rows[sample_id]
            prediction = fo.Classification(label=row.prediction_name, confidence=row.confidence)
            if row.logits is not None:
                prediction.logits = row.logits
            sample[run.field] = prediction
        samples.append(sample)
    dataset.add_samples(samples, progress=False)


def _mark_disagreements(dataset: Any, runs: list[RunPredictions]) -> None:
    """Tag (and flag) the samples where the runs' predicted classes differ; save the view of them."""
    flags = [len({run.rows[sample_id].prediction for run in runs}) > 1 for sample_id in dataset.values("sample_id")]
    dataset.set_values(DISAGREE, flags)
    view = dataset.match({DISAGREE: True})
    view.tag_samples(DISAGREE)
    dataset.save_view(DISAGREEMENTS_VIEW, view, description="samples where the compared runs predict "
                                                            "different classes")


def _brain_scores(dataset: Any, runs: list[RunPredictions]) -> tuple[list[str], str | None]:
    """Mistakenness and hardness of each run with logits; (fields written, why some are missing)."""
    with_logits = [run for run in runs if run.has_logits]
    without = [run.run_name for run in runs if not run.has_logits]
    note = (f"no Brain scores for {', '.join(without)}: the run did not export logits (--export_logits)"
            if without else None)
    if not with_logits:
        return [], note
    try:
        import fiftyone.brain as fob
    except ImportError as exc:  # fiftyone-brain ships with fiftyone, but the comparison stands without it
        return [], f"FiftyOne Brain is not importable ({exc}): no mistakenness or hardness scores"
    written = []
    for run in with_logits:
        fob.compute_mistakenness(dataset, run.field, label_field=GROUND_TRUTH, use_logits=True,
                                 mistakenness_field=f"mistakenness_{run.field}", progress=False)
        fob.compute_hardness(dataset, run.field, hardness_field=f"hardness_{run.field}", progress=False)
        written += [f"mistakenness_{run.field}", f"hardness_{run.field}"]
    return written, note


def _is_comparison_of(dataset: Any, runs: list[RunPredictions]) -> bool:
    stored = (dataset.info or {}).get("flowerkit_compare") or []
    return [(s.get("run_dir"), s.get("field")) for s in stored] == [(str(r.run_dir.resolve()), r.field)
                                                                      for r in runs]


def _summary(dataset: Any, runs: list[RunPredictions], reused: bool = False) -> CompareResult:
    accuracy = {run.field: float(dataset.load_evaluation_results(run.eval_key).metrics()["accuracy"])
                for run in runs}
    info = dataset.info or {}
    return CompareResult(dataset.name, runs, len(dataset), accuracy, len(dataset.match_tags(DISAGREE)),
                         list(info.get("brain_fields") or []), info.get("brain_note"), reused)


__all__ = ["CompareResult", "DISAGREE", "DISAGREEMENTS_VIEW", "check_same_samples", "compare_runs",
           "field_names", "read_runs"]
