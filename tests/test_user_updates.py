"""Posted ratings applied by the batch's rules (models/user_updates.py), checked against a plain re-statement of
those rules, and the event log they are kept in (contracts/event_log.py). No Spark, no server."""

from __future__ import annotations

import os

import numpy as np
import pytest

from contracts.event_log import EventLog, LogCursor
from contracts.feature_spec import GENRE_IDS, PIT_HISTORY, SPEC
from models.recall_sources import ItemLists, UserRecallData, rank_item_lists
from models.user_updates import (
    COUNTER_NAMES,
    BatchUser,
    PostedRating,
    RecentImpressions,
    UpdateRules,
    apply_ratings,
    fold_in_vector,
)

ITEMS = 40


def rules(rng: np.random.Generator, with_vectors: bool = True) -> UpdateRules:
    flags = (rng.random((ITEMS, len(GENRE_IDS))) < 0.25).astype(np.int64)
    flags[0] = 0
    lists = {i: (list(rng.choice(np.arange(1, ITEMS), 6, replace=False)), list(rng.normal(size=6)))
             for i in range(1, ITEMS)}
    vectors = rng.normal(size=(ITEMS, 6)).astype(np.float32) if with_vectors else None
    if vectors is not None:
        vectors[:, 4] = 1.0  # [q, 1, b]
    return UpdateRules(flags, rng.random(len(COUNTER_NAMES)), 0.5 + rng.random(len(COUNTER_NAMES)), 12,
                       ItemLists.from_lists(ITEMS, lists), 15, vectors, np.arange(1, ITEMS))


def expected_state(timeline: list[tuple[int, int, int]], the_rules: UpdateRules):
    """The batch's rules restated over (timestamp, itemid, label) tuples: sort, take, count."""
    newest_first = sorted(timeline, reverse=True)
    latest = newest_first[:PIT_HISTORY]
    counts = {}
    for genre_position, genre in enumerate(GENRE_IDS):
        counts[f"user_g{genre}_imp"] = sum(int(the_rules.genre_flags[item, genre_position]) for _, item, _ in latest)
        counts[f"user_g{genre}_clk"] = sum(int(the_rules.genre_flags[item, genre_position]) * label
                                           for _, item, label in latest)
    terms = sorted(((g, counts[f"user_g{g}_imp"], counts[f"user_g{g}_clk"]) for g in GENRE_IDS
                    if counts[f"user_g{g}_imp"] > 0), key=lambda t: (-t[2], -t[1], t[0]))
    recent = [item for _, item, _ in newest_first[:the_rules.recent_items]]
    return counts, terms, recent


def test_ratings_in_any_order_give_the_batchs_counters_terms_seen_and_recent():
    rng = np.random.default_rng(5)
    the_rules = rules(rng)
    offline = [(int(t), int(i), int(label)) for t, i, label in
               zip(rng.integers(100, 200, 15), rng.integers(1, ITEMS, 15), rng.integers(0, 2, 15), strict=True)]
    newest = sorted(offline, reverse=True)[:the_rules.recent_items]
    recent = RecentImpressions(np.array([i for _, i, _ in newest]), np.array([t for t, _, _ in newest]),
                               np.array([label for _, _, label in newest]))
    seen = np.unique([i for _, i, _ in offline])
    base = UserRecallData(7, seen, recent.itemids, [], np.ones(6, np.float32))
    user = BatchUser(7, base, recent, np.array([2, 3, 4], np.int16))
    # Posted out of order, one of them older than the latest offline impressions, one at a tie of seconds.
    posted = [PostedRating("a", 7, 5, 4.0, 250), PostedRating("b", 7, 9, 2.0, 150), PostedRating("c", 7, 3, 5.0, 250)]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        updated = apply_ratings(user, [posted[n] for n in order], the_rules)
        # the older offline rows the batch's recent list dropped cannot matter: the counters use the newest 10
        timeline = newest + [(r.timestamp, r.itemid, int(r.rating > 3)) for r in posted]
        counts, terms, recent_items = expected_state(timeline, the_rules)
        assert updated.raw_counters.tolist() == [counts[name] for name in COUNTER_NAMES]
        assert updated.recall.terms == terms
        assert updated.recall.recent.tolist() == recent_items
        assert updated.recall.seen.tolist() == sorted(set(seen.tolist()) | {5, 9, 3})
        assert updated.latest_timestamp == 250
        np.testing.assert_array_equal(updated.recall.vector, base.vector)  # the batch's vector is kept
        features = dict(zip((f.name for f in SPEC.online_user_features), updated.features.tolist(), strict=True))
        assert (features["gender"], features["age"], features["occupation"]) == (2, 3, 4)
        for n, name in enumerate(COUNTER_NAMES):
            standardised = np.float32((counts[name] - the_rules.means[n]) / the_rules.stds[n])
            assert features[name] == standardised
        # EASE: the per-movie weights summed over everything seen, seen excluded
        all_seen = updated.recall.seen
        expected = rank_item_lists(*the_rules.ease_lists.of(all_seen), all_seen, the_rules.ease_per_user)
        assert updated.recall.ease.itemids.tolist() == expected.itemids.tolist()
        assert not set(updated.recall.ease.itemids.tolist()) & set(all_seen.tolist())


def test_a_new_user_gets_demographics_unknown_and_a_vector_that_prefers_their_movies():
    rng = np.random.default_rng(11)
    the_rules = rules(rng)
    new = BatchUser(99, None, RecentImpressions.empty(), np.zeros(3, np.int16))
    liked = [4, 8, 15]
    updated = apply_ratings(new, [PostedRating(str(i), 99, i, 5.0, 1000 + i) for i in liked], the_rules)
    assert updated.features[:3].tolist() == [0, 0, 0]
    assert updated.recall.seen.tolist() == liked and updated.recall.recent.tolist() == [15, 8, 4]
    vector = updated.recall.vector
    assert vector is not None and vector[-2:].tolist() == [0.0, 1.0]
    scores = the_rules.item_vectors[1:] @ vector
    # the folded-in vector scores the user's movies above the catalogue's average (what BPR's steps push)
    assert scores[np.array(liked) - 1].mean() > scores.mean()
    again = fold_in_vector(np.array(liked), the_rules)
    np.testing.assert_array_equal(again, vector)  # deterministic: every worker folds in the same vector
    assert apply_ratings(new, [PostedRating("x", 99, 4, 5.0, 1)], rules(rng, with_vectors=False)).recall.vector is None


def test_the_log_appends_reads_in_order_and_across_segments(tmp_path):
    log = EventLog(tmp_path / "events", segment_bytes=300)
    cursor = LogCursor()
    last = 0
    written = []
    for n in range(12):
        with log.exclusive():
            records, cursor = log.read(cursor)
            last = records[-1]["sequence"] if records else last
            written += log.append([{"event_id": f"e{n}", "userid": 1, "itemid": n, "rating": 4.0, "timestamp": n}],
                                  last)
    assert [r["sequence"] for r in written] == list(range(1, 13))
    assert len(log.segments()) > 2  # 300-byte segments roll over
    records, end = EventLog(tmp_path / "events", segment_bytes=300).read(LogCursor())
    assert [r["event_id"] for r in records] == [f"e{n}" for n in range(12)]
    assert log.read(end) == ([], end)


def test_a_line_cut_short_is_never_read_and_the_next_append_removes_it(tmp_path):
    log = EventLog(tmp_path / "events")
    log.append([{"event_id": "a", "userid": 1, "itemid": 2, "rating": 3.0, "timestamp": 4}], 0)
    segment = tmp_path / "events" / log.segments()[0]
    with open(segment, "ab") as file:
        file.write(b'{"sequence": 2, "event_id": "b", "us')  # a crash mid-write: no newline
    records, cursor = log.read(LogCursor())
    assert [r["event_id"] for r in records] == ["a"]
    log.append([{"event_id": "c", "userid": 1, "itemid": 2, "rating": 3.0, "timestamp": 5}], 1)
    records, _ = log.read(LogCursor())
    assert [(r["sequence"], r["event_id"]) for r in records] == [(1, "a"), (2, "c")]
    more, _ = log.read(cursor)
    assert [r["event_id"] for r in more] == ["c"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_writers_in_several_processes_number_the_log_densely(tmp_path):
    folder = tmp_path / "events"
    EventLog(folder)
    children = []
    for child in range(3):
        pid = os.fork()
        if pid == 0:  # each process appends 20 records under the lock, reading to the end first
            log, cursor, last = EventLog(folder), LogCursor(), 0
            for n in range(20):
                with log.exclusive():
                    records, cursor = log.read(cursor)
                    last = records[-1]["sequence"] if records else last
                    last = log.append([{"event_id": f"{child}-{n}", "userid": child, "itemid": n, "rating": 1.0,
                                        "timestamp": n}], last)[-1]["sequence"]
            os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    records, _ = EventLog(folder).read(LogCursor())
    assert [r["sequence"] for r in records] == list(range(1, 61))
    assert len({r["event_id"] for r in records}) == 60
