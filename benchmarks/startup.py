"""Time the seed's tiny train command against the start-up floor, several times, interleaved, in one run.

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--out benchmarks/results/startup.json]

The floor (``benchmarks/startup_floor.py``) imports torch and prefect and runs one empty flow
with one empty task: no flowerkit run can start faster. The target: the seed command takes at most 1.5 times
the floor on the same machine. Both use one fresh PREFECT_HOME (each starts Prefect's ephemeral server, as a
user's first command of the day would) after one untimed warm-up run each (disk cache, database creation).
The seed command's log timestamps split its time into phases (imports, server start, setup up to the first
training step, the rest). Fastest runs count: other load on the machine only ever adds time.

Then the fast path: ``flowerkit server start`` in the same PREFECT_HOME, and the seed command again, timed
the same way while that server runs (no ephemeral server to start), before ``flowerkit server stop``: once as
a user runs it (the CLI finds the server) and once with PREFECT_API_URL set to it, alternately, so the cost of
finding the server shows. Each run's CPU time (user + system, the command and its children) is recorded next
to its wall time: on a machine shared with other work, wall time grows with the load and CPU time much less.
``--served-only`` times only the fast path (no ephemeral runs, no floor).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEED_FLAGS = ["--dataset", "flower102", "--model_type", "testing", "--img_size", "64", "--num_steps", "10",
              "--eval_every", "5", "--train_batch_size", "4", "--eval_batch_size", "2",
              "--tiny_train_subset", "flower102_tiny", "--tiny_infer_subset", "flower102_tiny", "--prefer_mps"]
# Log lines that end each phase of the seed command, in order (Prefect's console format "HH:MM:SS.fff | ...").
# The floor has no training step: its flow's tasks fall into "until_flow_end".
MILESTONES = (("imports_and_config", r"Starting temporary server"), ("prefect_server", r"Beginning flow run"),
              ("setup_to_first_step", r"step 1/"), ("until_flow_end", r"Flow run .* Finished in state"))
STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \|")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str, float]:
    """(seconds, wall-clock start as epoch seconds, combined output, CPU seconds) of one command, which must
    succeed. The CPU time counts the command and the children it waited for (not a detached watcher)."""
    started = time.time()
    cpu0, t0 = children_cpu_s(), time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, children_cpu_s() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, started, done.stdout + done.stderr, cpu


def phases(output: str, started: float, total: float) -> dict[str, float]:
    """Seconds per phase of the seed command, from its log timestamps (local time, same day)."""
    day = datetime.fromtimestamp(started).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    marks: dict[str, float] = {}
    for line in output.splitlines():
        stamp = STAMP.match(line)
        if not stamp:
            continue
        h, m, s, ms = map(int, stamp.groups())
        at = day + h * 3600 + m * 60 + s + ms / 1000 - started
        for name, pattern in MILESTONES:
            if name not in marks and re.search(pattern, line):
                marks[name] = at
    result, previous = {}, 0.0
    for name, _ in MILESTONES:
        if name in marks:
            result[name] = round(marks[name] - previous, 3)
            previous = marks[name]
    result["shutdown"] = round(total - previous, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    parser.add_argument("--served-only", action="store_true", help="Only the runs with `flowerkit server start`.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="flowerkit-startup-") as tmp:
        work = Path(tmp)
        env = os.environ | {"PREFECT_HOME": str(work / "prefect"), "FLOWERKIT_CACHE_DIR": str(work / "cache"),
                            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                            # On a busy machine the server's 20 s default start-up limit can pass: fail less.
                            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
        env.pop("PREFECT_API_URL", None)  # both must start the ephemeral server
        data = work / "flower102"
        subprocess.run([str(BIN / "flowerkit"), "data", "synth", "--out", str(data), "--images-per-class", "3",
                        "--size", "200"], env=env, check=True, capture_output=True)
        floor_cmd = [sys.executable, str(REPO / "benchmarks" / "startup_floor.py")]

        def seed_cmd(name: str) -> list[str]:
            return [str(BIN / "flowerkit"), "train", "--name", name, "--data_root", str(data), *SEED_FLAGS,
                    "--output_dir", str(work / "output")]

        floor, seed, floor_phases, seed_phases = [], [], [], []
        served: dict[str, list[float]] = {"found": [], "found_cpu": [], "api_url_set": [], "api_url_set_cpu": []}
        if not args.served_only:
            timed_run(floor_cmd, env, work)  # warm-ups: page cache, Prefect's database
            timed_run(seed_cmd("warmup"), env, work)
        for i in range(0 if args.served_only else args.repeats):
            for cmd, times, split in ((floor_cmd, floor, floor_phases), (seed_cmd(f"seed{i}"), seed, seed_phases)):
                seconds, started, output, _ = timed_run(cmd, env, work)
                times.append(seconds)
                split.append(phases(output, started, seconds))
            print(f"run {i + 1}/{args.repeats}: floor {floor[-1]:.2f} s {floor_phases[-1]}\n"
                  f"{'':<{len(str(i + 1)) * 2 + 6}}seed command {seed[-1]:.2f} s {seed_phases[-1]}", flush=True)

        server = [str(BIN / "flowerkit"), "server"]
        subprocess.run([*server, "start", "--port", "0"], env=env, check=True, capture_output=True)
        state = json.loads((work / "prefect" / "flowerkit-server.json").read_text())
        with_url = env | {"PREFECT_API_URL": f"http://127.0.0.1:{state['port']}/api"}
        try:
            timed_run(seed_cmd("served-warmup"), env, work)
            for i in range(args.repeats):
                for key, run_env in (("found", env), ("api_url_set", with_url)):
                    seconds, _, _, cpu = timed_run(seed_cmd(f"served-{key}{i}"), run_env, work)
                    served[key].append(seconds)
                    served[f"{key}_cpu"].append(cpu)
                print(f"run {i + 1}/{args.repeats} with `flowerkit server start`: seed command {served['found'][-1]:.2f} s "
                      f"(CPU {served['found_cpu'][-1]:.2f} s); with PREFECT_API_URL set {served['api_url_set'][-1]:.2f} s "
                      f"(CPU {served['api_url_set_cpu'][-1]:.2f} s)", flush=True)
        finally:
            subprocess.run([*server, "stop"], env=env, check=True, capture_output=True)

    result = {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "seed_command_with_local_server_s": [round(x, 3) for x in served["found"]],
        "seed_with_local_server_min_s": round(min(served["found"]), 3),
        "seed_with_local_server_cpu_s": [round(x, 3) for x in served["found_cpu"]],
        "seed_with_api_url_set_s": [round(x, 3) for x in served["api_url_set"]],
        "seed_with_api_url_set_min_s": round(min(served["api_url_set"]), 3),
        "seed_with_api_url_set_cpu_s": [round(x, 3) for x in served["api_url_set_cpu"]],
        "target_with_local_server_s": 5.0,
    }
    if floor:
        result |= {
            "floor_s": [round(x, 3) for x in floor], "seed_command_s": [round(x, 3) for x in seed],
            "floor_phases_s": floor_phases, "seed_phases_s": seed_phases,
            "floor_min_s": round(min(floor), 3), "seed_min_s": round(min(seed), 3),
            "ratio_min": round(min(seed) / min(floor), 3),
            "ratio_median": round(statistics.median(seed) / statistics.median(floor), 3),
            "target_ratio": 1.5,
        }
        print(f"floor {result['floor_min_s']} s, seed command {result['seed_min_s']} s: ratio {result['ratio_min']} "
              f"(median ratio {result['ratio_median']}; target <= 1.5)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"with `flowerkit server start`: seed command {result['seed_with_local_server_min_s']} s (target <= 5 s), "
          f"{result['seed_with_api_url_set_min_s']} s with PREFECT_API_URL set -> {args.out}")


if __name__ == "__main__":
    main()
