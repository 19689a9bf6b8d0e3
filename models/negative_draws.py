"""The ranker's uniform negatives, drawn by the trainer: for each distinct train impression (user, movie,
timestamp), up to ``per_impression`` catalogue movies the user never rated.

Draw ``k`` (1..per_impression) of an impression is a position in the item vocabulary: Spark's
``xxhash64(user, movie, timestamp, k, seed)`` modulo the catalogue's size (``models/spark_hash.py``). The same
impressions give the same negatives on any machine and in any order, and they are the rows the batch drew and
wrote as its ``negative_samples`` table until the trainer drew them itself (at 10M ratings that table was 29 M
rows, ~47 s of the batch's CPU to draw and write, and read back whole here). A draw that repeats an earlier one of
the same impression is dropped, and so is one of a movie the user rated at any time: the hold-out's movies too,
as the batch did, so a movie the user is known to rate is never a negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from contracts.errors import ArtifactError
from contracts.feature_spec import SPEC, FeatureSpec
from contracts.tables import Export
from models.feature_rows import FeatureAssembler
from models.item_vocabulary import UNKNOWN, ItemVocabulary
from models.negative_rows import ImpressionIndex, NegativeRows
from models.samples import Samples
from models.sorted_keys import find_sorted
from models.spark_hash import xxhash64

NEGATIVE_SEED = 17
# Impressions drawn for at once: their draws' hashes and keys are a few arrays of (impressions, per_impression)
# 64-bit values (~32 MB each), where every train impression at once would be GBs at ML-25M's size.
IMPRESSIONS_PER_BLOCK = 1 << 20


@dataclass(frozen=True)
class RatedMovies:
    """Every (user, movie) a user rated, as sorted distinct keys user * 2**32 + the movie's vocabulary position."""

    keys: np.ndarray  # int64, sorted, distinct

    @classmethod
    def of(cls, users: np.ndarray, itemids: np.ndarray, vocabulary: ItemVocabulary) -> RatedMovies:
        """From (user, movie id) pairs, repeats allowed; a movie outside the vocabulary can never be drawn."""
        index = vocabulary.index_of(itemids)
        known = index != UNKNOWN
        return cls(np.unique(_keys(np.asarray(users, dtype=np.int64)[known], index[known] - 1)))

    def contains(self, users: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return find_sorted(self.keys, _keys(users, positions))[1]


def _keys(users: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.asarray(users, dtype=np.int64) << 32 | np.asarray(positions, dtype=np.int64)


def draw_positions(users: np.ndarray, itemids: np.ndarray, timestamps: np.ndarray, rated: RatedMovies,
                   catalogue_size: int, per_impression: int, seed: int = NEGATIVE_SEED) -> np.ndarray:
    """(impressions, per_impression) int64: each impression's draws as vocabulary positions in draw order, -1
    where a draw repeats an earlier one of its impression or is a movie its user rated."""
    drawn = np.stack([xxhash64([(users, "int"), (itemids, "int"), (timestamps, "long"), (draw, "int"), (seed, "int")])
                      % catalogue_size for draw in range(1, per_impression + 1)], axis=1)
    repeated = np.zeros(drawn.shape, dtype=bool)
    for draw in range(1, per_impression):
        repeated[:, draw] = (drawn[:, :draw] == drawn[:, draw:draw + 1]).any(axis=1)
    dropped = repeated | rated.contains(np.broadcast_to(np.asarray(users)[:, None], drawn.shape), drawn)
    return np.where(dropped, -1, drawn)


def draw_negatives(train_set: Samples, rated: RatedMovies, vocabulary: ItemVocabulary, per_impression: int,
                   assembler: FeatureAssembler, spec: FeatureSpec = SPEC, seed: int = NEGATIVE_SEED,
                   impressions_per_block: int = IMPRESSIONS_PER_BLOCK) -> NegativeRows:
    """Each distinct train impression's negatives (a repeated impression would draw the same ones again), tied to
    its first train row, in one order: by impression (user, timestamp, movie), then sampled movie id."""
    if len(train_set) >= 2**31:
        raise ArtifactError(f"{len(train_set)} train rows: over 2**31, the negatives' int32 source rows do not fit")
    impressions = ImpressionIndex.of(train_set, spec)
    first_rows = impressions.first_rows
    users = train_set.column("userid", spec)[first_rows].astype(np.int64)
    itemids = train_set.column("itemid", spec)[first_rows].astype(np.int64)
    timestamps = train_set.timestamps[first_rows]
    catalogue_size = len(vocabulary.itemids)
    numbers, sampled = [], []
    for start in range(0, impressions.count if catalogue_size and per_impression > 0 else 0, impressions_per_block):
        stop = min(start + impressions_per_block, impressions.count)
        positions = draw_positions(users[start:stop], itemids[start:stop], timestamps[start:stop], rated,
                                   catalogue_size, per_impression, seed)
        row, draw = np.nonzero(positions >= 0)
        number, items = row + start, vocabulary.itemids[positions[row, draw]]
        order = np.lexsort((items, number))
        numbers.append(number[order].astype(np.int32))
        sampled.append(items[order].astype(np.int32))
    number = np.concatenate(numbers) if numbers else np.empty(0, dtype=np.int32)
    items = np.concatenate(sampled) if sampled else np.empty(0, dtype=np.int32)
    return NegativeRows(train_set, first_rows.astype(np.int32)[number], items, assembler, impressions)


def rated_in_run(exports: Path, samples: Sequence[Samples], vocabulary: ItemVocabulary,
                 spec: FeatureSpec = SPEC) -> RatedMovies:
    """What the users of a published run rated: the train and test samples given and the online hold-out."""
    holdout = pq.read_table(exports / Export.ONLINE_HOLDOUT, columns=["userid", "itemid"])
    users = [part.column("userid", spec) for part in samples] + [holdout["userid"].to_numpy()]
    itemids = [part.column("itemid", spec) for part in samples] + [holdout["itemid"].to_numpy()]
    return RatedMovies.of(np.concatenate(users).astype(np.int64), np.concatenate(itemids).astype(np.int64),
                          vocabulary)
