"""Posted ratings under load: their latency, what they cost the recommendations, and how soon every worker
serves them.

    python bench/events_benchmark.py [--output output] [--duration 20] [--event-rate 100]
                                     [--mixed-recommendations 200] [--mixed-events 50] [--workers 2]
                                     [--profile embedded|services]

Starts ``python -m online.serve`` (2 workers) on a free 127.0.0.1 port over the batch output and models there.
Embedded: with an event log of its own and a copy of Feast's SQLite registry and online store (the ratings
posted here reach neither the output's log nor its Feast store). Services: over the servers the ``RECSYS_*``
settings name (``python -m online.local_services up`` and the loaders first); the ratings go to their Redis
stream and Feast rows, as a client's would. Then:

1. events alone: an open loop of POST /users/<id>/events at ``--event-rate`` per second for ``--duration``
   seconds (8 client threads, each rating sent at its due time and timed from it, so a slow answer delays the
   figures, not the load), random known users, catalogue movies, ratings and distinct timestamps;
2. mixed: ``hey`` POST /ml/rec at ``--mixed-recommendations`` per second (4 connections) while the open loop
   posts ``--mixed-events`` ratings per second;
3. visibility: 100 ratings one after another, each followed at once by a recommendation request on a new
   connection (either worker): how many already leave the rated movie out, and the longest wait until they do;
4. the two event logs alone, 1,000 appends of one rating each, read to the end first as the service does: the
   embedded profile's segment files (write + fsync) and the services profile's Redis stream on a
   ``redis-server`` started here with ``appendfsync always`` (what ``online.local_services`` starts).

Records the processor model; prints Markdown-ready JSON and appends it to bench/results/events.jsonl.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from serve_benchmark import cpu_model, free_port, parse_hey, run_tool, wait_until_ready

RESULTS = Path(__file__).resolve().parent / "results" / "events.jsonl"
ROOT = Path(__file__).resolve().parent.parent
THREADS = 8


def private_feast(folder: Path) -> Path:
    """A copy of the default Feast registry and SQLite online store, and a yaml naming them."""
    source = ROOT / "feature_repo"
    data = source / "data"
    for name in ("registry.db", "online_store.db"):
        shutil.copy2(data / name, folder / name)
    yaml = folder / "feature_store.yaml"
    yaml.write_text((source / "feature_store.yaml").read_text()
                    .replace("registry: data/registry.db", f"registry: {folder / 'registry.db'}")
                    .replace("path: data/online_store.db", f"path: {folder / 'online_store.db'}"))
    return yaml


def open_loop(url: str, token: str, users: list[int], items: list[int], rate: float, duration: float,
              first_timestamp: int, seed: int) -> dict:
    """POST /users/<id>/events at ``rate`` per second; latency from each rating's due time to its answer."""
    total = int(rate * duration)
    host, port = url.removeprefix("http://").split(":")
    latencies = np.full(total, np.nan)
    statuses: Counter[int] = Counter()
    rng = random.Random(seed)
    bodies = [(rng.choice(users), json.dumps({"itemid": rng.choice(items), "rating": rng.randint(1, 5),
                                              "timestamp": first_timestamp + n})) for n in range(total)]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    start = time.monotonic() + 0.2
    lock = threading.Lock()

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        for n in range(offset, total, THREADS):
            due = start + n / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            userid, body = bodies[n]
            connection.request("POST", f"/users/{userid}/events", body, headers)
            response = connection.getresponse()
            response.read()
            latencies[n] = time.monotonic() - due
            with lock:
                statuses[response.status] += 1
        connection.close()

    cpu_before = os.times()
    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - start
    cpu_after = os.times()
    used = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    done = latencies[~np.isnan(latencies)] * 1000
    return {"offered_per_s": rate, "achieved_per_s": round(len(done) / wall, 1), "events": total,
            "p50_ms": round(float(np.percentile(done, 50)), 2), "p90_ms": round(float(np.percentile(done, 90)), 2),
            "p99_ms": round(float(np.percentile(done, 99)), 2), "max_ms": round(float(done.max()), 2),
            "statuses": dict(statuses), "errors": sum(n for s, n in statuses.items() if s != 202),
            "client_cores": round(used / wall, 2)}


def visibility(url: str, token: str, users: list[int], items: list[int], first_timestamp: int,
               count: int = 100) -> dict:
    """Each rating, then at once a recommendation request on a new connection: is the movie left out?"""
    rng = random.Random(3)
    at_once, waits = 0, []
    for n in range(count):
        userid = rng.choice(users)
        listed = requests.post(f"{url}/ml/rec", json={"userid": userid}, timeout=10).json()["item_list"]
        itemid = listed[0]["itemid"] if listed else rng.choice(items)  # the top one: surely listed before
        posted = time.monotonic()
        answer = requests.post(f"{url}/users/{userid}/events", json={"itemid": itemid, "rating": 4,
                                                                     "timestamp": first_timestamp + n},
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 202, answer.text
        tries = 0
        while True:
            with requests.Session() as fresh:
                body = fresh.post(f"{url}/ml/rec", json={"userid": userid}, timeout=10).json()
            tries += 1
            if itemid not in {item["itemid"] for item in body["item_list"]}:
                break
            if time.monotonic() - posted > 5:
                break
        if tries == 1:
            at_once += 1
        waits.append(time.monotonic() - posted)
    return {"ratings": count, "left_out_by_the_next_request": at_once, "longest_wait_ms": round(max(waits) * 1000, 1),
            "p99_wait_ms": round(float(np.percentile(waits, 99)) * 1000, 1)}


def log_appends(folder: Path, count: int = 1000) -> dict:
    """p50 / p99 of one locked read-to-end + append (+ fsync) on each event log."""
    import redis

    from contracts.event_log import EventLog
    from online.redis_event_log import RedisEventLog

    def timed(log: object) -> dict:
        cursor, last, times = log.start(), 0, []
        for n in range(count):
            started = time.perf_counter()
            with log.exclusive():
                records, cursor = log.read(cursor)
                last = records[-1]["sequence"] if records else last
                last = log.append([{"event_id": str(n), "userid": 1, "itemid": 2, "rating": 4.0, "timestamp": n}],
                                  last)[-1]["sequence"]
            times.append(time.perf_counter() - started)
        milliseconds = np.asarray(times) * 1000
        return {"p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
                "p99_ms": round(float(np.percentile(milliseconds, 99)), 3)}

    results = {"file_log_fsync": timed(EventLog(folder / "file-log"))}
    port = free_port()
    state = folder / "redis"
    state.mkdir()
    server = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(state),
                               "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        results["redis_stream_appendfsync_always"] = timed(RedisEventLog(client, "bench"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("output"))
    parser.add_argument("--duration", type=int, default=20, help="seconds per load run")
    parser.add_argument("--event-rate", type=float, default=100.0)
    parser.add_argument("--mixed-recommendations", type=float, default=200.0)
    parser.add_argument("--mixed-events", type=float, default=50.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="request threads per worker (default 1)")
    parser.add_argument("--profile", choices=("embedded", "services"), default="embedded")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="events-bench-"))
    private = (["--feast-yaml", str(private_feast(folder)), "--event-log", str(folder / "events")]
               if args.profile == "embedded" else ["--profile", "services"])
    token = "bench-token"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "online.serve", "--output", str(args.output), "--port", str(port), "--workers",
         str(args.workers), *private, *(["--threads", str(args.threads)] if args.threads else [])],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RECSYS_API_TOKEN": token})
    results: dict = {"date": time.strftime("%Y-%m-%d"), "profile": args.profile, "workers": args.workers,
                     "threads": args.threads or 1,
                     "cpus": os.cpu_count(),
                     "cpu_model": cpu_model(), "duration_s": args.duration}
    try:
        wait_until_ready(url, server, 180, str(folder / "serve.log"))
        exports = args.output / "exports" / "current"
        users = pd.read_parquet(exports / "user_filter", columns=["userid"])["userid"].astype(int).tolist()
        items = pd.read_parquet(exports / "item_popularity", columns=["itemid"])["itemid"].astype(int).tolist()
        for number in range(200):  # warm-up: both workers, all paths
            requests.get(f"{url}/users/{users[number % len(users)]}/recommendations", timeout=10)
        results["versions"] = requests.get(f"{url}/ready", timeout=5).json()["versions"]
        # The write path warmed in both workers too (its first call opens the Feast store's connection), unmeasured.
        open_loop(url, token, users, items, 50.0, 2, int(time.time()) - 11 * 86_400, 0)
        first = int(time.time()) - 10 * 86_400
        results["events_alone"] = open_loop(url, token, users, items, args.event_rate, args.duration, first, 1)
        first += 86_400  # distinct timestamps per phase, all before the server's clock
        user = users[len(users) // 2]
        mixed: dict = {}
        poster = threading.Thread(target=lambda: mixed.update(events=open_loop(
            url, token, users, items, args.mixed_events, args.duration, first, 2) if args.mixed_events else {}))
        poster.start()
        output, _, tool_cores = run_tool(
            ["hey", "-z", f"{args.duration}s", "-c", "4", "-q", f"{args.mixed_recommendations / 4:g}", "-m", "POST",
             "-T", "application/json", "-d", json.dumps({"userid": user}), f"{url}/ml/rec"])
        poster.join()
        results["mixed"] = {"recommendations": {**parse_hey(output), "tool_cores": round(tool_cores, 2)},
                            "events": mixed["events"]}
        results["visibility"] = visibility(url, token, users, items, first + 86_400)
    finally:
        server.terminate()
        server.wait(timeout=30)
    results["log_appends"] = log_appends(folder)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps(results) + "\n")
    print(json.dumps(results, indent=2))
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
