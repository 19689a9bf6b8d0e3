"""The request path, top to bottom, written once: the service (``online/app.py``) answers every request
with ``recommend`` and the offline evaluation (``models/evaluate.py``) replays the hold-out through it, so
the two lists are the same by construction.

1. The user's recall data (``bundle.users``).
2. Recall (``recall``): the user's EASE list, the neighbour lists of their latest items summed
   (``rank_neighbours``), the successor lists of their latest items summed (``rank_item_lists``), the term
   and vector searches of the catalogue (published with the user's recall data where the loader ran them on
   the same data, else searched now), the popularity list without the
   seen items, merged by quotas (``models/candidate_merge.py``); a source with neither a quota nor a weight
   (validation found it adds nothing) is not asked. The user's online features are fetched meanwhile.
3. Ranking: model input rows in spec order (``FeatureAssembler``), one ranker call over all candidates; and,
   where its weight is not 0, the sequence model's chance of each candidate being the user's next item, from
   their latest items (``bundle.next_item``).
4. Final order: the weighted sum of the sources' and the models' scaled scores (``models/fusion.py``), with
   the weights chosen on validation, then the top k.

One fallback rule: a user without recall data, without online features or without a single candidate gets
the popularity list, seen items excluded where the user is known, marked ``fallback: "popularity"``.

A store that does not answer (``StoreUnavailableError``) degrades the list instead of failing the request:
without the user's recall data, the popularity list; without a recall source, the others; without the
features, the candidates in recall order (``fallback: "recall_order"``); without the ranker, the backup
ranker (the same model in-process) or recall order. The response names every such store in ``degraded``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from contracts.errors import StoreUnavailableError
from models.candidate_merge import SOURCE_NAMES, Candidates, merge
from models.fusion import FUSION_K, fused_order
from models.recall_sources import (
    EASE,
    ITEM_LIST_SOURCES,
    NEIGHBOURS,
    NEXT_ITEM,
    POPULARITY,
    RANKER,
    SOURCE_ORDER,
    TERM,
    VECTOR,
    Ranked,
    RecallConfig,
    UserRecallData,
    ease_recall,
    item_list_seeds,
    neighbour_seeds,
    rank_item_lists,
    rank_neighbours,
    term_bands,
    unseen_popular,
)
from models.stores import CatalogueSearch, FeatureClient, InlineExecutor, ItemIndexStore, ServingBundle

POPULARITY_FALLBACK = "popularity"  # the popularity list
RECALL_ORDER_FALLBACK = "recall_order"  # the recalled candidates, unranked

# ``timed("recall")`` is a context manager that measures the block (the service's Prometheus stages).
Timer = Callable[[str], AbstractContextManager[None]]


class RecommendedItem(NamedTuple):  # a tuple: 50 per response, built ~5x faster than a frozen dataclass
    itemid: int
    score: float | None  # the ranking model's probability (the offline positives in the popularity list;
    # None where no model ranked the list)
    rank_score: float  # what orders the list: the fused rank score (or the score in the fallback)
    sources: tuple[str, ...]


@dataclass(frozen=True)
class RecallTrace:
    """What a list was built from: each source's list, the merged candidates and the models' scores (None
    where no model scored them). The offline evaluation scores each stage from it; the service ignores it."""

    sources: Mapping[str, Ranked]
    candidates: Candidates
    model_scores: np.ndarray | None  # the ranker's, per candidate, in merge order
    next_item_scores: np.ndarray | None = None  # the sequence model's (``NextItemScorer``), likewise


@dataclass(frozen=True)
class Recommendation:
    userid: int
    items: tuple[RecommendedItem, ...]
    fallback: str | None  # None: recalled and ranked; else which fallback list it is
    versions: dict[str, str]
    trace: RecallTrace | None = None  # None for the popularity list
    degraded: tuple[str, ...] = ()  # the stores that did not answer, sorted: the list was made without them


@contextmanager
def untimed(stage: str) -> Iterator[None]:
    yield


def recall(user: UserRecallData, items: ItemIndexStore, config: RecallConfig, recall_size: int,
           background: Executor | None = None,
           degraded: set[str] | None = None) -> tuple[Candidates, dict[str, Ranked]]:
    """Each source's candidates (up to ``recall_size``, seen items excluded) and their merge.

    A source the configuration does not ask (``RecallConfig.asks``: no quota, no weight) is not recalled and
    its store not called. With a ``degraded`` set, a store that does not answer adds its name there and its
    sources are empty (the popularity list, held in memory, always answers); without one, its error propagates."""
    asked = {source for source in SOURCE_ORDER if config.asks(source)}
    run = (background or InlineExecutor()).submit
    # With remote stores the neighbour and successor lists are read (and summed) while the catalogue is searched.
    pending_lists = {}
    if NEIGHBOURS in asked:
        seeds = neighbour_seeds(user, config.neighbour_seeds)
        pending_lists[NEIGHBOURS] = run(lambda: rank_neighbours(*items.neighbour_lists(seeds), user.seen, recall_size))
    for source in asked.intersection(ITEM_LIST_SOURCES):
        pending_lists[source] = run(lambda source=source: rank_item_lists(
            *items.item_lists(source, item_list_seeds(user, source, config)), user.seen, recall_size))
    bands = term_bands(user.terms, config.term_genres, items.max_popularity) if TERM in asked else ()
    vector = user.vector if VECTOR in asked else None
    sources: dict[str, Ranked] = {}
    published = user.searches
    if (TERM in asked or VECTOR in asked) and published is not None and published.size >= recall_size \
            and published.term_genres == config.term_genres:
        sources[TERM], sources[VECTOR] = published.term.head(recall_size), published.vector.head(recall_size)
    elif TERM in asked or VECTOR in asked:
        try:
            sources[TERM], sources[VECTOR] = items.search(CatalogueSearch(bands, vector, user.seen, recall_size))
        except StoreUnavailableError as error:
            if degraded is None:
                raise
            degraded.add(error.store)
            sources[TERM], sources[VECTOR] = Ranked.empty(), Ranked.empty()
    if EASE in asked:
        sources[EASE] = ease_recall(user, recall_size)
    if POPULARITY in asked:
        sources[POPULARITY] = unseen_popular(items.popularity, user.seen, recall_size)
    for source, pending in pending_lists.items():
        try:
            sources[source] = pending.result()
        except StoreUnavailableError as error:
            if degraded is None:
                raise
            degraded.add(error.store)
            sources[source] = Ranked.empty()
    sources = {name: sources[name] for name in SOURCE_ORDER if name in asked and name in sources}
    return merge(sources, recall_size, config.quota_counts(recall_size)), sources


def recommend(bundle: ServingBundle, userid: int, k: int, recall_size: int, timed: Timer = untimed) -> Recommendation:
    """The user's top k. A store that does not answer makes the list worse, never absent: the response names
    it in ``degraded`` (the rules per store: README "Degraded responses")."""
    degraded: set[str] = set()
    with timed("user_data"):
        try:
            user = bundle.users.get(userid)
        except StoreUnavailableError as error:  # nothing is known of the user: the popularity list in memory
            return popularity_fallback(bundle, userid, None, k, {error.store})
    if user is None:
        return popularity_fallback(bundle, userid, None, k)
    # The user's features do not depend on recall: with remote stores they are fetched meanwhile.
    pending_features = bundle.background.submit(_user_features, bundle.features, userid, timed)
    with timed("recall"):
        candidates, sources = recall(user, bundle.items, bundle.recall, recall_size, bundle.background, degraded)
    try:
        values = _features_within(pending_features, bundle.feature_timeout)
    except StoreUnavailableError as error:
        degraded.add(error.store)
        values = None
        if len(candidates):
            return recall_order(bundle, userid, candidates, sources, k, degraded)
    if values is None or len(candidates) == 0:
        return popularity_fallback(bundle, userid, user, k, degraded)
    with timed("ranking"):
        rows = bundle.assembler.rows(userid, values, candidates.itemids)
        scores = _scores(bundle, rows, degraded)
        if scores is None:
            return recall_order(bundle, userid, candidates, sources, k, degraded)
        next_item = _next_item_scores(bundle, user, candidates)
        order, fused = fused_order(candidates, sources, {RANKER: scores, NEXT_ITEM: next_item}, bundle.recall.fusion)
    top = order[:k]
    # Python scalars in one conversion per column: numpy scalars, one at a time, cost ~10x more.
    items = tuple(
        RecommendedItem(itemid, score, rank_score, SOURCE_NAMES[mask])
        for itemid, score, rank_score, mask in zip(
            candidates.itemids[top].tolist(), scores[top].tolist(), fused[top].tolist(),
            candidates.sources[top].tolist(), strict=True)
    )
    return Recommendation(userid, items, None, bundle.versions, RecallTrace(sources, candidates, scores, next_item),
                          tuple(sorted(degraded)))


def _next_item_scores(bundle: ServingBundle, user: UserRecallData, candidates: Candidates) -> np.ndarray | None:
    """The sequence model's input of the final order; None where it has no weight or no model is loaded."""
    if bundle.next_item is None or not bundle.recall.fusion.get(NEXT_ITEM, 0.0):
        return None
    return bundle.next_item.score(user.recent, candidates.itemids)


def _scores(bundle: ServingBundle, rows: np.ndarray, degraded: set[str]) -> np.ndarray | None:
    """The ranker's probabilities; when it does not answer, the backup ranker's (the same model in-process),
    or None when there is none."""
    for ranker in (bundle.ranker, bundle.backup_ranker):
        if ranker is None:
            continue
        try:
            return np.asarray(ranker.score(rows), dtype=np.float64).reshape(-1)
        except StoreUnavailableError as error:
            degraded.add(error.store)
    return None


def recall_order(bundle: ServingBundle, userid: int, candidates: Candidates, sources: Mapping[str, Ranked],
                 k: int, degraded: set[str]) -> Recommendation:
    """The candidates in merge order, unranked (no model score); rank_score 1 / (FUSION_K + position)."""
    top = min(k, len(candidates))
    rank_scores = 1.0 / (FUSION_K + np.arange(1, top + 1))
    items = tuple(
        RecommendedItem(itemid, None, rank_score, SOURCE_NAMES[mask])
        for itemid, rank_score, mask in zip(candidates.itemids[:top].tolist(), rank_scores.tolist(),
                                            candidates.sources[:top].tolist(), strict=True)
    )
    return Recommendation(userid, items, RECALL_ORDER_FALLBACK, bundle.versions,
                          RecallTrace(sources, candidates, None), tuple(sorted(degraded)))


def popularity_fallback(bundle: ServingBundle, userid: int, user: UserRecallData | None, k: int,
                        degraded: set[str] | None = None) -> Recommendation:
    """The batch's popularity list, seen items excluded where the user is known."""
    seen = user.seen if user is not None else np.empty(0, dtype=np.int64)
    ranked = unseen_popular(bundle.items.popularity, seen, k)
    items = tuple(RecommendedItem(itemid, score, score, (POPULARITY_FALLBACK,))
                  for itemid, score in zip(ranked.itemids.tolist(), ranked.scores.tolist(), strict=True))
    return Recommendation(userid, items, POPULARITY_FALLBACK, bundle.versions,
                          degraded=tuple(sorted(degraded or ())))


def _user_features(features: FeatureClient, userid: int, timed: Timer) -> np.ndarray | None:
    with timed("features"):
        return features.user_features(userid)


def _features_within(pending: Future[np.ndarray | None], timeout: float | None) -> np.ndarray | None:
    try:
        return pending.result(timeout=timeout)
    except FutureTimeoutError as error:
        raise StoreUnavailableError("feast", f"no answer in {timeout} s") from error
