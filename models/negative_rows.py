"""The ranker's negatives as the trainer holds them: per negative its source impression's train row and the
sampled movie, assembled into model rows a batch at a time.

At ML-25M's size the train split is ~19 M rows (4.4 GB as float32) and its negatives ~75 M: assembled whole,
the negatives alone would be 17 GB. Held as (source row, sampled item) they are 1.2 GB, and a batch of them
is assembled when the loop asks for it (``FeatureAssembler.with_items``): the same values the batch would
have written as wide rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from contracts.errors import ArtifactError
from contracts.feature_spec import SPEC, FeatureSpec
from models.feature_rows import FeatureAssembler
from models.samples import Samples


@dataclass(frozen=True)
class NegativeRows:
    """The batch's sampled unrated items (label 0): each the train row of its source impression (the user's
    features at that moment, so nothing from later) with the sampled item's id and item features."""

    sources: Samples  # the train rows
    source_rows: np.ndarray  # int64: per negative, the position of its source impression in ``sources``
    itemids: np.ndarray  # int64: the sampled movie
    assembler: FeatureAssembler

    def __len__(self) -> int:
        return len(self.source_rows)

    def features_at(self, index: np.ndarray) -> torch.Tensor:
        rows = self.sources.features_at(self.source_rows[index]).numpy()
        return torch.from_numpy(self.assembler.with_items(rows, self.itemids[index]))

    def labels_at(self, index: np.ndarray) -> torch.Tensor:
        return torch.zeros(len(index))

    @property
    def timestamps(self) -> np.ndarray:
        return self.sources.timestamps[self.source_rows]

    def subset(self, mask: np.ndarray) -> NegativeRows:
        return NegativeRows(self.sources, self.source_rows[mask], self.itemids[mask], self.assembler)

    def drawn_for(self, selected: np.ndarray, spec: FeatureSpec = SPEC) -> np.ndarray:
        """True for the negatives drawn for an impression of which some train row is ``selected`` (a mask over
        ``sources``): matched on (user, item, timestamp), so a repeated impression counts once."""
        keys = pd.MultiIndex.from_arrays([self.sources.column("userid", spec).astype(np.int64),
                                          self.sources.column("itemid", spec).astype(np.int64),
                                          self.sources.timestamps])
        return np.asarray(keys.isin(keys[selected]))[self.source_rows]

    def assembled(self) -> Samples:
        """Every negative as a row (small data and tests: this is what the loop never holds at scale)."""
        everything = np.arange(len(self))
        return Samples(self.features_at(everything), self.labels_at(everything), self.timestamps)


NEGATIVE_KEYS = ("userid", "itemid", "timestamp", "source_itemid")


def load_negatives(path: Path, train_set: Samples, assembler: FeatureAssembler,
                   spec: FeatureSpec = SPEC) -> NegativeRows:
    """The batch's narrow negatives (user, sampled item, timestamp, source item), each tied to the train row
    of its source impression (the first, where an impression repeats: the rows are equal)."""
    table = pq.read_table(path, columns=list(NEGATIVE_KEYS))
    users, items, timestamps, sources = (table.column(name).to_numpy().astype(np.int64) for name in NEGATIVE_KEYS)
    order = np.lexsort((items, sources, timestamps, users))  # one order whatever the files'
    users, items, timestamps, sources = users[order], items[order], timestamps[order], sources[order]
    if len(users) == 0:
        return NegativeRows(train_set, np.empty(0, dtype=np.int64), items, assembler)
    train_keys = pd.MultiIndex.from_arrays([train_set.column("userid").astype(np.int64),
                                            train_set.column("itemid").astype(np.int64), train_set.timestamps])
    first_rows = np.flatnonzero(~train_keys.duplicated())  # a repeated impression has the same features
    positions = train_keys[first_rows].get_indexer(pd.MultiIndex.from_arrays([users, sources, timestamps]))
    if (positions < 0).any():
        missing = int((positions < 0).sum())
        raise ArtifactError(f"{path}: {missing} negative(s) name a source impression that is not a train sample "
                            "(the exports are of different runs?): run the batch again")
    return NegativeRows(train_set, first_rows[positions], items, assembler)
