"""Wall time and peak memory of the whole batch (``python -m spark_jobs.run_batch``).

    python bench/batch_benchmark.py --data ../shared/data/ml-100k
    python bench/batch_benchmark.py --synthetic 1000000

Runs the batch in a child process (its log kept for the per-stage times) and samples the resident
memory of its whole process tree (the Python driver and Spark's JVM) every 0.2 s; peak memory is the
largest sum seen. Synthetic data is generated before the clock starts. Prints one JSON line and
appends it to bench/results/batch.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from spark_jobs.synthetic import generate, write_ml1m

RESULTS = Path(__file__).resolve().parent / "results" / "batch.jsonl"


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


STEP_DONE = re.compile(r"step \d+/\d+: (\w+) done in ([\d.]+) s")


def measure(command: list[str], log_path: Path) -> tuple[float, int, int]:
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    process = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            try:
                peak = max(peak, tree_rss(process))
            except psutil.NoSuchProcess:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    done.set()
    sampler.join()
    return time.monotonic() - started, peak, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a MovieLens directory")
    source.add_argument("--synthetic", type=int, help="generate about this many ratings (ML-1M format)")
    parser.add_argument("--driver-memory", default="4g")
    args, batch_flags = parser.parse_known_args()  # anything else goes to the batch (--cooccurrence-history 50)

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as scratch:
        data = args.data
        if args.synthetic:
            data = Path(scratch) / "data"
            write_ml1m(generate(args.synthetic, seed=0), data)
        ratings = sum(1 for _ in (data / ("u.data" if (data / "u.data").exists() else "ratings.dat")).open("rb"))
        command = [sys.executable, "-m", "spark_jobs.run_batch", "--data", str(data),
                   "--output", str(Path(scratch) / "out"), "--driver-memory", args.driver_memory, *batch_flags]
        log_path = Path(scratch) / "batch.log"
        wall, peak, code = measure(command, log_path)
        log = log_path.read_text()
    if code != 0:
        raise SystemExit(f"batch failed with exit code {code}:\n{log[-3000:]}")
    stages = {name: float(seconds) for name, seconds in STEP_DONE.findall(log)}
    result = {
        "dataset": str(args.data) if args.data else f"synthetic-{args.synthetic}",
        "ratings": ratings,
        "wall_s": round(wall, 1),
        "stages_s": stages,
        "batch_flags": batch_flags,
        "peak_rss_gib": round(peak / 2**30, 2),
        "driver_memory": args.driver_memory,
        "cpus": psutil.cpu_count(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result))
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
