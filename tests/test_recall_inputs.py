import itertools
import math
from collections import Counter

import numpy as np
from chispa import assert_df_equality

from contracts.feature_spec import GENRE_IDS
from spark_jobs.cooccurrence import cosine_lists, neighbour_lists, window_fits
from spark_jobs.genre_terms import user_terms
from spark_jobs.item_lists import SERVED, VALIDATION
from spark_jobs.recall_inputs import item_popularity, item_terms, user_filter
from spark_jobs.timelines import Timelines
from tests.item_list_frames import fit_of, fits_frame


def test_user_terms_keep_seen_genres_strongest_first(spark):
    values = {name: 0 for k in GENRE_IDS for name in (f"user_g{k}_imp", f"user_g{k}_clk")}
    values |= {"user_g2_imp": 3, "user_g2_clk": 1, "user_g7_imp": 2, "user_g7_clk": 2,
               "user_g9_imp": 4, "user_g9_clk": 1, "user_g4_imp": 1}
    counters = spark.createDataFrame([{"userid": 1, **values}])
    terms = [tuple(t) for t in user_terms(counters).collect()[0].terms]
    assert terms == [(7, 2, 2), (9, 4, 1), (2, 3, 1), (4, 1, 0)]


def test_user_filter_recent_items_and_item_terms(spark):
    offline = spark.createDataFrame([(1, 5, 100, 1), (1, 3, 300, 0), (1, 5, 200, 0), (1, 9, 300, 1), (1, 4, 50, 1),
                                     (2, 8, 1, 0)], "userid int, itemid int, timestamp long, label int")
    got = {r.userid: (r.seen_itemids, r.recent_itemids, r.recent_timestamps, r.recent_labels)
           for r in user_filter(offline, recent_items=3).collect()}
    # newest first; the same second is ordered by itemid, descending like the rest; timestamps and labels aligned
    assert got == {1: ([3, 4, 5, 9], [9, 3, 5], [300, 300, 200], [1, 0, 0]), 2: ([8], [8], [1], [0])}
    items = spark.createDataFrame([(1, "A", [2, 4])], "itemid int, title string, genre_ids array<int>")
    assert [tuple(r) for r in item_terms(items).collect()] == [(1, [2, 4])]


def test_item_popularity_counts_every_catalogue_item(spark):
    items = spark.createDataFrame([(1, "A", [1]), (2, "B", [2]), (3, "C", [3])],
                                  "itemid int, title string, genre_ids array<int>")
    offline = spark.createDataFrame([(1, 1, 1), (2, 1, 0), (3, 1, 1), (1, 2, 0)], "userid int, itemid int, label int")
    expected = spark.createDataFrame([(1, 2, 3), (2, 0, 1), (3, 0, 0)], "itemid int, positives long, impressions long")
    assert_df_equality(item_popularity(items, offline), expected, ignore_row_order=True, ignore_nullable=True)


def test_cooccurrence_on_a_hand_checked_example(spark, tmp_path):
    # users: 1 has {10, 20, 30}, 2 has {10, 20}, 3 has {20, 40}; user 4's oldest item 10 is beyond the
    # history of 2, so only {30, 40} count for them; user 4's 40 is held for validation, so their window
    # before it is {10, 30}.
    rows = [(1, 10, 1), (1, 20, 2), (1, 30, 3), (2, 10, 1), (2, 20, 1), (3, 20, 5), (3, 40, 6),
            (4, 10, 1), (4, 30, 2), (4, 40, 3)]
    marked = spark.createDataFrame([(*row, row == (4, 40, 3)) for row in reversed(rows)],
                                   "userid int, itemid int, timestamp long, validation boolean")
    timelines = Timelines.collect(marked)
    fourth = timelines.users == 4
    assert timelines.items[fourth].tolist() == [10, 30, 40]
    assert window_fits(timelines, history=2)[fourth].tolist() == [VALIDATION, SERVED | VALIDATION, SERVED]
    # user 1's 2 latest: {20, 30}; user 2: {10, 20}; user 3: {20, 40}; user 4: {30, 40}
    # n: 10 -> 1, 20 -> 3, 30 -> 2, 40 -> 2.  c(20,30) = 1, c(10,20) = 1, c(20,40) = 1, c(30,40) = 1.
    lists = fits_frame(spark, neighbour_lists(timelines, history=2, per_item=2))
    got = {r.itemid: [(n.itemid, round(n.score, 4)) for n in r.neighbours] for r in fit_of(lists, SERVED).collect()}
    assert got == {
        10: [(20, round(1 / 3 ** 0.5, 4))],
        20: [(10, round(1 / 3 ** 0.5, 4)), (30, round(1 / 6 ** 0.5, 4))],  # 30 and 40 tie at 1/sqrt(6): 30 first
        30: [(40, 0.5), (20, round(1 / 6 ** 0.5, 4))],
        40: [(30, 0.5), (20, round(1 / 6 ** 0.5, 4))],
    }
    # Validation: user 4 has {10, 30}. n: 10 -> 2, 20 -> 3, 30 -> 2, 40 -> 1; c(10,20) = 1, c(20,30) = 1,
    # c(20,40) = 1, c(10,30) = 1.
    got = {r.itemid: [(n.itemid, round(n.score, 4)) for n in r.neighbours]
           for r in fit_of(lists, VALIDATION).collect()}
    assert got == {
        10: [(30, 0.5), (20, round(1 / 6 ** 0.5, 4))],
        20: [(40, round(1 / 3 ** 0.5, 4)), (10, round(1 / 6 ** 0.5, 4))],  # 10 and 30 tie: 10 first
        30: [(10, 0.5), (20, round(1 / 6 ** 0.5, 4))],
        40: [(20, round(1 / 3 ** 0.5, 4))],
    }


def test_cosine_lists_equal_counting_every_users_pairs_one_by_one():
    rng = np.random.default_rng(5)
    # Few movies and many users: shared counts, so ties on the score at the list's cut are common.
    histories = {user: set(rng.choice(np.arange(100, 112), rng.integers(1, 7), replace=False).tolist())
                 for user in range(1, 60)}
    users = np.array([u for u, seen in histories.items() for _ in seen])
    items = np.array([i for seen in histories.values() for i in seen])
    have = Counter(i for seen in histories.values() for i in seen)
    both = Counter((i, j) for seen in histories.values() for i in seen for j in seen if i != j)
    expected = {}
    for (i, j), count in both.items():
        expected.setdefault(i, []).append((j, count / math.sqrt(have[i] * have[j])))
    expected = {i: sorted(scored, key=lambda entry: (-entry[1], entry[0]))[:4] for i, scored in expected.items()}

    got = {row["itemid"]: [(entry["itemid"], entry["score"]) for entry in row["neighbours"]]
           for row in cosine_lists(users, items, per_item=4).to_pylist()}
    # Ordered on the exact scores (ties by the smaller id), stored to the last bit of float32, the tables' type.
    assert got == {i: [(j, float(np.float32(score))) for j, score in scored] for i, scored in expected.items()}
    assert any(a[1] == b[1] for scored in got.values() for a, b in itertools.pairwise(scored))  # ties were tested


def test_cosine_lists_count_a_repeated_pair_once():
    users, items = np.array([1, 1, 2, 2, 3]), np.array([10, 20, 10, 30, 20])
    once = cosine_lists(users, items, per_item=3)
    # user 1 rated 10 twice: the same users have each movie
    assert cosine_lists(np.append(users, 1), np.append(items, 10), per_item=3).equals(once)


def test_timelines_number_each_user_from_the_end():
    timelines = Timelines(np.array([3, 3, 3, 5, 8, 8]), np.array([1, 2, 3, 1, 4, 5]),
                          np.array([False, True, True, False, False, True]))
    assert timelines.recency().tolist() == [3, 2, 1, 1, 2, 1]
    assert timelines.held_per_impression().tolist() == [2, 2, 2, 0, 1, 1]
    empty = Timelines(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    assert empty.recency().tolist() == [] and empty.held_per_impression().tolist() == []
    assert window_fits(empty, history=5).tolist() == []
