"""Replay the hold-out through a running service's HTTP API and score what it serves.

    python -m online.evaluate_served --url http://127.0.0.1:8000 [--output DIR] [--label embedded]
                                     [--report PATH] [--chart PATH] [--no-ease] [--down elasticsearch,...]

For every user with at least one liked hold-out item (label 1 in ``online_holdout``),
``GET /users/<id>/recommendations?k=<max K>`` is asked over HTTP (a few concurrent connections), and
HitRate, Recall and NDCG at 10 and 50 are computed on the lists it returns. Beside them: the offline
top-K evaluation of the same batch and models (``models.evaluate``: popularity, EASE, each recall
source, recall + ranking). The service runs the offline evaluation's functions, so its lists must be the
offline ``recall + ranking`` lists user by user: every difference is counted and listed (the first
ones), and the command fails when there is one. With servers stopped (``--down``), the offline lists are
replayed without them (``models.outages``): the degraded lists must match the same way.

Writes a JSON report (``<output>/served_evaluation.json``), a PNG chart of the metrics side by side
(``<output>/served_evaluation.png``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from contracts.errors import PublishCheckError
from contracts.settings import ServingSettings
from models.evaluate import (
    CUTOFFS,
    EASE,
    POPULARITY,
    RANKER_ONLY,
    SERVED,
    MetricTable,
    evaluate,
    markdown,
)
from models.export_readers import liked_holdout
from models.outages import SERVERS
from models.recall_sources import RecallConfig

log = logging.getLogger(__name__)

HTTP_SERVED = "served over HTTP"
CONNECTIONS = 4


class ServedMismatchError(PublishCheckError):
    """The service served a list the offline evaluation would not."""


def fetch_lists(url: str, userids: list[int], k: int) -> tuple[dict[int, list[int]], dict[str, str], dict[str, int]]:
    """Each user's served itemids (in order), the versions the responses name, and how many responses named
    each store as degraded."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=CONNECTIONS, pool_maxsize=CONNECTIONS))

    def one(userid: int) -> tuple[int, dict]:
        response = session.get(f"{url.rstrip('/')}/users/{userid}/recommendations", params={"k": k}, timeout=30)
        response.raise_for_status()
        return userid, response.json()

    lists: dict[int, list[int]] = {}
    versions: set[str] = set()
    degraded: collections.Counter[str] = collections.Counter()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        for userid, body in pool.map(one, userids):
            lists[userid] = [int(item["itemid"]) for item in body["item_list"]]
            versions.add(json.dumps(body["versions"], sort_keys=True))
            degraded.update(body.get("degraded", []))
    if len(versions) != 1:
        raise ServedMismatchError(f"the responses name {len(versions)} different version sets: a reload during "
                                  "the replay? Run it again")
    return lists, json.loads(versions.pop()), dict(degraded)


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = [n for n in (HTTP_SERVED, SERVED, RANKER_ONLY, "source: neighbours", "source: vector", "source: term",
                         POPULARITY, EASE) if n in report["lists"]]
    keys = [f"{m}@{k}" for k in report["cutoffs"] for m in ("hitrate", "recall", "ndcg")]
    figure, axis = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(names)
    for position, name in enumerate(names):
        values = [report["lists"][name][key] for key in keys]
        axis.bar(np.arange(len(keys)) + position * width, values, width, label=name)
    axis.set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2, keys)
    axis.set_ylabel("mean over users with a liked hold-out item")
    axis.set_title(f"Top-K on the hold-out ({report['users_evaluated']} users, {report['label']} profile)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def evaluate_served(settings: ServingSettings, url: str, label: str, with_ease: bool = True,
                    down: Sequence[str] = ()) -> dict:
    """``down``: the servers stopped while the service answers; the offline lists are replayed without them."""
    started = time.monotonic()
    config = RecallConfig.served(settings.models_dir, settings.recall_size)
    k = max(CUTOFFS)
    exports = settings.current_export_dir
    targets = liked_holdout(exports)
    userids = sorted(targets)  # the users the offline evaluation scores
    served, versions, degraded = fetch_lists(url, userids, k)
    table = MetricTable(CUTOFFS)
    for userid in userids:
        table.add(HTTP_SERVED, np.asarray(served[userid]), targets[userid])
    expected: dict[int, list[int]] = {}
    report = evaluate(exports, settings.models_dir, config, CUTOFFS, with_ease=with_ease, served_lists=expected,
                      down=down)
    different = [u for u in userids if served[u] != expected.get(u)]
    report["lists"] = {HTTP_SERVED: table.means()[HTTP_SERVED], **report["lists"]}
    report.update({"label": label, "url": url, "served_versions": versions, "served_degraded": degraded,
                   "users_served_different_from_offline": len(different),
                   "first_different_users": different[:10],
                   "served_seconds": round(time.monotonic() - started, 1)})
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ServingSettings.add_arguments(parser)
    parser.add_argument("--url", default=None, help="the running service (default http://<host>:<port>)")
    parser.add_argument("--label", default=None, help="profile name for the report (default: the service's)")
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--chart", type=Path, default=None)
    parser.add_argument("--no-ease", dest="ease", action="store_false")
    parser.add_argument("--down", default="", help="comma-separated servers stopped while the service answers "
                                                   f"({', '.join(SERVERS)}): compared with the offline lists "
                                                   "replayed without them")
    args = parser.parse_args(argv)
    settings = ServingSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = args.url or settings.url
    label = args.label or requests.get(f"{url}/ready", timeout=10).json().get("profile", "embedded")
    down = [name for name in args.down.split(",") if name]
    report = evaluate_served(settings, url, label, args.ease, down)
    report_path = args.report or settings.output_dir / f"served_evaluation_{label}.json"
    chart_path = args.chart or report_path.with_suffix(".png")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2))
    chart(report, chart_path)
    print(markdown(report).replace(f"| {SERVED} |", f"| {SERVED} (offline) |"))
    print(f"\n{report['users_served_different_from_offline']} of {report['users_evaluated']} users served a list "
          f"different from the offline evaluation's; report {report_path}, chart {chart_path}")
    if report["users_served_different_from_offline"]:
        raise SystemExit(f"served lists differ from the offline evaluation for users "
                         f"{report['first_different_users']}")
    return report


if __name__ == "__main__":
    main()
