"""The request path, top to bottom: user recall data -> recall -> features -> ranking -> final order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FutureTimeoutError
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from models.retrieval import SOURCE_NAMES, UserRecallData, fused_order, merge
from online.bundle import ServingBundle
from online.stores import StoreUnavailableError

POPULARITY_FALLBACK = "popularity"


class RecommendedItem(NamedTuple):  # a tuple: 50 per response, built ~5x faster than a frozen dataclass
    itemid: int
    score: float  # the ranking model's probability (or the item's offline positives in the fallback)
    rank_score: float  # what orders the list: the fused rank score (or the score in the fallback)
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Recommendation:
    userid: int
    items: tuple[RecommendedItem, ...]
    fallback: str | None
    versions: dict[str, str]


@contextmanager
def _untimed(stage: str) -> Iterator[None]:
    yield


def recommend(bundle: ServingBundle, userid: int, k: int, recall_size: int,
              timed: Callable[[str], AbstractContextManager[None]] = _untimed) -> Recommendation:
    with timed("user_data"):
        user = bundle.users.get(userid)
    if user is None:
        return _popular(bundle, userid, k)
    # The user's features do not depend on recall: with remote stores they are fetched meanwhile.
    pending_features = bundle.background.submit(_user_features, bundle, userid, timed)
    with timed("recall"):
        sources = bundle.items.sources(user, bundle.recall, recall_size)
        candidates = merge(sources, recall_size, bundle.recall.quota_counts(recall_size))
    try:
        values = pending_features.result(timeout=bundle.feature_timeout)
    except FutureTimeoutError as error:
        raise StoreUnavailableError("feast", f"no answer in {bundle.feature_timeout} s") from error
    if values is None or len(candidates) == 0:
        return _popular(bundle, userid, k, user)
    with timed("ranking"):
        rows = bundle.assembler.rows(userid, values, candidates.itemids)
        scores = bundle.ranker.score(rows)
        order, fused = fused_order(candidates, sources, scores)
    top = order[:k]
    # Python scalars in one conversion per column: numpy scalars, one at a time, cost ~10x more.
    items = tuple(
        RecommendedItem(itemid, score, rank_score, SOURCE_NAMES[mask])
        for itemid, score, rank_score, mask in zip(
            candidates.itemids[top].tolist(), np.asarray(scores, dtype=np.float64).reshape(-1)[top].tolist(),
            fused[top].tolist(), candidates.sources[top].tolist(), strict=True)
    )
    return Recommendation(userid, items, None, bundle.versions)


def _user_features(bundle: ServingBundle, userid: int,
                   timed: Callable[[str], AbstractContextManager[None]]) -> np.ndarray | None:
    with timed("features"):
        return bundle.features.user_features(userid)


def _popular(bundle: ServingBundle, userid: int, k: int, user: UserRecallData | None = None) -> Recommendation:
    """The batch's popularity list, seen items excluded where the user is known."""
    ranked = bundle.items.popular(user, k)
    items = tuple(RecommendedItem(itemid, score, score, (POPULARITY_FALLBACK,))
                  for itemid, score in zip(ranked.itemids.tolist(), ranked.scores.tolist(), strict=True))
    return Recommendation(userid, items, POPULARITY_FALLBACK, bundle.versions)
