"""Peak memory of ``flowerkit predict`` on huge 16-bit images and on a large folder.

    .venv/bin/python benchmarks/predict_memory.py [--images 4] [--side 12000] [--folder_files 5000]
                                                  [--out FILE.json]

What it does, entirely through the CLI, in a temporary folder:

1. Writes a ViT-Ti/16 checkpoint at 64 px with a recorded evaluation transform (the demo's: cached, 128 px
   decode): the weights do not matter for memory, only the model's size and the decoding.
2. ``--images`` 16-bit grayscale PNGs of ``--side`` x ``--side`` (12000: 144 megapixels, above Pillow's
   89-megapixel decompression-bomb warning, below its refusal) holding a smooth gradient, so each file is a
   few hundred KB however many pixels it decodes to. ``flowerkit predict FOLDER --checkpoint C --out rows.jsonl``
   runs as a new process; its peak resident memory is that child's ``ru_maxrss`` (``os.wait4``), and
   ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` read right after it (the largest child so far: the same
   number, as it is the first child).
3. A folder of ``--folder_files`` JPEGs (links to 20 distinct 500 x 375 JPEGs, the size of Flowers-102's) the
   same way: a folder's memory must not grow with its number of files.
4. ``python -c "import torch"`` as a new process, timed (the floor of any torch command's start-up, measured
   in the same run so the machine's load is the same).

Files are made by child processes too: a child's peak RSS starts from its parent's RSS when it forks (Linux
carries it across exec), so this process stays small. Every figure is written to
``benchmarks/results/predict_memory.json`` (or ``--out``); ``--label`` names the code measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOWERKIT = str(Path(sys.executable).parent / "flowerkit")
MODEL, IMG_SIZE, DECODE = "ViT-Ti_16", 64, 128


def write_checkpoint(path: Path) -> None:
    """In a child process: this process stays free of torch, so the children's figures are theirs alone."""
    code = ("import sys; from pathlib import Path\n"
            "from flowerkit.data.eval_transform import EvalTransform\n"
            "from flowerkit.data.flowers102 import NUM_CLASSES, labelmap\n"
            "from flowerkit.engine.checkpoint import save_checkpoint\n"
            "from flowerkit.models.vit import build_model\n"
            f"model = build_model({MODEL!r}, {IMG_SIZE}, NUM_CLASSES)\n"
            f"save_checkpoint(Path(sys.argv[1]), {{'model': model.state_dict(), 'model_type': {MODEL!r}, "
            f"'img_size': {IMG_SIZE}, 'num_classes': NUM_CLASSES, 'step': 0, 'labelmap': labelmap(), "
            f"'eval_transform': EvalTransform({IMG_SIZE}, 'cached', {DECODE}).to_dict()}})\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=REPO)


def in_child(function: str, *args: object) -> None:
    """``function(*args)`` of this module in a new process (its arrays never count in this one's RSS)."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import predict_memory as m; "
            f"m.{function}(*{args!r})")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def write_16bit_pngs(folder: str, count: int, side: int) -> None:
    """``count`` 16-bit grayscale PNGs of ``side`` x ``side``: a vertical gradient, every row one value (PNG's
    filters turn each row into zeros, so a 288 MB image is a file of about 280 KB, as a decompression bomb is)."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir()
    ramp = np.arange(side, dtype=np.uint32)
    for i in range(count):
        column = ((ramp * 5 + i * 977) % 65536).astype(np.uint16)
        pixels = np.ascontiguousarray(np.broadcast_to(column[:, None], (side, side)))
        path = folder / f"huge16_{i}.png"
        Image.fromarray(pixels).save(path)  # mode I;16
        del pixels


def write_folder(folder: str, files: int) -> None:
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    sources = folder / "sources"
    sources.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        smooth = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        Image.fromarray(smooth).resize((500, 375), Image.BICUBIC).save(sources / f"s{i}.jpg", quality=90)
    photos = folder / "photos"
    photos.mkdir()
    for i in range(files):
        (photos / f"photo_{i:05d}.jpg").symlink_to(sources / f"s{i % 20}.jpg")


def predict(folder: Path, checkpoint: Path, workdir: Path) -> dict:
    """One ``flowerkit predict`` as a new process: its exit status, seconds, peak RSS and summary line."""
    started = time.perf_counter()
    child = subprocess.Popen([FLOWERKIT, "predict", str(folder), "--checkpoint", str(checkpoint), "--out",
                              str(workdir / "rows.jsonl")], cwd=workdir, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"flowerkit predict {folder} failed ({child.returncode}):\n{stderr[-4000:]}")
    summary = [line for line in stderr.splitlines() if "image(s) predicted" in line]
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "rusage_children_max_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "summary": summary[-1] if summary else stderr.strip().splitlines()[-1:],
            "other_stderr_lines": [line for line in stderr.splitlines()  # warnings would show here
                                   if line not in summary and not line.startswith(("Model:", "Note:"))][:10]}


def import_torch_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="huge 16-bit PNGs to predict")
    parser.add_argument("--side", type=int, default=12000, help="their side in pixels")
    parser.add_argument("--folder_files", type=int, default=5000, help="files of the large folder (0: skip it)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "predict_memory.json")
    parser.add_argument("--label", default="", help="what code was measured (recorded as is)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="flowerkit-predict-memory-") as tmp:
        work = Path(tmp)
        checkpoint = work / "vit-ti16.bin"
        write_checkpoint(checkpoint)
        in_child("write_16bit_pngs", str(work / "huge"), args.images, args.side)
        sizes = [path.stat().st_size for path in sorted((work / "huge").iterdir())]
        load = os.getloadavg()[0]
        huge = predict(work / "huge", checkpoint, work)  # first child: RUSAGE_CHILDREN is its own peak
        huge.update(images=args.images, side=args.side, megapixels_each=round(args.side ** 2 / 1e6, 1),
                    file_kb_each=[round(s / 1024) for s in sizes])
        torch_s = import_torch_seconds()
        folder = None
        if args.folder_files:
            in_child("write_folder", str(work / "folder"), args.folder_files)
            folder = predict(work / "folder" / "photos", checkpoint, work)
            folder["files"] = args.folder_files

    import PIL

    result = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "label": args.label,
        "model": MODEL, "img_size": IMG_SIZE, "decode_size": DECODE,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "pillow": PIL.__version__, "load_average_1m": round(load, 2)},
        "huge_16bit_pngs": huge,
        "import_torch_s": torch_s,
        "folder": folder,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
