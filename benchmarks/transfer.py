"""Does pre-training transfer? Pre-train a small ViT on one synthetic set, export it as a Google-format .npz,
fine-tune it on flower102_synthetic with a few images per class, and compare with training from scratch.

    .venv/bin/python benchmarks/transfer.py [--shots 2] [--img_size 32] [--pretrain_steps 300]
                                            [--finetune_steps 60] [--out benchmarks/results/transfer.json]

Everything goes through the real command line, in a temporary folder that is removed at the end:

1. ``flowerkit data synth --variant shifted --seed 1``: the pre-training set, 102 *other* classes (hues
   halfway between flower102_synthetic's, other petal counts and disc colours) of the same kind of image;
2. ``flowerkit train`` on it from random weights (the paper recipe's SGD, 10 images per class);
3. ``flowerkit export-npz``: its selected checkpoint as a Google-format .npz;
4. a subset manifest of ``--shots`` training images per class of flower102_synthetic (the lowest ids);
5. four ``flowerkit train --test_after`` runs on that subset, each selecting on the full validation split
   and testing on the full test split: {from scratch, from the .npz} x {configs/vit_paper_flowers.yaml,
   configs/vit_modern_flowers.yaml}, each recipe's values kept except what the tiny setting scales (model,
   resolution, batch, steps, warmup, evaluation interval, the modern recipe's rate by its own batch rule
   and its EMA horizon).

Reported per run: the selected checkpoint (``best.bin``, chosen on validation) and the last one (``ckpt.bin``),
validation and test accuracy. The selected checkpoint's test accuracy is the run's own ``--test_after`` result;
the last checkpoint's is computed here with the same evaluation code (``evaluate_checkpoint``). Fixed seeds
throughout. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOWERKIT = [sys.executable, "-m", "flowerkit"]
RECIPES = {"paper": REPO / "configs" / "vit_paper_flowers.yaml", "modern": REPO / "configs" / "vit_modern_flowers.yaml"}
MODERN_BASE_LR, MODERN_BASE_BATCH = 5e-4, 256  # the modern recipe's rule: 5e-4 x batch / 256 (its comment)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_type", default="ViT-Ti_16")
    parser.add_argument("--img_size", type=int, default=32)
    parser.add_argument("--shots", type=int, default=2, help="Training images per class of the fine-tuning set.")
    parser.add_argument("--pretrain_steps", type=int, default=300)
    parser.add_argument("--pretrain_batch", type=int, default=64)
    parser.add_argument("--pretrain_lr", type=float, default=0.05)
    parser.add_argument("--finetune_steps", type=int, default=60)
    parser.add_argument("--paper_lr", type=float, default=0.03, help="The paper recipe's rate (its file's 0.03).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "transfer.json")
    return parser.parse_args()


def flowerkit(*args: str, env: dict[str, str]) -> float:
    """Run one flowerkit command (it must succeed); returns its wall-clock seconds."""
    start = time.perf_counter()
    done = subprocess.run([*FLOWERKIT, *args], env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"flowerkit {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def few_shot_manifest(path: Path, shots: int) -> tuple[Path, int]:
    """``shots`` training ids per class of flower102_synthetic (lowest ids first); returns the file and count."""
    import numpy as np

    from flowerkit.data.flowers102 import open_flowers102
    from flowerkit.data.selection import synthetic_root

    flowers = open_flowers102(synthetic_root())
    ids = flowers.splits["train"]
    labels = flowers.label_of(ids)
    chosen = sorted(int(i) for c in np.unique(labels) for i in np.sort(ids[labels == c])[:shots])
    path.write_text(json.dumps({"train": chosen}))
    return path, len(chosen)


def finetune_flags(args: argparse.Namespace, recipe: str, batch: int) -> list[str]:
    """The recipe file, with what the tiny setting must scale overridden on the command line."""
    steps = args.finetune_steps
    flags = ["--config", _shown(RECIPES[recipe]), "--model_type", args.model_type, "--img_size", str(args.img_size),
             "--train_batch_size", str(batch), "--num_steps", str(steps), "--warmup_steps", str(max(1, steps // 10)),
             "--eval_every", str(max(1, steps // 5)), "--eval_batch_size", "256", "--seed", str(args.seed)]
    if recipe == "paper":
        return flags + ["--learning_rate", str(args.paper_lr)]
    # The modern file's rate is 5e-4 x 512 / 256; its EMA (0.998 for 500 steps) averages over ~num_steps.
    lr = MODERN_BASE_LR * batch / MODERN_BASE_BATCH
    ema = round(1 - 1 / steps, 4)
    return flags + ["--learning_rate", f"{lr:.6g}", "--ema_decay", str(ema)]


def last_checkpoint_test_accuracy(run_dir: Path) -> float:
    """The last checkpoint (ckpt.bin, the raw weights of the last step) on the full test split."""
    import torch

    from flowerkit.run.config import TrainConfig
    from flowerkit.data.selection import select_split
    from flowerkit.engine.checkpoint import load_checkpoint
    from flowerkit.engine.evaluator import evaluate_checkpoint
    from flowerkit.engine.trainer import make_pipeline

    state = load_checkpoint(run_dir / "checkpoints" / "ckpt.bin")
    config = TrainConfig.model_validate(state["config"])
    table = select_split(config.dataset, config.data_root, "test", None, config.eval_batch_size).table()
    pipe = make_pipeline(config, table, config.img_size, torch.device("cpu"))
    logits = evaluate_checkpoint(state, pipe, config.eval_batch_size, "fp32")
    return float((logits.argmax(1) == table.labels).mean())


def summarise(run_dir: Path, seconds: float) -> dict:
    """Selected (best.bin) and last (ckpt.bin) checkpoint: validation and test accuracy."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval" and r["step"] <= metrics["last_step"]]
    last = max(evals, key=lambda r: r["step"])
    return {"selected_step": metrics["selected_step"], "selected_weights": metrics["selected_weights"],
            "best_val_accuracy": metrics["accuracy"], "best_test_accuracy": metrics["test_accuracy"],
            "last_step": metrics["last_step"], "last_val_accuracy": last["accuracy"],
            "last_test_accuracy": last_checkpoint_test_accuracy(run_dir), "seconds": round(seconds, 1)}


def main() -> None:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="flowerkit-transfer-"))
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

    env = os.environ | {"PREFECT_HOME": str(work / "prefect")}  # the runs' Prefect state stays in the work folder
    out_dir = work / "output"
    common = ["--output_dir", str(out_dir), "--device", "cpu", "--quiet"]
    results: dict = {
        "format": "flowerkit-transfer", "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "args": _jsonable(vars(args)),
        "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "load_average_1m_start": os.getloadavg()[0], "steps": {}, "runs": {}}
    t0 = time.perf_counter()

    data = work / "pretrain-data"
    results["steps"]["synth"] = flowerkit("data", "synth", "--out", str(data), "--variant", "shifted", "--seed", "1",
                                          "--images_per_class", "21", env=env)
    results["steps"]["pretrain"] = flowerkit(
        "train", "--name", "pretrain", "--dataset", "flower102", "--data_root", str(data), "--config",
        _shown(RECIPES["paper"]), "--model_type", args.model_type, "--img_size", str(args.img_size),
        "--train_batch_size", str(args.pretrain_batch), "--num_steps", str(args.pretrain_steps),
        "--warmup_steps", str(args.pretrain_steps // 10), "--eval_every", str(max(1, args.pretrain_steps // 4)),
        "--eval_batch_size", "256", "--learning_rate", str(args.pretrain_lr), "--seed", str(args.seed), *common,
        env=env)
    pretrain = json.loads((out_dir / "pretrain" / "metrics.json").read_text())
    results["pretrain"] = {"val_accuracy": pretrain["accuracy"], "selected_step": pretrain["selected_step"]}
    npz = work / "pretrain.npz"
    results["steps"]["export"] = flowerkit("export-npz", "pretrain", "--output-dir", str(out_dir), "--out",
                                           str(npz), env=env)

    manifest, n_train = few_shot_manifest(work / "few-shot.json", args.shots)
    batch = max(64, math.ceil(n_train / 2))  # a subset is capped at 2 batches: every chosen image is used
    results["finetune"] = {"train_images": n_train, "train_batch_size": batch}
    for init in ("scratch", "npz"):
        for recipe in ("paper", "modern"):
            name = f"{init}-{recipe}"
            weights = ["--pretrained", str(npz)] if init == "npz" else []
            seconds = flowerkit("train", "--name", name, "--dataset", "flower102_synthetic", "--tiny_train_subset",
                                str(manifest), "--test_after", *finetune_flags(args, recipe, batch), *weights,
                                *common, env=env)
            results["runs"][name] = summarise(out_dir / name, seconds) | {"flags": finetune_flags(args, recipe, batch)}
            print(f"{name}: {json.dumps(results['runs'][name])}", flush=True)
    results["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["load_average_1m_end"] = os.getloadavg()[0]
    return results


def _jsonable(values: dict) -> dict:
    """Paths relative to the repository: a result file names no folder of the machine it came from."""
    return {k: _shown(v) if isinstance(v, Path) else v for k, v in values.items()}


def _shown(path: Path) -> str:
    path = path.resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name


def markdown(results: dict) -> str:
    lines = ["| init | recipe | selected step | val (selected) | test (selected) | val (last) | test (last) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results["runs"].items():
        init, recipe = name.split("-")
        lines.append(f"| {init} | {recipe} | {r['selected_step']} ({r['selected_weights']}) | "
                     f"{100 * r['best_val_accuracy']:.1f} % | {100 * r['best_test_accuracy']:.1f} % | "
                     f"{100 * r['last_val_accuracy']:.1f} % | {100 * r['last_test_accuracy']:.1f} % |")
    pretrain = results["pretrain"]
    lines.append(f"\npre-training: {100 * pretrain['val_accuracy']:.1f} % validation accuracy on its own (shifted) "
                 f"classes at step {pretrain['selected_step']}; {results['finetune']['train_images']} fine-tuning "
                 f"images; total {results['total_seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
