"""The batch's samples as the trainer holds them: assembled from the exports into tensors, checked against the
feature spec."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from contracts.errors import ArtifactError
from contracts.feature_spec import SPEC, Entity, FeatureGroup, FeatureSpec, check_spec_version
from contracts.tables import Export


@dataclass(frozen=True)
class FeatureMetadata:
    spec_version: str
    columns: tuple[str, ...]
    cardinalities: dict[str, int]  # sparse feature -> number of indices
    run_id: str

    @classmethod
    def read(cls, exports_dir: Path, spec: FeatureSpec = SPEC) -> FeatureMetadata:
        raw = json.loads((exports_dir / Export.METADATA_FILE).read_text())
        check_spec_version(raw["spec_version"], f"the batch output in {exports_dir}", spec)
        cardinalities = {f["name"]: int(f["cardinality"]) for f in raw["features"] if f["cardinality"]}
        return cls(raw["spec_version"], tuple(raw["columns"]), cardinalities, raw["run_id"])


@dataclass(frozen=True)
class Samples:
    features: torch.Tensor  # float32 (rows, 59) in spec order
    labels: torch.Tensor  # float32 (rows,)
    timestamps: np.ndarray | None = None  # int64 (rows,) unix seconds, where the source has them

    def __len__(self) -> int:
        return self.labels.shape[0]

    def features_at(self, index: np.ndarray) -> torch.Tensor:
        return self.features[torch.from_numpy(np.asarray(index, dtype=np.int64))]

    def labels_at(self, index: np.ndarray) -> torch.Tensor:
        return self.labels[torch.from_numpy(np.asarray(index, dtype=np.int64))]

    def column(self, name: str, spec: FeatureSpec = SPEC) -> np.ndarray:
        return self.features[:, spec.index_of(name)].numpy()

    def subset(self, mask: np.ndarray) -> Samples:
        index = torch.from_numpy(np.flatnonzero(mask))
        timestamps = None if self.timestamps is None else self.timestamps[mask]
        return Samples(self.features[index], self.labels[index], timestamps)

    def concat(self, other: Samples) -> Samples:
        timestamps = (None if self.timestamps is None or other.timestamps is None
                      else np.concatenate([self.timestamps, other.timestamps]))
        return Samples(torch.cat([self.features, other.features]), torch.cat([self.labels, other.labels]),
                       timestamps)


def load_samples(exports: Path, export: str, spec: FeatureSpec = SPEC) -> Samples:
    """One split's samples (``samples_train`` / ``samples_test``: user, item, timestamp, label per impression)
    assembled into the spec's features, in one order whatever the files' (Spark's layout decides theirs): by
    user, timestamp, item, label, so that training with a seed is reproducible.

    The batch writes no wide sample rows: a sample's features are its user's demographics
    (``user_features``), its movie's (``item_features``) and its user's 36 counters as of the latest second
    strictly before it (``user_feature_history``; an impression with no earlier one has the standardised
    counters of an empty past, -mean/std). The values are the ones the batch standardised, bit for bit.
    Filled one column at a time: the peak is the float32 matrix plus a column or two.
    """
    dataset = pq.ParquetDataset(exports / export)

    def column(name: str) -> np.ndarray:
        return dataset.read(columns=[name]).column(name).to_numpy()

    labels = column(spec.label).astype(np.float32)
    timestamps = column(spec.timestamp).astype(np.int64)
    users = column("userid").astype(np.int64)
    items = column("itemid").astype(np.int64)
    order = np.lexsort((labels, items, timestamps, users))
    users, items, timestamps, labels = users[order], items[order], timestamps[order], labels[order]
    features = np.empty((len(order), len(spec.names)), dtype=np.float32)
    features[:, spec.index_of("userid")] = users
    features[:, spec.index_of("itemid")] = items
    _fill_by_key(features, users, pq.read_table(exports / Export.USER_FEATURES), "userid",
                 [f.name for f in spec.features if f.entity is Entity.USER and f.group is FeatureGroup.SPARSE_SIDE],
                 spec)
    _fill_by_key(features, items, pq.read_table(exports / Export.ITEM_FEATURES), "itemid",
                 [f.name for f in spec.online_item_features], spec)
    _fill_counters_as_of(features, users, timestamps, exports, spec)
    return Samples(torch.from_numpy(features), torch.from_numpy(labels), timestamps)


def online_user_rows_as_of(exports: Path, users: np.ndarray, timestamps: np.ndarray,
                           spec: FeatureSpec = SPEC) -> np.ndarray:
    """Each user's online feature row (``spec.online_user_features`` order) as of a time: demographics and
    the 36 counters as of the latest second strictly before it, as a sample at that time has them."""
    users, timestamps = np.asarray(users, dtype=np.int64), np.asarray(timestamps, dtype=np.int64)
    features = np.zeros((len(users), len(spec.names)), dtype=np.float32)
    _fill_by_key(features, users, pq.read_table(exports / Export.USER_FEATURES), "userid",
                 [f.name for f in spec.features if f.entity is Entity.USER and f.group is FeatureGroup.SPARSE_SIDE],
                 spec)
    _fill_counters_as_of(features, users, timestamps, exports, spec)
    return features[:, [spec.index_of(f.name) for f in spec.online_user_features]]


def _fill_by_key(features: np.ndarray, keys: np.ndarray, table: pa.Table, key: str, columns: Sequence[str],
                 spec: FeatureSpec) -> None:
    """Each row's values of ``columns`` from the table's row of its key (0 where the table has none)."""
    table_keys = table.column(key).to_numpy().astype(np.int64)
    size = int(max(table_keys.max(initial=0), keys.max(initial=0))) + 1
    position = np.full(size, -1, dtype=np.int64)
    position[table_keys] = np.arange(len(table_keys))
    found = position[keys]
    for name in columns:
        values = table.column(name).to_numpy().astype(np.float32)
        features[:, spec.index_of(name)] = np.where(found >= 0, values[np.maximum(found, 0)], np.float32(0))


def _fill_counters_as_of(features: np.ndarray, users: np.ndarray, timestamps: np.ndarray, exports: Path,
                         spec: FeatureSpec) -> None:
    """The 36 dense counters: the user's history row of the latest second strictly before each timestamp."""
    history = pq.ParquetDataset(exports / Export.USER_FEATURE_HISTORY)
    keys = history.read(columns=["userid", "event_timestamp"])
    history_users = keys.column("userid").to_numpy().astype(np.int64)
    if len(users) and not len(history_users):
        raise ArtifactError(f"{exports / Export.USER_FEATURE_HISTORY} has no rows for {len(users)} samples "
                            "(the exports are of different runs?): run the batch again")
    seconds = keys.column("event_timestamp").cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_numpy()
    first = int(min(int(values.min()) for values in (seconds, timestamps) if len(values))) if len(seconds) else 0
    packed = pack_user_seconds_or_raise(history_users, seconds, first)
    order = np.argsort(packed, kind="stable")
    packed = packed[order]
    # The last history key below (user, t): the same user's latest second before t, if that user has one.
    before = np.searchsorted(packed, pack_user_seconds_or_raise(users, timestamps, first), side="left") - 1
    found = (before >= 0) & (history_users[order[np.maximum(before, 0)]] == users)
    source = np.where(found, order[np.maximum(before, 0)], 0)
    empty_past = _empty_past(exports)
    for feature in spec.dense:
        values = history.read(columns=[feature.name]).column(feature.name).to_numpy().astype(np.float32)
        features[:, spec.index_of(feature.name)] = np.where(found, values[source], empty_past[feature.name])


def pack_user_seconds(users: np.ndarray, seconds: np.ndarray, first: int) -> np.ndarray:
    """user * 2**32 + seconds since ``first``: ordered as (user, time) pairs; -1 where that does not fit (a
    user id over 2**31, a time before ``first`` or 136 years after it), which no packed pair is."""
    offsets = seconds - first
    fits = (offsets >= 0) & (offsets < 2**32) & (users >= 0) & (users < 2**31)
    return np.where(fits, users * 2**32 + np.where(fits, offsets, 0), -1)


def pack_user_seconds_or_raise(users: np.ndarray, seconds: np.ndarray, first: int) -> np.ndarray:
    packed = pack_user_seconds(users, seconds, first)
    if (packed < 0).any():
        raise ArtifactError("samples with a user id over 2**31 or timestamps spanning over 136 years")
    return packed


def _empty_past(exports: Path) -> dict[str, np.float32]:
    """The standardised value of a zero counter, per dense feature: (0 - mean) / std, as the batch computes it."""
    raw = json.loads((exports / Export.METADATA_FILE).read_text())
    return {f["name"]: np.float32((0.0 - f["mean"]) / f["std"]) for f in raw["features"] if "mean" in f}
