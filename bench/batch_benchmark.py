"""Wall time and peak memory of the whole batch (``python -m spark_jobs.run_batch``).

    python bench/batch_benchmark.py --data ../shared/data/ml-100k
    python bench/batch_benchmark.py --synthetic 1000000
    python bench/batch_benchmark.py --data ../shared/data/ml-100k --against ../previous-main --runs 2

``--against DIR`` names another checkout of the project (``git worktree add ../previous-main <commit>``):
the two run one after the other, alternating, on the same data, each with its own code, so a speed-up is
measured side by side on one machine at one time.

Runs the batch in a child process (its log kept for the per-stage times) and samples the proportional
resident memory (PSS) of its whole process tree (the Python driver and Spark's JVM) every 2 s; peak
memory is the largest sum seen, reported with its share per program (the Python driver, Spark's JVM). Synthetic
data is generated before the clock starts. Prints one JSON line per run and appends it to
bench/results/batch.jsonl; each run's whole log (the batch's and its JVM's output) is kept under
bench/results/logs/. A failed run is a result too (``"exit_code"`` not 0, the log's last lines): the other runs go
on, so a setting's failure rate is measured over several runs, and the benchmark exits 1 at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from spark_jobs.synthetic import generate, write_ml1m

RESULTS = Path(__file__).resolve().parent / "results" / "batch.jsonl"
LOGS = RESULTS.parent / "logs"
FAILED_LOG_LINES = 40


def tree_memory(process: psutil.Process) -> dict[str, int]:
    """Proportional resident memory (PSS) of the process tree, summed per program (``python``, ``java``).

    PSS, not RSS: the JVM forks itself to run shell commands (the child takes the forking thread's name,
    "Executor task l"), and a fork shares all of its parent's pages until it execs; summed as RSS, each
    such fork counted the JVM's heap a second time. Reading a 4 GiB JVM's PSS costs ~70 ms of kernel time,
    hence the sampling interval."""
    by_program: dict[str, int] = {}
    for member in [process, *process.children(recursive=True)]:
        try:
            program = member.name()
            by_program[program] = by_program.get(program, 0) + member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return by_program


SAMPLE_SECONDS = 2.0  # the heap a JVM has touched stays resident, so its peak lasts longer than this
STEP_DONE = re.compile(r"step \d+/\d+: (\w+) done in ([\d.]+) s")


def cpu_model() -> str:
    """The processor's name: figures from machines of the same size differ up to 2x between models."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def measure(command: list[str], log_path: Path, checkout: Path) -> tuple[float, dict[str, int], int]:
    """Wall time, the process tree's memory per program at the moment its sum peaked, and the exit code."""
    started = time.monotonic()
    # The checkout's own modules first: python -m puts the working directory on sys.path.
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    child = subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=checkout, env=env)
    process = psutil.Process(child.pid)
    peak: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(SAMPLE_SECONDS):
            try:
                now = tree_memory(process)
            except psutil.NoSuchProcess:
                return
            if sum(now.values()) > sum(peak.values()):
                peak = now

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
    parser.add_argument("--against", type=Path, default=None, help="another checkout to run alternately")
    parser.add_argument("--runs", type=int, default=1, help="runs of each checkout")
    parser.add_argument("--keep-output", type=Path, default=None,
                        help="move this checkout's last output (and the data) here, e.g. to train on it")
    args, batch_flags = parser.parse_known_args()  # anything else goes to the batch (--cooccurrence-history 50)
    this = Path(__file__).resolve().parent.parent
    checkouts = [this] + ([args.against.resolve()] if args.against else [])

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as scratch:
        data = args.data.resolve() if args.data else Path(scratch) / "data"
        if args.synthetic:
            write_ml1m(generate(args.synthetic, seed=0), data)
        ratings = sum(1 for _ in (data / ("u.data" if (data / "u.data").exists() else "ratings.dat")).open("rb"))
        failures = 0
        for run in range(args.runs):
            for checkout in (checkouts if run % 2 == 0 else checkouts[::-1]):  # alternating
                out = Path(scratch) / f"out-{run}-{checkout.name}"
                command = [sys.executable, "-m", "spark_jobs.run_batch", "--data", str(data), "--output", str(out),
                           "--driver-memory", args.driver_memory, *batch_flags]
                LOGS.mkdir(parents=True, exist_ok=True)
                log_path = LOGS / f"{time.strftime('%Y%m%dT%H%M%S')}-{checkout.name}-run{run}.log"
                wall, peak, code = measure(command, log_path, checkout)
                log = log_path.read_text(errors="replace")
                failures += code != 0
                if args.keep_output and checkout == this and run == args.runs - 1 and code == 0:
                    shutil.rmtree(args.keep_output / "output", ignore_errors=True)
                    args.keep_output.mkdir(parents=True, exist_ok=True)
                    shutil.move(out, args.keep_output / "output")
                shutil.rmtree(out, ignore_errors=True)
                result = {
                    "dataset": str(args.data) if args.data else f"synthetic-{args.synthetic}",
                    "ratings": ratings,
                    "code": f"{checkout.name} {git_head(checkout)}",
                    "wall_s": round(wall, 1),
                    "stages_s": {name: float(seconds) for name, seconds in STEP_DONE.findall(log)},
                    "batch_flags": batch_flags,
                    "peak_pss_gib": round(sum(peak.values()) / 2**30, 2),
                    "peak_pss_by_program_gib": {name: round(pss / 2**30, 2) for name, pss in peak.items()},
                    "driver_memory": args.driver_memory,
                    "cpus": psutil.cpu_count(),
                    "cpu_model": cpu_model(),
                    "machine": platform.machine(),
                    "date": time.strftime("%Y-%m-%d"),
                    "log": str(log_path),
                }
                if code != 0:
                    result |= {"exit_code": code, "last_lines": log.splitlines()[-FAILED_LOG_LINES:]}
                print(json.dumps(result), flush=True)
                RESULTS.parent.mkdir(exist_ok=True)
                with RESULTS.open("a") as results:
                    results.write(json.dumps(result) + "\n")
        if args.keep_output and args.synthetic:
            shutil.rmtree(args.keep_output / "data", ignore_errors=True)
            shutil.move(data, args.keep_output / "data")
    if failures:
        raise SystemExit(f"{failures} of {args.runs * len(checkouts)} runs failed: their logs are named in the results")


def git_head(checkout: Path) -> str:
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain"], capture_output=True, text=True)
    return found.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
