"""Ratings posted to the service, applied to a user's batch state by the batch's own rules.

The service (``online/live_users.py``) calls ``apply_ratings`` whenever a user's posted ratings change, so a
user's recall data and online features after a rating are what the next batch would compute from the same
impressions (README "Real-time events"):

- an impression's label is rating > POSITIVE_RATING_ABOVE; a user's impressions are ordered by
  (timestamp, itemid), so a rating posted late takes its place in that order;
- the 36 counters are over the latest PIT_HISTORY impressions (``spark_jobs.features.latest_counters``),
  standardised with the published run's train statistics (its feature metadata);
- the terms are the genres among them with impressions, strongest first (``spark_jobs.genre_terms.user_terms``);
- the seen filter gains the item; the recent list is the latest ``recent_items`` impressions, newest first
  (``user_filter``);
- the EASE list is the per-movie EASE weights (``item_ease``) summed over everything the user saw;
- the recall vector is the batch's; a user the batch does not know gets one folded in against the frozen
  item vectors (``fold_in_vector``). Demographics of a new user are unknown (0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np

from contracts.feature_spec import (
    GENRE_IDS,
    PIT_HISTORY,
    POSITIVE_RATING_ABOVE,
    SPEC,
    genre_clicks_name,
    genre_impressions_name,
)
from models.recall_sources import Ranked, UserRecallData, rank_item_lists

COUNTER_NAMES: tuple[str, ...] = tuple(name for k in GENRE_IDS
                                       for name in (genre_impressions_name(k), genre_clicks_name(k)))
DEMOGRAPHICS: tuple[str, ...] = tuple(f.name for f in SPEC.online_user_features if f.name not in COUNTER_NAMES)
FOLD_IN_STEPS = 30  # full-batch BPR steps of a new user's vector
FOLD_IN_ITEMS = 50  # a new user's latest items the fold-in looks at (its cost grows with them x the catalogue)
FOLD_IN_REGULARISATION = 0.01


@dataclass(frozen=True)
class PostedRating:
    """One rating posted to the service: an impression of the batch's kind."""

    event_id: str
    userid: int
    itemid: int
    rating: float
    timestamp: int

    @property
    def label(self) -> int:
        return int(self.rating > POSITIVE_RATING_ABOVE)

    @property
    def key(self) -> tuple[int, int, int]:
        """What makes two postings the same impression: a second one is applied once."""
        return self.userid, self.itemid, self.timestamp


@dataclass(frozen=True)
class RecentImpressions:
    """A user's latest offline impressions, newest first (``user_filter``'s recent lists)."""

    itemids: np.ndarray  # int64
    timestamps: np.ndarray  # int64
    labels: np.ndarray  # int64

    @classmethod
    def empty(cls) -> RecentImpressions:
        nothing = np.empty(0, dtype=np.int64)
        return cls(nothing, nothing, nothing)


class ItemListReader(Protocol):
    """Per-movie lists (``models.recall_sources.ItemLists`` in memory, Redis keys in the services profile)."""

    def of(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class UpdateRules:
    """What the rules read of the published run and the recall model."""

    genre_flags: np.ndarray  # (item_count, len(GENRE_IDS)) int64, row = itemid: 1 where the movie has the genre
    means: np.ndarray  # (len(COUNTER_NAMES),) the train mean of each counter, in COUNTER_NAMES order
    stds: np.ndarray  # the train sample std (1 where it was 0)
    recent_items: int  # how long the recent list is
    ease_lists: ItemListReader | None  # item_ease: each movie's largest EASE weights
    ease_per_user: int
    item_vectors: np.ndarray | None  # (item_count, d + 2) float32 [q_i, 1, b_i], row = itemid
    catalogue_ids: np.ndarray  # the catalogue's itemids, ascending


@dataclass(frozen=True)
class BatchUser:
    """What the published run holds of one user (``recall`` None: the batch does not know them)."""

    userid: int
    recall: UserRecallData | None
    recent: RecentImpressions
    demographics: np.ndarray  # DEMOGRAPHICS' values, 0 = unknown


class BatchUserSource(Protocol):
    """What the published run holds of a user besides their recall data."""

    def of(self, userid: int, recall: UserRecallData | None) -> BatchUser: ...


@dataclass(frozen=True)
class BatchUserStates:
    """Every user's recent timestamps and labels and demographics, held flat (a dict of small arrays per user
    costs several times the memory at ML-25M's 162K users); their recall data is the bundle's."""

    rows: dict[int, int]  # userid -> row
    offsets: np.ndarray  # (rows + 1,) into the flat arrays
    timestamps: np.ndarray  # int64, each row's newest first, aligned with its recall data's ``recent``
    labels: np.ndarray  # int8
    demographics: np.ndarray  # (rows, len(DEMOGRAPHICS)) int16

    def of(self, userid: int, recall: UserRecallData | None) -> BatchUser:
        row = self.rows.get(userid)
        if row is None or recall is None:
            demographics = (self.demographics[row] if row is not None
                            else np.zeros(len(DEMOGRAPHICS), dtype=np.int16))
            return BatchUser(userid, recall, RecentImpressions.empty(), demographics)
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        recent = RecentImpressions(np.asarray(recall.recent[:end - start], dtype=np.int64),
                                   self.timestamps[start:end].astype(np.int64), self.labels[start:end].astype(np.int64))
        return BatchUser(userid, recall, recent, self.demographics[row])


@dataclass(frozen=True)
class UpdatedUser:
    """A user's state with their posted ratings. The features (what every rating pushes to Feast) are computed
    at once; the recall data (the EASE sums, a new user's fold-in: most of the work) when a request first reads
    it, which for most ratings is in the same worker's next request for that user, or never."""

    user: BatchUser
    ratings: tuple[PostedRating, ...]
    rules: UpdateRules
    timeline: RecentImpressions  # newest first
    raw_counters: np.ndarray  # COUNTER_NAMES' counts over the latest PIT_HISTORY impressions
    features: np.ndarray  # float32, ``SPEC.online_user_features`` order: what is pushed to Feast

    @property
    def latest_timestamp(self) -> int:
        return int(self.timeline.timestamps[0])

    @cached_property
    def recall(self) -> UserRecallData:
        user, rules = self.user, self.rules
        posted = np.asarray([r.itemid for r in self.ratings], dtype=np.int64)
        offline_seen = user.recall.seen if user.recall is not None else np.empty(0, dtype=np.int64)
        seen = np.union1d(offline_seen, posted).astype(np.int64)
        vector = user.recall.vector if user.recall is not None else None
        if vector is None:
            vector = fold_in_vector(self.timeline.itemids, rules)
        return UserRecallData(user.userid, seen, self.timeline.itemids[:rules.recent_items].copy(),
                              terms_of(self.raw_counters), vector, ease_list(seen, rules))


def merged_timeline(recent: RecentImpressions, ratings: Sequence[PostedRating]) -> RecentImpressions:
    """The batch's recent impressions and the posted ratings, newest first by (timestamp, itemid, label)."""
    itemids = np.concatenate([recent.itemids, np.asarray([r.itemid for r in ratings], dtype=np.int64)])
    timestamps = np.concatenate([recent.timestamps, np.asarray([r.timestamp for r in ratings], dtype=np.int64)])
    labels = np.concatenate([recent.labels, np.asarray([r.label for r in ratings], dtype=np.int64)])
    order = np.lexsort((labels, itemids, timestamps))[::-1]
    return RecentImpressions(itemids[order], timestamps[order], labels[order])


def counters_of(timeline: RecentImpressions, genre_flags: np.ndarray) -> np.ndarray:
    """COUNTER_NAMES' counts over the newest PIT_HISTORY impressions of a newest-first timeline."""
    itemids, labels = timeline.itemids[:PIT_HISTORY], timeline.labels[:PIT_HISTORY]
    known = (itemids >= 0) & (itemids < len(genre_flags))
    flags = np.where(known[:, None], genre_flags[np.where(known, itemids, 0)], 0)
    impressions = flags.sum(axis=0)
    clicks = (flags * labels[:, None]).sum(axis=0)
    return np.stack([impressions, clicks], axis=1).reshape(-1).astype(np.int64)


def terms_of(raw_counters: np.ndarray) -> list[tuple[int, int, int]]:
    """(genre, impressions, clicks) of the genres with impressions, most clicks first, then most impressions,
    then the smaller genre id."""
    pairs = raw_counters.reshape(-1, 2)
    terms = [(genre, int(impressions), int(clicks))
             for genre, (impressions, clicks) in zip(GENRE_IDS, pairs.tolist(), strict=True) if impressions > 0]
    return sorted(terms, key=lambda term: (-term[2], -term[1], term[0]))


def feature_row(demographics: np.ndarray, raw_counters: np.ndarray, rules: UpdateRules) -> np.ndarray:
    """The online feature row: demographics as they are, counters standardised as the batch does (in double
    precision, then float32)."""
    standardised = ((raw_counters.astype(np.float64) - rules.means) / rules.stds).astype(np.float32)
    values = dict(zip(DEMOGRAPHICS, np.asarray(demographics, dtype=np.float32).tolist(), strict=True))
    values |= dict(zip(COUNTER_NAMES, standardised.tolist(), strict=True))
    return np.asarray([values[f.name] for f in SPEC.online_user_features], dtype=np.float32)


def fold_in_vector(itemids: np.ndarray, rules: UpdateRules) -> np.ndarray | None:
    """A recall vector [p, 0, 1] for a user the recall model never saw: full-batch BPR steps on p against the
    frozen item vectors, every catalogue movie a negative for each of the user's movies. Deterministic (no
    draws), so every worker folds in the same vector."""
    if rules.item_vectors is None or len(rules.catalogue_ids) == 0:
        return None
    vectors = rules.item_vectors.astype(np.float64)
    dim = vectors.shape[1] - 2
    factors, biases = vectors[:, :dim], vectors[:, dim + 1]
    positives = np.unique(itemids[(itemids > 0) & (itemids < len(vectors))])[:FOLD_IN_ITEMS]
    user = np.zeros(dim)
    if len(positives):
        negatives = rules.catalogue_ids
        # A step size from the item factors' scale: the gradient is a mean of factor differences.
        step = 1.0 / max(float(np.mean(np.sum(factors[negatives] ** 2, axis=1))), 1e-6)
        for _ in range(FOLD_IN_STEPS):
            scores = factors @ user + biases
            margins = scores[positives][:, None] - scores[negatives][None, :]
            weights = 1.0 / (1.0 + np.exp(np.clip(margins, -30.0, 30.0)))  # sigmoid(-margin)
            gradient = (weights.sum(axis=1) @ factors[positives] - weights.sum(axis=0) @ factors[negatives])
            gradient /= weights.size
            user += step * (gradient - FOLD_IN_REGULARISATION * user)
    return np.concatenate([user, [0.0, 1.0]]).astype(np.float32)


def ease_list(seen: np.ndarray, rules: UpdateRules) -> Ranked | None:
    if rules.ease_lists is None:
        return None
    return rank_item_lists(*rules.ease_lists.of(seen), seen, rules.ease_per_user)


def apply_ratings(user: BatchUser, ratings: Sequence[PostedRating], rules: UpdateRules) -> UpdatedUser:
    """The user's online features and (on first read) recall data once ``ratings`` (each applied once) are
    impressions too."""
    timeline = merged_timeline(user.recent, ratings)
    raw = counters_of(timeline, rules.genre_flags)
    return UpdatedUser(user, tuple(ratings), rules, timeline, raw, feature_row(user.demographics, raw, rules))
