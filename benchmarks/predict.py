"""Time ``flowerkit predict``: one photo end to end as a new process, and a folder of 1,000 JPEGs.

    .venv/bin/python benchmarks/predict.py [--repeats 5] [--img_size 64] [--model_threads N] [--device cpu]
                                           [--out FILE.json]

What it does, entirely through the CLI, in a temporary folder:

1. ``flowerkit data synth`` (10 images per class, 500 px: 1,020 JPEGs like the real set's) and a short
   ViT-Ti/16 run at 64 px (``flowerkit train``, 4 steps: the weights do not matter for speed), then
   ``flowerkit export --format onnx``.
2. Single-image latency: ``flowerkit predict one.jpg --run NAME`` and ``--onnx FILE`` as new processes,
   process start, imports and model loading included; and, as the floor no torch command can beat,
   ``python -c "import torch"`` (what the --run path must import). Repeats interleaved; the
   fastest run counts (other load on the machine only ever adds time), the median is reported too.
3. Folder throughput: ``flowerkit predict jpg/ --out rows.jsonl`` over the first 1,000 JPEGs (a folder of
   links), its own img/s (model loaded, from first decode to last row) for the torch and ONNX paths and with
   ``--tta``; after each round, ``flowerkit bench``'s evaluation rate for the same model, size and batch (its
   images are decoded once into the pixel cache beforehand, so that rate is the model's, with no decoding),
   and the ratio of each folder rate to the bench rate of its own round.

``--img_size 224`` times ViT-Ti/16 at its own size instead of the demo's 64 px. ``--model_threads N`` gives torch N
threads in every command (bench too): with fewer threads than cores, decoding overlaps the model on the cores
it leaves free, which is how a GPU machine runs (the model elsewhere, the cores free to decode).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FLOWERKIT = str(BIN / "flowerkit")
MODEL, BATCH = "ViT-Ti_16", 32
FOLDER_IMAGES = 1000
RATE = re.compile(r"(\d+) of (\d+) image\(s\) predicted.* in ([\d.]+) s \(([\d.]+) img/s\)")


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds, done.stdout + done.stderr


def stats(values: list[float]) -> dict:
    return {"best_s": round(min(values), 3), "median_s": round(statistics.median(values), 3),
            "all_s": [round(v, 3) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--img_size", type=int, default=64,
                        help="the model's input size (64: the demo's; 224: ViT-Ti/16's own)")
    parser.add_argument("--model_threads", type=int, default=0,
                        help="torch threads (OMP_NUM_THREADS) for every command, bench included; 0: one per "
                             "core. Fewer than the cores leaves cores to decoding, as a GPU would. Times the torch "
                             "folder only (onnxruntime does not read OMP_NUM_THREADS)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"],
                        help="where predict's model and bench's evaluation run (both the same)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/predict[-SIZE][-tN].json")
    args = parser.parse_args()
    size = args.img_size
    suffix = (("" if size == 64 else f"-{size}") + (f"-t{args.model_threads}" if args.model_threads else "")
              + ("" if args.device == "cpu" else f"-{args.device}"))
    args.out = args.out or REPO / "benchmarks" / "results" / f"predict{suffix}.json"

    loads = [os.getloadavg()[0]]  # other work on the machine: every figure is only as good as its quiet
    with tempfile.TemporaryDirectory(prefix="flowerkit-predict-bench-") as tmp:
        work = Path(tmp)
        env = os.environ | {"FLOWERKIT_CACHE_DIR": str(work / "cache"), "PREFECT_HOME": str(work / "prefect")}
        if args.model_threads:
            env["OMP_NUM_THREADS"] = str(args.model_threads)
        data = work / "data"
        print("generating 1,020 JPEGs and training a short ViT-Ti/16 run ...", file=sys.stderr)
        run([FLOWERKIT, "data", "synth", "--out", str(data), "--images-per-class", "10", "--size", "500"], work, env)
        run([FLOWERKIT, "train", "--name", "ti", "--dataset", "flower102", "--data_root", str(data), "--model_type",
             MODEL, "--img_size", str(size), "--num_steps", "4", "--eval_every", "2", "--train_batch_size", "16",
             "--eval_batch_size", str(BATCH), "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset",
             "flower102_tiny", "--output_dir", str(work / "output"), "--quiet"], work, env)
        run([FLOWERKIT, "export", "ti", "--format", "onnx", "--output_dir", str(work / "output"), "--out",
             str(work / "ti.onnx")], work, env)
        images = sorted((data / "jpg").glob("*.jpg"))
        folder = work / "folder"
        folder.mkdir()
        for image in images[:FOLDER_IMAGES]:
            (folder / image.name).symlink_to(image)
        one = str(images[0])
        run_flags = ["--run", "ti", "--output_dir", str(work / "output"), "--device", args.device]
        onnx_flags = ["--onnx", str(work / "ti.onnx"), "--device", "cuda" if args.device == "cuda" else "cpu"]

        print("single-image latency ...", file=sys.stderr)
        latency: dict[str, list[float]] = {"import_torch": [], "predict_run": [], "predict_onnx": []}
        commands = {"import_torch": [sys.executable, "-c", "import torch"],
                    "predict_run": [FLOWERKIT, "predict", one, *run_flags],
                    "predict_onnx": [FLOWERKIT, "predict", one, *onnx_flags]}
        for name, cmd in commands.items():  # one untimed warm-up each: the disk cache
            run(cmd, work, env)
        for _ in range(args.repeats):
            for name, cmd in commands.items():
                loads.append(os.getloadavg()[0])
                latency[name].append(run(cmd, work, env)[0])

        print("folder throughput, interleaved with flowerkit bench ...", file=sys.stderr)
        # Each repeat: the three folder runs, then `flowerkit bench` (its evaluation rate), so every ratio
        # compares rates measured minutes apart under the same other load, not an idle bench with a busy folder.
        bench_rates: list[dict] = []
        variants = {"run": run_flags, "onnx": onnx_flags, "run_tta": [*run_flags, "--tta"]}
        if args.model_threads:
            variants = {"run": run_flags}
        folder_rates: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, flags in variants.items():
                loads.append(os.getloadavg()[0])
                _, output = run([FLOWERKIT, "predict", str(folder), *flags, "--batch_size", str(BATCH), "--out",
                                 str(work / f"rows-{name}.jsonl")], work, env)
                match = RATE.search(output)
                assert match and int(match.group(1)) == FOLDER_IMAGES, output[-1000:]
                folder_rates[name].append(float(match.group(4)))
            bench_json = work / f"bench-{repeat}.json"
            run([FLOWERKIT, "bench", "--model_type", MODEL, "--img_size", str(size), "--batch_size", str(BATCH),
                 "--eval_batch_size", str(BATCH), "--steps", "10", "--warmup", "2", "--repeats", "1", "--device",
                 args.device, "--out", str(bench_json)], work, env)
            bench = json.loads(bench_json.read_text())
            bench_rates.append({"compute_only": round(bench["eval"]["compute_only"]["images_per_second"], 1),
                                "end_to_end": round(bench["eval"]["end_to_end"]["images_per_second"], 1),
                                "load_average_1m": bench["machine"]["load_average_1m"]})

    eval_rates = [b["end_to_end"] for b in bench_rates]
    ratios = {name: [round(r / e, 3) for r, e in zip(rates, eval_rates)] for name, rates in folder_rates.items()}
    result = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": MODEL, "img_size": size, "batch_size": BATCH, "machine": bench["machine"],
        "model_threads": args.model_threads or None,
        "single_image_latency": {name: stats(values) for name, values in latency.items()},
        "folder": {name: {"best_img_per_s": max(v), "all": v} for name, v in folder_rates.items()}
        | {"images": FOLDER_IMAGES},
        "bench_eval": bench_rates,
        "folder_over_bench_eval": {name: {"best": max(r), "median": statistics.median(r), "all": r}
                                   for name, r in ratios.items()},
        "load_average_1m": {"min": min(loads), "max": max(loads), "at_end": os.getloadavg()[0]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
