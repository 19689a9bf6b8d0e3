"""Latency and throughput of the recommendation service under gunicorn, measured with hey and wrk.

    python bench/serve_benchmark.py [--output output] [--duration 20] [--profile embedded|services]
                                    [--rate 200] [--warmup 200] [--workers 2] [--threads N]
                                    [--search-every-request]

Starts ``python -m online.serve`` (``--workers``, 2 by default) on a free 127.0.0.1 port over the batch output, models
and Feast store already there (services profile: over the servers and loaded versions that the
``RECSYS_*`` settings name, e.g. started by ``python -m online.local_services up``), warms it up, then:

1. fixed offered load: ``hey -z <duration> -c 4 -q <rate/4>`` (4 connections; 200 requests/s by default,
   50 for the services profile), POST /ml/rec for one user: latency percentiles and errors;
2. saturation: ``wrk`` closed loops at 8 and 32 connections for <duration> each, every request for a
   user drawn at random (a Lua script), GET /users/<id>/recommendations: requests/s and errors;
3. memory: each process of the service (gunicorn master, workers) after the load, peak RSS and PSS.

For each run it records how much CPU the load tool itself used (its rusage / wall time, in cores of
the 2), and the service's own per-stage mean times from /metrics. Bounded in time and only against
127.0.0.1. Prints Markdown and appends JSON to bench/results/serve.jsonl (Debian's ``hey`` and ``wrk``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import requests

RESULTS = Path(__file__).resolve().parent / "results" / "serve.jsonl"
ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = """
math.randomseed(7)
local users = {%s}
request = function()
  return wrk.format("GET", "/users/" .. users[math.random(#users)] .. "/recommendations")
end
"""


def cpu_model() -> str:
    """The processor's name: figures from machines of the same size differ up to 2x between models."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, seconds: float, log_name: str) -> None:
    """Until the service's /ready answers 200; a SystemExit naming its log if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if requests.get(f"{url}/ready", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"the service did not get ready; see {log_name}")
        time.sleep(0.5)


def run_tool(command: list[str]) -> tuple[str, float, float]:
    """(output, wall seconds, CPU cores the tool used on average)."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, _, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    return output, wall, (usage.ru_utime + usage.ru_stime) / wall


def process_memory(process: psutil.Process) -> dict | None:
    """A process's command, its peak resident set (VmHWM, which psutil does not give) and its proportional
    set size now, GiB."""
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
        pss = process.memory_full_info().pss
        command = " ".join(process.cmdline())
    except (OSError, psutil.Error):
        return None
    peak_kib = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))
    return {"pid": process.pid, "command": command[:80], "peak_rss_gib": round(peak_kib / 2**20, 3),
            "pss_gib": round(pss / 2**30, 3)}


def stage_means(url: str) -> dict[str, tuple[float, float]]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    sums = {m[0]: float(m[1]) for m in re.findall(r'recsys_stage_seconds_sum\{stage="(\w+)"\} ([\d.e+-]+)', text)}
    counts = {m[0]: float(m[1]) for m in re.findall(r'recsys_stage_seconds_count\{stage="(\w+)"\} ([\d.e+-]+)', text)}
    return {stage: (sums[stage], counts.get(stage, 0.0)) for stage in sums}


def stage_delta_ms(before: dict, after: dict) -> dict[str, float]:
    return {stage: round((after[stage][0] - before.get(stage, (0, 0))[0]) * 1000
                         / max(after[stage][1] - before.get(stage, (0, 0))[1], 1), 3) for stage in after}


def parse_hey(output: str) -> dict:
    percentiles = {f"p{p}_ms": round(float(s) * 1000, 2) for p, s in re.findall(r"(\d+)% in ([\d.]+) secs", output)}
    statuses = {code: int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", output)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = sum(n for code, n in statuses.items() if code != "200") + len(re.findall(r"Error distribution", output))
    return {"requests_per_s": rps, **percentiles, "statuses": statuses, "errors": errors}


def parse_wrk(output: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    latency = {f"p{p}_ms": value for p, value in re.findall(r"\s(50|99)%\s+([\d.]+\w+)", output)}
    return {"requests_per_s": rps, **latency, "errors": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("output"))
    parser.add_argument("--duration", type=int, default=20, help="seconds per load run")
    parser.add_argument("--profile", choices=("embedded", "services"), default="embedded")
    parser.add_argument("--rate", type=float, default=None, help="offered requests/s (200; services 50)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="requests before measuring (200; services 1500: Elasticsearch's JIT warms slowly)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=None, help="request threads per worker (the profile's default)")
    parser.add_argument("--search-every-request", action="store_true",
                        help="services profile: Elasticsearch answers every request's term and vector searches, also "
                             "where the Redis loader published them with the user's record")
    args = parser.parse_args()
    workers = args.workers
    rate = args.rate or (50.0 if args.profile == "services" else 200.0)
    warmup = args.warmup or (1500 if args.profile == "services" else 200)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile("w", prefix="serve-bench-", suffix=".log", delete=False)
    server = subprocess.Popen([sys.executable, "-m", "online.serve", "--output", str(args.output), "--port", str(port),
                               "--workers", str(workers), "--profile", args.profile,
                               *(["--threads", str(args.threads)] if args.threads else []),
                               *(["--search-every-request"] if args.search_every_request else [])],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "profile": args.profile, "workers": workers,
                     "threads": args.threads or "the profile's default",
                     "search_every_request": args.search_every_request,
                     "cpus": os.cpu_count(), "cpu_model": cpu_model(), "offered_per_s": rate}
    try:
        wait_until_ready(url, server, 120, log.name)
        users = pd.read_parquet(args.output / "exports" / "current" / "user_filter", columns=["userid"])["userid"]
        for number in range(warmup):  # warm-up: both workers, all paths
            requests.get(f"{url}/users/{users.iloc[number % len(users)]}/recommendations", timeout=10)
        user = int(users.iloc[len(users) // 2])
        results["versions"] = requests.get(f"{url}/ready", timeout=5).json()["versions"]

        before = stage_means(url)
        output, wall, tool_cores = run_tool(
            ["hey", "-z", f"{args.duration}s", "-c", "4", "-q", f"{rate / 4:g}", "-m", "POST", "-T",
             "application/json", "-d", json.dumps({"userid": user}), f"{url}/ml/rec"])
        results[f"fixed_{rate:g}_per_s"] = {**parse_hey(output), "tool_cores": round(tool_cores, 2),
                                      "stage_ms": stage_delta_ms(before, stage_means(url))}
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT % ", ".join(str(int(u)) for u in users))
        for connections in (8, 32):
            before = stage_means(url)
            output, wall, tool_cores = run_tool(
                ["wrk", "-t", "1", "-c", str(connections), "-d", f"{args.duration}s", "--latency", "-s", script.name,
                 url])
            results[f"closed_loop_c{connections}"] = {**parse_wrk(output), "tool_cores": round(tool_cores, 2),
                                                      "stage_ms": stage_delta_ms(before, stage_means(url))}
        # After the load: each worker's peak resident set and its share of pages now (workers fork from
        # the master after it loaded, so their RSS counts shared pages once per worker; PSS does not).
        below = psutil.Process(server.pid).children(recursive=True)
        results["processes"] = [m for m in map(process_memory, below) if m is not None]
    finally:
        server.terminate()
        server.wait(timeout=30)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(results) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
