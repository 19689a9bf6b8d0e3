"""The run's item vocabulary: each catalogue movie id's dense index, what the models' item embeddings are
indexed by.

MovieLens movie ids are sparse (ML-25M: ~62K movies with ids up to ~209K, ML-latest ~9K up to ~194K), so
an embedding table indexed by the id itself would be mostly rows no movie has. The batch numbers the
catalogue's ids 1..N in id order (the ``item_vocabulary`` table, exported with the run); index 0 is "unknown".
A model keeps the vocabulary it was trained with (``item_vocabulary.parquet`` in its folder) and maps ids to
indices inside itself, so everything outside the models, the service's responses included, speaks movie ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.errors import ArtifactError
from models.sorted_keys import find_sorted

UNKNOWN = 0


@dataclass(frozen=True)
class ItemVocabulary:
    itemids: np.ndarray  # int64, sorted, unique: the movie id of index 1, 2, ..., N

    def __post_init__(self) -> None:
        ids = np.asarray(self.itemids, dtype=np.int64)
        if len(ids) and (ids[0] < 1 or (np.diff(ids) <= 0).any()):
            raise ArtifactError("an item vocabulary needs sorted, unique, positive movie ids")
        object.__setattr__(self, "itemids", ids)

    @property
    def size(self) -> int:
        """Number of indices, 0 = unknown included: an item embedding's row count."""
        return len(self.itemids) + 1

    @property
    def max_itemid(self) -> int:
        return int(self.itemids[-1]) if len(self.itemids) else 0

    def index_of(self, itemids: np.ndarray) -> np.ndarray:
        """int64 indices of ``itemids``; an id outside the vocabulary gets 0 (unknown)."""
        ids = np.asarray(itemids, dtype=np.int64)
        position, found = find_sorted(self.itemids, ids)
        return np.where(found, position + 1, UNKNOWN)

    def itemid_of(self, indices: np.ndarray) -> np.ndarray:
        """Movie ids of indices 1..N."""
        return self.itemids[np.asarray(indices, dtype=np.int64) - 1]

    def lookup_table(self) -> np.ndarray:
        """(max id + 1,) int64: entry ``id`` is that movie's index, 0 for an id no catalogue movie has.

        A gather in this table is how a model maps ids to indices in one op (ONNX's Gather); 1.7 MB at ML-25M.
        """
        table = np.zeros(self.max_itemid + 1, dtype=np.int64)
        table[self.itemids] = np.arange(1, len(self.itemids) + 1)
        return table

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, what: str) -> ItemVocabulary:
        """From the batch's table (itemid, item_index), checking that the indices are 1..N in id order."""
        ordered = frame.sort_values("item_index")
        indices = ordered["item_index"].to_numpy()
        if not np.array_equal(indices, np.arange(1, len(ordered) + 1)):
            raise ArtifactError(f"{what}: item_index is not 1..N (the vocabulary is broken): run the batch again")
        return cls(ordered["itemid"].to_numpy())

    @classmethod
    def read(cls, path: Path) -> ItemVocabulary:
        if not path.exists():
            raise ArtifactError(f"{path}: no item vocabulary (written by a batch older than this code?): "
                                "run the batch again")
        return cls.from_frame(pd.read_parquet(path, columns=["itemid", "item_index"]), str(path))

    def write(self, path: Path) -> None:
        pd.DataFrame({"itemid": self.itemids, "item_index": np.arange(1, self.size, dtype=np.int64)}).to_parquet(
            path, index=False)
