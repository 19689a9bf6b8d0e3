"""Candidate recall and the merge rule: pure functions over arrays, shared by the offline top-K
evaluation (``models/evaluate.py``) and the online service, so both build the same list by construction.

Sources, each returning (itemids, scores) best first, the user's seen items already excluded:

- ``neighbours``: item-to-item co-occurrence. Each of the user's most recent items (newest first)
  lends its top neighbours (``item_neighbours``, from the Spark batch); a candidate's score is the sum
  of its similarities to the user's recent items.
- ``vector``: the recall model's user vector against every item vector (inner product = the model's
  own score).
- ``term``: the user's strongest genres (``user_terms``), each contributing its most popular items.
- ``popularity``: most positives offline; also the whole list for a user without recall data.

Final order (``fused_order``): reciprocal-rank fusion (Cormack et al. 2009, k = 60, the paper's
constant, not tuned here) of three orders of the candidates: the ranking model's scores, the
co-occurrence source's and the vector source's own ranks. A candidate absent from a list gets nothing
from it. The ranking model alone knows what a user skips and their genre taste at the moment; the
co-occurrence list knows which movies go with the latest ones: fused, each corrects the other.

Merge rule (``merge``): sources are visited round-robin in ``SOURCE_ORDER``, each taking its next
candidate while it has quota left; an item already taken only gains the source's flag. When every
quota is spent or exhausted and fewer than ``recall_size`` items were taken, the remaining
candidates are taken in the same round-robin order without quotas. Every candidate keeps the set of
sources that proposed it (a bit mask over ``SOURCE_ORDER``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

NEIGHBOURS, VECTOR, TERM, POPULARITY = "neighbours", "vector", "term", "popularity"
SOURCE_ORDER: tuple[str, ...] = (NEIGHBOURS, VECTOR, TERM, POPULARITY)
SOURCE_BIT: dict[str, int] = {name: 1 << position for position, name in enumerate(SOURCE_ORDER)}


@dataclass(frozen=True)
class RecallConfig:
    recall_size: int = 200
    # Share of recall_size per source; the rest of the list is filled without quotas.
    quotas: Mapping[str, float] = field(
        default_factory=lambda: {NEIGHBOURS: 0.45, VECTOR: 0.35, TERM: 0.1, POPULARITY: 0.1}
    )
    recent_items: int = 20  # how many of the user's latest items lend their neighbours
    term_genres: int = 3  # the user's strongest genres used by term recall

    def quota_counts(self, recall_size: int) -> dict[str, int]:
        return {name: round(self.quotas.get(name, 0.0) * recall_size) for name in SOURCE_ORDER}


@dataclass(frozen=True)
class Ranked:
    """Candidates of one source (or of the merge), best first."""

    itemids: np.ndarray  # int64
    scores: np.ndarray  # float64, same order

    @classmethod
    def empty(cls) -> Ranked:
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.itemids)


@dataclass(frozen=True)
class Candidates:
    itemids: np.ndarray  # int64, merge order
    sources: np.ndarray  # int64 bit masks over SOURCE_ORDER

    def __len__(self) -> int:
        return len(self.itemids)

    def source_names(self, position: int) -> list[str]:
        return [name for name in SOURCE_ORDER if self.sources[position] & SOURCE_BIT[name]]


@dataclass(frozen=True)
class ItemIndex:
    """Everything about the catalogue that recall reads, held as arrays indexed by itemid."""

    item_count: int  # itemids are 1..item_count-1; 0 is "unknown"
    popular: np.ndarray  # itemids, most positives first
    popularity: np.ndarray  # (item_count,) positives per itemid, for ordering within a genre
    genre_items: Mapping[int, np.ndarray]  # genre id -> its itemids, most popular first
    neighbour_ids: np.ndarray  # (item_count, N) int64, -1 padded; row = itemid
    neighbour_scores: np.ndarray  # (item_count, N) float64
    item_vectors: np.ndarray | None  # (item_count, d) float32, row = itemid (row 0 unused)
    known_items: np.ndarray  # (item_count,) bool: in the catalogue


@dataclass(frozen=True)
class UserRecallData:
    userid: int
    seen: np.ndarray  # itemids seen offline (never recommended)
    recent: np.ndarray  # latest offline itemids, newest first
    terms: Sequence[tuple[int, int, int]]  # (genre id, impressions, clicks), strongest first
    vector: np.ndarray | None  # the recall model's user vector


def _exclusion(index: ItemIndex, seen: np.ndarray) -> np.ndarray:
    blocked = ~index.known_items.copy()
    blocked[0] = True
    blocked[seen[(seen >= 0) & (seen < index.item_count)]] = True
    return blocked


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n largest finite scores, best first; ties broken by the smaller position (itemid)."""
    finite = np.flatnonzero(np.isfinite(scores))
    if len(finite) == 0 or n <= 0:
        return np.empty(0, dtype=np.int64)
    if len(finite) > n:
        # Partition on the score, then an exact stable order of the kept ones (lexsort: score desc, id asc).
        kept = finite[np.argpartition(-scores[finite], n - 1)[:n]]
        threshold = scores[kept].min()
        kept = finite[scores[finite] >= threshold]
    else:
        kept = finite
    order = np.lexsort((kept, -scores[kept]))
    return kept[order][:n]


def _ranked_from_dense(scores: np.ndarray, blocked: np.ndarray, n: int) -> Ranked:
    scores = np.where(blocked, -np.inf, scores)
    best = top_n(scores, n)
    return Ranked(best.astype(np.int64), scores[best].astype(np.float64))


def neighbour_recall(user: UserRecallData, index: ItemIndex, n: int, recent_items: int) -> Ranked:
    recent = user.recent[:recent_items]
    recent = recent[(recent > 0) & (recent < index.item_count)]
    return rank_neighbours(index.neighbour_ids[recent], index.neighbour_scores[recent], user.seen, n)


def rank_neighbours(neighbour_ids: np.ndarray, neighbour_scores: np.ndarray, seen: np.ndarray, n: int) -> Ranked:
    """The neighbour source from the neighbour lists of the user's recent items (one row each, newest first,
    -1 padded): a candidate's score is the sum of its similarities, seen items dropped.

    Every store of neighbour lists (arrays in memory, Redis) calls this, so the sums are added in the same
    order and the list is the same to the last bit.
    """
    ids = np.asarray(neighbour_ids, dtype=np.int64).ravel()
    similarity = np.asarray(neighbour_scores, dtype=np.float64).ravel()
    kept = (ids > 0) & ~np.isin(ids, seen)
    if not kept.any():
        return Ranked.empty()
    items, position = np.unique(ids[kept], return_inverse=True)
    sums = np.bincount(position, weights=similarity[kept], minlength=len(items))
    best = top_n(sums, n)
    return Ranked(items[best], sums[best])


def vector_recall(user: UserRecallData, index: ItemIndex, n: int) -> Ranked:
    if user.vector is None or index.item_vectors is None:
        return Ranked.empty()
    scores = index.item_vectors @ user.vector.astype(index.item_vectors.dtype)
    return _ranked_from_dense(scores.astype(np.float64), _exclusion(index, user.seen), n)


def term_bands(terms: Sequence[tuple[int, int, int]], genres: int, max_popularity: float) -> list[tuple[int, float]]:
    """(genre, band) for the user's strongest genres: a stronger genre's band lies above any weaker genre's
    band plus any item's popularity, so its items come first."""
    strongest = list(terms)[:genres]
    return [(int(genre), float(len(strongest) - rank) * (1.0 + max_popularity))
            for rank, (genre, _, _) in enumerate(strongest)]


def term_recall(user: UserRecallData, index: ItemIndex, n: int, genres: int) -> Ranked:
    """The user's strongest genres in turn, each giving its most popular unseen items.

    Score: the genre's band (``term_bands``) plus the item's popularity; an item in several of the genres
    counts once, at its best.
    """
    blocked = _exclusion(index, user.seen)
    scores = np.full(index.item_count, -np.inf)
    for genre, band in term_bands(user.terms, genres, float(index.popularity.max())):
        items = index.genre_items.get(genre)
        if items is None:
            continue
        scores[items] = np.maximum(scores[items], band + index.popularity[items])
    return _ranked_from_dense(scores, blocked, n)


def popularity_recall(user: UserRecallData | None, index: ItemIndex, n: int) -> Ranked:
    seen = user.seen if user is not None else np.empty(0, dtype=np.int64)
    blocked = _exclusion(index, seen)
    kept = index.popular[~blocked[index.popular]][:n]
    return Ranked(kept.astype(np.int64), index.popularity[kept].astype(np.float64))


def recall_sources(user: UserRecallData, index: ItemIndex, config: RecallConfig, recall_size: int) -> dict[str, Ranked]:
    """Each source's candidates, up to recall_size each, seen items excluded."""
    return {
        NEIGHBOURS: neighbour_recall(user, index, recall_size, config.recent_items),
        VECTOR: vector_recall(user, index, recall_size),
        TERM: term_recall(user, index, recall_size, config.term_genres),
        POPULARITY: popularity_recall(user, index, recall_size),
    }


def merge(sources: Mapping[str, Ranked], recall_size: int, quotas: Mapping[str, int]) -> Candidates:
    """The documented merge rule (module docstring): quota round-robin, then fill without quotas."""
    # Plain Python lists: this loop visits a few hundred ids per request, and numpy scalars cost ~10x more.
    lists = {name: sources[name].itemids.tolist() for name in SOURCE_ORDER if name in sources}
    taken: dict[int, int] = {}  # itemid -> source bits, in insertion (merge) order
    cursor = dict.fromkeys(lists, 0)

    def visit(use_quota: bool) -> None:
        used = dict.fromkeys(lists, 0)
        while len(taken) < recall_size:
            moved = False
            for name, items in lists.items():
                if use_quota and used[name] >= quotas.get(name, 0):
                    continue
                position, bit = cursor[name], SOURCE_BIT[name]
                while position < len(items) and len(taken) < recall_size:
                    item = items[position]
                    position += 1
                    if item in taken:
                        taken[item] |= bit
                        continue
                    taken[item] = bit
                    used[name] += 1
                    moved = True
                    break
                cursor[name] = position
            if not moved:
                return

    visit(use_quota=True)
    visit(use_quota=False)
    # An item taken from one source may sit further down another source's list: flag it there too.
    for name, items in lists.items():
        bit = SOURCE_BIT[name]
        for item in items[cursor[name]:]:
            if item in taken:
                taken[item] |= bit
    itemids = np.fromiter(taken.keys(), dtype=np.int64, count=len(taken))
    bits = np.fromiter(taken.values(), dtype=np.int64, count=len(taken))
    return Candidates(itemids, bits)


def recall(user: UserRecallData | None, index: ItemIndex, config: RecallConfig,
           recall_size: int | None = None) -> tuple[Candidates, dict[str, Ranked]]:
    """Candidates for a user (popularity alone for an unknown user), and each source's own list."""
    size = recall_size or config.recall_size
    if user is None:
        sources = {POPULARITY: popularity_recall(None, index, size)}
    else:
        sources = recall_sources(user, index, config, size)
    return merge(sources, size, config.quota_counts(size)), sources


FUSION_K = 60
FUSED_SOURCES: tuple[str, ...] = (NEIGHBOURS, VECTOR)


def fused_order(candidates: Candidates, sources: Mapping[str, Ranked], model_scores: np.ndarray,
                k: int = FUSION_K) -> tuple[np.ndarray, np.ndarray]:
    """(positions into ``candidates`` best first, fused score per candidate) by the rule above.

    Ties (equal fused scores) go to the smaller itemid, so the order is total and reproducible.
    """
    fused = np.zeros(len(candidates), dtype=np.float64)
    by_model = np.lexsort((candidates.itemids, -np.asarray(model_scores, dtype=np.float64)))
    fused[by_model] += 1.0 / (k + np.arange(1, len(candidates) + 1))
    for name in FUSED_SOURCES:
        ranked = sources.get(name)
        if ranked is None or len(ranked) == 0:
            continue
        # Each candidate's 1-based rank in this source's list (0 where absent), by sorted lookup.
        order = np.argsort(ranked.itemids, kind="stable")
        found = np.searchsorted(ranked.itemids, candidates.itemids, sorter=order)
        found = np.minimum(found, len(ranked) - 1)
        present = ranked.itemids[order[found]] == candidates.itemids
        rank = order[found] + 1
        fused[present] += 1.0 / (k + rank[present])
    return np.lexsort((candidates.itemids, -fused)), fused
