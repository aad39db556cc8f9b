"""Reader of the official Oxford Flowers-102 files.

Layout (https://www.robots.ox.ac.uk/~vgg/data/flowers/102/): ``jpg/image_NNNNN.jpg``, ``imagelabels.mat``
(``labels``: 1..102 per image) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``: 1-based image ids).
``data_root`` may be that folder or a parent holding ``flowers-102/`` (torchvision's layout).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowerkit.errors import ConfigError, MissingInputError

SPLIT_KEYS = {"train": "trnid", "val": "valid", "test": "tstid"}
NUM_CLASSES = 102
DOWNLOAD_HINT = (
    "Generate a synthetic look-alike with `flowerkit data synth --out DIR`, or download the real set "
    "(102flowers.tgz, imagelabels.mat and setid.mat from https://www.robots.ox.ac.uk/~vgg/data/flowers/102/) "
    "and extract it so that DIR/jpg/ holds the images."
)

# The 102 official category names, in label order 1..102.
CATEGORY_NAMES: tuple[str, ...] = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
    "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot",
    "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily",
    "balloon flower", "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke", "sweet william",
    "carnation", "garden phlox", "love in the mist", "mexican aster", "alpine sea holly", "ruby-lipped cattleya",
    "cape flower", "great masterwort", "siam tulip", "lenten rose", "barbeton daisy", "daffodil", "sword lily",
    "poinsettia", "bolero deep blue", "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion",
    "petunia", "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura", "geranium",
    "orange dahlia", "pink-yellow dahlia", "cautleya spicata", "japanese anemone", "black-eyed susan",
    "silverbush", "californian poppy", "osteospermum", "spring crocus", "bearded iris", "windflower",
    "tree poppy", "gazania", "azalea", "water lily", "rose", "thorn apple", "morning glory", "passion flower",
    "lotus", "toad lily", "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose",
    "tree mallow", "magnolia", "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "ball moss",
    "foxglove", "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
)
assert len(CATEGORY_NAMES) == NUM_CLASSES


def labelmap() -> dict[str, str]:
    """Class index (0-based, as the model predicts it) to official category name."""
    return {str(i): name for i, name in enumerate(CATEGORY_NAMES)}


def image_relpath(image_id: int) -> str:
    return f"jpg/image_{image_id:05d}.jpg"


@dataclass(frozen=True)
class Flowers102:
    """The index of a Flowers-102 folder: labels and split ids, no pixels."""

    root: Path
    labels: np.ndarray  # 0-based class of image id i at position i-1
    splits: dict[str, np.ndarray]  # split name -> sorted 1-based image ids

    def image_path(self, image_id: int) -> Path:
        return self.root / image_relpath(image_id)

    def label_of(self, image_ids: np.ndarray) -> np.ndarray:
        return self.labels[np.asarray(image_ids) - 1]


def locate_root(data_root: Path | None) -> Path:
    """The folder that holds the official files: ``data_root`` itself or its ``flowers-102/`` child."""
    if data_root is None:
        raise MissingInputError(
            "--dataset flower102 needs the dataset's location: pass --data_root DIR or set FLOWERKIT_DATA_ROOT. "
            f"{DOWNLOAD_HINT} Or use --dataset flower102_synthetic, which needs no files.")
    data_root = Path(data_root).expanduser()
    for candidate in (data_root, data_root / "flowers-102"):
        if (candidate / "imagelabels.mat").is_file() and (candidate / "setid.mat").is_file():
            return candidate
    if not data_root.exists():
        problem = f"--data_root {data_root} does not exist."
    else:
        problem = f"--data_root {data_root} does not hold the Flowers-102 layout (imagelabels.mat, setid.mat, jpg/)."
    raise MissingInputError(f"{problem} Expected DIR/imagelabels.mat, DIR/setid.mat and DIR/jpg/image_00001.jpg..., "
                            f"or the same inside DIR/flowers-102/. {DOWNLOAD_HINT}")


def open_flowers102(data_root: Path | None) -> Flowers102:
    """Read and check the label and split files; image files are checked for the ids a run uses."""
    from scipy.io import (
        loadmat,  # scipy is slow to import; only readers of real files pay for it
    )
    from scipy.io.matlab import MatReadError

    root = locate_root(data_root)
    try:
        labels = np.asarray(loadmat(root / "imagelabels.mat", squeeze_me=True)["labels"], dtype=np.int64).ravel()
        setid = loadmat(root / "setid.mat", squeeze_me=True)
        splits = {split: np.sort(np.asarray(setid[key], dtype=np.int64).ravel()) for split, key in SPLIT_KEYS.items()}
    except (KeyError, ValueError, OSError, TypeError, MatReadError) as exc:
        raise ConfigError(
            f"{root} holds imagelabels.mat and setid.mat but they could not be read as Flowers-102 files ({exc}). "
            "imagelabels.mat must hold 'labels' (1..102 per image) and setid.mat 'trnid', 'valid' and 'tstid'. "
            f"{DOWNLOAD_HINT}") from None
    if labels.size == 0 or labels.min() < 1 or labels.max() > NUM_CLASSES:
        raise ConfigError(f"{root / 'imagelabels.mat'}: labels must lie in 1..{NUM_CLASSES}. {DOWNLOAD_HINT}")
    for split, ids in splits.items():
        if ids.size and (ids.min() < 1 or ids.max() > labels.size):
            raise ConfigError(f"{root / 'setid.mat'}: {SPLIT_KEYS[split]} names image ids outside 1..{labels.size}.")
    return Flowers102(root=root, labels=labels - 1, splits=splits)


def check_images_exist(dataset: Flowers102, image_ids: np.ndarray) -> None:
    missing = [int(i) for i in image_ids if not dataset.image_path(int(i)).is_file()]
    if missing:
        shown = ", ".join(image_relpath(i) for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise MissingInputError(f"{dataset.root} is missing image files the run needs: {shown}{more}. "
                                f"Re-extract the dataset or regenerate it. {DOWNLOAD_HINT}")


# Files already decoded cleanly in this process, by (path, size, mtime): the CLI's pre-run check and the flow's
# load_subset task check the same images, and the second check must not cost a second full decode.
_DECODED_OK: set[tuple[str, int, int]] = set()
_DECODED_LOCK = threading.Lock()
SHOWN_BAD_FILES = 20


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def decode_problem(path: Path) -> str | None:
    """Why ``path`` is not a decodable image (None if it is); a full decode at libjpeg's 1/8 scale (~1 ms)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (1, 1))  # JPEG: decode every scan at the smallest scale; truncation still fails
            im.load()
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return str(exc).split("\n")[0] or type(exc).__name__
    return None


def check_images_decode(dataset: Flowers102, image_ids: np.ndarray) -> None:
    """Decode every image a run uses and report ALL undecodable files in one ConfigError (a data problem:
    retrying cannot help, so the Prefect tasks do not retry it)."""
    bad = []
    for image_id in np.asarray(image_ids).tolist():
        path = dataset.image_path(int(image_id))
        key = _file_key(path)
        with _DECODED_LOCK:
            if key in _DECODED_OK:
                continue
        problem = decode_problem(path)
        if problem is None:
            with _DECODED_LOCK:
                _DECODED_OK.add(key)
        else:
            bad.append(f"{path} ({problem})")
    if bad:
        shown = "; ".join(bad[:SHOWN_BAD_FILES])
        more = f"; and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else ""
        raise ConfigError(f"{len(bad)} image file(s) of {dataset.root} cannot be decoded: {shown}{more}. They are "
                          "truncated or not JPEG images: replace them with intact copies (re-extract or re-download "
                          f"the dataset), or remove their ids from setid.mat. {DOWNLOAD_HINT}")


def undecodable_error(path: Path, exc: BaseException) -> ConfigError:
    """For a file that passed the pre-run check but fails later (changed in between): still named, not retried."""
    return ConfigError(f"The image file {path} cannot be decoded ({str(exc).splitlines()[0] or type(exc).__name__})"
                       f"; it is truncated or not a JPEG image. Replace it with an intact copy. {DOWNLOAD_HINT}")


def check_split_not_empty(dataset: Flowers102, split: str, image_ids: np.ndarray, subset: str) -> None:
    """A split with no images cannot be trained on or evaluated (training would crash at its first argmax)."""
    if len(image_ids) == 0:
        source = (f"{dataset.root / 'setid.mat'}'s '{SPLIT_KEYS[split]}' is empty" if subset.startswith("full")
                  else f"the subset {subset} selects none of it")
        raise ConfigError(f"The {split} split has no images: {source}. Use a setid.mat whose '{SPLIT_KEYS[split]}' "
                          "lists image ids, or a subset that selects some.")
