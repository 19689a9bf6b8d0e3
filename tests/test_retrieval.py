"""Recall sources, the merge rule and the top-K metrics on hand-checked cases."""

import math

import numpy as np
import pytest

from models.candidate_merge import SOURCE_BIT, Candidates, merge
from models.ease import Ease
from models.evaluate import metrics_at
from models.fusion import fused_order
from models.in_memory_stores import InMemoryFeatureClient, InMemoryItemIndex, InMemoryUserRecallStore
from models.recall_sources import (
    NEIGHBOURS,
    NEXT_ITEM,
    POPULARITY,
    RANKER,
    TERM,
    VECTOR,
    ItemIndex,
    Ranked,
    RecallConfig,
    UserRecallData,
    neighbour_recall,
    popularity_recall,
    term_bands,
    term_recall,
    top_n,
    vector_recall,
)
from models.request_path import POPULARITY_FALLBACK, recall, recommend
from models.stores import ServingBundle


def test_metrics_on_a_hand_computed_case():
    recommended = [5, 3, 9, 1, 7]
    m = metrics_at(recommended, {3, 7, 8}, k=5)
    assert m.hit == 1.0 and m.recall == pytest.approx(2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)  # hits at ranks 2 and 5
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m.ndcg == pytest.approx(dcg / ideal)
    at_1 = metrics_at(recommended, {3, 7, 8}, k=1)
    assert (at_1.hit, at_1.recall, at_1.ndcg) == (0.0, 0.0, 0.0)
    single = metrics_at(recommended, {5}, k=5)
    assert (single.hit, single.recall, single.ndcg) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        metrics_at(recommended, set(), 5)


def index_of_six_items(vectors: bool = True) -> ItemIndex:
    # items 1..6; popularity 6 > 5 > 4 ...; genre 1 = {1, 2, 3}, genre 2 = {4, 5, 6}
    popularity = np.array([0, 6, 5, 4, 3, 2, 1], dtype=float)
    neighbour_ids = np.full((7, 2), -1)
    neighbour_scores = np.zeros((7, 2))
    neighbour_ids[1], neighbour_scores[1] = [2, 4], [0.9, 0.5]
    neighbour_ids[3], neighbour_scores[3] = [4, 6], [0.6, 0.1]
    item_vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [2, 0], [0, 2], [3, 3]], dtype=np.float32)
    return ItemIndex(
        item_count=7, popular=np.array([1, 2, 3, 4, 5, 6]), popularity=popularity,
        genre_items={1: np.array([1, 2, 3]), 2: np.array([4, 5, 6])},
        neighbour_ids=neighbour_ids, neighbour_scores=neighbour_scores,
        item_vectors=item_vectors if vectors else None, known_items=np.array([False] + [True] * 6),
    )


def user(seen=(1, 3), recent=(3, 1), terms=((2, 3, 2), (1, 2, 1)), vector=(1.0, 0.0)):
    return UserRecallData(9, np.array(seen), np.array(recent), list(terms),
                          None if vector is None else np.array(vector, dtype=np.float32))


def test_sources_exclude_seen_items_and_score_as_documented():
    index, u = index_of_six_items(), user()
    neighbours = neighbour_recall(u, index, n=10, seeds=2)
    assert neighbours.itemids.tolist() == [4, 2, 6]  # 4: 0.5 + 0.6 = 1.1, 2: 0.9, 6: 0.1
    assert neighbours.scores.tolist() == pytest.approx([1.1, 0.9, 0.1])
    assert neighbour_recall(u, index, n=10, seeds=1).itemids.tolist() == [4, 6]  # only item 3 lends
    vector = vector_recall(u, index, n=3)  # user (1, 0): an item's score is its first coordinate
    assert vector.itemids.tolist() == [6, 4, 2] and vector.scores.tolist() == [3.0, 2.0, 0.0]  # 2 and 5 tie: 2
    assert vector_recall(user(vector=None), index, n=3).itemids.tolist() == []
    assert term_recall(u, index, n=10, genres=2).itemids.tolist() == [4, 5, 6, 2]  # genre 2 first, by popularity
    assert popularity_recall(u, index, n=3).itemids.tolist() == [2, 4, 5]


def test_top_n_breaks_ties_by_smaller_id():
    assert top_n(np.array([0.0, 2.0, 5.0, 2.0, -np.inf, 2.0]), 3).tolist() == [2, 1, 3]


def catalogue_scores(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    if shape == "ties":
        return rng.integers(0, 4, size).astype(np.float64)
    if shape == "float32":
        return rng.standard_normal(size).astype(np.float32)
    scores = rng.standard_normal(size)
    if shape == "ascending":
        return np.sort(scores)
    if shape == "descending":
        return np.sort(scores)[::-1].copy()
    if shape == "periodic":  # every 8th score high: a sample of evenly spaced scores sees only those
        scores[::8] += 10.0
    return scores


@pytest.mark.parametrize("shape", ["normal", "ties", "ascending", "descending", "periodic", "float32",
                                   "mostly_blocked"])
def test_top_n_over_a_catalogue_is_a_full_sort(shape):
    """Over many scores top_n selects among those above a sampled bound; whatever the scores' order, ties,
    blocked (-inf), NaN and +inf entries, the positions are those of a full sort by (score desc, position)."""
    rng = np.random.default_rng(len(shape))
    for _ in range(40):
        size, n = int(rng.integers(2_000, 70_000)), int(rng.integers(1, 300))
        scores = catalogue_scores(rng, shape, size)
        scores[rng.random(size) < (0.995 if shape == "mostly_blocked" else 0.05)] = -np.inf
        scores[rng.integers(0, size, 2)] = np.nan
        scores[rng.integers(0, size, 1)] = np.inf
        finite = np.flatnonzero(np.isfinite(scores))
        expected = finite[np.lexsort((finite, -scores[finite]))][:n]
        assert top_n(scores, n).tolist() == expected.tolist()


def test_merge_quotas_round_robin_then_fill_and_keep_sources():
    sources = {
        NEIGHBOURS: Ranked(np.array([10, 11, 12, 13]), np.zeros(4)),
        VECTOR: Ranked(np.array([11, 20, 21]), np.zeros(3)),
        TERM: Ranked(np.array([30]), np.zeros(1)),
        POPULARITY: Ranked(np.array([10, 40]), np.zeros(2)),
    }
    merged = merge(sources, recall_size=7, quotas={NEIGHBOURS: 2, VECTOR: 2, TERM: 1, POPULARITY: 1})
    # round 1: 10 (n), 11 (v), 30 (t), 10 again for popularity -> flag only, then 40 (p)
    # round 2: 11 (n, already taken -> flag), 12 (n), 20 (v); quotas spent -> fill: 13 (n)
    assert merged.itemids.tolist() == [10, 11, 30, 40, 12, 20, 13]
    bits = dict(zip(merged.itemids.tolist(), merged.sources.tolist(), strict=True))
    assert bits[10] == SOURCE_BIT[NEIGHBOURS] | SOURCE_BIT[POPULARITY]
    assert bits[11] == SOURCE_BIT[NEIGHBOURS] | SOURCE_BIT[VECTOR]
    assert merged.source_names(1) == [NEIGHBOURS, VECTOR]
    assert sorted(merge(sources, recall_size=100, quotas={}).itemids) == [10, 11, 12, 13, 20, 21, 30, 40]


def test_the_one_fallback_rule_is_the_popularity_list():
    """An unknown user, and a known one without online features, get the popularity list (seen items excluded
    where the user is known), marked as the fallback, through the request path itself."""
    bundle = ServingBundle(users=InMemoryUserRecallStore({9: user(seen=(1, 3))}),
                           items=InMemoryItemIndex(index_of_six_items()), features=InMemoryFeatureClient({}),
                           assembler=None, ranker=None, recall=RecallConfig(recall_size=4))
    unknown = recommend(bundle, 5, k=4, recall_size=4)
    assert [item.itemid for item in unknown.items] == [1, 2, 3, 4] and unknown.fallback == POPULARITY_FALLBACK
    assert all(item.sources == (POPULARITY,) for item in unknown.items) and unknown.trace is None
    without_features = recommend(bundle, 9, k=4, recall_size=4)
    assert [item.itemid for item in without_features.items] == [2, 4, 5, 6]
    assert without_features.fallback == POPULARITY_FALLBACK


def test_recall_never_returns_seen_items():
    candidates, _ = recall(user(seen=(1, 2, 3)), InMemoryItemIndex(index_of_six_items()), RecallConfig(), 6)
    assert sorted(candidates.itemids.tolist()) == [4, 5, 6]


def test_ease_learns_co_occurrence():
    seen = [np.array([1, 2]), np.array([1, 2]), np.array([3, 4]), np.array([1, 2, 3])]
    weights = Ease.fit(seen, lam=0.5).weights
    assert np.allclose(np.diag(weights), 0)
    assert weights[0, 1] > weights[0, 3] and weights[2, 3] > weights[2, 0]


def test_ease_over_sparse_ids_is_the_closed_form_over_the_movies_seen():
    rng = np.random.default_rng(3)
    catalogue = np.array([7, 40, 41, 900, 5_000, 123_456])  # sparse, as in the real releases
    histories = [rng.choice(catalogue, size=rng.integers(1, 5), replace=False) for _ in range(30)]
    ease = Ease.fit(histories, lam=2.0)
    assert ease.itemids.tolist() == sorted(set(np.concatenate(histories).tolist()))
    dense = np.zeros((len(histories), len(ease.itemids)))
    for row, history in enumerate(histories):
        dense[row, np.searchsorted(ease.itemids, history)] = 1.0
    inverse = np.linalg.inv(dense.T @ dense + 2.0 * np.eye(len(ease.itemids)))
    expected = -inverse / np.diag(inverse)
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(ease.weights, expected)
    scores = ease.scores(np.array([7, 900, 55]), item_count=123_457)  # 55: no such movie, ignored
    assert scores.shape == (123_457,) and np.isneginf(scores[np.setdiff1d(np.arange(123_457), ease.itemids)]).all()
    assert np.allclose(scores[ease.itemids], expected[np.searchsorted(ease.itemids, [7, 900])].sum(axis=0))


def test_ease_keeps_the_most_rated_movies_within_its_cap():
    histories = [np.array([10, 20, 30]), np.array([10, 20]), np.array([10, 40]), np.array([30, 50])]
    ease = Ease.fit(histories, lam=1.0, max_items=3)
    assert ease.itemids.tolist() == [10, 20, 30]  # seen by 3, 2, 2 users; 40 and 50 by one each
    assert np.isneginf(ease.scores(np.array([40]), item_count=60)[40])


def test_fused_order_sums_each_inputs_scaled_scores_by_weight():
    candidates = Candidates(np.array([7, 8, 9]), np.zeros(3, dtype=np.int64))
    sources = {NEIGHBOURS: Ranked(np.array([9, 7]), np.array([4.0, 2.0])),
               VECTOR: Ranked(np.array([5, 9]), np.array([3.0, 1.5]))}
    weights = {RANKER: 1.0, NEIGHBOURS: 0.5, VECTOR: 2.0}
    order, fused = fused_order(candidates, sources, {RANKER: np.array([0.9, 0.45, 0.09])}, weights)
    # ranker / 0.9: 1, 0.5, 0.1; neighbours / 4: 7 -> 0.5, 9 -> 1; vector / 3: 9 -> 0.5 (5 is no candidate)
    assert fused.tolist() == pytest.approx([1 + 0.5 * 0.5, 0.5, 0.1 + 0.5 * 1 + 2.0 * 0.5])
    assert candidates.itemids[order].tolist() == [9, 7, 8]
    # An input with weight 0 (or no weight) changes nothing; without the ranker the sources alone decide.
    _, without_vector = fused_order(candidates, sources, {RANKER: np.array([0.9, 0.45, 0.09])},
                                    {RANKER: 1.0, NEIGHBOURS: 0.5})
    assert without_vector.tolist() == pytest.approx([1.25, 0.5, 0.6])
    _, no_model = fused_order(candidates, sources, {RANKER: None}, {RANKER: 1.0, NEIGHBOURS: 1.0})
    assert no_model.tolist() == pytest.approx([0.5, 0.0, 1.0])
    # The sequence model's relative chances are an input like the ranker's scores.
    chances = {RANKER: np.array([0.9, 0.45, 0.09]), NEXT_ITEM: np.array([0.25, 1.0, 0.5])}
    order, with_next = fused_order(candidates, sources, chances, {RANKER: 1.0, NEXT_ITEM: 2.0})
    assert with_next.tolist() == pytest.approx([1.5, 2.5, 1.1]) and candidates.itemids[order].tolist() == [8, 7, 9]


def test_merge_flags_and_fusion_lookups_over_sparse_repeated_ids():
    """Each candidate's flags are every source listing it and its score in a list is the list's first one for
    it, wherever the ids lie (ML-25M's reach ~209K) and however often a list repeats an id."""
    from models.fusion import input_scores

    rng = np.random.default_rng(8)
    names = [NEIGHBOURS, VECTOR, TERM, POPULARITY]
    for _ in range(50):
        pool = rng.choice(np.arange(1, 210_000), 40, replace=False)
        lengths = {name: int(rng.integers(0, 30)) for name in names}
        sources = {name: Ranked(rng.choice(pool, length), rng.uniform(-1.0, 3.0, length))
                   for name, length in lengths.items()}
        merged = merge(sources, recall_size=25, quotas={name: 4 for name in names})
        for position, itemid in enumerate(merged.itemids.tolist()):
            listing = [name for name in names if itemid in sources[name].itemids.tolist()]
            assert merged.source_names(position) == listing
        for name in names:
            ranked = sources[name]
            if not len(ranked) or not len(merged):
                continue
            largest = float(np.abs(ranked.scores).max())
            first = {}
            for itemid, score in zip(ranked.itemids.tolist(), ranked.scores.tolist(), strict=True):
                first.setdefault(itemid, score / largest if largest > 0 else 0.0)
            expected = [first.get(itemid, 0.0) for itemid in merged.itemids.tolist()]
            assert input_scores(merged, sources, {}, name).tolist() == expected


def random_index(rng: np.random.Generator, item_count: int = 60) -> ItemIndex:
    """A catalogue with many popularity ties and overlapping genres, built like ``load_item_index``."""
    popularity = rng.integers(0, 6, item_count).astype(float)
    popularity[0] = 0
    known = rng.random(item_count) < 0.9
    known[0] = False
    genre_items = {}
    for genre in range(1, 6):
        items = np.flatnonzero(known & (rng.random(item_count) < 0.4))
        genre_items[genre] = items[np.lexsort((items, -popularity[items]))]
    neighbour_ids = rng.integers(-1, item_count, (item_count, 8))
    neighbour_scores = rng.random((item_count, 8)).round(2)  # rounded: equal sums, so ties, occur
    popular = np.flatnonzero(known)
    popular = popular[np.lexsort((popular, -popularity[popular]))]
    return ItemIndex(item_count, popular, popularity, genre_items, neighbour_ids, neighbour_scores,
                     rng.normal(size=(item_count, 4)).astype(np.float32), known)


def test_sources_equal_their_definitions_on_random_catalogues():
    """The fast paths (genre lists walked in turn, dense neighbour sums) against the definitions written
    out over the whole catalogue: the same items, order and scores."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        index = random_index(rng)
        seen = rng.choice(np.arange(1, index.item_count), rng.integers(0, 30), replace=False)
        recent = rng.choice(np.arange(1, index.item_count), 6, replace=False)
        terms = [(int(g), 0, 0) for g in rng.permutation(np.arange(1, 7))[:4]]  # genre 6 has no items
        u = UserRecallData(1, seen, recent, terms, None)
        n = int(rng.integers(1, 40))
        blocked = ~index.known_items
        blocked[0] = True
        blocked[seen] = True

        dense = np.full(index.item_count, -np.inf)
        for genre, band in term_bands(terms, 3, float(index.popularity.max())):
            for item in index.genre_items.get(genre, []):
                dense[item] = max(dense[item], band + index.popularity[item])
        dense[blocked] = -np.inf
        best = top_n(dense, n)
        term = term_recall(u, index, n, genres=3)
        assert term.itemids.tolist() == best.tolist() and term.scores.tolist() == dense[best].tolist()

        sums: dict[int, float] = {}
        for item, similarity in zip(index.neighbour_ids[recent].ravel(), index.neighbour_scores[recent].ravel(),
                                    strict=True):
            if item > 0 and item not in set(seen.tolist()):
                sums[int(item)] = sums.get(int(item), 0.0) + float(similarity)
        expected = sorted(sums, key=lambda item: (-sums[item], item))[:n]
        neighbours = neighbour_recall(u, index, n, seeds=6)
        assert neighbours.itemids.tolist() == expected
        assert neighbours.scores.tolist() == [sums[item] for item in expected]

        unseen = [item for item in index.popular.tolist() if item not in set(seen.tolist())][:n]  # seen: any order
        assert popularity_recall(u, index, n).itemids.tolist() == unseen


def test_a_source_without_quota_or_weight_is_not_recalled_and_its_store_not_called():
    from models.outages import PartlyUnavailableItems

    items = InMemoryItemIndex(index_of_six_items())
    without_search = RecallConfig(quotas={NEIGHBOURS: 0.5, POPULARITY: 0.5}, fusion={POPULARITY: 1.0})
    assert not without_search.asks(TERM) and not without_search.asks(VECTOR) and without_search.asks(POPULARITY)
    # the catalogue search does not answer: a config that asks it is degraded, one that does not is not
    down = PartlyUnavailableItems(items, lists_down=False, search_down=True)
    degraded: set[str] = set()
    candidates, sources = recall(user(seen=(1,)), down, without_search, 6, degraded=degraded)
    assert degraded == set() and set(sources) == {NEIGHBOURS, POPULARITY}
    assert sorted(candidates.itemids.tolist()) == [2, 3, 4, 5, 6]
    recall(user(seen=(1,)), down, RecallConfig(), 6, degraded=degraded)
    assert degraded == {"elasticsearch"}


def test_published_searches_answer_for_the_catalogue_only_where_they_were_run_as_the_request_would():
    """The loader's per-user searches stand in for the catalogue search when they are at least the request's size
    over the same genres; otherwise (and for a user without them) the store is searched."""
    from dataclasses import replace

    from models.outages import PartlyUnavailableItems
    from models.recall_sources import PublishedSearches
    from models.stores import CatalogueSearch

    index = index_of_six_items()
    items = InMemoryItemIndex(index)
    down = PartlyUnavailableItems(items, lists_down=False, search_down=True)
    config = RecallConfig(term_genres=2)
    plain = user(seen=(1,))
    term, vector = items.search(CatalogueSearch(term_bands(plain.terms, 2, index.max_popularity), plain.vector,
                                                plain.seen, 6))
    published = replace(plain, searches=PublishedSearches(term, vector, size=6, term_genres=2))
    degraded: set[str] = set()
    searched_now, searched_sources = recall(plain, items, config, 4)
    answered, answered_sources = recall(published, down, config, 4, degraded=degraded)  # the store is not asked
    assert degraded == set()
    assert answered.itemids.tolist() == searched_now.itemids.tolist()
    for source in (TERM, VECTOR):
        assert len(answered_sources[source]) == 4
        assert answered_sources[source].itemids.tolist() == searched_sources[source].itemids.tolist()
        assert answered_sources[source].scores.tolist() == searched_sources[source].scores.tolist()
    for stale in (PublishedSearches(term, vector, size=3, term_genres=2),  # shorter than the request's size
                  PublishedSearches(term, vector, size=6, term_genres=3)):  # run over other genres
        recall(replace(plain, searches=stale), down, config, 4, degraded=degraded)
        assert degraded == {"elasticsearch"}
        degraded.clear()


def test_the_served_configuration_is_the_published_choice(tmp_path):
    from contracts.tables import ModelFiles
    from models.artifacts import StagedModel

    assert RecallConfig.served(tmp_path, 120) == RecallConfig(recall_size=120)  # nothing published: defaults
    quotas = {"ease": 0.2, "sequence": 0.3, "neighbours": 0.3, "vector": 0.2, "term": 0.0, "popularity": 0.0}
    with StagedModel(tmp_path, ModelFiles.FUSION) as staged:
        staged.save_metadata({"weights": {"ease": 0.5, "ranker": 0.3}, "quotas": quotas, "sequence_seeds": 5})
    served = RecallConfig.served(tmp_path, 120)
    assert served.quotas == quotas and served.fusion == {"ease": 0.5, "ranker": 0.3} and served.sequence_seeds == 5
    assert not served.asks(TERM) and not served.asks(POPULARITY) and served.asks(VECTOR)
