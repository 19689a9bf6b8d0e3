"""What every item list table shares: its shape, the order of a list, the two fits, and how the driver cuts the
lists it computes.

A list table is (owner, neighbours array<struct<itemid, score>>), best first, ties by the smaller itemid: the
owner is a movie (``item_neighbours``, ``item_ease``, ``item_successors``) or a user (``user_ease``).

The item models are fitted twice, on everything offline (what the service reads) and without each user's
validation impressions (what the validation choices are made on, ``split.mark_validation``). Where both come
from the same rows, a row says which fits count it, as bits of ``fits``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

SERVED = 1  # fitted on every offline impression
VALIDATION = 2  # fitted without each user's validation impressions
FITS: tuple[int, ...] = (SERVED, VALIDATION)


# One entry of a list: what every list table and every reader of one agree on.
LIST_ENTRY = pa.struct([("itemid", pa.int32()), ("score", pa.float32())])


def lists_table(owner: str, blocks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pa.Table:
    """(owner, neighbours) from blocks of (owners, neighbours, scores) the driver computed, each block's entries
    already in list order (owners ascending, each owner's best first, cut to its length), the blocks in owner order.

    The lists are built here, in Arrow, and committed as they are (``lake.write_arrow_table``): grouping flat rows
    into lists in Spark (a window over every entry, then a sort of each list) took ~120 s of the two cores at 10M
    ratings for the EASE tables alone. Scores are stored as float32, the tables' type; the order is the one the
    caller computed."""
    def joined(position: int, dtype: type) -> np.ndarray:
        # Each part in the table's type first: the joined lists of ``user_ease`` at 25M ratings (32 M entries) take
        # 390 MB so, 650 MB as int64 ids.
        parts = [block[position].astype(dtype, copy=False) for block in blocks]
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    owners, neighbours, scores = joined(0, np.int32), joined(1, np.int32), joined(2, np.float32)
    if len(owners) >= 1 << 31:  # Arrow's list offsets are int32
        raise ValueError(f"{len(owners)} list entries: more than one list table holds; keep fewer per {owner}")
    if np.any(owners[1:] < owners[:-1]):
        raise ValueError(f"{owner} lists out of order: each block's entries must be grouped by ascending {owner}")
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else np.empty(0, dtype=np.int64)
    entries = pa.StructArray.from_arrays([pa.array(neighbours), pa.array(scores)], fields=list(LIST_ENTRY))
    offsets = pa.array(np.r_[starts, len(owners)].astype(np.int32))
    return pa.table({owner: pa.array(owners[starts]),
                     "neighbours": pa.ListArray.from_arrays(offsets, entries)})


# Entries of one block of rows held dense while its lists are cut: blocks are sized to keep them near this (32 MB
# of float64).
BLOCK_ENTRIES = 1 << 22


def rows_per_block(columns: int) -> int:
    return max(1, BLOCK_ENTRIES // max(columns, 1))


def best_of_rows(owner: np.ndarray, other: np.ndarray, score: np.ndarray, start: int, stop: int,
                 per_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries (owner row, other column, score) of rows ``start..stop`` of a sparse matrix, in any order ->
    each row's ``per_row`` best, best first, ties by the smaller column (columns are in ascending id order)."""
    owner, other, score = at_or_above_row_cut(owner, other, score, start, stop, per_row)
    order = np.lexsort((other, -score, owner))
    owner, other, score = owner[order], other[order], score[order]
    listed = np.bincount(owner - start, minlength=stop - start)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(listed) - listed, listed)
    kept = rank < per_row
    return owner[kept], other[kept], score[kept]


def at_or_above_row_cut(owner: np.ndarray, other: np.ndarray, score: np.ndarray, start: int, stop: int,
                        per_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries that can make their row's list: scores at or above a little under the row's ``per_row``-th
    largest (ties at the cut are kept, so the exact order decides them).

    The cut comes from one sort of row * span + score, every row's scores side by side in one float64 key:
    NumPy's vectorised sort of one array, where ordering every entry by three keys (``np.lexsort``) or sorting
    every cell of the rows held dense took 36 and 54 s of CPU for one fit at 25M ratings (62K movies, ~4% of the
    cells hold an entry). The key rounds each score to its row offset's precision, so the cut is lowered by a
    few units of that: a few more entries kept, never one too few."""
    row = owner - start
    listed = np.bincount(row, minlength=stop - start)
    if not len(score) or per_row <= 0 or listed.max() <= per_row:
        return owner, other, score
    # In float64 whatever the scores' type: float32's own rounding of score - low would exceed the slack below.
    exact = score.astype(np.float64, copy=False)
    low = exact.min()
    span = 2 * (exact.max() - low) + 1  # > every score's distance from the lowest: rows never overlap
    offsets = np.arange(stop - start) * span
    keys = np.sort(offsets[row] + (exact - low))
    full = listed > per_row
    cut = np.full(stop - start, -np.inf)
    cut[full] = keys[np.cumsum(listed)[full] - per_row] - offsets[full] + low
    slack = 4 * np.spacing(offsets[-1] + span)  # the key's rounding, with room
    kept = exact >= cut[row] - slack
    return owner[kept], other[kept], score[kept]
