"""Candidate recall: each source's candidates for a user, as pure functions over arrays.

Sources, each returning (itemids, scores) best first, the user's seen items already excluded:

- ``neighbours``: item-to-item co-occurrence. Each of the user's most recent items (newest first)
  lends its top neighbours (``item_neighbours``, from the Spark batch); a candidate's score is the sum
  of its similarities to the user's recent items.
- ``ease``: EASE, the closed-form item model: the user's own list (``user_ease``, from the Spark batch), its
  item-item weights (``item_ease``) summed over every item they saw offline, seen items excluded, best first.
- ``sequence``: what other users rated soon after the user's latest items (``item_successors``), their
  weights summed over the user's ``sequence_seeds`` latest items.
- ``vector``: the recall model's user vector against every item vector (inner product = the model's
  own score).
- ``term``: the user's strongest genres (``user_terms``), each contributing its most popular items.
- ``popularity``: most positives offline; also the whole list for a user without recall data.

The in-memory item index (``models/in_memory_stores.py``) answers the term and vector searches with these
functions; the services profile's Elasticsearch queries reproduce them (``loaders/es_layout.py``). The
neighbour sums and the popularity filter are applied by the request path (``models/request_path.py``) to
whatever store supplied the lists, so every profile ranks them with the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from contracts.published import open_fusion
from models.norm_ordered_vectors import NormOrderedVectors
from models.sorted_keys import find_sorted

NEIGHBOURS, EASE, SEQUENCE, VECTOR, TERM, POPULARITY = "neighbours", "ease", "sequence", "vector", "term", "popularity"
SOURCE_ORDER: tuple[str, ...] = (EASE, SEQUENCE, NEIGHBOURS, VECTOR, TERM, POPULARITY)
ITEM_LIST_SOURCES: tuple[str, ...] = (SEQUENCE,)  # per-item lists summed over the user's items
RANKER = "ranker"  # the ranking model's scores, one of the final order's inputs
NEXT_ITEM = "next_item"  # the sequence model's chance of each candidate being next, another of them
MODEL_INPUTS: tuple[str, ...] = (RANKER, NEXT_ITEM)  # the final order's inputs that are models' scores


@dataclass(frozen=True)
class RecallConfig:
    recall_size: int = 200
    # Share of recall_size per source; the rest of the list is filled without quotas.
    quotas: Mapping[str, float] = field(
        default_factory=lambda: {EASE: 0.3, SEQUENCE: 0.2, NEIGHBOURS: 0.2, VECTOR: 0.2, TERM: 0.05, POPULARITY: 0.05}
    )
    neighbour_seeds: int = 20  # how many of the user's latest items lend their neighbour lists
    sequence_seeds: int = 10  # how many of the user's latest items lend their successor lists
    term_genres: int = 3  # the user's strongest genres used by term recall
    # The final order: per input (a source or the ranker) its weight; a candidate's score is the sum of
    # weight x (its score in that list / the list's best score). Chosen on validation (models/fusion_choice.py);
    # these defaults serve until a choice is published.
    fusion: Mapping[str, float] = field(default_factory=lambda: {EASE: 1.0, SEQUENCE: 0.5})

    def quota_counts(self, recall_size: int) -> dict[str, int]:
        return {name: round(self.quotas.get(name, 0.0) * recall_size) for name in SOURCE_ORDER}

    def asks(self, source: str) -> bool:
        """Whether a request recalls this source at all: it has a quota or a weight in the final order. One
        with neither (validation found it adds nothing) is not asked, which spares its store a round trip."""
        return self.quotas.get(source, 0.0) > 0 or self.fusion.get(source, 0.0) > 0

    @classmethod
    def served(cls, models_dir: Path, recall_size: int) -> RecallConfig:
        """The request's configuration with the published fusion choice (the defaults before there is one)."""
        choice = open_fusion(models_dir)
        if choice is None:
            return cls(recall_size=recall_size)
        defaults = cls()
        return cls(recall_size=recall_size, fusion=dict(choice["weights"]),
                   quotas=dict(choice.get("quotas", defaults.quotas)),
                   sequence_seeds=int(choice.get("sequence_seeds", defaults.sequence_seeds)))


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

    def head(self, n: int) -> Ranked:
        return Ranked(self.itemids[:n], self.scores[:n])


@dataclass(frozen=True)
class ItemLists:
    """Per item a list of (item, score), best first, held as one ragged array: item i's list is
    ``itemids[offsets[i]:offsets[i + 1]]`` (ML-25M's sparse ids reach ~209K for ~10K items with lists). Held in the
    tables' own types, int32 and float32 (each served worker holds every user's EASE list: 32 M entries at ML-25M's
    size); ``of`` hands them out as int64 and float64, the types the request path computes in."""

    offsets: np.ndarray  # int64 (item_count + 1,)
    itemids: np.ndarray  # int32
    scores: np.ndarray  # float32

    @classmethod
    def from_lists(cls, item_count: int, lists: Mapping[int, tuple[Sequence[int], Sequence[float]]]) -> ItemLists:
        lengths = np.zeros(item_count, dtype=np.int64)
        for itemid, (ids, _) in lists.items():
            if 0 <= itemid < item_count:
                lengths[itemid] = len(ids)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        itemids = np.empty(int(offsets[-1]), dtype=np.int32)
        scores = np.empty(int(offsets[-1]), dtype=np.float32)
        for itemid, (ids, values) in lists.items():
            if 0 <= itemid < item_count:
                itemids[offsets[itemid]:offsets[itemid + 1]] = ids
                scores[offsets[itemid]:offsets[itemid + 1]] = values
        return cls(offsets, itemids, scores)

    def of(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The lists of ``itemids`` one after another, in their order; an id without a list adds nothing."""
        itemids = np.asarray(itemids, dtype=np.int64)
        itemids = itemids[(itemids >= 0) & (itemids < len(self.offsets) - 1)]
        # Slices of the flat arrays joined in one copy: cheaper than gathering by computed positions (an EASE
        # request joins a list per item seen, ~250 lists and ~125K entries for a heavy ML-100K user).
        bounds = zip(self.offsets[itemids].tolist(), self.offsets[itemids + 1].tolist(), strict=True)
        spans = [(start, end) for start, end in bounds if end > start]
        if not spans:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return (np.concatenate([self.itemids[start:end] for start, end in spans], dtype=np.int64),
                np.concatenate([self.scores[start:end] for start, end in spans], dtype=np.float64))


@dataclass(frozen=True)
class ItemIndex:
    """Everything about the catalogue that recall reads, held as arrays indexed by itemid."""

    item_count: int  # itemids are 1..item_count-1; 0 is "unknown"
    popular: np.ndarray  # itemids, most positives first
    popularity: np.ndarray  # (item_count,) positives per itemid, for ordering within a genre
    genre_items: Mapping[int, np.ndarray]  # genre id -> its itemids, most popular first
    neighbour_ids: np.ndarray  # (item_count, N) int32 as in the table, -1 padded; row = itemid
    neighbour_scores: np.ndarray  # (item_count, N) float32 as in the table
    item_vectors: np.ndarray | None  # (item_count, d) float32, row = itemid (row 0 unused)
    known_items: np.ndarray  # (item_count,) bool: in the catalogue
    item_lists: Mapping[str, ItemLists] = field(default_factory=dict)  # ITEM_LIST_SOURCES' lists, where published

    @cached_property
    def max_popularity(self) -> float:
        return float(self.popularity.max()) if len(self.popularity) else 0.0

    @cached_property
    def popularity_list(self) -> Ranked:
        """The catalogue by offline positives, best first, with them as scores."""
        return Ranked(self.popular.astype(np.int64), self.popularity[self.popular].astype(np.float64))

    @cached_property
    def catalogue_ids(self) -> np.ndarray:
        """The itemids in the catalogue, ascending (0 excluded): the only ones a source may return. With the
        releases' sparse ids these are far fewer than ``item_count`` (ML-25M: ~62K of ~209K)."""
        known = self.known_items.copy()
        known[:1] = False
        return np.flatnonzero(known)

    @cached_property
    def catalogue_vectors(self) -> NormOrderedVectors | None:
        """The item vectors of ``catalogue_ids``, longest first: what a vector search reads."""
        if self.item_vectors is None:
            return None
        return NormOrderedVectors.of(self.catalogue_ids, self.item_vectors[self.catalogue_ids])

    def neighbour_lists(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The neighbour lists of ``itemids`` (a row each, -1 padded); an id outside the catalogue has none."""
        itemids = itemids[(itemids > 0) & (itemids < self.item_count)]
        return self.neighbour_ids[itemids].astype(np.int64), self.neighbour_scores[itemids].astype(np.float64)


    def lists_of(self, source: str, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lists = self.item_lists.get(source)
        if lists is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        return lists.of(itemids)


@dataclass(frozen=True)
class PublishedSearches:
    """A user's term and vector catalogue searches as the loader ran them on the same data as the rest of their
    recall data: what the searches at request time would return, up to ``size`` items. Posted ratings change the
    terms and the seen items, so a user rebuilt from them has none."""

    term: Ranked
    vector: Ranked
    size: int  # each list is the search for this many (shorter only where the catalogue ran out)
    term_genres: int  # how many of the user's strongest genres the term search took


@dataclass(frozen=True)
class UserRecallData:
    userid: int
    seen: np.ndarray  # itemids seen offline (never recommended)
    recent: np.ndarray  # latest offline itemids, newest first
    terms: Sequence[tuple[int, int, int]]  # (genre id, impressions, clicks), strongest first
    vector: np.ndarray | None  # the recall model's user vector
    ease: Ranked | None = None  # the user's EASE list, seen items excluded, best first (None: not published)
    searches: PublishedSearches | None = None  # None: the catalogue is searched at request time


def exclusion_mask(index: ItemIndex, seen: np.ndarray) -> np.ndarray:
    """True where an item may not be recommended: id 0, ids outside the catalogue, the user's seen items.

    Built once per request and shared by the sources that score the whole catalogue."""
    blocked = ~index.known_items
    blocked[0] = True
    blocked[seen[(seen >= 0) & (seen < index.item_count)]] = True
    return blocked


_DENSE_SPAN_PER_ENTRY = 16  # ids spanned per list entry up to which rank_item_lists sums into a table by id
_SAMPLED_BOUND_FROM = 32  # scores per wanted position from which the sampled bound pays off
_SAMPLE_STRIDE = 8


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n largest finite scores, best first; ties broken by the smaller position (itemid).

    Over many scores (the evaluation's EASE reference scores every id: ML-25M's ~209K per user) the exact
    selection runs on the scores at or above a bound that an evenly spaced sample gives: a selection over 62K
    scores cost ~0.55 ms, over those reaching the bound ~0.1 ms. The bound is used only where at least n finite
    scores reach it, so the n largest and every tie at the n-th are among them, and the answer is the same. (The
    vector search selects among the vectors it read instead: ``models/norm_ordered_vectors.py``.)"""
    if 0 < n and len(scores) >= _SAMPLED_BOUND_FROM * n:
        kept = _at_or_above_sampled_bound(scores, n)
        if kept is not None:
            return kept[_exact_top_n(scores[kept], n)]
    return _exact_top_n(scores, n)


def _at_or_above_sampled_bound(scores: np.ndarray, n: int) -> np.ndarray | None:
    """The ascending positions of the scores at or above a bound that at least n finite scores reach, else None.

    The bound is the sample's score at rank ~2n / stride (every stride-th score): about 2n scores reach it."""
    sample = scores[::_SAMPLE_STRIDE]
    rank = min(len(sample), 2 * n // _SAMPLE_STRIDE + 8)
    bound = np.partition(sample, len(sample) - rank)[len(sample) - rank]
    if not np.isfinite(bound):
        return None
    kept = np.flatnonzero(scores >= bound)
    if np.count_nonzero(np.isfinite(scores[kept])) < n:
        return None
    return kept


def _exact_top_n(scores: np.ndarray, n: int) -> np.ndarray:
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


def neighbour_seeds(user: UserRecallData, count: int) -> np.ndarray:
    """The user's latest ``count`` items (newest first) that lend their neighbour lists."""
    recent = user.recent[:count]
    return recent[recent > 0]


def item_list_seeds(user: UserRecallData, source: str, config: RecallConfig) -> np.ndarray:
    """The items whose lists a source sums: the latest ``sequence_seeds`` for the successors (newest first)."""
    recent = user.recent[:config.sequence_seeds]
    return recent[recent > 0]


def ease_recall(user: UserRecallData, n: int) -> Ranked:
    """The user's EASE list (computed by the batch over their whole history: a heavy user's sum runs over
    hundreds of movies' weights, too many to add up per request), its first ``n``."""
    if user.ease is None:
        return Ranked.empty()
    # Held as the table's int32 and float32 (``models/user_recall_table.py``), computed with in 64 bits.
    return Ranked(user.ease.itemids[:n].astype(np.int64), user.ease.scores[:n].astype(np.float64))


def rank_item_lists(ids: np.ndarray, scores: np.ndarray, seen: np.ndarray, n: int) -> Ranked:
    """A per-item-list source: each candidate's score summed over the lists (in list order), seen items and
    ids <= 0 dropped, the best ``n`` (ties by the smaller itemid). A dense sum by bincount where the ids are dense
    (sorting thousands of entries by id costs several times more); where they span far more ids than there are
    entries (ML-25M's ids reach ~209K), a sum per distinct id, added in the same order."""
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(ids) and ids.min() <= 0:  # padding: the stores' lists have none, so the copy is rarely made
        kept = ids > 0
        ids, scores = ids[kept], scores[kept]
    if len(ids) == 0:
        return Ranked.empty()
    seen = np.asarray(seen, dtype=np.int64)
    if int(ids.max()) > _DENSE_SPAN_PER_ENTRY * len(ids):
        candidates, values = sums_per_distinct_id(ids, scores, seen)
    else:
        sums = np.bincount(ids, weights=scores)
        present = np.zeros(len(sums), dtype=bool)
        present[ids] = True
        present[seen[(seen >= 0) & (seen < len(sums))]] = False
        # Ranked among the ids present only (ascending, so ties still go to the smaller itemid).
        candidates = np.flatnonzero(present)
        values = sums[candidates]
    best = top_n(values, n)
    return Ranked(candidates[best].astype(np.int64), values[best])


def neighbour_recall(user: UserRecallData, index: ItemIndex, n: int, seeds: int) -> Ranked:
    return rank_neighbours(*index.neighbour_lists(neighbour_seeds(user, seeds)), user.seen, n)


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
    present, sums = sums_per_distinct_id(ids[kept], similarity[kept], seen)
    best = top_n(sums, n)
    return Ranked(present[best].astype(np.int64), sums[best])


def sums_per_distinct_id(ids: np.ndarray, scores: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids ascending, each one's scores summed in list order), the ``seen`` ones dropped. Ascending,
    so ties still go to the smaller itemid; a seen id's sum is computed and dropped, which leaves the others'."""
    present, bins = np.unique(ids, return_inverse=True)
    sums = np.bincount(bins, weights=scores, minlength=len(present))
    position, found = find_sorted(present, np.asarray(seen, dtype=np.int64))
    unseen = np.ones(len(present), dtype=bool)
    unseen[position[found]] = False
    return present[unseen], sums[unseen]


def vector_search(index: ItemIndex, vector: np.ndarray | None, blocked: np.ndarray, n: int) -> Ranked:
    """The items with the largest inner product with ``vector``, blocked ones excluded; ties by itemid.

    Only the catalogue's items are scored (anything else is blocked anyway), in float32 as the vectors are, the
    longest vectors first until no other can enter the list (``models/norm_ordered_vectors.py``); widening is
    exact and keeps the order, so only the chosen scores are widened."""
    if vector is None or index.catalogue_vectors is None:
        return Ranked.empty()
    itemids, scores = index.catalogue_vectors.search(vector, blocked, n)
    return Ranked(itemids, scores.astype(np.float64))


def vector_recall(user: UserRecallData, index: ItemIndex, n: int) -> Ranked:
    return vector_search(index, user.vector, exclusion_mask(index, user.seen), n)


def term_bands(terms: Sequence[tuple[int, int, int]], genres: int, max_popularity: float) -> list[tuple[int, float]]:
    """(genre, band) for the user's strongest genres: a stronger genre's band lies above any weaker genre's
    band plus any item's popularity, so its items come first."""
    strongest = list(terms)[:genres]
    return [(int(genre), float(len(strongest) - rank) * (1.0 + max_popularity))
            for rank, (genre, _, _) in enumerate(strongest)]


def term_search(index: ItemIndex, bands: Sequence[tuple[int, float]], blocked: np.ndarray, n: int) -> Ranked:
    """The items of the banded genres, each scored band + popularity at its best band, blocked ones excluded.

    Since the bands do not overlap, that order is each genre's list (most popular first, ties by itemid:
    ``ItemIndex.genre_items``) after the stronger genres' lists, repeats dropped.
    """
    taken = blocked.copy()
    itemids, scores = [], []
    wanted = n
    for genre, band in bands:
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


def term_recall(user: UserRecallData, index: ItemIndex, n: int, genres: int) -> Ranked:
    """The user's strongest genres in turn, each giving its most popular unseen items (``term_search``)."""
    bands = term_bands(user.terms, genres, index.max_popularity)
    return term_search(index, bands, exclusion_mask(index, user.seen), n)


def unseen_popular(popular: Ranked, seen: np.ndarray, n: int) -> Ranked:
    """The first ``n`` items of a popularity list that the user has not seen.

    At most ``len(seen)`` of them are seen, so only the list's first ``n + len(seen)`` are looked at."""
    head = popular.itemids[: n + len(seen)]
    _, kept = find_sorted(np.sort(np.asarray(seen, dtype=np.int64)), head)
    kept = ~kept
    return Ranked(head[kept][:n], popular.scores[: len(head)][kept][:n])


def popularity_recall(user: UserRecallData | None, index: ItemIndex, n: int) -> Ranked:
    seen = user.seen if user is not None else np.empty(0, dtype=np.int64)
    return unseen_popular(index.popularity_list, seen, n)
