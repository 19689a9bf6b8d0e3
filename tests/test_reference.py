"""Property-style check: on generated data, the Spark features equal a plain-Python reference.

The reference is written for clarity, not speed: sort each user's impressions, slice the past,
count. It shares no code with the Spark jobs beyond the spec's constants.
"""

from fractions import Fraction

import numpy as np
import pytest
from pyspark.sql import functions as F

from contracts.feature_spec import (
    GENRE_IDS,
    HOLDOUT_SIZE,
    MIN_IMPRESSIONS_FOR_SPLIT,
    PIT_HISTORY,
    POSITIVE_RATING_ABOVE,
    TRAIN_PERCENT,
)
from spark_jobs.features import COUNTERS, add_genre_flags, add_pit_genre_counters, online_genre_counters
from spark_jobs.split import add_label, add_split


def generated(seed: int):
    rng = np.random.default_rng(seed)
    item_genres = {item: set(rng.choice(GENRE_IDS, size=rng.integers(0, 4), replace=False).tolist())
                   for item in range(1, 61)}
    ratings = []
    for user in range(1, 26):
        n = int(rng.integers(1, 41))
        items = rng.choice(np.arange(1, 61), size=n, replace=False)
        times = rng.integers(0, 25, size=n)  # few distinct seconds: many ties
        ratings += [(user, int(i), float(rng.integers(1, 6)), int(t)) for i, t in zip(items, times, strict=True)]
    return ratings, item_genres


def reference(ratings, item_genres):
    """(userid, itemid) -> (split, 36 counters) and userid -> 36 online counters."""
    by_user = {}
    for user, item, rating, ts in ratings:
        by_user.setdefault(user, []).append((ts, item, int(rating > POSITIVE_RATING_ABOVE)))
    features, online = {}, {}
    for user, timeline in by_user.items():
        timeline.sort()
        n_all = len(timeline)
        offline_n = n_all - HOLDOUT_SIZE
        offline = []
        for position, (ts, item, _) in enumerate(timeline, start=1):
            if n_all < MIN_IMPRESSIONS_FOR_SPLIT:
                split = "train"
            elif position > offline_n:
                split = "holdout"
            elif position - 1 < Fraction(TRAIN_PERCENT, 100) * offline_n:  # cumcount < 0.8 n
                split = "train"
            else:
                split = "test"
            past = [x for x in timeline if x[0] < ts][-PIT_HISTORY:]
            features[(user, item)] = (split, counts(past, item_genres))
            if split != "holdout":
                offline.append(timeline[position - 1])
        online[user] = counts(offline[-PIT_HISTORY:], item_genres)
    return features, online


def counts(impressions, item_genres):
    result = []
    for k in GENRE_IDS:
        result.append(sum(k in item_genres[item] for _, item, _ in impressions))
        result.append(sum(k in item_genres[item] and label for _, item, label in impressions))
    return tuple(result)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spark_features_equal_reference(spark, seed):
    ratings, item_genres = generated(seed)
    expected_features, expected_online = reference(ratings, item_genres)

    items = spark.createDataFrame([(i, sorted(g)) for i, g in item_genres.items()],
                                  "itemid int, genre_ids array<int>").transform(add_genre_flags)
    impressions = (
        spark.createDataFrame(ratings, "userid int, itemid int, rating double, timestamp long")
        .transform(add_label)
        .transform(add_split)
        .join(items.drop("genre_ids"), "itemid")
    )
    with_counters = add_pit_genre_counters(impressions)
    got = {(r.userid, r.itemid): (r.split, tuple(r[c] for c in COUNTERS)) for r in with_counters.collect()}
    assert got == expected_features

    online = online_genre_counters(impressions.filter(F.col("split") != "holdout"))
    got_online = {r.userid: tuple(r[c] for c in COUNTERS) for r in online.collect()}
    assert got_online == expected_online
