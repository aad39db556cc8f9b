"""``flowerkit bench``: how fast training and evaluation run on this machine, and what limits them.

For training and for evaluation, in one process and with the same model, batches and step code as a run
(``TrainStep`` and ``predict``), it times three things side by side:

- compute only: the step on one batch that already sits on the device, repeated;
- pipeline only: the input pipeline producing batches on the device, no model;
- end to end: the pipeline feeding the step, as ``flowerkit train`` and ``flowerkit eval`` do.

``end_to_end / compute_only`` near 1 means the input pipeline keeps the model busy. Each phase runs
``warmup`` untimed iterations first (pipeline start, torch.compile, allocator), then ``steps`` timed ones.
Each measurement is repeated (``repeats``, interleaved) and its best run kept, since other load on the machine
only ever slows a run down. Peak memory per phase: GPU memory allocated by torch on CUDA, process peak RSS
elsewhere.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from flowerkit.data.flowers102 import NUM_CLASSES
from flowerkit.data.pipeline import (
    Batch,
    BatchPlan,
    InputPipeline,
    SampleTable,
    eval_batches,
)
from flowerkit.device import DeviceChoice, detect_device, resolve_precision
from flowerkit.engine.evaluator import predict, prepare_model
from flowerkit.engine.schedules import make_scheduler
from flowerkit.engine.trainer import StepSettings, Trainable, TrainStep
from flowerkit.errors import ConfigError
from flowerkit.models.configs import get_config
from flowerkit.models.vit import build_model

RESULT_FORMAT = "flowerkit-bench"
RESULT_VERSION = 1
TARGET_RATIO = 0.9  # the target: end to end at least 90% of compute only


@dataclass(frozen=True)
class BenchSpec:
    """What to measure; the CLI's options map one to one onto these fields."""

    model_type: str = "ViT-Ti_16"
    img_size: int = 64
    batch_size: int = 32
    eval_batch_size: int | None = None  # None: the training batch size
    steps: int = 20
    warmup: int = 3
    repeats: int = 3  # each measurement this often, interleaved; the best rate counts (other load only slows)
    pipeline: str = "cached"
    num_workers: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    dataset: str = "flower102_synthetic"
    data_root: Path | None = None
    seed: int = 0

    def check(self) -> None:
        """Every option error in one paragraph, before any data is loaded."""
        get_config(self.model_type, self.img_size)  # unknown model or a size that does not tile: ConfigError
        problems = [f"--{name} must be at least {low} (got {value})" for name, value, low in (
            ("img_size", self.img_size, 16), ("batch_size", self.batch_size, 1), ("steps", self.steps, 1),
            ("warmup", self.warmup, 0), ("repeats", self.repeats, 1), ("num_workers", self.num_workers, 0),
            ("eval_batch_size", self.eval_batch_size or 1, 1)) if value < low]
        for name, value, allowed in (("pipeline", self.pipeline, ("cached", "pil")),
                                     ("precision", self.precision, ("auto", "fp32", "bf16")),
                                     ("dataset", self.dataset, ("flower102_synthetic", "flower102"))):
            if value not in allowed:
                problems.append(f"--{name} must be one of {', '.join(allowed)} (got {value!r})")
        if problems:
            raise ConfigError("Invalid benchmark options: " + "; ".join(problems) + ".")


@dataclass
class Phase:
    """One timed measurement."""

    images: int
    seconds: float
    peak_memory_mb: float
    images_per_second: float = field(init=False)

    def __post_init__(self) -> None:
        self.images_per_second = self.images / self.seconds if self.seconds > 0 else 0.0


# --- memory and synchronisation -----------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a timer read afterwards covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda max_memory_allocated"
    return "process peak RSS (VmHWM, reset per phase)" if _can_reset_rss_peak() else "process peak RSS so far"


def _can_reset_rss_peak() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and Path("/proc/self/status").is_file()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif _can_reset_rss_peak():
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if _can_reset_rss_peak():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def timed(device: torch.device, warmup: int, steps: int, images_per_step: int,
          run: Callable[[int], None]) -> Phase:
    """Call ``run(i)`` for ``warmup`` untimed then ``steps`` timed iterations; ``run`` must not sync itself
    beyond what the real code does."""
    for i in range(warmup):
        run(i)
    synchronize(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        run(i)
    synchronize(device)
    return Phase(images_per_step * steps, time.perf_counter() - start, peak_memory_mb(device))


# --- the measurements ---------------------------------------------------------------------------------------

def load_tables(spec: BenchSpec) -> tuple[SampleTable, SampleTable, float]:
    """The full train and val splits of the dataset; returns them and the seconds it took (generation incl.)."""
    from flowerkit.data.selection import select_split

    start = time.perf_counter()
    tables = [select_split(spec.dataset, spec.data_root, split, None, spec.batch_size).table()
              for split in ("train", "val")]
    return tables[0], tables[1], time.perf_counter() - start


def bench_train(spec: BenchSpec, device: torch.device, precision: str, table: SampleTable,
                pipe: InputPipeline) -> dict:
    model = prepare_model(build_model(spec.model_type, spec.img_size, NUM_CLASSES), device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    total = 2 * (spec.warmup + spec.steps) + 1
    scheduler = make_scheduler(optimizer, 0, total, "cosine")
    step_model = torch.compile(model) if spec.compile else model
    labels = torch.as_tensor(table.labels, dtype=torch.long).to(device)
    trainable = Trainable(model=model, optimizer=optimizer, scheduler=scheduler, step_model=step_model)
    step = TrainStep(trainable, labels, StepSettings(precision=precision, max_grad_norm=1.0))
    plan = BatchPlan(table, spec.batch_size, spec.seed)
    model.train()

    start = time.perf_counter()
    fixed = next(iter(pipe(plan.batches(0, 1))))
    step([fixed])  # compiles when asked; done before any timing
    first_step_s = time.perf_counter() - start

    def end_to_end() -> Phase:
        batches = iter(pipe(plan.batches(0, spec.warmup + spec.steps)))
        return timed(device, spec.warmup, spec.steps, spec.batch_size, lambda i: step(itertools.islice(batches, 1)))

    return _summary(spec.repeats, {
        "compute_only": lambda: timed(device, spec.warmup, spec.steps, len(fixed[1]), lambda i: step([fixed])),
        "pipeline_only": lambda: _drain(device, spec, pipe(plan.batches(0, spec.warmup + spec.steps))),
        "end_to_end": end_to_end,
    }) | {"first_step_s": round(first_step_s, 3)}


def bench_eval(spec: BenchSpec, device: torch.device, precision: str, table: SampleTable,
               pipe: InputPipeline) -> dict:
    model = prepare_model(build_model(spec.model_type, spec.img_size, NUM_CLASSES), device).eval()
    eval_model = torch.compile(model) if spec.compile else model
    batch_size = spec.eval_batch_size or spec.batch_size
    all_batches = eval_batches(table, batch_size)
    # Full batches only, cycling through the split: every timed iteration has the same size.
    full = [b for b in all_batches if b.positions.size == batch_size] or all_batches[:1]
    planned = [full[i % len(full)] for i in range(spec.warmup + spec.steps)]
    n = planned[0].positions.size

    fixed_pipe = _FixedPipeline(pipe, next(iter(pipe(planned[:1])))[0])
    start = time.perf_counter()
    predict(eval_model, fixed_pipe, batch_size, precision, batches=planned[:1])  # compiles when asked
    first_step_s = time.perf_counter() - start

    def run_predict(source) -> Phase:
        """One ``predict`` over the timed batches after one over the warm-up batches, as an evaluation runs."""
        predict(eval_model, source, batch_size, precision, batches=planned[:spec.warmup])
        synchronize(device)
        reset_peak_memory(device)
        start = time.perf_counter()
        predict(eval_model, source, batch_size, precision, batches=planned[spec.warmup:])
        synchronize(device)
        return Phase(n * spec.steps, time.perf_counter() - start, peak_memory_mb(device))

    return _summary(spec.repeats, {
        "compute_only": lambda: run_predict(fixed_pipe),
        "pipeline_only": lambda: _drain(device, spec, pipe(planned)),
        "end_to_end": lambda: run_predict(pipe),
    }) | {"first_step_s": round(first_step_s, 3)}


class _FixedPipeline:
    """Stands in for an ``InputPipeline`` and yields one batch already on the device: compute only."""

    def __init__(self, pipe: InputPipeline, images: torch.Tensor) -> None:
        self.table, self.device, self.images = pipe.table, pipe.device, images

    def __call__(self, batches: list[Batch]) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
        for batch in batches:
            yield self.images, batch.positions


def _drain(device: torch.device, spec: BenchSpec, source: Iterator[tuple[torch.Tensor, np.ndarray]]) -> Phase:
    """Pipeline only: pull batches onto the device and drop them."""
    source = iter(source)
    sizes: list[int] = []

    def pull(_: int) -> None:
        sizes.append(len(next(source)[1]))

    phase = timed(device, spec.warmup, spec.steps, 0, pull)
    return Phase(sum(sizes[spec.warmup:]), phase.seconds, phase.peak_memory_mb)


def _summary(repeats: int, measurements: dict[str, Callable[[], Phase]]) -> dict:
    """Run the measurements round-robin ``repeats`` times; keep each one's best run and every rate."""
    runs: dict[str, list[Phase]] = {name: [] for name in measurements}
    for _ in range(repeats):
        for name, measure in measurements.items():
            runs[name].append(measure())
    best = {name: max(phases, key=lambda p: p.images_per_second) for name, phases in runs.items()}
    compute, end_to_end = best["compute_only"].images_per_second, best["end_to_end"].images_per_second
    ratio = end_to_end / compute if compute else 0.0
    return {name: asdict(phase) | {"all_rates": [round(p.images_per_second, 2) for p in runs[name]]}
            for name, phase in best.items()} | {"end_to_end_over_compute": round(ratio, 4),
                                                "meets_target": ratio >= TARGET_RATIO}


def machine_info(choice: DeviceChoice) -> dict:
    return {
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "device": choice.device, "device_name": choice.name,
        # Other work on the machine skews every rate; the load at the start says how busy it was.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def run_bench(spec: BenchSpec, cache_dir: Path | None = None, log: Callable[[str], None] = lambda _: None) -> dict:
    """Measure training and evaluation as described in the module docstring; returns the JSON-able result."""
    spec.check()
    choice = detect_device(spec.device)
    device = torch.device(choice.device)
    precision = resolve_precision(spec.precision, choice)
    machine = machine_info(choice)  # before the work: its load average is the other load on the machine
    if spec.compile and device.type == "cpu":
        log("note: --compile on CPU compiles with the C++ inductor backend: slow to start, rarely faster")
    torch.manual_seed(spec.seed)

    log(f"loading {spec.dataset} (generated once and cached when synthetic)")
    train_table, val_table, dataset_s = load_tables(spec)
    start = time.perf_counter()
    train_pipe = InputPipeline(train_table, spec.img_size, device, spec.pipeline, spec.num_workers,
                               persistent_workers=spec.num_workers > 0, cache_dir=cache_dir)
    val_pipe = InputPipeline(val_table, spec.img_size, device, spec.pipeline, spec.num_workers, cache_dir=cache_dir)
    pipeline_setup_s = time.perf_counter() - start

    log(f"training: {spec.model_type} at {spec.img_size}px, batch {spec.batch_size}, {precision} on {choice.device}")
    train = bench_train(spec, device, precision, train_table, train_pipe)
    log("evaluation")
    evaluation = bench_eval(spec, device, precision, val_table, val_pipe)
    return {
        "format": RESULT_FORMAT, "version": RESULT_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()},
        "precision": precision, "machine": machine, "memory": memory_kind(device),
        "setup": {"dataset_s": round(dataset_s, 3), "pipeline_setup_s": round(pipeline_setup_s, 3),
                  "train_images": len(train_table), "val_images": len(val_table)},
        "train": train, "eval": evaluation,
    }


def format_result(result: dict) -> str:
    """A side-by-side table of the three rates, memory and the end-to-end / compute ratio."""
    spec, machine = result["spec"], result["machine"]
    lines = [f"flowerkit bench: {spec['model_type']} at {spec['img_size']}px, batch {spec['batch_size']}, "
             f"{spec['pipeline']} pipeline, {result['precision']}{', compiled' if spec['compile'] else ''}",
             f"  on {machine['device']} ({machine['device_name']}), {machine['cpu_count']} CPUs, "
             f"torch {machine['torch']}; memory: {result['memory']}",
             f"  {'':<7}{'compute only':>16}{'pipeline only':>16}{'end to end':>16}{'e2e/compute':>14}"]
    for name in ("train", "eval"):
        part = result[name]
        rates = [f"{part[k]['images_per_second']:>10.1f} img/s" for k in ("compute_only", "pipeline_only",
                                                                          "end_to_end")]
        mark = "ok" if part["meets_target"] else f"below {TARGET_RATIO:.2f}"
        lines.append(f"  {name:<7}{rates[0]:>16}{rates[1]:>16}{rates[2]:>16}"
                     f"{part['end_to_end_over_compute']:>9.3f} ({mark})")
        memory = [f"{part[k]['peak_memory_mb']:>13.0f} MB" for k in ("compute_only", "pipeline_only", "end_to_end")]
        lines.append(f"  {'  peak':<7}{memory[0]:>16}{memory[1]:>16}{memory[2]:>16}")
    setup = result["setup"]
    lines.append(f"  setup: dataset {setup['dataset_s']:.1f} s, pipeline (cache build on first use) "
                 f"{setup['pipeline_setup_s']:.1f} s, first train step {result['train']['first_step_s']:.2f} s")
    return "\n".join(lines)


def write_result(result: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return path
