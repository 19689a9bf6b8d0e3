"""Stores over the exports' arrays in memory, and the bundle built from them: what the embedded profile
serves (with Feast's features, ``online/embedded.py``) and what the offline evaluation replays (with the
exports' own feature rows). Nothing to start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.published import ModelFolder
from models.export_readers import load_item_features, load_item_index, load_user_recall_data
from models.feature_rows import FeatureAssembler
from models.onnx_next_item import OnnxNextItemScorer
from models.onnx_ranker import OnnxRanker
from models.recall_sources import (
    ItemIndex,
    Ranked,
    RecallConfig,
    UserRecallData,
    exclusion_mask,
    term_search,
    vector_search,
)
from models.stores import CatalogueSearch, FeatureClient, ServingBundle


@dataclass(frozen=True)
class InMemoryUserRecallStore:
    users: Mapping[int, UserRecallData]

    def get(self, userid: int) -> UserRecallData | None:
        return self.users.get(userid)


@dataclass(frozen=True)
class InMemoryItemIndex:
    """The catalogue's arrays: searches by ``models.recall_sources`` over the whole catalogue."""

    index: ItemIndex

    @property
    def popularity(self) -> Ranked:
        return self.index.popularity_list

    @property
    def max_popularity(self) -> float:
        return self.index.max_popularity

    def neighbour_lists(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.index.neighbour_lists(itemids)

    def item_lists(self, source: str, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.index.lists_of(source, itemids)

    def search(self, query: CatalogueSearch) -> tuple[Ranked, Ranked]:
        blocked = exclusion_mask(self.index, query.seen)  # once for both searches
        return (term_search(self.index, query.bands, blocked, query.size),
                vector_search(self.index, query.vector, blocked, query.size))


@dataclass(frozen=True)
class InMemoryFeatureClient:
    """The user feature rows of the exports (``user_features``): what Feast materialises from them."""

    rows: dict[int, np.ndarray]

    def user_features(self, userid: int) -> np.ndarray | None:
        return self.rows.get(userid)


@dataclass(frozen=True)
class CatalogueArrays:
    """A published run and recall model loaded into memory: every user's recall data and the catalogue."""

    users: Mapping[int, UserRecallData]
    index: ItemIndex
    assembler: FeatureAssembler

    @classmethod
    def load(cls, exports: Path, recall_model: ModelFolder | None) -> CatalogueArrays:
        # Item features are prefetched once: fetching ~1,700 items per request costs ~400 ms.
        return cls(load_user_recall_data(exports, recall_model), load_item_index(exports, recall_model),
                   FeatureAssembler.from_item_features(load_item_features(exports)))


def in_memory_bundle(arrays: CatalogueArrays, ranking_model: ModelFolder, recall: RecallConfig,
                     features: FeatureClient, versions: dict[str, str],
                     next_item_model: ModelFolder | None = None) -> ServingBundle:
    """Recall from the arrays, the ranking and sequence models under onnxruntime, the user features from
    ``features``."""
    return ServingBundle(
        users=InMemoryUserRecallStore(arrays.users),
        items=InMemoryItemIndex(arrays.index),
        features=features,
        assembler=arrays.assembler,
        ranker=OnnxRanker(ranking_model),
        recall=recall,
        versions=versions,
        next_item=OnnxNextItemScorer(next_item_model) if next_item_model is not None else None,
    )
