"""Item co-occurrence: the users' offline timelines -> each movie's top neighbours by cosine similarity, in two fits
(``item_models.py`` writes them, from the timelines it collects once for every item model).

Over each user's latest ``cooccurrence_history`` offline impressions (train + test; the hold-out is
never read), two movies co-occur once per user who has both. With n_i the users having movie i and
c_ij the users having both, similarity(i, j) = c_ij / sqrt(n_i * n_j) (cosine of the binary
user-item columns). Each movie keeps its ``neighbours_per_item`` most similar movies (ties broken by
the smaller itemid) in ``item_neighbours``: (itemid, neighbours array<struct<itemid, score>>).
The per-user cap bounds the pairs a heavy user adds (n^2) and favours recent taste.

``validation_item_neighbours`` is the same over each user's latest ``cooccurrence_history`` impressions before
their validation impressions (``split.mark_validation``). The driver numbers each timeline from its end to find
both windows (``window_fits``), counts the pairs of each window as a sparse Gram matrix and keeps each movie's
best neighbours (``cosine_lists``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa
from scipy import sparse

from spark_jobs.id_codes import id_codes
from spark_jobs.item_lists import FITS, SERVED, VALIDATION, best_of_rows, lists_table, rows_per_block
from spark_jobs.row_blocks import by_row_blocks
from spark_jobs.timelines import Timelines

log = logging.getLogger(__name__)


def window_fits(timelines: Timelines, history: int) -> np.ndarray:
    """Per impression, the fits whose window holds it, as bits: SERVED where it is among its user's latest
    ``history`` offline impressions, VALIDATION where it is among their latest ``history`` before their validation
    impressions (which end the timeline)."""
    recency = timelines.recency()
    # The validation impressions are the newest ``held``: the others' recency before them is recency - held.
    before_validation = recency - timelines.held_per_impression()
    return (np.where(recency <= history, SERVED, 0)
            | np.where(~timelines.validation & (before_validation <= history), VALIDATION, 0))


def neighbour_lists(timelines: Timelines, history: int, per_item: int) -> dict[int, pa.Table]:
    """Per fit, (itemid, neighbours) by the rule in the module docstring.

    Counted on the driver: the pairs' counts are the windowed history's Gram matrix, a sparse matrix product
    (C code, by blocks of movies on a few threads), where Spark's self-join hashed every pair a user adds (at 10M
    ratings ~87 M pair rows, aggregated with spills, then ~77 M rows sorted for the top lists: ~270 s of CPU)."""
    started = time.monotonic()
    fits = window_fits(timelines, history)
    lists = {fit: cosine_lists(timelines.users[in_fit], timelines.items[in_fit], per_item)
             for fit in FITS for in_fit in [fits & fit != 0]}
    log.info("co-occurrence: %d windowed impressions counted in %.1f s", int((fits != 0).sum()),
             time.monotonic() - started)
    return lists


def cosine_lists(users: np.ndarray, items: np.ndarray, per_item: int) -> pa.Table:
    """(itemid, neighbours) from (user, movie) pairs, a repeated pair counted once: each movie's ``per_item`` most
    similar movies by c_ij / sqrt(n_i * n_j), best first, ties by the smaller id; movies sharing no user are not
    listed."""
    itemids, column = id_codes(items)
    userids, row = id_codes(users)
    history = sparse.csr_matrix((np.ones(len(row), dtype=np.int32), (row, column)),
                                shape=(len(userids), len(itemids)))  # repeated pairs summed: counted once below
    history.data[:] = 1
    by_item = history.T.tocsr()
    users_per_item = np.diff(by_item.indptr).astype(np.int64)

    def block_lists(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        both = by_item[start:stop] @ history  # c_ij for the block's movies i against every movie j
        owner = np.repeat(np.arange(start, stop), np.diff(both.indptr))
        other, count = both.indices, both.data
        off_diagonal = owner != other
        owner, other, count = owner[off_diagonal], other[off_diagonal], count[off_diagonal]
        # The same IEEE operations as ``both / sqrt(n_i * n_j)`` on a long product: the same scores to the last bit.
        score = count.astype(np.float64) / np.sqrt((users_per_item[owner] * users_per_item[other]).astype(np.float64))
        owner, other, score = best_of_rows(owner, other, score, start, stop, per_item)
        return itemids[owner], itemids[other], score

    return lists_table("itemid", by_row_blocks(len(itemids), rows_per_block(len(itemids)), block_lists))
