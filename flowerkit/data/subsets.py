"""Tiny subsets: a built-in name or a manifest of image ids per split, capped at 2 batches.

A manifest is a YAML or JSON mapping ``{train: [ids], val: [ids], test: [ids]}`` of 1-based image ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from flowerkit.errors import ConfigError, MissingInputError
from flowerkit.io.inputs import USER_FILE_MAX_BYTES, read_utf8

BUILTIN_DIR = Path(__file__).parent / "subsets"
MAX_BATCHES = 2


def builtin_subsets() -> dict[str, Path]:
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.yaml"))}


@dataclass(frozen=True)
class SubsetSpec:
    name: str
    path: Path  # the manifest (or built-in definition) file, recorded in the env stamp
    strategy: str  # "one_per_class" (built-in) or "manifest"
    ids: dict[str, list[int]]  # explicit ids per split for manifests


def resolve_subset(value: str | None) -> SubsetSpec | None:
    """Turn ``--tiny_*_subset`` into a spec; unknown names and unreadable manifests are clear errors."""
    if not value:
        return None
    builtins = builtin_subsets()
    if value in builtins:
        definition = yaml.safe_load(builtins[value].read_text())
        return SubsetSpec(value, builtins[value].resolve(), definition["strategy"], {})
    path = Path(value).expanduser()
    looks_like_path = path.suffix or "/" in value or "\\" in value
    if not path.exists():  # a FIFO or device is a path that exists: read_utf8 refuses it in its own words
        if looks_like_path:
            raise MissingInputError(f"The subset manifest {path} does not exist. Pass a built-in subset name "
                                    f"({', '.join(builtins)}) or an existing YAML/JSON manifest file.")
        raise ConfigError(f"Unknown subset '{value}'. Built-in subsets: {', '.join(builtins)}; "
                          "or pass the path of a manifest file mapping train/val/test to lists of image ids.")
    try:
        data = yaml.safe_load(read_utf8(path, "The subset manifest", max_bytes=USER_FILE_MAX_BYTES))  # YAML ⊃ JSON
        ids = {split: [int(i) for i in data.get(split) or []] for split in ("train", "val", "test")}
        if not isinstance(data, dict) or not any(ids.values()):
            raise ValueError("no ids")
    except (yaml.YAMLError, ValueError, TypeError, AttributeError):
        raise ConfigError(f"The subset manifest {path} must be a YAML or JSON mapping of split names "
                          "(train, val, test) to lists of integer image ids.") from None
    return SubsetSpec(path.stem, path.resolve(), "manifest", ids)


def select_ids(spec: SubsetSpec | None, split: str, split_ids: np.ndarray, labels: np.ndarray,
               batch_size: int) -> np.ndarray:
    """The image ids a run uses for ``split``: all of them, or the subset's, capped at 2 batches."""
    if spec is None:
        return split_ids
    cap = MAX_BATCHES * batch_size
    if spec.strategy == "manifest":
        wanted = np.asarray(spec.ids.get(split, []), dtype=np.int64)
        foreign = np.setdiff1d(wanted, split_ids)
        if foreign.size:
            raise ConfigError(f"The subset manifest {spec.path} lists image ids that are not in the {split} split: "
                              f"{', '.join(map(str, foreign[:5]))}. List only ids of that split.")
        if wanted.size == 0:
            raise ConfigError(f"The subset manifest {spec.path} lists no ids for the {split} split.")
        return wanted[:cap]
    if spec.strategy == "one_per_class":
        return _one_per_class(split_ids, labels, cap)
    raise ConfigError(f"The subset definition {spec.path} has an unknown strategy '{spec.strategy}'.")


def _one_per_class(split_ids: np.ndarray, labels: np.ndarray, cap: int) -> np.ndarray:
    """Round-robin over classes in label order, lowest image id first: deterministic and class-diverse."""
    order = np.lexsort((split_ids, labels))  # by class, then id
    ids, classes = split_ids[order], labels[order]
    rank = np.zeros(ids.size, dtype=np.int64)  # position of each id within its class
    starts = np.flatnonzero(np.r_[True, classes[1:] != classes[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], ids.size]):
        rank[start:end] = np.arange(end - start)
    chosen = np.lexsort((classes, rank))  # all rank-0 ids by class, then rank 1, ...
    return ids[chosen][:cap]


def ids_hash(image_ids: np.ndarray) -> str:
    return hashlib.sha256(",".join(map(str, np.asarray(image_ids).tolist())).encode()).hexdigest()
