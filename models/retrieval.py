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
from functools import cached_property

import numpy as np

NEIGHBOURS, VECTOR, TERM, POPULARITY = "neighbours", "vector", "term", "popularity"
SOURCE_ORDER: tuple[str, ...] = (NEIGHBOURS, VECTOR, TERM, POPULARITY)
SOURCE_BIT: dict[str, int] = {name: 1 << position for position, name in enumerate(SOURCE_ORDER)}
# The names behind every bit mask, looked up instead of decoded per candidate.
SOURCE_NAMES: tuple[tuple[str, ...], ...] = tuple(
    tuple(name for name in SOURCE_ORDER if mask & SOURCE_BIT[name]) for mask in range(1 << len(SOURCE_ORDER))
)


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
        return list(SOURCE_NAMES[int(self.sources[position])])


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

    @cached_property
    def max_popularity(self) -> float:
        return float(self.popularity.max()) if len(self.popularity) else 0.0


@dataclass(frozen=True)
class UserRecallData:
    userid: int
    seen: np.ndarray  # itemids seen offline (never recommended)
    recent: np.ndarray  # latest offline itemids, newest first
    terms: Sequence[tuple[int, int, int]]  # (genre id, impressions, clicks), strongest first
    vector: np.ndarray | None  # the recall model's user vector


def exclusion_mask(index: ItemIndex, seen: np.ndarray) -> np.ndarray:
    """True where an item may not be recommended: id 0, ids outside the catalogue, the user's seen items.

    Built once per request and shared by the sources that score the whole catalogue."""
    blocked = ~index.known_items
    blocked[0] = True
    blocked[seen[(seen >= 0) & (seen < index.item_count)]] = True
    return blocked


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n largest finite scores, best first; ties broken by the smaller position (itemid)."""
    finite = np.isfinite(scores)
    if n <= 0 or not finite.any():
        return np.empty(0, dtype=np.int64)
    if np.count_nonzero(finite) > n:
        # The n-th largest finite score, then every position reaching it (ties at the threshold included).
        values = np.where(finite, scores, -np.inf)
        threshold = -np.partition(-values, n - 1)[n - 1]
        kept = np.flatnonzero(values >= threshold)
    else:
        kept = np.flatnonzero(finite)
    # Stable: equal scores keep their ascending position, so the smaller itemid comes first.
    order = np.argsort(-scores[kept], kind="stable")
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
    kept = ids > 0
    if not kept.any():
        return Ranked.empty()
    # Dense over the ids present: a bin per itemid, the similarities added in list order (bincount).
    size = int(ids.max()) + 1
    seen = np.asarray(seen, dtype=np.int64)
    blocked = np.zeros(size, dtype=bool)
    blocked[seen[(seen > 0) & (seen < size)]] = True
    kept &= ~blocked[np.maximum(ids, 0)]
    ids = ids[kept]
    if len(ids) == 0:
        return Ranked.empty()
    sums = np.bincount(ids, weights=similarity[kept], minlength=size)
    present = np.zeros(size, dtype=bool)
    present[ids] = True
    best = top_n(np.where(present, sums, -np.inf), n)
    return Ranked(best.astype(np.int64), sums[best])


def vector_recall(user: UserRecallData, index: ItemIndex, n: int, blocked: np.ndarray | None = None) -> Ranked:
    if user.vector is None or index.item_vectors is None:
        return Ranked.empty()
    scores = index.item_vectors @ user.vector.astype(index.item_vectors.dtype)
    if blocked is None:
        blocked = exclusion_mask(index, user.seen)
    return _ranked_from_dense(scores.astype(np.float64), blocked, n)


def term_bands(terms: Sequence[tuple[int, int, int]], genres: int, max_popularity: float) -> list[tuple[int, float]]:
    """(genre, band) for the user's strongest genres: a stronger genre's band lies above any weaker genre's
    band plus any item's popularity, so its items come first."""
    strongest = list(terms)[:genres]
    return [(int(genre), float(len(strongest) - rank) * (1.0 + max_popularity))
            for rank, (genre, _, _) in enumerate(strongest)]


def term_recall(user: UserRecallData, index: ItemIndex, n: int, genres: int,
                blocked: np.ndarray | None = None) -> Ranked:
    """The user's strongest genres in turn, each giving its most popular unseen items.

    Score: the genre's band (``term_bands``) plus the item's popularity; an item in several of the genres
    counts once, at its best. Since the bands do not overlap, that order is each genre's list (most popular
    first, ties by itemid: ``ItemIndex.genre_items``) after the stronger genres' lists, repeats dropped.
    """
    taken = (exclusion_mask(index, user.seen) if blocked is None else blocked).copy()
    itemids, scores = [], []
    wanted = n
    for genre, band in term_bands(user.terms, genres, index.max_popularity):
        items = index.genre_items.get(genre)
        if items is None or wanted <= 0:
            continue
        fresh = items[~taken[items]][:wanted]
        taken[fresh] = True
        itemids.append(fresh)
        scores.append(band + index.popularity[fresh])
        wanted -= len(fresh)
    if not itemids:
        return Ranked.empty()
    return Ranked(np.concatenate(itemids).astype(np.int64), np.concatenate(scores).astype(np.float64))


def popularity_recall(user: UserRecallData | None, index: ItemIndex, n: int,
                      blocked: np.ndarray | None = None) -> Ranked:
    if blocked is None:
        blocked = exclusion_mask(index, user.seen if user is not None else np.empty(0, dtype=np.int64))
    kept = index.popular[~blocked[index.popular]][:n]
    return Ranked(kept.astype(np.int64), index.popularity[kept].astype(np.float64))


def recall_sources(user: UserRecallData, index: ItemIndex, config: RecallConfig, recall_size: int) -> dict[str, Ranked]:
    """Each source's candidates, up to recall_size each, seen items excluded."""
    blocked = exclusion_mask(index, user.seen)
    return {
        NEIGHBOURS: neighbour_recall(user, index, recall_size, config.recent_items),
        VECTOR: vector_recall(user, index, recall_size, blocked),
        TERM: term_recall(user, index, recall_size, config.term_genres, blocked),
        POPULARITY: popularity_recall(user, index, recall_size, blocked),
    }


def merge(sources: Mapping[str, Ranked], recall_size: int, quotas: Mapping[str, int]) -> Candidates:
    """The documented merge rule (module docstring): quota round-robin, then fill without quotas."""
    names = [name for name in SOURCE_ORDER if name in sources]
    # Plain Python lists and locals: this loop visits a few hundred ids per request, and numpy scalars and
    # attribute look-ups cost several times more.
    lists = [sources[name].itemids.tolist() for name in names]
    lengths = [len(items) for items in lists]
    cursor = [0] * len(names)
    taken: dict[int, None] = {}  # an ordered set: the merge order

    def visit(limits: list[int]) -> None:
        used = [0] * len(names)
        active = [source for source in range(len(names)) if limits[source] > 0]
        while active and len(taken) < recall_size:
            still_active = []  # sources with quota and items left, in round-robin order
            for source in active:
                items, position, length = lists[source], cursor[source], lengths[source]
                while position < length and items[position] in taken:
                    position += 1
                if position == length:
                    cursor[source] = position
                    continue
                taken[items[position]] = None
                cursor[source] = position + 1
                used[source] += 1
                if len(taken) >= recall_size:
                    return
                if used[source] < limits[source]:
                    still_active.append(source)
            active = still_active

    visit([quotas.get(name, 0) for name in names])
    visit(lengths)  # no quotas: every source may give all it has left
    itemids = np.fromiter(taken, dtype=np.int64, count=len(taken))
    # Every source that lists a taken item flags it, wherever in its list (before or after its cursor).
    size = max([int(itemids.max()) + 1 if len(itemids) else 0]
               + [int(sources[name].itemids.max()) + 1 for name in names if len(sources[name])])
    flags = np.zeros(size, dtype=np.int64)
    for name in names:
        flags[sources[name].itemids] |= SOURCE_BIT[name]
    return Candidates(itemids, flags[itemids])


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
    by_model = np.lexsort((candidates.itemids, -np.asarray(model_scores, dtype=np.float64).reshape(-1)))
    fused[by_model] += 1.0 / (k + np.arange(1, len(candidates) + 1))
    for name in FUSED_SOURCES:
        ranked = sources.get(name)
        if ranked is None or len(ranked) == 0:
            continue
        # Each candidate's 1-based rank in this source's list (0 where absent), by a dense look-up table.
        size = max(int(ranked.itemids.max()), int(candidates.itemids.max()) if len(candidates) else 0) + 1
        rank_of = np.zeros(size, dtype=np.int64)
        rank_of[ranked.itemids[::-1]] = np.arange(len(ranked), 0, -1)  # reversed: a repeated id keeps its first rank
        rank = rank_of[candidates.itemids]
        present = rank > 0
        fused[present] += 1.0 / (k + rank[present])
    return np.lexsort((candidates.itemids, -fused)), fused
