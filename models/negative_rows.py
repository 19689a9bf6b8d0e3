"""The ranker's negatives as the trainer holds them: per negative its source impression's train row and the
sampled movie, assembled into model rows a batch at a time.

At ML-25M's size the train split is ~19 M rows (4.4 GB as float32) and its negatives ~75 M: assembled whole,
the negatives alone would be 17 GB. Held as (source row, sampled item) they are 1.2 GB, and a batch of them
is assembled when the loop asks for it (``FeatureAssembler.with_items``). They are drawn by
``models/negative_draws.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from contracts.errors import ArtifactError
from contracts.feature_spec import SPEC, FeatureSpec
from models.feature_rows import FeatureAssembler
from models.samples import Samples, pack_user_seconds
from models.sorted_keys import find_sorted


@dataclass(frozen=True)
class NegativeRows:
    """Sampled unrated items (label 0): each the train row of its source impression (the user's
    features at that moment, so nothing from later) with the sampled item's id and item features."""

    sources: Samples  # the train rows
    source_rows: np.ndarray  # int32: per negative, the position of its source impression in ``sources``
    itemids: np.ndarray  # int32: the sampled movie
    assembler: FeatureAssembler
    impressions: ImpressionIndex  # of ``sources``: what the source rows were found by

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
        return NegativeRows(self.sources, self.source_rows[mask], self.itemids[mask], self.assembler, self.impressions)

    def joined(self, other: NegativeRows) -> NegativeRows:
        """These negatives and ``other``'s, drawn for the same source rows, as one set."""
        if other.sources is not self.sources:
            raise ValueError("negatives of different source rows cannot be joined")
        return NegativeRows(self.sources, np.concatenate([self.source_rows, other.source_rows]),
                            np.concatenate([self.itemids, other.itemids]), self.assembler, self.impressions)

    def drawn_for(self, selected: np.ndarray) -> np.ndarray:
        """True for the negatives drawn for an impression of which some train row is ``selected`` (a mask over
        ``sources``): matched on (user, item, timestamp), so a repeated impression counts once."""
        chosen = np.zeros(self.impressions.count, dtype=bool)
        chosen[self.impressions.of_row[selected]] = True
        return chosen[self.impressions.of_row[self.source_rows]]

    def assembled(self) -> Samples:
        """Every negative as a row (small data and tests: this is what the loop never holds at scale)."""
        everything = np.arange(len(self))
        return Samples(self.features_at(everything), self.labels_at(everything), self.timestamps)


@dataclass(frozen=True)
class ImpressionIndex:
    """The distinct (user, timestamp, item) impressions among some samples, numbered in that order, without
    a hash table over tens of millions of keys: (user, timestamp) and then (pair, item) are packed into int64."""

    pair_keys: np.ndarray  # sorted distinct user * 2**32 + (timestamp - first timestamp)
    impression_keys: np.ndarray  # sorted distinct pair number * (max item + 1) + item
    first_rows: np.ndarray  # per impression, the first of the samples' rows that is it
    of_row: np.ndarray  # per sample row, its impression's number
    first_timestamp: int
    item_span: int

    @property
    def count(self) -> int:
        return len(self.impression_keys)

    @classmethod
    def of(cls, samples: Samples, spec: FeatureSpec = SPEC) -> ImpressionIndex:
        users, items = samples.column("userid", spec).astype(np.int64), samples.column("itemid", spec).astype(np.int64)
        timestamps = samples.timestamps
        first = int(timestamps.min()) if len(timestamps) else 0
        item_span = int(items.max()) + 1 if len(items) else 1
        pairs = pack_user_seconds(users, timestamps, first)
        if (pairs < 0).any():
            raise ArtifactError("samples with a user id over 2**31 or timestamps spanning over 136 years")
        order = np.lexsort((items, pairs))  # stable: the first row of an impression comes first
        pair_keys, pair_number = np.unique(pairs[order], return_inverse=True)
        keys = pair_number * item_span + items[order]
        if len(pair_keys) and (len(pair_keys) - 1) * item_span + item_span - 1 >= 2**63:
            raise ArtifactError("too many (user, timestamp) pairs times movie ids to pack into int64")
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        of_row = np.empty(len(order), dtype=np.int64)
        of_row[order] = np.cumsum(np.r_[True, keys[1:] != keys[:-1]]) - 1
        return cls(pair_keys, keys[starts], order[starts], of_row, first, item_span)

    def find(self, users: np.ndarray, timestamps: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Per (user, timestamp, item), its impression's number, or -1 where there is none."""
        pairs = pack_user_seconds(users, timestamps, self.first_timestamp)
        pair_number, pair_found = find_sorted(self.pair_keys, pairs)
        number, found = find_sorted(self.impression_keys, pair_number * self.item_span + items)
        return np.where(pair_found & found & (items >= 0) & (items < self.item_span), number, -1)
