"""Load a run's predictions into a persistent FiftyOne dataset and evaluate them there.

Reads the run-artifact files documented in docs/artifacts.md:
``fiftyone/predictions.jsonl``, ``labelmap.json``, ``run_record.json`` and ``config_resolved.yaml``.
FiftyOne itself is imported only inside ``load_run`` (through ``flowerkit.fiftyone.runtime``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from flowerkit.errors import ConfigError, FlowerkitError, MissingInputError
from flowerkit.fiftyone.runtime import import_fiftyone
from flowerkit.io.inputs import read_utf8

PREDICTIONS_PATH = Path("fiftyone") / "predictions.jsonl"
LABELMAP_PATH = Path("labelmap.json")
RUN_RECORD_PATH = Path("run_record.json")
CONFIG_PATH = Path("config_resolved.yaml")
EVAL_KEY = "eval"
BATCH_SIZE = 1000
REQUIRED_KEYS = ("sample_id", "filepath", "label", "prediction", "confidence")
UNLABELLED_KEYS = tuple(k for k in REQUIRED_KEYS if k != "label")  # flowerkit predict's rows
PREDICT_FLOW = "predict"  # the flow of a run whose rows have no label (run_record.json's "flow")
NO_GROUND_TRUTH = ("evaluation skipped: a predict run's images have no ground truth (compare the run with an "
                   "eval run of the same images: `flowerkit fiftyone compare PREDICT_RUN EVAL_RUN`)")


class DatasetExistsError(FlowerkitError):
    """The FiftyOne dataset exists already and --overwrite was not given."""

    exit_code = 4


@dataclass
class PredictionRow:
    sample_id: str
    image_id: int | None
    filepath: str
    split: str | None
    label: int | None  # None: an unlabelled photo (flowerkit predict's rows)
    label_name: str | None
    prediction: int
    prediction_name: str
    confidence: float
    top5: list[int] | None = None
    logits: list[float] | None = None
    unknown: bool | None = None  # predict's --min_confidence: the top-1 probability is below it


@dataclass
class RunInfo:
    """What a run's record and resolved config say about it."""

    name: str
    config_hash: str | None
    config: dict[str, Any] | None
    labelled: bool  # False for a predict run: its rows have predictions and no ground truth


@dataclass
class LoadResult:
    """What ``load_run`` built: the dataset's name and the evaluation FiftyOne computed on it."""

    dataset_name: str
    run_name: str
    run_dir: Path
    num_samples: int
    splits: list[str]
    config_hash: str | None
    classes: list[str]
    # All three None for a predict run (no ground truth, so no evaluation; ``evaluation_skipped`` says so).
    metrics: dict[str, Any] | None  # results.metrics(): accuracy, precision, recall, fscore, support
    report: dict[str, Any] | None  # results.report(): sklearn classification_report(output_dict=True)
    results: Any = field(repr=False)  # fiftyone ClassificationResults (print_report, confusion_matrix)
    reused: bool = False  # an existing dataset of this run, opened as it was (``reuse``)
    left_out: int = 0  # a predict run's inputs that could not be predicted (error rows): nothing to load
    evaluation_skipped: str | None = None

    @property
    def accuracy(self) -> float | None:
        return None if self.metrics is None else float(self.metrics["accuracy"])

    def print_report(self, digits: int = 3) -> None:
        """Print FiftyOne's per-class report (precision, recall, F1, support) to stdout."""
        self.results.print_report(classes=self.classes, digits=digits)


def _read_json(path: Path, what: str) -> Any:
    text = read_utf8(path, f"The {what}", "Is this a complete flowerkit run directory?")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"The {what} {path} is not valid JSON: {exc}.") from exc


def read_labelmap(run_dir: Path) -> list[str]:
    """Class names ordered by class id, from ``labelmap.json`` (``{"0": "pink primrose", ...}``)."""
    path = run_dir / LABELMAP_PATH
    raw = _read_json(path, "label map")
    try:
        items = sorted((int(k), str(v)) for k, v in raw.items())
    except (AttributeError, TypeError, ValueError) as exc:
        raise ConfigError(
            f'The label map {path} must be an object of class id -> class name, like {{"0": "pink primrose"}}.'
        ) from exc
    if [i for i, _ in items] != list(range(len(items))) or not items:
        raise ConfigError(f"The label map {path} must have the class ids 0..N-1, each once.")
    names = [n for _, n in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"The label map {path} has duplicate class names.")
    return names


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def iter_prediction_rows(path: Path, classes: list[str], labels_optional: bool = False,
                         skipped: list[str] | None = None) -> Iterator[PredictionRow]:
    """Parse and validate ``predictions.jsonl`` line by line (see docs/artifacts.md).

    ``labels_optional``: also read ``flowerkit predict``'s rows, which have no label fields; its rows of inputs
    that could not be predicted (an ``error`` and no ``prediction``) are skipped: there is nothing to load.
    ``skipped``, when given, collects the file paths of those rows.
    """
    required = UNLABELLED_KEYS if labels_optional else REQUIRED_KEYS
    # Read whole through the shared reader: a non-UTF-8 byte is one paragraph (exit 2), never a traceback.
    text = read_utf8(path, "The predictions file", "Is this a complete flowerkit run directory?")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"The predictions file {where} is not valid JSON ({exc.msg}).") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"The predictions file {where} is not a JSON object.")
        if labels_optional and "error" in row and "prediction" not in row:
            if skipped is not None:
                skipped.append(str(row.get("filepath")))
            continue
        missing = [k for k in required if k not in row]
        if missing:
            raise ConfigError(
                f"The predictions file {where} lacks {', '.join(missing)}; each row needs "
                f"{', '.join(required)} (see docs/artifacts.md)."
            )
        try:
            label = None if labels_optional and row.get("label") is None else _int(row["label"])
            prediction = _int(row["prediction"])
            confidence = float(row["confidence"])
            image_id = None if row.get("image_id") is None else _int(row["image_id"])
            top5 = None if row.get("top5") is None else [_int(c) for c in row["top5"]]
            logits = None if row.get("logits") is None else [float(x) for x in row["logits"]]
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"The predictions file {where} has a value of the wrong type ({exc}): label, prediction "
                "and image_id are integers, confidence a number, top5 a list of class ids, logits a "
                "list of numbers."
            ) from exc
        for key, cid in (("label", label), ("prediction", prediction)):
            if cid is not None and not 0 <= cid < len(classes):
                raise ConfigError(
                    f"The predictions file {where} has {key}={cid}, outside the label map's 0..{len(classes) - 1}."
                )
        if not (0.0 <= confidence <= 1.0) or math.isnan(confidence):
            raise ConfigError(f"The predictions file {where} has confidence={confidence}, not within 0..1.")
        if logits is not None and len(logits) != len(classes):
            raise ConfigError(
                f"The predictions file {where} has {len(logits)} logits for {len(classes)} classes."
            )
        for key, cid in (("label_name", label), ("prediction_name", prediction)):
            if cid is not None and key in row and row[key] != classes[cid]:
                raise ConfigError(
                    f"The predictions file {where} has {key}={row[key]!r} but the label map names class "
                    f"{cid} {classes[cid]!r}: the predictions and labelmap.json come from different runs."
                )
        filepath = str(row["filepath"])
        if not Path(filepath).is_absolute():
            raise ConfigError(
                f"The predictions file {where} has a relative filepath {filepath!r}; it must be absolute."
            )
        yield PredictionRow(
            sample_id=str(row["sample_id"]),
            image_id=image_id,
            filepath=filepath,
            split=None if row.get("split") is None else str(row["split"]),
            label=label,
            label_name=None if label is None else classes[label],
            prediction=prediction,
            prediction_name=classes[prediction],
            confidence=confidence,
            top5=top5,
            logits=logits,
            unknown=None if row.get("unknown") is None else bool(row["unknown"]),
        )


def read_predictions(run_dir: Path, classes: list[str], labelled: bool = True) -> tuple[list[PredictionRow], int]:
    """The rows of the run's ``predictions.jsonl``, validated (every image file must exist), and how many rows
    were left out: a predict run's (``labelled=False``) rows of inputs that could not be predicted."""
    path = run_dir / PREDICTIONS_PATH
    if not path.is_file():
        raise MissingInputError(
            f"The run {run_dir} has no {PREDICTIONS_PATH}. It is written by evaluation; run "
            "`flowerkit eval` for this run (or check that the training run finished) and try again."
        )
    skipped: list[str] = []
    rows = list(iter_prediction_rows(path, classes, labels_optional=not labelled, skipped=skipped))
    if not rows:
        failed = f" (its {len(skipped)} rows are inputs that could not be predicted)" if skipped else ""
        raise ConfigError(f"The predictions file {path} has no rows of predicted images{failed}; there is "
                          "nothing to load.")
    seen: set[str] = set()
    for r in rows:
        if r.sample_id in seen:
            raise ConfigError(f"The predictions file {path} lists sample_id {r.sample_id!r} more than once.")
        seen.add(r.sample_id)
    missing = [r.filepath for r in rows if not Path(r.filepath).is_file()]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise MissingInputError(
            f"{len(missing)} of the {len(rows)} images listed in {path} do not exist: {shown}. "
            "The images have moved or been deleted since the run (a train or eval run's Flowers-102 data root, "
            "a predict run's photos); restore them at the paths the run used, then load again."
        )
    return rows, len(skipped)


def read_run_info(run_dir: Path) -> RunInfo:
    """The run's name, config hash, resolved config and whether its rows are labelled, from
    ``run_record.json`` and ``config_resolved.yaml``."""
    record = _read_json(run_dir / RUN_RECORD_PATH, "run record")
    if not isinstance(record, dict):
        raise ConfigError(f"The run record {run_dir / RUN_RECORD_PATH} is not a JSON object.")
    run_name = str(record.get("name") or run_dir.name)
    config_hash = record.get("config_hash")
    config: dict[str, Any] | None = None
    config_path = run_dir / CONFIG_PATH
    if config_path.is_file():
        data = config_path.read_bytes()
        if config_hash is None:
            config_hash = hashlib.sha256(data).hexdigest()
        try:
            import yaml

            loaded = yaml.safe_load(data)
            config = loaded if isinstance(loaded, dict) else None
        except Exception as exc:  # noqa: BLE001 - any YAML problem is a malformed input
            raise ConfigError(f"The resolved configuration {config_path} is not valid YAML: {exc}.") from exc
    return RunInfo(run_name, config_hash, config, labelled=record.get("flow") != PREDICT_FLOW)


def default_dataset_name(run_name: str) -> str:
    return f"flowerkit-{run_name}"


def require_run_dir(run_dir: Path) -> Path:
    """``run_dir`` as a Path; a MissingInputError naming how to give a run when it is not a directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MissingInputError(
            f"The run directory {run_dir} does not exist. Give a run name under the output directory "
            "(for example `flowerkit fiftyone load my-run --output_dir output`) or a path to a run directory."
        )
    return run_dir


def load_run(run_dir: Path, dataset_name: str | None = None, overwrite: bool = False,
             reuse: bool = False) -> LoadResult:
    """Build the persistent FiftyOne dataset of a run's predictions and evaluate it with FiftyOne.

    One sample per row of ``fiftyone/predictions.jsonl``; ``ground_truth`` and ``predictions`` are
    ``fo.Classification`` fields; ``dataset.info`` holds the run name, config hash and split(s).
    A predict run's samples have ``predictions`` and no ``ground_truth``, and are not evaluated
    (``evaluation_skipped`` says why); its rows of inputs that could not be predicted are left out.
    An existing dataset is replaced with ``overwrite``; with ``reuse`` (and no ``overwrite``), an existing
    dataset of this same run is returned as it is, with its stored evaluation (``--launch`` opens it).
    Raises a ``FlowerkitError`` subclass with a user-facing message on bad input.
    """
    run_dir = require_run_dir(run_dir)
    # Validate every input before starting FiftyOne: bad input should fail in milliseconds.
    classes = read_labelmap(run_dir)
    info = read_run_info(run_dir)
    rows, left_out = read_predictions(run_dir, classes, info.labelled)
    name = dataset_name or default_dataset_name(info.name)
    splits = sorted({r.split for r in rows if r.split is not None})

    fo = import_fiftyone()
    if fo.dataset_exists(name):
        if reuse and not overwrite and _is_dataset_of(fo.load_dataset(name), run_dir, info.labelled):
            stored = fo.load_dataset(name)
            results = stored.load_evaluation_results(EVAL_KEY) if info.labelled else None
            return _result(stored, run_dir, rows, classes, results, left_out, reused=True)
        if not overwrite:
            raise DatasetExistsError(
                f"The FiftyOne dataset {name!r} exists already. Pass --overwrite to replace it, or "
                "--dataset_name to load the run under another name."
            )
        fo.delete_dataset(name)

    dataset = fo.Dataset(name, persistent=True)
    try:
        dataset.info = {
            "flowerkit_run_name": info.name,
            "run_dir": str(run_dir.resolve()),
            "config_hash": info.config_hash,
            "split": splits[0] if len(splits) == 1 else ",".join(splits),
            "splits": splits,
            "classes": classes,
            "num_rows": len(rows),
            "left_out": left_out,
            "config": info.config,
        }
        dataset.default_classes = list(classes)
        dataset.save()
        for start in range(0, len(rows), BATCH_SIZE):
            dataset.add_samples([_to_sample(fo, r) for r in rows[start : start + BATCH_SIZE]], progress=False)
        results = None
        if info.labelled:
            results = dataset.evaluate_classifications(
                pred_field="predictions",
                gt_field="ground_truth",
                eval_key=EVAL_KEY,
                classes=list(classes),
                progress=False,
            )
    except Exception:
        # Leave no half-built dataset behind.
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        raise

    return _result(dataset, run_dir, rows, classes, results, left_out)


def occurring_classes(rows: list[PredictionRow], classes: list[str]) -> list[str]:
    """The classes that occur (as truth or prediction), as sklearn reports them: a tiny subset would otherwise
    drown its handful of classes in rows of zeros, and macro averages would disagree with the run."""
    seen = {r.label for r in rows} | {r.prediction for r in rows}
    return [c for i, c in enumerate(classes) if i in seen]


def _result(dataset: Any, run_dir: Path, rows: list[PredictionRow], classes: list[str], results: Any,
            left_out: int, reused: bool = False) -> LoadResult:
    """What ``load_run`` returns; ``results`` None: a predict run, not evaluated."""
    report_classes = occurring_classes(rows, classes)
    info = dataset.info
    return LoadResult(
        dataset_name=dataset.name,
        run_name=info["flowerkit_run_name"],
        run_dir=run_dir,
        num_samples=len(dataset),
        splits=list(info.get("splits") or []),
        config_hash=info.get("config_hash"),
        classes=report_classes,
        metrics=None if results is None else dict(results.metrics(classes=report_classes)),
        report=None if results is None else results.report(classes=report_classes),
        results=results,
        reused=reused,
        left_out=left_out,
        evaluation_skipped=NO_GROUND_TRUTH if results is None else None,
    )


def _is_dataset_of(dataset: Any, run_dir: Path, labelled: bool) -> bool:
    """Whether ``dataset`` was loaded by flowerkit from this run directory (and evaluated, if it can be)."""
    info = dataset.info or {}
    evaluated = EVAL_KEY in dataset.list_evaluations() or not labelled
    return info.get("run_dir") == str(run_dir.resolve()) and evaluated


def _to_sample(fo: Any, r: PredictionRow) -> Any:
    prediction = fo.Classification(label=r.prediction_name, confidence=r.confidence)
    if r.logits is not None:
        prediction.logits = r.logits
    fields = dict(
        sample_id=r.sample_id,
        image_id=r.image_id,
        split=r.split,
        ground_truth=None if r.label_name is None else fo.Classification(label=r.label_name),
        predictions=prediction,
        label_id=r.label,
        prediction_id=r.prediction,
        top5=r.top5,
        unknown=r.unknown,
    )
    # A field a row lacks (a predict run's ground truth, split, image id) is not created at all.
    return fo.Sample(filepath=r.filepath, tags=[r.split] if r.split else [],
                     **{k: v for k, v in fields.items() if v is not None})


__all__ = [
    "DatasetExistsError",
    "LoadResult",
    "PredictionRow",
    "RunInfo",
    "default_dataset_name",
    "iter_prediction_rows",
    "load_run",
    "occurring_classes",
    "read_labelmap",
    "read_predictions",
    "read_run_info",
    "require_run_dir",
]
