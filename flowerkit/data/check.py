"""``flowerkit data check DIR``: is this a complete, readable copy of Flowers-102?

Checks the layout, the .mat contents (through the same reader the runs use), that every labelled image
exists and decodes, and, when the archive is present (a downloaded copy), the official md5s of the files. Every problem is one
paragraph; the caller decides the exit code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from flowerkit.data.download import ARCHIVE, OFFICIAL_MD5, calculate_md5
from flowerkit.data.flowers102 import Flowers102, check_split_not_empty, open_flowers102
from flowerkit.errors import FlowerkitError

MAX_LISTED = 5


@dataclass
class DataReport:
    root: Path
    images: int = 0
    verified: list[str] = field(default_factory=list)  # files whose official md5 matched
    problems: list[str] = field(default_factory=list)
    missing_input: bool = False  # something required is absent (root, images): exit 3, as train gives

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """The code train gives for the same problem: 3 when an input is missing, else 2 (0 when ok)."""
        return 0 if self.ok else 3 if self.missing_input else 2

    def checksums(self) -> str:
        """For plans and logs: which files were verified against the official md5s."""
        if not self.verified:
            return f"checksums not verified ({ARCHIVE} absent: not a download, or the archive was deleted)"
        return f"md5 verified: {', '.join(self.verified)}"


def check_flowers102(data_root: Path, md5s: dict[str, str] | None = None, decode: bool = True) -> DataReport:
    """Inspect ``data_root`` (or its flowers-102/ child); ``md5s`` defaults to the official table."""
    md5s = OFFICIAL_MD5 if md5s is None else md5s
    try:
        dataset = open_flowers102(data_root)
    except FlowerkitError as exc:
        return DataReport(Path(data_root), problems=[exc.message], missing_input=exc.exit_code == 3)
    report = DataReport(dataset.root, images=int(dataset.labels.size))
    _check_splits(report, dataset)
    _check_checksums(report, md5s)
    _check_images(report, [dataset.image_path(i) for i in range(1, dataset.labels.size + 1)], decode)
    return report


def plan_line(data_root: Path | None) -> str:
    """For ``--dry_run``: the data root and which official md5s its files match (no image decoding)."""
    from flowerkit.data.flowers102 import locate_root

    report = DataReport(locate_root(data_root))
    _check_checksums(report, OFFICIAL_MD5)
    if report.problems:
        return f"{report.root}: {len(report.problems)} file(s) differ from the official md5s (run `flowerkit " \
               f"data check {report.root}`)"
    return f"{report.root}: {report.checksums()}"


@functools.lru_cache(maxsize=16)
def _md5(path: str, size: int, mtime_ns: int) -> str:
    return calculate_md5(path)


def file_md5(path: Path) -> str:
    """md5 of ``path``, once per (path, size, mtime): the archive is 330 MB and plans are printed often."""
    stat = path.stat()
    return _md5(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _check_checksums(report: DataReport, md5s: dict[str, str]) -> None:
    """md5s only for a downloaded copy (the archive is there): a synthetic or hand-made set has no official sums."""
    if not (report.root / ARCHIVE).is_file():
        return
    for name, md5 in md5s.items():
        path = report.root / name
        if not path.is_file():
            continue  # the archive may be deleted after extraction; the .mat files were checked by reading them
        actual = file_md5(path)
        if actual == md5:
            report.verified.append(name)
        else:
            report.problems.append(f"{path} is not the official {name}: expected md5 {md5}, got {actual}. "
                                   "Delete it and run `flowerkit data download --out DIR` again.")


def _check_splits(report: DataReport, dataset: Flowers102) -> None:
    """An empty split is the error train gives before it starts (exit 2): every split a run may use must list
    images, the test split included (``--test_after`` and ``flowerkit eval --split test`` read it)."""
    for split, ids in dataset.splits.items():
        try:
            check_split_not_empty(dataset, split, ids, "full")
        except FlowerkitError as exc:
            report.problems.append(exc.message)


def _check_images(report: DataReport, paths: list[Path], decode: bool) -> None:
    from PIL import Image, UnidentifiedImageError

    missing, broken = [], []
    for path in paths:
        if not path.is_file():
            missing.append(path)
            continue
        if decode:
            try:
                with Image.open(path) as image:
                    image.load()
            except (OSError, UnidentifiedImageError, ValueError):
                broken.append(path)
    fix = (f"Extract {ARCHIVE} again (`flowerkit data download --out DIR` does it, after deleting DIR/jpg), or "
           "regenerate a synthetic set.")
    if missing:
        report.missing_input = True
        report.problems.append(f"{len(missing)} of {len(paths)} labelled images are missing from {report.root}, "
                               f"e.g. {_listed(missing, report.root)}. {fix}")
    if broken:
        report.problems.append(f"{len(broken)} images in {report.root} do not decode as images (truncated or "
                               f"damaged), e.g. {_listed(broken, report.root)}. {fix}")


def _listed(paths: list[Path], root: Path) -> str:
    shown = ", ".join(str(p.relative_to(root)) for p in paths[:MAX_LISTED])
    return shown + (f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else "")

