"""``flowerkit bench``: training and evaluation throughput on this machine (compute, pipeline, end to end)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from flowerkit.cli.errors import user_errors


def bench(
    model_type: str = typer.Option("ViT-Ti_16", "--model_type", help="Model config to time."),
    img_size: int = typer.Option(64, "--img_size", help="Input resolution."),
    batch_size: int = typer.Option(32, "--batch_size", help="Training batch size."),
    eval_batch_size: int | None = typer.Option(None, "--eval_batch_size",
                                               help="Evaluation batch size (default: the training batch size)."),
    steps: int = typer.Option(20, "--steps", help="Timed iterations per measurement."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed iterations before each measurement."),
    repeats: int = typer.Option(3, "--repeats", help="Runs of each measurement, interleaved; the best one counts."),
    pipeline: str = typer.Option("cached", "--pipeline", "--data_pipeline",
                                 help="Input pipeline: cached (default) or pil (the reference)."),
    num_workers: int = typer.Option(0, "--num_workers",
                                    help="DataLoader workers (pil pipeline) and cache-building processes."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32 or bf16 (bf16: CUDA only)."),
    compile_model: bool = typer.Option(False, "--compile", help="Time the model compiled with torch.compile."),
    dataset: str = typer.Option("flower102_synthetic", "--dataset",
                                help="flower102_synthetic (generated once, ~500 px JPEGs) or flower102."),
    data_root: Path | None = typer.Option(None, "--data_root",
                                          help="The real Flowers-102 folder (implies --dataset flower102)."),
    out: Path | None = typer.Option(None, "--out", help="Result JSON (default: output/bench/TIME-DEVICE.json, "
                                                        "named by the time and device)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of errors."),
) -> None:
    """Time training and evaluation side by side: compute only, input pipeline only, end to end; write JSON."""
    from flowerkit.bench import BenchSpec, format_result, run_bench, write_result

    with user_errors(debug):
        spec = BenchSpec(model_type=model_type, img_size=img_size, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, steps=steps, warmup=warmup, repeats=repeats,
                         pipeline=pipeline, num_workers=num_workers, device=device, precision=precision,
                         compile=compile_model,
                         dataset="flower102" if data_root is not None else dataset, data_root=data_root)
        result = run_bench(spec, log=lambda line: typer.echo(line, err=True))
        device_slug = result["machine"]["device"].replace(":", "")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = write_result(result, out or Path("output") / "bench" / f"{stamp}-{device_slug}.json")
        typer.echo(format_result(result))
        typer.echo(f"result: {path}")
