"""Compare runs in one FiftyOne dataset: the same samples, each run's predictions as a field of its own.

Every run must have evaluated the same samples (the same ``sample_id`` set, so the same split and subset);
otherwise there is nothing to put side by side and the comparison is refused. Each run's predictions field
(named after the run) is evaluated with ``evaluate_classifications`` under its own eval key; samples where
the runs predict different classes get the tag ``disagree`` (and the boolean field ``disagree``), and the
saved view ``disagreements`` shows them in the App. With exported logits (``--export_logits``), FiftyOne
Brain scores each run's predictions: ``mistakenness_<field>`` (how likely the ground truth is wrong, given
the confident predictions) and ``hardness_<field>``. Brain is optional: without it the rest still works.

A predict run (photos with no label, numbered in its own order) is matched to the other runs by file path,
on the images every run has (the others are left out and counted); the ground truth comes from the first
run that has one, and each run's predictions are evaluated against it. With no such run, nothing is evaluated.
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
    rows: dict[str, PredictionRow]  # by sample_id, or by file path when a predict run takes part
    labelled: bool = True  # False: a predict run, no ground truth

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
    left_out: int = 0  # images only some runs have (runs matched by file path)


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


def read_runs(run_dirs: list[Path]) -> tuple[list[str], list[RunPredictions], int]:
    """The shared label map, each run's predictions on the images they share, and how many images were left
    out (only some runs have them); a ConfigError when the runs cannot be compared."""
    if len(run_dirs) < 2:
        raise ConfigError("fiftyone compare needs at least two runs (RUN_A RUN_B ...).")
    dirs = [require_run_dir(d) for d in run_dirs]
    classes = read_labelmap(dirs[0])
    for other in dirs[1:]:
        if read_labelmap(other) != classes:
            raise ConfigError(f"The runs {dirs[0]} and {other} have different label maps (labelmap.json): their "
                              "predictions name different classes and cannot be compared.")
    infos = [read_run_info(d) for d in dirs]
    # A predict run numbers its photos in its own order: with one, the runs are matched by file path.
    by_path = not all(info.labelled for info in infos)
    runs = []
    for d, info, fld in zip(dirs, infos, field_names([info.name for info in infos])):
        rows, _ = read_predictions(d, classes, info.labelled)
        runs.append(RunPredictions(d, info.name, fld, {r.filepath if by_path else r.sample_id: r for r in rows},
                                   info.labelled))
    check_same_samples([run for run in runs if run.labelled])
    return classes, runs, keep_shared_images(runs) if by_path else 0


def keep_shared_images(runs: list[RunPredictions]) -> int:
    """Keep in each run only the images every run has; how many images were left out. Refuses (exit 2, one
    paragraph) runs that share no image."""
    shared = set.intersection(*(set(run.rows) for run in runs))
    if not shared:
        each = "; ".join(f"{run.run_name} has {len(run.rows)} image(s){_some(list(run.rows)[:1])}" for run in runs)
        raise ConfigError(
            f"The runs {', '.join(run.run_name for run in runs)} share no image, so there is nothing to compare: "
            f"{each}. A predict run is matched to the other runs by the file path of each image (symbolic links "
            "resolved): predict the image files the eval run evaluated (its data root's jpg/ folder holds them), "
            "or load the predict run on its own with `flowerkit fiftyone load`.")
    every = set().union(*(run.rows for run in runs))
    for run in runs:
        run.rows = {key: row for key, row in run.rows.items() if key in shared}
    return len(every) - len(shared)


def check_same_samples(runs: list[RunPredictions]) -> None:
    """Refuse (exit 2, one paragraph) runs that evaluated different samples or splits."""
    if not runs:
        return
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
    classes, runs, left_out = read_runs(run_dirs)  # every input checked before FiftyOne starts
    name = dataset_name or default_compare_name(runs)
    truth = ground_truth_run(runs)
    fo = import_fiftyone()
    if fo.dataset_exists(name):
        if reuse and not overwrite and _is_comparison_of(fo.load_dataset(name), runs):
            return _summary(fo.load_dataset(name), runs, left_out, reused=True)
        if not overwrite:
            raise DatasetExistsError(f"The FiftyOne dataset {name!r} exists already. Pass --overwrite to replace "
                                     "it, or --dataset_name to compare under another name.")
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=True)
    try:
        _fill(fo, dataset, classes, runs, truth)
        if truth is not None:
            for run in runs:
                dataset.evaluate_classifications(pred_field=run.field, gt_field=GROUND_TRUTH,
                                                 eval_key=run.eval_key, classes=list(classes), progress=False)
        _save_disagreements(dataset)
        brain_fields, note = _brain_scores(dataset, runs, truth is not None)
    except Exception:
        if fo.dataset_exists(name):  # leave no half-built dataset behind
            fo.delete_dataset(name)
        raise
    dataset.info = dict(dataset.info) | {"brain_fields": brain_fields, "brain_note": note}
    dataset.save()
    return _summary(dataset, runs, left_out)


def ground_truth_run(runs: list[RunPredictions]) -> RunPredictions | None:
    """The run whose labels are the samples' ground truth: the first that has labels (not a predict run)."""
    return next((run for run in runs if run.labelled), None)


def _fill(fo: Any, dataset: Any, classes: list[str], runs: list[RunPredictions],
          truth: RunPredictions | None) -> None:
    dataset.info = {"flowerkit_compare": [{"run_name": r.run_name, "run_dir": str(r.run_dir.resolve()),
                                           "field": r.field, "eval_key": r.eval_key} for r in runs],
                    "classes": classes}
    dataset.default_classes = list(classes)
    samples = []
    for key, first in (truth or runs[0]).rows.items():
        sample = fo.Sample(filepath=first.filepath, tags=[first.split] if first.split else [])
        fields = {"sample_id": first.sample_id, "image_id": first.image_id, "split": first.split,
                  GROUND_TRUTH: None if truth is None else fo.Classification(label=first.label_name),
                  DISAGREE: len({run.rows[key].prediction for run in runs}) > 1}
        for run in runs:
            row = run.rows[key]
            fields[run.field] = fo.Classification(label=row.prediction_name, confidence=row.confidence)
            if row.logits is not None:
                fields[run.field].logits = row.logits
        for name, value in fields.items():
            if value is not None:  # a field no run has (a predict run's split) is not created
                sample[name] = value
        samples.append(sample)
    dataset.add_samples(samples, progress=False)


def _save_disagreements(dataset: Any) -> None:
    """Tag the samples where the runs' predicted classes differ (flagged by ``_fill``); save the view of them."""
    view = dataset.match({DISAGREE: True})
    view.tag_samples(DISAGREE)
    dataset.save_view(DISAGREEMENTS_VIEW, view, description="samples where the compared runs predict "
                                                            "different classes")


def _brain_scores(dataset: Any, runs: list[RunPredictions], has_truth: bool) -> tuple[list[str], str | None]:
    """Mistakenness (with a ground truth) and hardness of each run with logits; (fields written, why some are
    missing)."""
    with_logits = [run for run in runs if run.has_logits]
    without = [run.run_name for run in runs if not run.has_logits]
    notes = []
    if without:
        notes.append(f"no Brain scores for {', '.join(without)}: the run did not export logits (--export_logits)")
    if not has_truth:
        notes.append("no mistakenness scores: no run has a ground truth (all are predict runs)")
    note = "; ".join(notes) or None
    if not with_logits:
        return [], note
    try:
        import fiftyone.brain as fob
    except ImportError as exc:  # fiftyone-brain ships with fiftyone, but the comparison stands without it
        return [], f"FiftyOne Brain is not importable ({exc}): no mistakenness or hardness scores"
    written = []
    for run in with_logits:
        if has_truth:
            fob.compute_mistakenness(dataset, run.field, label_field=GROUND_TRUTH, use_logits=True,
                                     mistakenness_field=f"mistakenness_{run.field}", progress=False)
            written.append(f"mistakenness_{run.field}")
        fob.compute_hardness(dataset, run.field, hardness_field=f"hardness_{run.field}", progress=False)
        written.append(f"hardness_{run.field}")
    return written, note


def _is_comparison_of(dataset: Any, runs: list[RunPredictions]) -> bool:
    stored = (dataset.info or {}).get("flowerkit_compare") or []
    return [(s.get("run_dir"), s.get("field")) for s in stored] == [(str(r.run_dir.resolve()), r.field)
                                                                      for r in runs]


def _summary(dataset: Any, runs: list[RunPredictions], left_out: int, reused: bool = False) -> CompareResult:
    evaluated = dataset.list_evaluations()  # none when no run has a ground truth
    accuracy = {run.field: float(dataset.load_evaluation_results(run.eval_key).metrics()["accuracy"])
                for run in runs if run.eval_key in evaluated}
    info = dataset.info or {}
    return CompareResult(dataset.name, runs, len(dataset), accuracy, len(dataset.match_tags(DISAGREE)),
                         list(info.get("brain_fields") or []), info.get("brain_note"), reused, left_out)


__all__ = ["CompareResult", "DISAGREE", "DISAGREEMENTS_VIEW", "check_same_samples", "compare_runs",
           "field_names", "ground_truth_run", "keep_shared_images", "read_runs"]
