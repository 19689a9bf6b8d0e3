"""Read the batch's Parquet exports straight into tensors, checked against the feature spec."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from contracts.feature_spec import SPEC, FeatureSpec, check_spec_version
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


def load_samples(path: Path, spec: FeatureSpec = SPEC) -> Samples:
    """One Parquet dataset (a folder of parts) -> tensors, one column at a time (the peak is the float32 matrix
    plus one column, not the Arrow table beside it), in one order whatever the files' (Spark's layout decides
    theirs): by user, timestamp, item, label, so that training with a seed is reproducible."""
    dataset = pq.ParquetDataset(path)

    def column(name: str) -> np.ndarray:
        return dataset.read(columns=[name]).column(name).to_numpy()

    labels = column(spec.label).astype(np.float32)
    timestamps = column(spec.timestamp).astype(np.int64)
    order = np.lexsort((labels, column("itemid"), timestamps, column("userid")))
    features = np.empty((len(order), len(spec.names)), dtype=np.float32)
    for position, name in enumerate(spec.names):
        features[:, position] = column(name)[order]
    return Samples(torch.from_numpy(features), torch.from_numpy(labels[order]), timestamps[order])
