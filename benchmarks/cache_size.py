"""Which ``--cache_size``: the cached pipeline at several cache resolutions against the PIL reference.

    .venv/bin/python benchmarks/cache_size.py [--img_size 32] [--factors 1.143 1.5 2 3] [--native 500]
                                               [--accuracy_factors 1.143 2] [--steps 150]
                                               [--out benchmarks/results/cache-size.json]

On flower102_synthetic (generated once into the flowerkit cache), for each cache short side S:

- fidelity: the mean absolute difference, on the model's [-1, 1] input scale, between the cached pipeline's
  batches and the PIL pipeline's for the same batch plan (training crops, by crop area, and evaluation);
- cost: cache bytes per image, the train+val+test caches' size, and the time to build them (decode once);
- accuracy (for ``--accuracy_factors`` and native: training is what costs time on 2 cores): the same short
  from-scratch training (``flowerkit.engine.trainer.train``, the code ``flowerkit train`` runs: same seed,
  same batch plan), then the selected checkpoint's validation and test accuracy; plus the same training
  through ``--data_pipeline pil``, the reference.

Caches are built in a temporary folder (``FLOWERKIT_CACHE_DIR``) that is removed at the end, so build times
are first-use times and the user's cache is left alone. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")
SMALL_CROP, LARGE_CROP = 0.2, 0.5  # crop area as a fraction of the image: below / at least


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img_size", type=int, default=32, help="Training resolution of the accuracy runs.")
    parser.add_argument("--fidelity_sizes", type=int, nargs="+", default=[32, 64],
                        help="Resolutions at which fidelity is measured (each with every factor).")
    parser.add_argument("--factors", type=float, nargs="+", default=[256 / 224, 1.5, 2.0, 3.0],
                        help="Cache short side as multiples of the resolution.")
    parser.add_argument("--accuracy_factors", type=float, nargs="+", default=[256 / 224, 2.0],
                        help="The factors also trained with (besides native and the pil reference).")
    parser.add_argument("--native", type=int, default=500, help="Also the images' own short side (0: skip).")
    parser.add_argument("--fidelity_images", type=int, default=128)
    parser.add_argument("--model_type", default="ViT-Ti_16")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_accuracy", action="store_true")
    parser.add_argument("--fidelity_only", action="store_true", help="No cache builds, no training.")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cache-size.json")
    return parser.parse_args()


def cache_sizes(img_size: int, factors: list[float], native: int) -> list[tuple[str, int]]:
    """(label, short side) for each factor and the native size, distinct and ascending."""
    sizes = {f"{factor:.2f}x": max(img_size, round(img_size * factor)) for factor in factors}
    if native:
        sizes["native"] = native
    return sorted(sizes.items(), key=lambda item: item[1])


def fidelity(table, img_size: int, size: int, batches: int = 4, batch_size: int = 32) -> dict:
    """Mean |cached - pil| over training batches (all crops, small, large) and one evaluation pass."""
    import torch

    from flowerkit.data.pipeline import BatchPlan, InputPipeline, eval_batches

    cpu = torch.device("cpu")
    pil = InputPipeline(table, img_size, cpu, kind="pil")
    cached = InputPipeline(table, img_size, cpu, kind="cached", cache_size=size)
    plan = BatchPlan(table, batch_size, seed=3)
    diffs, areas = [], []
    for k in range(batches):
        batch = plan.batch(k)
        (reference, _), = list(pil([batch]))
        (fast, _), = list(cached([batch]))
        diffs.append((fast - reference).abs().mean(dim=(1, 2, 3)))
        areas.append(batch.boxes[:, 2] * batch.boxes[:, 3])
    diff, area = torch.cat(diffs), torch.cat(areas)
    evals = [(a - b).abs().mean() for (a, _), (b, _) in zip(cached(eval_batches(table, batch_size)),
                                                             pil(eval_batches(table, batch_size)))]
    return {"train_all": float(diff.mean()), "train_small_crops": float(diff[area < SMALL_CROP].mean()),
            "train_large_crops": float(diff[area >= LARGE_CROP].mean()), "eval": float(torch.stack(evals).mean()),
            "crops": int(diff.numel()), "small_crops": int((area < SMALL_CROP).sum()),
            "large_crops": int((area >= LARGE_CROP).sum())}


def build_caches(tables: dict, size: int) -> dict:
    """Build each split's cache at ``size`` (first use); their bytes and the seconds it took."""
    from flowerkit.data.pixel_cache import open_pixel_cache

    start = time.perf_counter()
    arrays = [open_pixel_cache(table, size) for table in tables.values()]
    seconds = time.perf_counter() - start
    images = sum(len(t) for t in tables.values())
    total = sum(a.nbytes for a in arrays)
    return {"build_seconds": round(seconds, 2), "images": images, "bytes_per_image": total // images,
            "total_mb": round(total / 2**20, 1)}


def train_once(args: argparse.Namespace, tables: dict, work: Path, label: str, pipeline: str,
               size: int | None) -> dict:
    """The short from-scratch training with one pipeline/cache size; the selected checkpoint's accuracies."""
    import torch

    from flowerkit.run.config import TrainConfig, load_config
    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.engine.evaluator import evaluate_checkpoint
    from flowerkit.engine.trainer import make_pipeline, seed_everything, train
    from flowerkit.run.layout import RunLayout

    config = load_config(TrainConfig, dict(
        name=f"cache-{label}", dataset="flower102_synthetic", model_type=args.model_type, img_size=args.img_size,
        num_steps=args.steps, eval_every=max(1, args.steps // 3), train_batch_size=args.batch_size,
        eval_batch_size=256, learning_rate=args.learning_rate, seed=args.seed, data_pipeline=pipeline,
        cache_size=size, device="cpu", output_dir=work / "runs"))
    seed_everything(config.seed, deterministic=False)
    layout = RunLayout.for_config(config)
    layout.run_dir.mkdir(parents=True)  # what the train flow's run directory claim does
    device = torch.device("cpu")
    start = time.perf_counter()
    result = train(config, device, "fp32", tables["train"], tables["val"], layout)
    seconds = time.perf_counter() - start
    best = load_checkpoint(layout.best_checkpoint)
    test_pipe = make_pipeline(config, tables["test"], config.img_size, device)
    test_logits = evaluate_checkpoint(best, test_pipe, config.eval_batch_size, "fp32")
    test_accuracy = float((test_logits.argmax(1) == tables["test"].labels).mean())
    return {"val_accuracy": round(result.monitor_value, 4), "selected_step": result.selected_step,
            "test_accuracy": round(test_accuracy, 4), "train_seconds": round(seconds, 1),
            "images_per_second": round(result.images_per_second, 1)}


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="flowerkit-cache-size-"))
    os.environ["FLOWERKIT_CACHE_DIR"] = str(work / "cache")  # fresh caches: first-use build times
    try:
        results = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"\nwrote {args.out}")


def run(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from flowerkit.data.selection import select_split, synthetic_root

    # The synthetic set lives in the user's flowerkit cache (generated once), not in the temporary one.
    os.environ.pop("FLOWERKIT_CACHE_DIR")
    root = synthetic_root()
    os.environ["FLOWERKIT_CACHE_DIR"] = str(work / "cache")
    tables = {split: select_split("flower102", root, split, None, 1).table() for split in SPLITS}
    fidelity_table = _head(tables["train"], args.fidelity_images)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    out: dict = {"format": "flowerkit-cache-size", "started_utc": started, "command": " ".join(sys.argv),
                 "machine": {"platform": platform.platform(), "machine": platform.machine(),
                             "cpu_count": os.cpu_count(), "torch": torch.__version__,
                             "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
                 "load_average_1m_start": os.getloadavg()[0], "args": _jsonable(vars(args)),
                 "fidelity": {}, "caches": {}, "accuracy": {}}
    for img_size in args.fidelity_sizes:
        out["fidelity"][str(img_size)] = {f"{label} ({size} px)": fidelity(fidelity_table, img_size, size)
                                          for label, size in cache_sizes(img_size, args.factors, args.native)}
        print(f"fidelity at {img_size} px: {json.dumps(out['fidelity'][str(img_size)])}", flush=True)
    for label, size in [] if args.fidelity_only else cache_sizes(args.img_size, args.factors, args.native):
        out["caches"][f"{label} ({size} px)"] = build_caches(tables, size)
        print(f"cache {label} ({size} px): {out['caches'][f'{label} ({size} px)']}", flush=True)
    if not (args.skip_accuracy or args.fidelity_only):
        runs = [(f"{label} ({size} px)", "cached", size)
                for label, size in cache_sizes(args.img_size, args.accuracy_factors, args.native)]
        for label, pipeline, size in [*runs, ("pil", "pil", None)]:
            out["accuracy"][label] = train_once(args, tables, work, label.split(" ")[0], pipeline, size)
            print(f"accuracy {label}: {out['accuracy'][label]}", flush=True)
    out["load_average_1m_end"] = os.getloadavg()[0]
    return out


def _head(table, n: int):
    """The first ``n`` samples of ``table`` (same files, labels and sizes)."""
    from flowerkit.data.table import SampleTable

    return SampleTable(table.image_ids[:n], table.labels[:n], table.paths[:n], table.sizes[:n])


def _jsonable(values: dict) -> dict:
    """Paths relative to the repository: a result file names no folder of the machine it came from."""
    return {k: _shown(v) if isinstance(v, Path) else v for k, v in values.items()}


def _shown(path: Path) -> str:
    path = path.resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name


def markdown(results: dict) -> str:
    """The fidelity table per resolution, then cost and accuracy per cache size at the training resolution."""
    lines = []
    for img_size, rows in results["fidelity"].items():
        lines += [f"\nfidelity at {img_size} px (mean |cached - pil| on [-1, 1]):", "",
                  "| cache | all crops | crops < 20% | crops >= 50% | eval |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {label} | {r['train_all']:.4f} | {r['train_small_crops']:.4f} | "
                  f"{r['train_large_crops']:.4f} | {r['eval']:.4f} |" for label, r in rows.items()]
    if not (results["caches"] or results["accuracy"]):
        return "\n".join(lines)
    lines += ["", "| cache | KB/image | train+val+test | build | val acc (selected) | test acc | train img/s |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label in [*results["caches"], *(["pil"] if "pil" in results["accuracy"] else [])]:
        cache, accuracy = results["caches"].get(label), results["accuracy"].get(label)
        cost = (f"{cache['bytes_per_image'] / 1024:.1f} | {cache['total_mb']:.0f} MB | {cache['build_seconds']:.1f} s"
                if cache else "- | - | -")
        acc = (f"{accuracy['val_accuracy']:.3f} | {accuracy['test_accuracy']:.3f} | {accuracy['images_per_second']:.0f}"
               if accuracy else "- | - | -")
        lines.append(f"| {label} | {cost} | {acc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
