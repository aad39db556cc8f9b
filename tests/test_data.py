"""The Flowers-102 reader, the synthetic generator's file format, and tiny subsets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat

from flowerkit.data.flowers102 import CATEGORY_NAMES, labelmap, locate_root, open_flowers102
from flowerkit.data.subsets import ids_hash, resolve_subset, select_ids
from flowerkit.data.synth import split_counts
from flowerkit.errors import ConfigError, MissingInputError


def test_synthetic_files_have_the_official_keys_dtypes_and_shapes(flowers_root: Path) -> None:
    labels = loadmat(flowers_root / "imagelabels.mat")["labels"]
    assert labels.dtype == np.uint8 and labels.shape == (1, 102 * 3)
    assert labels.min() == 1 and labels.max() == 102
    setid = loadmat(flowers_root / "setid.mat")
    for key in ("trnid", "valid", "tstid"):
        assert setid[key].dtype == np.uint16 and setid[key].shape == (1, 102)
    all_ids = np.concatenate([setid[k].ravel() for k in ("trnid", "valid", "tstid")])
    assert sorted(all_ids.tolist()) == list(range(1, 307))  # every image in exactly one split
    from PIL import Image

    with Image.open(flowers_root / "jpg" / "image_00001.jpg") as im:
        assert im.format == "JPEG" and min(im.size) == 96


def test_official_split_sizes_by_default() -> None:
    assert split_counts(30) == (10, 10, 10)
    assert split_counts(3) == (1, 1, 1)


def test_torchvision_reads_the_synthetic_set_unchanged(flowers_root: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import Flowers102

    (tmp_path / "flowers-102").symlink_to(flowers_root, target_is_directory=True)
    monkeypatch.setattr(Flowers102, "_check_integrity", lambda self: True)  # our files have other checksums
    ours = open_flowers102(flowers_root)
    for split, theirs_name in (("train", "train"), ("val", "val"), ("test", "test")):
        theirs = Flowers102(str(tmp_path), split=theirs_name)
        ids = [int(Path(f).stem.split("_")[1]) for f in theirs._image_files]
        assert ids == ours.splits[split].tolist()
        assert theirs._labels == ours.label_of(ours.splits[split]).tolist()


def test_reader_accepts_the_folder_or_a_parent_holding_flowers_102(flowers_root: Path, tmp_path: Path) -> None:
    (tmp_path / "flowers-102").symlink_to(flowers_root, target_is_directory=True)
    assert locate_root(tmp_path) == tmp_path / "flowers-102"
    assert locate_root(flowers_root) == flowers_root


@pytest.mark.parametrize("make", ["missing", "empty", "none"])
def test_missing_layout_is_a_clear_error(tmp_path: Path, make: str) -> None:
    root = None if make == "none" else tmp_path / "nope"
    if make == "empty":
        root.mkdir()
    with pytest.raises(MissingInputError) as err:
        locate_root(root)
    assert "flowerkit data synth" in err.value.message and err.value.exit_code == 3


def test_corrupt_mat_file_is_a_clear_error(flowers_root: Path, tmp_path: Path) -> None:
    shutil.copytree(flowers_root, tmp_path / "f", ignore=shutil.ignore_patterns("jpg"))
    (tmp_path / "f" / "setid.mat").write_bytes(b"not a mat file")
    with pytest.raises(ConfigError, match="could not be read as Flowers-102 files"):
        open_flowers102(tmp_path / "f")


def test_labelmap_has_the_102_official_names() -> None:
    names = labelmap()
    assert len(names) == 102 and names["0"] == "pink primrose" and names["101"] == "blackberry lily"
    assert len(set(CATEGORY_NAMES)) == 102


def test_builtin_tiny_subset_is_capped_deterministic_and_class_diverse(flowers_root: Path) -> None:
    data = open_flowers102(flowers_root)
    spec = resolve_subset("flower102_tiny")
    ids = data.splits["val"]
    chosen = select_ids(spec, "val", ids, data.label_of(ids), batch_size=2)
    assert len(chosen) == 4  # two batches of two
    assert data.label_of(chosen).tolist() == [0, 1, 2, 3]  # one image per class, in class order
    again = select_ids(resolve_subset("flower102_tiny"), "val", ids, data.label_of(ids), batch_size=2)
    assert ids_hash(chosen) == ids_hash(again)


def test_manifest_subset(flowers_root: Path, tmp_path: Path) -> None:
    data = open_flowers102(flowers_root)
    val = data.splits["val"]
    manifest = tmp_path / "mine.json"
    manifest.write_text(json.dumps({"val": val[:7].tolist(), "train": val[:2].tolist()}))
    chosen = select_ids(resolve_subset(str(manifest)), "val", val, data.label_of(val), batch_size=3)
    assert chosen.tolist() == val[:6].tolist()  # capped at 2 batches of 3
    with pytest.raises(ConfigError, match="not in the train split"):
        train = data.splits["train"]
        select_ids(resolve_subset(str(manifest)), "train", train, data.label_of(train), 3)


def test_unknown_subset_name_and_missing_manifest() -> None:
    with pytest.raises(ConfigError, match="Unknown subset 'flower102_huge'"):
        resolve_subset("flower102_huge")
    with pytest.raises(MissingInputError, match="does not exist"):
        resolve_subset("subsets/nothing.yaml")


def test_synthetic_dataset_is_generated_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowerkit.data import selection
    from flowerkit.data.synth import SynthSpec

    monkeypatch.setenv("FLOWERKIT_CACHE_DIR", str(tmp_path / "cache"))
    spec = SynthSpec(images_per_class=2, size=32, seed=3)
    root = selection.synthetic_root(spec)
    assert open_flowers102(root).labels.size == 204
    stamp = (root / "setid.mat").stat().st_mtime_ns
    assert selection.synthetic_root(spec) == root and (root / "setid.mat").stat().st_mtime_ns == stamp
    assert not list(root.parent.glob(".*partial*"))  # generated into a staging folder, then renamed


def test_a_shifted_synthetic_set_has_other_classes_in_the_official_layout(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowerkit.cli import app

    args = ["data", "synth", "--images_per_class", "1", "--size", "32", "--seed", "4"]
    for variant in ("standard", "shifted"):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / variant), "--variant", variant])
        assert result.exit_code == 0, result.output
    standard, shifted = open_flowers102(tmp_path / "standard"), open_flowers102(tmp_path / "shifted")
    assert np.array_equal(standard.labels, shifted.labels)  # same seed: same ids, labels and poses
    assert all(np.array_equal(standard.splits[s], shifted.splits[s]) for s in ("train", "val", "test"))
    from PIL import Image

    with Image.open(standard.image_path(1)) as a, Image.open(shifted.image_path(1)) as b:
        assert a.size == b.size and np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() > 5  # new colours
    bad = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--variant", "tulips"])
    assert bad.exit_code == 2 and "choose one of standard, shifted" in bad.output
    assert not (tmp_path / "bad").exists()
