"""Stores that do not answer, standing in for the services profile's servers: the offline evaluation replays
the hold-out with a dependency down (``python -m models.evaluate --down elasticsearch``) and gets, user by
user, the degraded lists the service serves with that server stopped.

Which store each server backs in the services profile: Redis the user recall data and the neighbour lists,
Elasticsearch the term and vector searches, Feast the user features, Triton the ranker (with the same model
in-process as its backup).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import numpy as np

from contracts.errors import StoreUnavailableError
from models.recall_sources import Ranked, UserRecallData
from models.stores import CatalogueSearch, FeatureClient, ItemIndexStore, Ranker, ServingBundle, UserRecallStore

SERVERS: tuple[str, ...] = ("redis", "elasticsearch", "feast", "triton")


def _down(store: str) -> StoreUnavailableError:
    return StoreUnavailableError(store, "down (simulated outage)")


@dataclasses.dataclass(frozen=True)
class UnavailableUsers:
    store: str

    def get(self, userid: int) -> UserRecallData | None:
        raise _down(self.store)


@dataclasses.dataclass(frozen=True)
class PartlyUnavailableItems:
    """The catalogue with its neighbour lists (Redis) and/or its searches (Elasticsearch) not answering;
    the popularity list is held in memory and always answers."""

    items: ItemIndexStore
    lists_down: bool
    search_down: bool

    @property
    def popularity(self) -> Ranked:
        return self.items.popularity

    @property
    def max_popularity(self) -> float:
        return self.items.max_popularity

    def neighbour_lists(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.lists_down:
            raise _down("redis")
        return self.items.neighbour_lists(itemids)

    def item_lists(self, source: str, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.lists_down:
            raise _down("redis")
        return self.items.item_lists(source, itemids)

    def search(self, query: CatalogueSearch) -> tuple[Ranked, Ranked]:
        if self.search_down:
            raise _down("elasticsearch")
        return self.items.search(query)


@dataclasses.dataclass(frozen=True)
class UnavailableFeatures:
    store: str

    def user_features(self, userid: int) -> np.ndarray | None:
        raise _down(self.store)


@dataclasses.dataclass(frozen=True)
class UnavailableRanker:
    store: str
    version: str

    def score(self, rows: np.ndarray) -> np.ndarray:
        raise _down(self.store)


def with_outage(bundle: ServingBundle, down: Collection[str]) -> ServingBundle:
    """The bundle with the stores the servers in ``down`` back not answering."""
    unknown = sorted(set(down) - set(SERVERS))
    if unknown:
        raise ValueError(f"unknown server(s) {unknown}: choose from {', '.join(SERVERS)}")
    users: UserRecallStore = UnavailableUsers("redis") if "redis" in down else bundle.users
    items: ItemIndexStore = bundle.items
    if "redis" in down or "elasticsearch" in down:
        items = PartlyUnavailableItems(bundle.items, "redis" in down, "elasticsearch" in down)
    features: FeatureClient = UnavailableFeatures("feast") if "feast" in down else bundle.features
    ranker: Ranker = bundle.ranker
    backup = bundle.backup_ranker
    if "triton" in down:  # the in-process model ranks instead, as the service's backup ranker does
        ranker, backup = UnavailableRanker("triton", bundle.ranker.version), bundle.backup_ranker or bundle.ranker
    return dataclasses.replace(bundle, users=users, items=items, features=features, ranker=ranker,
                               backup_ranker=backup)
