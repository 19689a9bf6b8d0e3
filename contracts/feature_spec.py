"""The feature specification: the single source of truth for every feature.

Spark writes its tables in this order and with these types, Feast derives its views from it, the
models take their input tensor in this order and the server assembles requests from it. The
semantic constants that change what a feature *means* (label threshold, history length, split
sizes) live here too, because changing them changes the features: they are part of the version.

This module is deliberately free of Spark, Feast and torch imports so that every stage can read it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import cached_property

from contracts.errors import SpecMismatchError

# The 18 MovieLens-1M genres; genre id k is position k (1-based). Id 0 means "unknown / other":
# ML-100K's "unknown", the CSV family's "IMAX" and "(no genres listed)".
GENRES: tuple[str, ...] = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# Spellings of the same genre in other MovieLens releases.
GENRE_ALIASES: dict[str, str] = {"Children": "Children's"}
UNKNOWN_INDEX = 0

# ML-1M age codes; other releases' ages in years are bucketed onto them (see age_bucket_index).
AGE_BUCKETS: tuple[int, ...] = (1, 18, 25, 35, 45, 50, 56)
GENDERS: tuple[str, ...] = ("M", "F")
# ML-1M occupation codes 0..20 become indices 1..21; ML-100K's 21 named occupations likewise.
OCCUPATION_COUNT = 21

# Semantics of labels, splits and point-in-time features (documented in README.md).
POSITIVE_RATING_ABOVE = 3  # label = 1 when rating > 3
HOLDOUT_SIZE = 10  # each user's last impressions kept for online evaluation
TRAIN_PERCENT = 80  # offline impressions with 0-based row number < 80% of n are train
# Said in words so that a change of the rule (not only of its numbers) changes the spec version.
SPLIT_RULE = "holdout: last HOLDOUT_SIZE; train: position - 1 < TRAIN_PERCENT% of the offline n; test: the rest"
MIN_IMPRESSIONS_FOR_SPLIT = HOLDOUT_SIZE + 2  # fewer: every impression is offline train
PIT_HISTORY = 10  # impressions looked back over for the genre counters


class FeatureGroup(StrEnum):
    SPARSE_ID = "sparse_id"
    SPARSE_SIDE = "sparse_side"
    DENSE = "dense"


class Entity(StrEnum):
    USER = "user"
    ITEM = "item"


@dataclass(frozen=True)
class Feature:
    name: str
    group: FeatureGroup
    entity: Entity
    dtype: str  # "int32" for categorical indices, "float32" for dense values
    # Number of distinct indices including 0 = unknown; None when the data decides (ids).
    cardinality: int | None
    normalisation: str | None  # "standard": (x - train mean) / train std
    # A dataset feature the value needs; without it the column is all 0 (= unknown).
    requires: str | None
    description: str

    @property
    def is_sparse(self) -> bool:
        return self.group is not FeatureGroup.DENSE


def genre_flag_name(genre_id: int) -> str:
    return f"item_g{genre_id}"


def genre_impressions_name(genre_id: int) -> str:
    return f"user_g{genre_id}_imp"


def genre_clicks_name(genre_id: int) -> str:
    return f"user_g{genre_id}_clk"


GENRE_IDS: tuple[int, ...] = tuple(range(1, len(GENRES) + 1))


def _features() -> tuple[Feature, ...]:
    ids = (
        Feature("userid", FeatureGroup.SPARSE_ID, Entity.USER, "int32", None, None, None,
                "MovieLens user id; cardinality is max id + 1, 0 = unknown user"),
        Feature("itemid", FeatureGroup.SPARSE_ID, Entity.ITEM, "int32", None, None, None,
                "MovieLens movie id; the models map it to its index in the run's item vocabulary (1..N in id "
                "order), so cardinality is the number of catalogue movies + 1, 0 = unknown item"),
    )
    user_side = (
        Feature("gender", FeatureGroup.SPARSE_SIDE, Entity.USER, "int32", len(GENDERS) + 1, None,
                "demographics", "1 = M, 2 = F, 0 = unknown"),
        Feature("age", FeatureGroup.SPARSE_SIDE, Entity.USER, "int32", len(AGE_BUCKETS) + 1, None,
                "demographics", "ML-1M age bucket index 1..7 (<18, 18-24, ..., 56+), 0 = unknown"),
        Feature("occupation", FeatureGroup.SPARSE_SIDE, Entity.USER, "int32", OCCUPATION_COUNT + 1, None,
                "demographics", "occupation index 1..21, 0 = unknown"),
    )
    item_side = tuple(
        Feature(genre_flag_name(k), FeatureGroup.SPARSE_SIDE, Entity.ITEM, "int32", 2, None, None,
                f"1 when the movie is tagged {GENRES[k - 1]}")
        for k in GENRE_IDS
    )
    dense = tuple(
        Feature(name, FeatureGroup.DENSE, Entity.USER, "float32", None, "standard", None, text)
        for k in GENRE_IDS
        for name, text in (
            (genre_impressions_name(k),
             f"{GENRES[k - 1]} impressions among the user's last {PIT_HISTORY} strictly earlier ones"),
            (genre_clicks_name(k),
             f"{GENRES[k - 1]} positives among the user's last {PIT_HISTORY} strictly earlier ones"),
        )
    )
    return ids + user_side + item_side + dense


@dataclass(frozen=True)
class FeatureSpec:
    features: tuple[Feature, ...]
    label: str = "label"
    timestamp: str = "timestamp"

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Column order of the model input."""
        return tuple(f.name for f in self.features)

    def __getitem__(self, name: str) -> Feature:
        return self._by_name[name]

    @cached_property
    def _by_name(self) -> dict[str, Feature]:
        return {f.name: f for f in self.features}

    def index_of(self, name: str) -> int:
        return self.names.index(name)

    def in_group(self, group: FeatureGroup) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.group is group)

    @property
    def sparse(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.is_sparse)

    @property
    def dense(self) -> tuple[Feature, ...]:
        return self.in_group(FeatureGroup.DENSE)

    def of_entity(self, entity: Entity) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.entity is entity)

    @property
    def online_user_features(self) -> tuple[Feature, ...]:
        """User features the online store serves: everything about the user except the id."""
        return tuple(f for f in self.of_entity(Entity.USER) if f.group is not FeatureGroup.SPARSE_ID)

    @property
    def online_item_features(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.of_entity(Entity.ITEM) if f.group is not FeatureGroup.SPARSE_ID)

    def requiring(self, dataset_feature: str) -> tuple[Feature, ...]:
        return tuple(f for f in self.features if f.requires == dataset_feature)

    def to_dict(self) -> dict:
        return {
            "features": [asdict(f) for f in self.features],
            "label": self.label,
            "timestamp": self.timestamp,
            "semantics": {
                "genres": list(GENRES),
                "genre_aliases": GENRE_ALIASES,
                "age_buckets": list(AGE_BUCKETS),
                "genders": list(GENDERS),
                "occupation_count": OCCUPATION_COUNT,
                "positive_rating_above": POSITIVE_RATING_ABOVE,
                "holdout_size": HOLDOUT_SIZE,
                "train_percent": TRAIN_PERCENT,
                "split_rule": SPLIT_RULE,
                "min_impressions_for_split": MIN_IMPRESSIONS_FOR_SPLIT,
                "pit_history": PIT_HISTORY,
            },
        }

    @cached_property
    def version(self) -> str:
        """Content hash: any change of names, types, order or semantics gives a new version."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return "v1-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


SPEC = FeatureSpec(_features())


def check_spec_version(found: str, what: str, spec: FeatureSpec = SPEC) -> None:
    if found != spec.version:
        raise SpecMismatchError(
            f"{what} was built with feature spec {found}, but this code's spec is {spec.version}: "
            "rebuild it with the current batch/training"
        )
