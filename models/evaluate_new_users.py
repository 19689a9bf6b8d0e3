"""What a new user is served after their first ratings: the hold-out's users replayed as users the batch never
saw.

    python -m models.evaluate_new_users [--output DIR] [--exports DIR] [--counts 1,3,10] [--report PATH]

For every user with a liked hold-out movie: their offline history is withheld, their last N offline
impressions are posted as ratings (a liked one as 5, another as 1: only the label counts) under an id the
models never saw (so neither the ranker's user embedding nor the recall model's vector knows them), and the
service's request path serves them with the state ``models.user_updates.apply_ratings`` gives (features as
Feast would hold them after the push, recall data with a folded-in vector). HitRate / NDCG at 10 and 50 on
their hold-out, for each N, against the popularity list such a user got before the write path (every
catalogue movie unseen) and the same list without the N rated movies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from contracts.settings import RecallSettings
from contracts.tables import Export
from models.evaluate import SERVED, MetricTable, offline_bundle
from models.export_readers import liked_holdout, load_update_rules
from models.in_memory_stores import InMemoryFeatureClient, InMemoryUserRecallStore
from models.recall_sources import RecallConfig, unseen_popular
from models.request_path import recommend
from models.user_updates import BatchUser, PostedRating, RecentImpressions, apply_ratings

log = logging.getLogger(__name__)

COUNTS: tuple[int, ...] = (1, 3, 10)
POPULARITY_BEFORE = "popularity (what a new user got before)"
POPULARITY_UNSEEN = "popularity without the rated movies"


def offline_histories(exports: Path) -> dict[int, pd.DataFrame]:
    """Each user's offline impressions (itemid, timestamp, label), oldest first by (timestamp, itemid)."""
    frames = [pd.read_parquet(exports / name, columns=["userid", "itemid", "timestamp", "label"])
              for name in (Export.SAMPLES_TRAIN, Export.SAMPLES_TEST)]
    rows = pd.concat(frames).sort_values(["userid", "timestamp", "itemid"], kind="stable")
    return {int(userid): group for userid, group in rows.groupby("userid", sort=False)}


def evaluate_new_users(exports: Path, models_dir: Path, config: RecallConfig,
                       counts: Sequence[int] = COUNTS) -> dict:
    started = time.monotonic()
    bundle, arrays = offline_bundle(exports, models_dir, config)
    rules = load_update_rules(exports, arrays.index)
    histories = offline_histories(exports)
    targets = {u: liked for u, liked in liked_holdout(exports).items() if u in histories}
    first_new_id = max(max(histories), max(arrays.users, default=0)) + 1
    k_max = 50
    report: dict = {"users_evaluated": len(targets), "counts": list(counts), "lists": {}}
    for count in counts:
        table = MetricTable((10, k_max))
        users, features, replayed = {}, {}, {}
        for number, userid in enumerate(sorted(targets)):
            latest = histories[userid].tail(count)
            newcomer = first_new_id + number  # an id no model has a row for
            ratings = [PostedRating(f"{userid}-{n}", newcomer, int(item), 5.0 if label else 1.0, int(stamp))
                       for n, (item, stamp, label) in enumerate(zip(latest["itemid"], latest["timestamp"],
                                                                    latest["label"], strict=True))]
            updated = apply_ratings(BatchUser(newcomer, None, RecentImpressions.empty(), np.zeros(3, np.int16)),
                                    ratings, rules)
            users[newcomer], features[newcomer], replayed[newcomer] = updated.recall, updated.features, userid
        served_bundle = dataclasses.replace(bundle, users=InMemoryUserRecallStore(users),
                                            features=InMemoryFeatureClient(features))
        for newcomer, userid in tqdm(replayed.items(), desc=f"new users after {count} rating(s)", disable=None,
                                     mininterval=2.0):
            relevant = targets[userid]
            served = recommend(served_bundle, newcomer, k_max, config.recall_size)
            table.add(SERVED, np.asarray([item.itemid for item in served.items]), relevant)
            popular = bundle.items.popularity
            table.add(POPULARITY_BEFORE, popular.itemids[:k_max], relevant)
            table.add(POPULARITY_UNSEEN, unseen_popular(popular, users[newcomer].seen, k_max).itemids, relevant)
        report["lists"][str(count)] = table.means()
    report["seconds"] = round(time.monotonic() - started, 1)
    report["versions"] = bundle.versions
    return report


def markdown(report: dict) -> str:
    lines = ["| ratings posted | list | HitRate@10 | NDCG@10 | HitRate@50 | NDCG@50 |",
             "| ---: | --- |" + " ---: |" * 4]
    for count, lists in report["lists"].items():
        for name, values in lists.items():
            lines.append(f"| {count} | {name} | {values['hitrate@10']:.3f} | {values['ndcg@10']:.3f} | "
                         f"{values['hitrate@50']:.3f} | {values['ndcg@50']:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    RecallSettings.add_arguments(parser)
    parser.add_argument("--exports", type=Path, default=None, help="batch exports (default <output>/exports/current)")
    parser.add_argument("--counts", default=",".join(map(str, COUNTS)), help="ratings posted per user, each a run")
    parser.add_argument("--report", type=Path, default=None,
                        help="JSON report path (default <output>/evaluation_new_users.json)")
    args = parser.parse_args(argv)
    settings = RecallSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = RecallConfig.served(settings.models_dir, settings.recall_size)
    counts = [int(c) for c in args.counts.split(",") if c]
    report = evaluate_new_users(args.exports or settings.current_export_dir, settings.models_dir, config, counts)
    path = args.report or settings.output_dir / "evaluation_new_users.json"
    path.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    log.info("new users replayed: %d users in %.1f s -> %s", report["users_evaluated"], report["seconds"], path)
    return report


if __name__ == "__main__":
    main()
