"""Every user's recall data held as a few flat arrays, each user's ``UserRecallData`` built when it is asked for.

At ML-25M's size (162K users) one object per user with its own small arrays and tuples took ~1 GiB in each served
worker; the same data as ragged int32 arrays (the tables' own types) takes ~0.4 GiB, and building one user's record
from them costs a few microseconds, once per request. Read-only: a reader that changes a user builds a new record
(``dataclasses.replace``), as with the dict this replaces.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.recall_sources import ItemLists, Ranked, UserRecallData
from models.sorted_keys import find_sorted


@dataclass(frozen=True)
class RaggedRows:
    """Row r's entries are ``values[offsets[r]:offsets[r + 1]]``."""

    offsets: np.ndarray  # int64 (rows + 1,)
    values: np.ndarray

    @classmethod
    def of_lists(cls, lists: pa.ChunkedArray, dtype: type) -> RaggedRows:
        """An Arrow list column of numbers (null: no entries), in its row order."""
        lists = lists.combine_chunks()
        values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(dtype)
        return cls(list_offsets(lists), read_only(values))

    def row(self, row: int) -> np.ndarray:
        return self.values[self.offsets[row]:self.offsets[row + 1]]


def list_offsets(lists: pa.Array) -> np.ndarray:
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy().astype(np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def rows_in(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each of ``wanted`` its row in ``keys`` (unique), or -1 where it has none."""
    order = np.argsort(keys, kind="stable")
    position, found = find_sorted(keys[order], wanted)
    return np.where(found, order[position] if len(keys) else -1, -1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class UserRecallTable(Mapping[int, UserRecallData]):
    """userid -> ``UserRecallData``, iterated in the user filter's row order."""

    userids: np.ndarray  # int64, one row per user
    lookup: tuple[np.ndarray, np.ndarray]  # (userids ascending, their rows): a userid's row by binary search
    seen: RaggedRows  # int32 itemids per row
    recent: RaggedRows  # int32 itemids per row, newest first
    term_rows: np.ndarray  # int64 per row: its row of ``terms``, -1 without terms
    terms: RaggedRows  # int32 (genre id, impressions, clicks) triples, flattened
    vector_rows: np.ndarray  # int64 per row: its row of ``vectors``, -1 without a vector
    vectors: np.ndarray | None  # float32 (users with a vector, d)
    ease: ItemLists | None  # indexed by userid: int32 itemids, float32 scores

    @classmethod
    def from_arrow(cls, filters: pa.Table, user_terms: pa.Table, user_vectors: pa.Table | None,
                   ease: ItemLists | None) -> UserRecallTable:
        """``filters`` (userid, seen_itemids, recent_itemids), ``user_terms`` (userid, terms: list of (genre_id,
        impressions, clicks)), the recall model's ``user_vectors`` (userid, vector) and the users' EASE lists."""
        userids = filters["userid"].to_numpy().astype(np.int64)
        term_lists = user_terms["terms"].combine_chunks()
        triples = pc.list_flatten(term_lists)
        terms_flat = np.stack([triples.field(name).to_numpy(zero_copy_only=False).astype(np.int32)
                               for name in ("genre_id", "impressions", "clicks")], axis=1).ravel()
        order = np.argsort(userids, kind="stable")
        vectors, vector_rows = None, np.full(len(userids), -1, dtype=np.int64)
        if user_vectors is not None and user_vectors.num_rows:
            flat = pc.list_flatten(user_vectors["vector"].combine_chunks()).to_numpy(zero_copy_only=False)
            vectors = read_only(flat.astype(np.float32).reshape(user_vectors.num_rows, -1))
            vector_rows = rows_in(user_vectors["userid"].to_numpy().astype(np.int64), userids)
        return cls(read_only(userids), (userids[order], order),
                   RaggedRows.of_lists(filters["seen_itemids"], np.int32),
                   RaggedRows.of_lists(filters["recent_itemids"], np.int32),
                   rows_in(user_terms["userid"].to_numpy().astype(np.int64), userids),
                   RaggedRows(list_offsets(term_lists) * 3, read_only(terms_flat)), vector_rows, vectors, ease)

    def _row(self, userid: object) -> int:
        if not isinstance(userid, int | np.integer):
            return -1
        keys, rows = self.lookup
        position, found = find_sorted(keys, userid)
        return int(rows[position]) if found else -1

    def __getitem__(self, userid: int) -> UserRecallData:
        row = self._row(userid)
        if row < 0:
            raise KeyError(userid)
        return self.record(row)

    def __contains__(self, userid: object) -> bool:
        return self._row(userid) >= 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.userids.tolist())

    def __len__(self) -> int:
        return len(self.userids)

    def record(self, row: int) -> UserRecallData:
        """The user of ``row`` as the request path reads them: itemids as int64, terms as tuples."""
        userid = int(self.userids[row])
        term_row = int(self.term_rows[row])
        terms = [] if term_row < 0 else [tuple(triple) for triple in self.terms.row(term_row).reshape(-1, 3).tolist()]
        vector_row = int(self.vector_rows[row])
        vector = None if vector_row < 0 or self.vectors is None else self.vectors[vector_row]
        ease = None
        if self.ease is not None and userid < len(self.ease.offsets) - 1:
            start, end = int(self.ease.offsets[userid]), int(self.ease.offsets[userid + 1])
            if end > start:
                ease = Ranked(self.ease.itemids[start:end], self.ease.scores[start:end])
        return UserRecallData(userid, self.seen.row(row).astype(np.int64), self.recent.row(row).astype(np.int64),
                              terms, vector, ease)
