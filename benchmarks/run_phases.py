"""Split the wall time of real ``flowerkit train`` runs into phases, and find their fixed cost.

    .venv/bin/python benchmarks/run_phases.py [--tiny] [--repeats 3] [--servers temporary local]
                                              [--out benchmarks/results/run-phases.json]

The run (default): ViT-Ti/16 at 64 px on the synthetic Flowers-102 look-alike, 64 steps of 32 images (two
epochs of its 1020 training images), a validation pass after each epoch. ``--tiny``: the seed's tiny run (the
``testing`` model, 10 steps of 4 images, tiny subsets). Each run is timed in one fresh PREFECT_HOME, first with
Prefect's temporary server, then with ``flowerkit server start`` running, after one untimed warm-up each.

The phases come from what a run records, nothing patched in:

- ``import_torch``: ``python -c "import torch"`` timed in a fresh process just before each run;
- ``to_flow_start``: the process's start to its flow run's start (Prefect's database): imports, the plan,
  the temporary server when there is one;
- ``flow_setup``: the flow's start to its ``train`` task's start (device, data selection, the run's claim);
- ``training_loop`` and ``evaluation_loops``: the run record's ``phases`` (the trainer's and the evaluation's
  own clocks);
- ``tasks_outside_loops``: the rest of the ``train`` and ``evaluate`` task runs (model build, pixel caches,
  checkpoints read and written);
- ``finishing``: the last ``evaluate`` task's end to the flow run's end (exports, stamp, retention, the
  results artifact), with each finishing task's own time beside it;
- ``exit``: the flow run's end to the process's end (the summary, Prefect's shutdown, the interpreter's).

Fixed cost = wall - import torch - training loop - evaluation loops. The goals: at most 6 s with the temporary
server, 2 s with a local server. Then a one-photo ``flowerkit predict PHOTO --run R`` on the last run, whose
goal is ``import torch`` + 1 s. The 1-minute load average is recorded beside every figure; medians count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFAULT_FLAGS = ["--dataset", "flower102_synthetic", "--model_type", "ViT-Ti_16", "--img_size", "64",
                 "--train_batch_size", "32", "--num_steps", "64", "--eval_every", "32"]
TINY_FLAGS = ["--dataset", "flower102_synthetic", "--model_type", "testing", "--img_size", "64", "--num_steps", "10",
              "--eval_every", "5", "--train_batch_size", "4", "--eval_batch_size", "2",
              "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset", "flower102_tiny"]
GOALS_S = {"temporary": 6.0, "local": 2.0}
FINISHING_TASKS = ("export_predictions", "write_stamp", "write_retention", "publish_results")


def load_1m() -> float:
    return round(os.getloadavg()[0], 2)


def import_torch_s(env: dict[str, str]) -> float:
    code = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return round(float(done.stdout.strip()), 3)


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall-clock start as epoch seconds, wall seconds) of one command, which must succeed."""
    started, t0 = time.time(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return started, seconds


def epoch(text: str) -> float:
    """A time from Prefect's database (UTC, ``2026-12-07 20:16:31.605794``) as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def prefect_runs(database: Path, flow_run_id: str) -> tuple[tuple[float, float], list[tuple[str, float, float]]]:
    """The flow run's (start, end) and its task runs' (name, start, end), from Prefect's own database."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        start, end = db.execute("SELECT start_time, end_time FROM flow_run WHERE id = ?", (flow_run_id,)).fetchone()
        tasks = db.execute("SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ? ORDER BY start_time",
                           (flow_run_id,)).fetchall()
    # A task run's name is its task's, with a suffix: ``train-61b``, ``load_subset[val]``.
    return (epoch(start), epoch(end)), [(name.split("-")[0].split("[")[0], epoch(s), epoch(e))
                                        for name, s, e in tasks if s and e]


def split_run(run_dir: Path, database: Path, started: float, wall: float, torch_s: float) -> dict:
    """One run's phases (seconds), from its record, Prefect's database and the process's own start and end."""
    record = json.loads((run_dir / "run_record.json").read_text())
    (flow_start, flow_end), tasks = prefect_runs(database, record["flow_run_id"])
    loops = record["phases"]
    spans = {name: sum(e - s for n, s, e in tasks if n == name) for name in {n for n, _, _ in tasks}}
    train_start = min(s for n, s, _ in tasks if n == "train")
    last_eval_end = max(e for n, _, e in tasks if n == "evaluate")
    phases = {
        "import_torch": torch_s,
        "to_flow_start": flow_start - started,
        "flow_setup": train_start - flow_start,
        "training_loop": loops["training_loop_s"],
        "evaluation_loops": loops["evaluation_loops_s"],
        "tasks_outside_loops": spans["train"] + spans["evaluate"] - loops["training_loop_s"]
        - loops["evaluation_loops_s"],
        "finishing": flow_end - last_eval_end,
        "exit": started + wall - flow_end,
    }
    fixed = wall - torch_s - loops["training_loop_s"] - loops["evaluation_loops_s"]
    return {"wall_s": round(wall, 3), "fixed_cost_s": round(fixed, 3), "load_1m": load_1m(),
            "phases_s": {k: round(v, 3) for k, v in phases.items()},
            "finishing_tasks_s": {name: round(spans[name], 3) for name in FINISHING_TASKS if name in spans}}


@contextmanager
def local_server(env: dict[str, str]):
    server = [str(BIN / "flowerkit"), "server"]
    subprocess.run([*server, "start", "--port", "0"], env=env, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*server, "stop"], env=env, check=True, capture_output=True)


def median_of(runs: list[dict]) -> dict:
    keys = runs[0]["phases_s"]
    return {"wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
            "fixed_cost_s": round(statistics.median(r["fixed_cost_s"] for r in runs), 3),
            "phases_s": {k: round(statistics.median(r["phases_s"][k] for r in runs), 3) for k in keys}}


def time_predict(env: dict[str, str], work: Path, run: str, repeats: int) -> list[dict]:
    """One-photo ``flowerkit predict PHOTO --run R``, each beside a fresh ``import torch``."""
    rows = work / "output" / run / "fiftyone" / "predictions.jsonl"  # each row names an image of the run
    image = json.loads(rows.read_text().splitlines()[0])["filepath"]
    cmd = [str(BIN / "flowerkit"), "predict", image, "--run", run, "--output_dir", str(work / "output")]
    timed(cmd, env, work)  # warm-up
    results = []
    for _ in range(repeats):
        torch_s = import_torch_s(env)
        _, seconds = timed(cmd, env, work)
        results.append({"wall_s": round(seconds, 3), "import_torch_s": torch_s,
                        "over_import_torch_s": round(seconds - torch_s, 3), "load_1m": load_1m()})
        print(f"  predict one photo: {seconds:.2f} s (import torch {torch_s:.2f} s, load {load_1m()})", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="The seed's tiny run instead of the two-epoch ViT-Ti/16.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--servers", nargs="+", choices=("temporary", "local"), default=["temporary", "local"])
    parser.add_argument("--no-predict", action="store_true", help="Skip the one-photo predict timing.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    flags = TINY_FLAGS if args.tiny else DEFAULT_FLAGS
    out = args.out or REPO / "benchmarks" / "results" / f"run-phases{'-tiny' if args.tiny else ''}.json"

    with tempfile.TemporaryDirectory(prefix="flowerkit-phases-") as tmp:
        work = Path(tmp)
        env = os.environ | {"PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        database = work / "prefect" / "prefect.db"

        def train(name: str) -> list[str]:
            return [str(BIN / "flowerkit"), "train", "--name", name, *flags, "--output_dir", str(work / "output"),
                    "--quiet"]

        results: dict[str, list[dict]] = {}
        for server in args.servers:
            with local_server(env) if server == "local" else nullcontext():
                timed(train(f"{server}-warmup"), env, work)  # page cache, Prefect's database, the pixel cache
                runs = results[server] = []
                for i in range(args.repeats):
                    torch_s = import_torch_s(env)
                    started, wall = timed(train(f"{server}{i}"), env, work)
                    runs.append(split_run(work / "output" / f"{server}{i}", database, started, wall, torch_s))
                    print(f"{server} server, run {i + 1}/{args.repeats}: {json.dumps(runs[-1])}", flush=True)
                if server == "local" and not args.no_predict:
                    predict = time_predict(env, work, f"{server}{args.repeats - 1}", args.repeats)
        if "local" not in args.servers and not args.no_predict:
            predict = time_predict(env, work, f"{args.servers[-1]}{args.repeats - 1}", args.repeats)

    result = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "command": ["flowerkit", "train", *flags, "--quiet"],
        "goals_fixed_cost_s": {k: v for k, v in GOALS_S.items() if k in results},
        "runs": results,
        "median": {server: median_of(runs) for server, runs in results.items()},
    }
    if not args.no_predict:
        result["predict_one_photo"] = predict
        result["predict_goal"] = "at most import torch + 1 s"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for server, median in result["median"].items():
        print(f"{server} server: median wall {median['wall_s']} s, fixed cost {median['fixed_cost_s']} s "
              f"(goal <= {GOALS_S[server]} s); phases {median['phases_s']}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
