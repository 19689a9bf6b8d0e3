"""Model input rows in spec order, from one user's online feature row and the prefetched item features."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
import pandas as pd

from contracts.feature_spec import SPEC, Entity, FeatureSpec


@dataclass(frozen=True)
class FeatureAssembler:
    """Builds model input rows in spec order from one user's feature row and the prefetched item features."""

    user_columns: tuple[str, ...]  # online user features, in the order of ``user_values``
    item_matrix: np.ndarray  # (item_count, len(item columns)) float32, row = itemid
    item_columns: tuple[str, ...]
    spec: FeatureSpec = SPEC

    @classmethod
    def from_item_features(cls, item_features: pd.DataFrame, spec: FeatureSpec = SPEC) -> FeatureAssembler:
        item_columns = tuple(f.name for f in spec.online_item_features)
        size = int(item_features["itemid"].max()) + 1
        matrix = np.zeros((size, len(item_columns)), dtype=np.float32)
        matrix[item_features["itemid"].to_numpy()] = item_features[list(item_columns)].to_numpy(np.float32)
        user_columns = tuple(f.name for f in spec.online_user_features)
        return cls(user_columns, matrix, item_columns, spec)

    @cached_property
    def _layout(self) -> _RowLayout:
        user_position = {name: i for i, name in enumerate(self.user_columns)}
        item_position = {name: i for i, name in enumerate(self.item_columns)}
        user_out, user_in, item_out, item_in = [], [], [], []
        for column, feature in enumerate(self.spec.features):
            if feature.name in ("userid", "itemid"):
                continue
            if feature.entity is Entity.USER:
                user_out.append(column)
                user_in.append(user_position[feature.name])
            else:
                item_out.append(column)
                item_in.append(item_position[feature.name])
        as_index = partial(np.asarray, dtype=np.int64)
        return _RowLayout(self.spec.index_of("userid"), self.spec.index_of("itemid"), as_index(user_out),
                          as_index(user_in), as_index(item_out), as_index(item_in))

    def rows(self, userid: int, user_values: np.ndarray, itemids: np.ndarray) -> np.ndarray:
        """(len(itemids), len(spec)) float32: the user's values repeated, each item's own values."""
        layout = self._layout
        out = np.empty((len(itemids), len(self.spec.names)), dtype=np.float32)
        known = (itemids >= 0) & (itemids < len(self.item_matrix))
        item_values = self.item_matrix[np.where(known, itemids, 0)]
        item_values[~known] = 0.0
        out[:, layout.userid] = userid
        out[:, layout.itemid] = itemids
        out[:, layout.user_out] = np.asarray(user_values, dtype=np.float32)[layout.user_in]
        out[:, layout.item_out] = item_values[:, layout.item_in]
        return out

    def with_items(self, rows: np.ndarray, itemids: np.ndarray) -> np.ndarray:
        """``rows`` (spec order) with their item id and item features replaced by ``itemids``' own: the same
        users at the same moments, other items (the trainer's negatives)."""
        layout = self._layout
        known = (itemids >= 0) & (itemids < len(self.item_matrix))
        item_values = self.item_matrix[np.where(known, itemids, 0)]
        item_values[~known] = 0.0
        out = np.array(rows, dtype=np.float32, copy=True)
        out[:, layout.itemid] = itemids
        out[:, layout.item_out] = item_values[:, layout.item_in]
        return out


@dataclass(frozen=True)
class _RowLayout:
    """Where each model input column comes from: the user's row or the item's (positions, in spec order)."""

    userid: int
    itemid: int
    user_out: np.ndarray
    user_in: np.ndarray
    item_out: np.ndarray
    item_in: np.ndarray
