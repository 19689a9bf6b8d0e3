"""Faults under load, reload under load, and a soak, against the service under gunicorn on 127.0.0.1.

    python bench/robustness.py faults [--duration 8]    services profile: each dependency stopped mid-run,
                                                        two at once, and Elasticsearch hanging (SIGSTOP)
    python bench/robustness.py quality                  services profile: top-K on the hold-out served over
                                                        HTTP with each dependency down (online.evaluate_served)
    python bench/robustness.py reload                   a reload to new versions while requests run
    python bench/robustness.py soak [--duration 180] [--rate 50]   memory of the workers over time

``faults`` and ``reload`` use a bounded Python load generator (a few threads with kept-alive
connections, random users) because they must read each response's status and versions; ``soak`` uses
``hey`` at a fixed rate. The servers for ``faults`` are the ones the RECSYS_* settings name (start them
with ``python -m online.local_services up`` and load them first); this script stops and restarts them
with the same module. Results print as JSON and append to bench/results/robustness.jsonl.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import requests

from contracts.settings import ServingSettings
from online import local_services

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "robustness.jsonl"


class Load:
    """``threads`` closed loops of GET /users/<random>/recommendations until stopped; counts and versions."""

    def __init__(self, url: str, users: list[int], threads: int = 4) -> None:
        self.url, self.users, self.threads = url, users, threads
        self.statuses: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.versions: collections.Counter = collections.Counter()
        # (when, status, seconds, degraded stores) per response
        self.timeline: list[tuple[float, int, float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._loop, args=(seed,)) for seed in range(threads)]

    def _loop(self, seed: int) -> None:
        rng, session = random.Random(seed), requests.Session()
        while not self._stop.is_set():
            userid = rng.choice(self.users)
            started = time.monotonic()
            try:
                response = session.get(f"{self.url}/users/{userid}/recommendations", timeout=10)
                status = response.status_code
                body = response.json()
                seconds = time.monotonic() - started
            except (requests.RequestException, ValueError) as error:
                with self._lock:
                    self.errors[type(error).__name__] += 1
                continue
            with self._lock:
                self.statuses[status] += 1
                self.timeline.append((time.monotonic(), status, seconds, tuple(body.get("degraded", ()))))
                if status == 200:
                    self.versions[json.dumps(body["versions"], sort_keys=True)] += 1
                else:
                    self.errors[body.get("store", "?")] += 1

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join()


def start_service(settings: ServingSettings, profile: str, port: int, *flags: str) -> subprocess.Popen:
    served = settings.model_copy(update={"profile": profile, "serve_port": port})
    server = subprocess.Popen([sys.executable, "-m", "online.serve", *served.as_flags(), *flags], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).ok:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("the service did not get ready")


def users_of(settings: ServingSettings) -> list[int]:
    frame = pd.read_parquet(settings.current_export_dir / "user_filter", columns=["userid"])
    return frame["userid"].astype(int).tolist()


# (servers stopped, how): each alone, two at once, and a hang (the process paused: connections wait).
FAULTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("redis",), "stop"), (("elasticsearch",), "stop"), (("feast",), "stop"), (("triton",), "stop"),
    (("elasticsearch", "triton"), "stop"), (("redis", "elasticsearch"), "stop"), (("elasticsearch",), "hang"),
)


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def break_servers(settings: ServingSettings, names: tuple[str, ...], how: str) -> None:
    if how == "stop":
        local_services.down(settings, list(names))
    else:
        for name in names:
            os.killpg(local_services.running_pid(settings, name), signal.SIGSTOP)


def mend_servers(settings: ServingSettings, names: tuple[str, ...], how: str) -> None:
    if how == "stop":
        local_services.up(settings, list(names))
    else:
        for name in names:
            os.killpg(local_services.running_pid(settings, name), signal.SIGCONT)


def faults(settings: ServingSettings, port: int, duration: float) -> dict:
    """Under load, the servers of each fault broken for ``duration / 2`` then mended; what was served meanwhile
    (statuses, latency, which stores the responses name as degraded) and how long until the lists were full
    again. Feast's server is read per request only with --feast-access server: that fault runs against a
    service started so."""
    url = f"http://127.0.0.1:{port}"
    results: dict = {}
    for access in ("online_store", "server"):
        server = start_service(settings, "services", port, "--feast-access", access)
        try:
            for names, how in FAULTS:
                if ("feast" in names) != (access == "server"):
                    continue
                label = "+".join(names) + (" (hanging)" if how == "hang" else "")
                with Load(url, users_of(settings)) as load:
                    time.sleep(duration / 2)
                    break_servers(settings, names, how)
                    broken_at = time.monotonic()
                    time.sleep(duration / 2)
                    mend_servers(settings, names, how)
                    mended_at = time.monotonic()
                    deadline = mended_at + 120
                    while time.monotonic() < deadline:  # until the lists are full again
                        time.sleep(0.2)
                        recent = [(s, d) for t, s, _, d in load.timeline if t > time.monotonic() - 0.5]
                        if recent and all(s == 200 and not d for s, d in recent):
                            break
                    recovered_at = time.monotonic()
                    time.sleep(1.0)
                during = [(s, seconds, d) for t, s, seconds, d in load.timeline if broken_at <= t <= mended_at]
                degraded = collections.Counter(",".join(d) for s, _, d in during if d)
                results[label] = {
                    "feast_access": access, "requests": sum(load.statuses.values()),
                    "statuses_while_broken": dict(collections.Counter(s for s, _, _ in during)),
                    "not_200_while_broken": sum(1 for s, _, _ in during if s != 200),
                    "degraded_while_broken": dict(degraded),
                    "p50_ms_while_broken": percentile([x for _, x, _ in during], 50),
                    "p99_ms_while_broken": percentile([x for _, x, _ in during], 99),
                    "max_ms_while_broken": percentile([x for _, x, _ in during], 100),
                    "errors": dict(load.errors), "seconds_broken": round(mended_at - broken_at, 1),
                    "full_lists_seconds_after_mended": round(recovered_at - mended_at, 1),
                    "server_alive": server.poll() is None,
                }
                print(label, json.dumps(results[label]), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return results


def quality(settings: ServingSettings, port: int) -> dict:
    """Top-K on the hold-out over HTTP with each dependency down, each checked user by user against the
    offline lists replayed without it (``online.evaluate_served --down``)."""
    url = f"http://127.0.0.1:{port}"
    results: dict = {}
    for access in ("online_store", "server"):
        server = start_service(settings, "services", port, "--feast-access", access)
        try:
            for names in ((), ("redis",), ("elasticsearch",), ("feast",), ("triton",), ("elasticsearch", "triton")):
                if ("feast" in names) != (access == "server"):
                    continue
                label = "+".join(names) or "none"
                local_services.down(settings, list(names))
                try:
                    report_path = settings.output_dir / f"served_evaluation_down_{label}.json"
                    run = subprocess.run(
                        [sys.executable, "-m", "online.evaluate_served", *settings.as_flags(), "--url", url,
                         "--label", f"services, down: {label}", "--no-ease", "--down", ",".join(names),
                         "--report", str(report_path)], cwd=ROOT, capture_output=True, text=True)
                finally:
                    local_services.up(settings, list(names))
                if run.returncode != 0:
                    raise SystemExit(f"evaluate_served with {label} down failed:\n"
                                     f"{run.stdout[-3000:]}{run.stderr[-3000:]}")
                report = json.loads(report_path.read_text())
                results[label] = {"http": report["lists"]["served over HTTP"],
                                  "popularity": report["lists"]["popularity"],
                                  "served_degraded": report["served_degraded"],
                                  "users_different_from_offline": report["users_served_different_from_offline"]}
                wait_until_full(url)
                print(label, json.dumps(results[label]), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return results


def wait_until_full(url: str, timeout: float = 180) -> None:
    """Until a response names nothing degraded (the mended servers answer, their breakers closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not requests.get(f"{url}/users/1/recommendations", timeout=10).json().get("degraded", ["?"]):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} still degraded after {timeout:.0f} s")


def reload(settings: ServingSettings, port: int) -> dict:
    """Requests run while the ranking model is retrained (a new version) and gunicorn reloads gracefully
    (SIGHUP: new workers load the new versions, the old ones finish their requests)."""
    url = f"http://127.0.0.1:{port}"
    server = start_service(settings, "embedded", port)
    try:
        with Load(url, users_of(settings)) as load:
            time.sleep(2)
            subprocess.run([sys.executable, "-m", "models.train", "--output", str(settings.output_dir), "--only",
                            "ranking", "--max-epochs", "1", "--no-delta"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            server.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(load.versions) < 2:
                time.sleep(0.5)
            time.sleep(3)
        return {"requests": sum(load.statuses.values()), "statuses": dict(load.statuses),
                "errors": dict(load.errors), "version_sets_seen": len(load.versions),
                "responses_per_version_set": list(load.versions.values())}
    finally:
        server.terminate()
        server.wait(timeout=30)


def soak(settings: ServingSettings, port: int, duration: int, rate: float) -> dict:
    url = f"http://127.0.0.1:{port}"
    server = start_service(settings, "embedded", port)
    samples = []
    try:
        workers = lambda: [c for c in psutil.Process(server.pid).children(recursive=True)]  # noqa: E731
        user = users_of(settings)[0]
        hey = subprocess.Popen(["hey", "-z", f"{duration}s", "-c", "4", "-q", f"{rate / 4:g}",
                                f"{url}/users/{user}/recommendations"], stdout=subprocess.PIPE, text=True)
        started = time.monotonic()
        while hey.poll() is None:
            rss = [w.memory_info().rss for w in workers()]
            samples.append((round(time.monotonic() - started), round(sum(rss) / 2**20, 1)))
            time.sleep(10)
        output = hey.stdout.read() if hey.stdout else ""
    finally:
        server.terminate()
        server.wait(timeout=30)
    codes = dict(re_pairs(output))
    return {"duration_s": duration, "rate": rate, "workers_rss_mib": samples, "status_codes": codes,
            "rss_growth_mib_after_first_minute": round(samples[-1][1] - next(m for t, m in samples if t >= 60), 1)
            if samples and samples[-1][0] >= 60 else None}


def re_pairs(hey_output: str) -> list[tuple[str, int]]:
    import re

    return [(code, int(count)) for code, count in re.findall(r"\[(\d{3})\]\s+(\d+) responses", hey_output)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("faults", "quality", "reload", "soak"))
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args()
    settings = ServingSettings()
    if args.what == "faults":
        result = faults(settings, args.port, args.duration or 8.0)
    elif args.what == "quality":
        result = quality(settings, args.port)
    elif args.what == "reload":
        result = reload(settings, args.port)
    else:
        result = soak(settings, args.port, int(args.duration or 180), args.rate)
    record = {"date": time.strftime("%Y-%m-%d"), "what": args.what, "result": result}
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
