"""Read the batch's Parquet exports straight into tensors, checked against the feature spec."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from contracts.errors import ArtifactError
from contracts.feature_spec import SPEC, FeatureSpec, check_spec_version
from contracts.tables import Export
from models.feature_rows import FeatureAssembler


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


def load_samples(path: Path, spec: FeatureSpec = SPEC) -> Samples:
    """One Parquet dataset (a folder of parts) -> tensors, column by column, no per-row access."""
    table = pq.read_table(path, columns=[*spec.names, spec.label, spec.timestamp])
    features = np.empty((table.num_rows, len(spec.names)), dtype=np.float32)
    for position, name in enumerate(spec.names):
        features[:, position] = table.column(name).to_numpy()
    labels = table.column(spec.label).to_numpy().astype(np.float32)
    timestamps = table.column(spec.timestamp).to_numpy().astype(np.int64)
    # One order whatever the files' (Spark's layout decides theirs): training with a seed is reproducible.
    order = np.lexsort((labels, features[:, spec.index_of("itemid")], timestamps, features[:, spec.index_of("userid")]))
    return Samples(torch.from_numpy(features[order]), torch.from_numpy(labels[order]), timestamps[order])


@dataclass(frozen=True)
class NegativeSamples:
    """The batch's sampled unrated items (label 0), each tied to the train impression it was drawn for."""

    samples: Samples
    source_itemids: np.ndarray  # int64: the impression's item (same user and timestamp)

    def drawn_for(self, rows: Samples) -> np.ndarray:
        """True for the negatives drawn for one of ``rows`` (matched on user, item, timestamp)."""
        wanted = pd.MultiIndex.from_arrays(
            [rows.column("userid").astype(np.int64), rows.column("itemid").astype(np.int64), rows.timestamps])
        mine = pd.MultiIndex.from_arrays(
            [self.samples.column("userid").astype(np.int64), self.source_itemids, self.samples.timestamps])
        return np.asarray(mine.isin(wanted))


NEGATIVE_KEYS = ("userid", "itemid", "timestamp", "source_itemid")


def load_negatives(path: Path, train_set: Samples, assembler: FeatureAssembler,
                   spec: FeatureSpec = SPEC) -> NegativeSamples:
    """The batch's narrow negatives (user, sampled item, timestamp, source item) as label-0 rows: each one
    the train row of its source impression (the user's features at that moment, so nothing from later)
    with the sampled item's id and item features (``FeatureAssembler.with_items``)."""
    table = pq.read_table(path, columns=list(NEGATIVE_KEYS))
    users, items, timestamps, sources = (table.column(name).to_numpy().astype(np.int64) for name in NEGATIVE_KEYS)
    order = np.lexsort((items, sources, timestamps, users))  # one order whatever the files'
    users, items, timestamps, sources = users[order], items[order], timestamps[order], sources[order]
    if len(users) == 0:
        return NegativeSamples(Samples(torch.empty(0, len(spec.names)), torch.empty(0), timestamps), sources)
    train_keys = pd.MultiIndex.from_arrays([train_set.column("userid").astype(np.int64),
                                            train_set.column("itemid").astype(np.int64), train_set.timestamps])
    first_rows = np.flatnonzero(~train_keys.duplicated())  # a repeated impression has the same features
    positions = train_keys[first_rows].get_indexer(pd.MultiIndex.from_arrays([users, sources, timestamps]))
    if (positions < 0).any():
        missing = int((positions < 0).sum())
        raise ArtifactError(f"{path}: {missing} negative(s) name a source impression that is not a train sample "
                            "(the exports are of different runs?): run the batch again")
    source_rows = train_set.features[torch.from_numpy(first_rows[positions])].numpy()
    features = assembler.with_items(source_rows, items)
    return NegativeSamples(Samples(torch.from_numpy(features), torch.zeros(len(users)), timestamps), sources)
