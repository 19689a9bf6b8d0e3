"""Item-to-item models over the offline histories, fitted twice: on everything offline (what is served) and
without each user's last ``validation_size`` offline impressions (what the validation choices are made on).

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/item_models.py --output DIR

- ``item_ease``: EASE (Steck 2019), B = I - P diagMat(1 / diag(P)), P = (X'X + lambda I)^-1, diag(B) = 0,
  over the ``ease_max_items`` most-rated movies. X'X is the co-occurrence count of every pair of movies over
  whole histories. The driver forms X'X as a sparse product (the same n^2 pairs per user as a self-join,
  without shuffling them: a heavy user's thousands of ratings would otherwise become millions of shuffled rows)
  and inverts it. A movie beyond the cap is neither a seed nor a candidate of this source. Each movie keeps its
  ``ease_per_item`` weights largest in size (negative ones too): a user's score for a movie is the sum of its
  weights from the movies they saw, EASE's own score where nothing was cut.
- ``user_ease``: each user's ``ease_per_user`` best EASE scores, movies they saw excluded: what the ``ease``
  source serves (a heavy user's sum runs over hundreds of movies' weights, too many per request).
- ``item_successors``: the movies a user rated after each movie, within the next ``successor_window``
  impressions of their timeline, weighted 1 / distance; a movie's weights divided by (their total + 1),
  its ``successors_per_item`` largest kept. A sequence-aware source: what follows the latest movies.
- ``validation_holdout``: each user's last ``validation_size`` offline impressions (users with at least
  ``validation_min_history`` offline impressions before them), shaped as ``online_holdout``.
- ``item_neighbours``: co-occurrence over each user's latest ``cooccurrence_history`` impressions
  (``spark_jobs/cooccurrence.py``).
- ``validation_user_ease``, ``validation_item_successors``, ``validation_item_neighbours``: the item models fitted
  without those impressions, so a choice made on validation never sees its targets; the users' lists only for the
  users the choices replay (``contracts.validation_sample``).

The driver reads each user's timeline once (``timelines.Timelines``, from the impressions' Delta files), marks the
validation impressions in it, and fits every model twice from it: EASE's and co-occurrence's Gram matrices and the
successors' weights are sparse products and sums in SciPy, by blocks of movies on a few threads (the validation EASE
fit's Gram matrix from the served one's, ``gram_of_part``). It commits every
table of this step itself (``lake.write_arrow_table``): the step runs no Spark job.

Every list has the shape of ``item_neighbours``: (itemid, neighbours array<struct<itemid, score>>); the user
lists (userid, neighbours ...).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from scipy import sparse
from scipy.linalg import lapack

from contracts.settings import BatchSettings
from contracts.tables import Table
from contracts.validation_sample import validation_sample
from spark_jobs.cooccurrence import neighbour_lists
from spark_jobs.driver_memory import return_freed_memory
from spark_jobs.id_codes import id_codes
from spark_jobs.item_lists import (
    SERVED,
    VALIDATION,
    best_of_rows,
    lists_table,
    rows_per_block,
)
from spark_jobs.lake import Written, read_arrow_table, write_arrow_table
from spark_jobs.row_blocks import by_row_blocks
from spark_jobs.runtime import job_main
from spark_jobs.split import HOLDOUT_COLUMNS, Split
from spark_jobs.timelines import Timelines

log = logging.getLogger(__name__)


# Pairs (a movie and a successor at one distance) counted at once: the summed weights of one block of source
# movies are held, not every movie's. At 25M ratings every movie's at once peaked at ~3 GB on the driver.
PAIRS_PER_BLOCK = 40_000_000


def successor_lists(timelines: Timelines, window: int, per_item: int,
                    pairs_per_block: int = PAIRS_PER_BLOCK) -> dict[int, pa.Table]:
    """Per fit, (itemid, neighbours) by the rule in the module docstring. The validation impressions end each
    user's timeline, so a pair counts for VALIDATION where its successor is not one.

    On the driver: the (movie, successor) weights are a sparse matrix summed over the distances (Spark's window
    made ~94 M pair rows at 10M ratings and aggregated them: ~300 s of CPU), by blocks of source movies."""
    users, validation = timelines.users, timelines.validation
    itemids, column = id_codes(timelines.items)
    column = column.astype(np.int32 if len(itemids) < 1 << 31 else np.int64)  # half the memory for each pair
    # 1 / distance in units of 1 / lcm(1..window): whole numbers, so the sums are exact in any order.
    unit = math.lcm(*range(1, window + 1))
    lists: dict[int, list[pa.Table]] = {VALIDATION: [], SERVED: []}
    for low, high in movie_blocks(np.bincount(column, minlength=len(itemids)) * window, pairs_per_block):
        shape = (high - low, len(itemids))
        in_block = (column >= low) & (column < high)
        # The VALIDATION fit counts the pairs whose successor is not held for validation; SERVED adds those that
        # are (few: the end of each timeline), so every pair is counted into one matrix only.
        before_validation, into_validation = RunningSum(shape), RunningSum(shape)
        for distance in range(1, window + 1):
            starts = np.flatnonzero(in_block[:-distance] & (users[:-distance] == users[distance:]))
            source, successor = column[starts] - low, column[starts + distance]
            held = validation[starts + distance]
            for pairs, picked in ((before_validation, ~held), (into_validation, held)):
                pairs.add(sparse.csr_matrix(
                    (np.full(int(picked.sum()), unit // distance, dtype=np.int64),
                     (source[picked], successor[picked])), shape=shape))  # repeated pairs summed
        weights = before_validation.total()
        lists[VALIDATION].append(divided_by_totals(weights, itemids[low:high], itemids, unit, per_item))
        weights = weights + into_validation.total()
        lists[SERVED].append(divided_by_totals(weights, itemids[low:high], itemids, unit, per_item))
    return {fit: pa.concat_tables(tables) if tables else lists_table("itemid", []) for fit, tables in lists.items()}


def movie_blocks(pairs_per_movie: np.ndarray, pairs_per_block: int) -> list[tuple[int, int]]:
    """Consecutive ranges of movie codes [low, high), each starting at most ``pairs_per_block`` pairs, unless one
    movie alone starts more (a movie's pairs are never split)."""
    ends = np.cumsum(pairs_per_movie)
    blocks, low = [], 0
    while low < len(ends):
        before = int(ends[low - 1]) if low else 0
        high = max(int(np.searchsorted(ends, before + pairs_per_block, side="right")), low + 1)
        blocks.append((low, high))
        low = high
    return blocks


class RunningSum:
    """A sum of sparse matrices added one at a time, merged like a binary counter: each addition merges two partial
    sums of about the same size (not each matrix into a growing total), and only log2(matrices) + 1 partial sums
    are held at once. Holding every addend, the successors' ten distances took ~5.5 GB at 25M ratings."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.partials: list[tuple[int, sparse.csr_matrix]] = []  # (how many additions merged, as a power of 2)

    def add(self, matrix: sparse.csr_matrix) -> None:
        level = 0
        while self.partials and self.partials[-1][0] == level:
            matrix = self.partials.pop()[1] + matrix
            level += 1
        self.partials.append((level, matrix))

    def total(self) -> sparse.csr_matrix:
        if not self.partials:
            return sparse.csr_matrix(self.shape, dtype=np.int64)
        total = self.partials.pop()[1]
        while self.partials:  # the smallest first
            total = self.partials.pop()[1] + total
        return total


def divided_by_totals(weights: sparse.csr_matrix, owners: np.ndarray, itemids: np.ndarray, unit: int,
                      per_item: int) -> pa.Table:
    """(itemid, neighbours): each row's weights (the movie ``owners[row]`` towards ``itemids[column]``) divided by
    (their total + unit), its ``per_item`` best."""
    totals = np.asarray(weights.sum(axis=1), dtype=np.int64).ravel()

    def block_lists(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = weights[start:stop]
        owner = np.repeat(np.arange(start, stop), np.diff(block.indptr))
        # The same IEEE division as Spark's of two longs.
        score = block.data.astype(np.float64) / (totals[owner] + unit).astype(np.float64)
        owner, other, score = best_of_rows(owner, block.indices, score, start, stop, per_item)
        return owners[owner], itemids[other], score

    return lists_table("itemid", by_row_blocks(len(owners), rows_per_block(len(itemids)), block_lists))


def most_rated_pairs(users: np.ndarray, items: np.ndarray, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (user, movie) pairs of the ``max_items`` movies seen by most users (ties by the smaller id),
    ordered by user, then movie."""
    # One int64 key per pair: a 1-D unique sorts ~14x faster than a unique over rows (9 M pairs: 0.6 against 8.8 s).
    pairs = np.unique(np.asarray(users, np.int64) << 32 | np.asarray(items, np.int64))
    users, items = pairs >> 32, pairs & 0xFFFFFFFF
    itemids, counts = np.unique(items, return_counts=True)
    if len(itemids) > max_items:
        covered = itemids[np.lexsort((itemids, -counts))[:max_items]]
        kept = np.isin(items, covered)
        users, items = users[kept], items[kept]
    return users, items


# Columns per block of the EASE weights. A sparse-by-dense product adds one weight row per movie a user saw; with
# whole rows (80 KB at 10,000 movies) every addition comes from memory, while a block of 256 columns (20 MB) and a
# block of users' scores against it stay in cache: the users' scores at 10M ratings ~1.5-1.9x faster, the same sums.
WEIGHT_COLUMNS = 256


@dataclass(frozen=True)
class EaseFit:
    itemids: np.ndarray  # int64 (n,): the covered movies, ascending: the rows and columns of the weights
    # float32 (n, n), zero diagonal (row i holds i's weights towards every movie), as contiguous blocks of columns.
    # float32 as the tables store them: the users' scores (a sparse-by-dense product, bound by memory traffic) take
    # about half the time of float64's (10M ratings: 42.7 -> 22.8 s a fit) and the weights half the memory.
    weight_blocks: tuple[np.ndarray, ...]
    userids: np.ndarray  # int64 (u,): the users, ascending: the rows of ``history``
    history: sparse.csr_matrix  # (u, n) 1 where the user saw the movie

    def weight_rows(self, start: int, stop: int) -> np.ndarray:
        return np.hstack([block[start:stop] for block in self.weight_blocks])

    def scores(self, histories: sparse.csr_matrix) -> np.ndarray:
        """(rows, n): each history row (ones where the user saw the movie) times the weights, a block of columns at
        a time: per user, the sum of the weight rows of the movies they saw.

        Summed by torch's embedding bags (a sum of gathered rows, vectorised for the CPU) rather than SciPy's
        sparse-by-dense product: the same float32 sums in the same order, at about half the CPU (a block of 1,024
        users against 10,000 movies: 0.156 -> 0.081 s on one thread)."""
        # Imported here: torch takes ~1.5 s to load, which every batch would otherwise pay before its JVM starts.
        import torch
        from torch.nn.functional import embedding_bag

        summed = np.empty((histories.shape[0], len(self.itemids)), dtype=np.float32)
        movies = torch.from_numpy(histories.indices.astype(np.int64))
        first_of_user = torch.from_numpy(histories.indptr[:-1].astype(np.int64))
        start = 0
        for block in self.weight_blocks:
            summed[:, start:start + block.shape[1]] = embedding_bag(
                movies, torch.from_numpy(block), first_of_user, mode="sum").numpy()
            start += block.shape[1]
        return summed


def gram_matrix(history: sparse.csr_matrix) -> np.ndarray:
    """X'X, dense, by blocks of its rows on a few threads (whole counts: exact in any order)."""
    by_item = history.T.tocsr()
    columns = history.shape[1]
    gram = np.empty((columns, columns))

    def gram_rows(start: int, stop: int) -> None:
        gram[start:stop] = (by_item[start:stop] @ history).toarray()

    by_row_blocks(columns, rows_per_block(columns), gram_rows)
    return gram


def symmetric_inverse(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix from its Cholesky factor, in the matrix's own memory:
    half the arithmetic of a general inverse (10,000 movies: 32 -> 15 s) and no second n x n matrix."""
    if not matrix.size:
        return matrix  # LAPACK refuses an empty matrix (no movie to fit)
    # The transpose of a C-ordered symmetric matrix is the same matrix in Fortran order: LAPACK works in place.
    factor, info = lapack.dpotrf(matrix.T, lower=False, overwrite_a=True, clean=False)
    if info:
        raise np.linalg.LinAlgError(f"Cholesky factorisation failed (LAPACK info {info}): not positive definite")
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info:
        raise np.linalg.LinAlgError(f"inverse from the Cholesky factor failed (LAPACK info {info})")
    inverse = inverse.T  # C order again; LAPACK filled its lower triangle: mirror it by blocks of rows
    size = len(inverse)
    for start in range(0, size, 1024):
        stop = min(start + 1024, size)
        inverse[start:stop, stop:] = inverse[stop:, start:stop].T
        diagonal = inverse[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        diagonal[upper] = diagonal.T[upper]
    return inverse


@dataclass(frozen=True)
class EaseHistory:
    """What one EASE fit is over: the ``max_items`` most-rated movies of some (user, movie) impressions."""

    itemids: np.ndarray  # int64 (n,): the covered movies, ascending
    userids: np.ndarray  # int64 (u,): the users, ascending
    matrix: sparse.csr_matrix  # (u, n) float32, 1 where the user saw the movie

    @classmethod
    def of(cls, users: np.ndarray, items: np.ndarray, max_items: int) -> EaseHistory:
        users, items = most_rated_pairs(users, items, max_items)
        itemids, column = id_codes(items)
        userids, row = id_codes(users)
        # float32 ones: the Gram matrix's counts (at most the number of users) are exact below 2^24.
        return cls(itemids, userids, sparse.csr_matrix((np.ones(len(row), dtype=np.float32), (row, column)),
                                                       shape=(len(userids), len(itemids))))


def fit_ease(users: np.ndarray, items: np.ndarray, lam: float, max_items: int,
             columns_per_block: int = WEIGHT_COLUMNS) -> EaseFit:
    """EASE's closed form over the ``max_items`` most-rated movies of these (user, movie) impressions."""
    history = EaseHistory.of(users, items, max_items)
    return fit_on_gram(history, gram_matrix(history.matrix), lam, columns_per_block)


def fit_on_gram(history: EaseHistory, gram: np.ndarray, lam: float, columns_per_block: int = WEIGHT_COLUMNS) -> EaseFit:
    """EASE's closed form from the history's Gram matrix (float64, n x n), which it takes over: the inverse is
    computed in its memory."""
    itemids = history.itemids
    gram[np.diag_indices(len(itemids))] += lam
    inverse = symmetric_inverse(gram)  # in gram's memory: one n x n matrix (10,000 movies: 800 MB) less
    scale = -np.diag(inverse)  # column j divided by -P_jj

    def weight_block(start: int) -> np.ndarray:
        stop = start + columns_per_block
        block = (inverse[:, start:stop] / scale[start:stop]).astype(np.float32)
        block[np.arange(start, start + block.shape[1]), np.arange(block.shape[1])] = 0.0
        return block

    return EaseFit(itemids, tuple(weight_block(start) for start in range(0, len(itemids), columns_per_block)),
                   history.userids, history.matrix)


def gram_of_part(whole: EaseHistory, whole_gram: np.ndarray, part: EaseHistory) -> np.ndarray:
    """``part``'s Gram matrix (float32: whole counts, exact) from ``whole``'s, where ``part`` holds some of
    ``whole``'s (user, movie) pairs (the validation fit: every offline impression but each user's last few).

    Over the movies both cover, with W = whole's history there and D = W - P the pairs of it that ``part`` lacks
    (a few per user): P'P = W'W - W'D - D'P, two sparse products of ~(pairs x a few), where P'P itself sums the
    square of every user's history (10M ratings: ~13 s of CPU). The rows of a movie only ``part`` covers (the two
    fits' most-rated movies differ at ``ease_max_items``: a few near the cut) are P's own products."""
    if not np.isin(part.userids, whole.userids).all():
        raise ValueError("the part has a user the whole does not")
    covered = np.isin(part.itemids, whole.itemids)
    shared, only_part = np.flatnonzero(covered), np.flatnonzero(~covered)
    in_whole = np.searchsorted(whole.itemids, part.itemids[shared])
    pairs = part.matrix.tocoo()
    kept = sparse.csr_matrix((pairs.data, (np.searchsorted(whole.userids, part.userids)[pairs.row], pairs.col)),
                             shape=(len(whole.userids), len(part.itemids)))
    kept_shared = kept[:, shared]
    within = whole.matrix if len(in_whole) == len(whole.itemids) else whole.matrix[:, in_whole]
    lacking = within - kept_shared
    lacking.eliminate_zeros()
    if lacking.nnz and lacking.data.min() < 0:
        raise ValueError("the part holds a (user, movie) pair the whole does not")
    gram = np.empty((len(part.itemids), len(part.itemids)), dtype=np.float32)
    by_item, lacking_by_item = within.T.tocsr(), lacking.T.tocsr()

    def shared_rows(start: int, stop: int) -> None:
        block = whole_gram[in_whole[start:stop]][:, in_whole]
        block -= (by_item[start:stop] @ lacking).toarray() + (lacking_by_item[start:stop] @ kept_shared).toarray()
        gram[shared[start:stop, None], shared] = block

    by_row_blocks(len(shared), rows_per_block(len(part.itemids)), shared_rows)
    if len(only_part):
        own = (kept[:, only_part].T.tocsr() @ kept).toarray()
        gram[only_part] = own
        gram[:, only_part] = own.T
    return gram


def best_of_dense_rows(values: np.ndarray, rank_by: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the columns of the ``keep`` largest ``rank_by`` and their ``values``, ordered by value, largest
    first, ties by the smaller column (columns are in ascending id order)."""
    best = np.argpartition(-rank_by, keep - 1, axis=1)[:, :keep]
    best_values = np.take_along_axis(values, best, axis=1)
    order = np.lexsort((best, -best_values), axis=1)
    return np.take_along_axis(best, order, axis=1), np.take_along_axis(best_values, order, axis=1)


# Columns per group whose maxima give each row's cut (``best_of_score_rows``): larger groups make the cut cheaper and
# looser (more cells to order past it).
CUT_GROUP_COLUMNS = 16


def best_of_score_rows(scores: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a dense float32 matrix, the columns of its ``keep`` largest scores, largest first, ties by the
    smaller column (columns are in ascending id order): as (row, column, score), by row. A cell of -inf is never
    listed (a row can list fewer).

    No per-row selection over every cell (NumPy's ``argpartition``, torch's top-k: 0.17 and 0.08 s for 1,024 rows
    of 10,000 movies on one thread). Each row's cut is the ``keep``-th largest of the maxima of its groups of
    ``CUT_GROUP_COLUMNS`` columns: at least ``keep`` groups reach it, each with a cell at or above it, so no cell
    of the list is below it, and ~20% more cells than the list holds pass it. Those few are ordered by one sort of
    a 64-bit key (row, score descending, column)."""
    rows, columns = scores.shape
    groups = -(-columns // CUT_GROUP_COLUMNS)
    if keep > groups:  # a catalogue too small to group: every cell passes
        cut = np.full(rows, -np.inf, dtype=np.float32)
    else:
        maxima = np.maximum.reduceat(scores, np.arange(0, columns, CUT_GROUP_COLUMNS), axis=1)
        cut = np.partition(maxima, groups - keep, axis=1)[:, groups - keep]
    passed = scores >= cut[:, None]
    if np.isneginf(cut).any():
        passed &= scores > -np.inf
    row, column = np.nonzero(passed)
    # float32's bits as an unsigned key ordered like the scores (-0.0 made +0.0 first, so the two tie), inverted for
    # largest first; the row above it and the column below it.
    bits = (scores[row, column] + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    ascending = np.where(bits >> 31 == 1, ~bits & 0xFFFFFFFF, bits | 0x80000000)
    column_bits = max(int(columns - 1).bit_length(), 1)
    if rows > 1 << (32 - column_bits):
        raise ValueError(f"{rows} rows of {columns} columns: more than one 64-bit key holds; pass fewer rows")
    keys = np.sort((row.astype(np.uint64) << np.uint64(32 + column_bits))
                   | ((~ascending & 0xFFFFFFFF) << np.uint64(column_bits)) | column.astype(np.uint64))
    row = (keys >> np.uint64(32 + column_bits)).astype(np.int64)
    column = (keys & np.uint64((1 << column_bits) - 1)).astype(np.int64)
    listed = np.bincount(row, minlength=rows)
    kept = np.arange(len(row)) - np.repeat(np.cumsum(listed) - listed, listed) < keep
    row, column = row[kept], column[kept]
    return row, column, scores[row, column]


def user_ease(fit: EaseFit, per_user: int, users_per_block: int = 1024, userids: np.ndarray | None = None) -> pa.Table:
    """(userid, neighbours): each user's ``per_user`` best EASE scores (their history times the weights),
    movies they saw excluded, ties by the smaller id; ``userids``: these users' lists only (a user who saw no
    covered movie has none). By blocks of users: the scores of one block are a dense (block, movies) matrix."""
    keep = min(per_user, len(fit.itemids))
    if userids is None:
        rows, history = np.arange(len(fit.userids)), fit.history  # no copy of every user's history
    else:
        rows = np.flatnonzero(np.isin(fit.userids, userids))
        history = fit.history[rows]

    def block_lists(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = history[start:stop]
        summed = fit.scores(block)
        summed[np.repeat(np.arange(stop - start), np.diff(block.indptr)), block.indices] = -np.inf  # seen
        row, best, best_scores = best_of_score_rows(summed, keep)
        # In the table's types: every block is held until the table is built (32 M entries at 25M ratings).
        return fit.userids[rows[start + row]].astype(np.int32), fit.itemids[best].astype(np.int32), best_scores

    blocks = by_row_blocks(len(rows), users_per_block, block_lists) if keep else []
    return lists_table("userid", blocks)


def ease_weights(fit: EaseFit, per_item: int, items_per_block: int = 1024) -> pa.Table:
    """(itemid, neighbours): each covered movie's ``per_item`` EASE weights largest in size."""
    itemids = fit.itemids
    keep = min(per_item, max(len(itemids) - 1, 0))

    def block_lists(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = fit.weight_rows(start, stop)
        # The largest weights by size, negative ones too: a user's EASE score sums them all, and dropping the
        # negative ones changes the order (ML-100K: NDCG@50 0.239 against EASE's own 0.247).
        best, best_weights = best_of_dense_rows(rows, np.abs(rows), keep)
        nonzero = best_weights != 0
        return np.repeat(itemids[start:stop], nonzero.sum(axis=1)), itemids[best[nonzero]], best_weights[nonzero]

    return lists_table("itemid", by_row_blocks(len(itemids), items_per_block, block_lists) if keep else [])


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    # The impressions read on the driver straight from the Delta table's files (the version split wrote): Spark's
    # collect would hold every row in the JVM's heap first, the heap the features step needs beside it (at 25M ratings
    # a 3 GB heap is already too small for features and recall inputs alone).
    offline = read_arrow_table(settings, Table.IMPRESSIONS, HOLDOUT_COLUMNS, "split", Split.OFFLINE)
    log.info("item models: %d offline impressions in from %s", offline.num_rows, settings.table_path(Table.IMPRESSIONS))
    # One read of the users' timelines gives the validation hold-out and both fits of every model.
    timelines, holdout = Timelines.with_validation(offline, settings.validation_size, settings.validation_min_history)
    del offline
    return_freed_memory()
    written = [write_arrow_table(holdout, settings, Table.VALIDATION_HOLDOUT, run_id)]
    liked = pc.filter(holdout["userid"], pc.equal(holdout["label"], 1))
    validation_users = np.array(validation_sample(pc.unique(liked).to_pylist()), dtype=np.int64)
    del holdout, liked

    def sequence_lists() -> list[Written]:
        successors = successor_lists(timelines, settings.successor_window, settings.successors_per_item)
        written = [write_arrow_table(successors[SERVED], settings, Table.ITEM_SUCCESSORS, run_id),
                   write_arrow_table(successors[VALIDATION], settings, Table.VALIDATION_ITEM_SUCCESSORS, run_id)]
        neighbours = neighbour_lists(timelines, settings.cooccurrence_history, settings.neighbours_per_item)
        written.append(write_arrow_table(neighbours[SERVED], settings, Table.ITEM_NEIGHBOURS, run_id))
        written.append(write_arrow_table(neighbours[VALIDATION], settings, Table.VALIDATION_ITEM_NEIGHBOURS, run_id))
        return written

    # Two threads of driver work: much of each is single-threaded NumPy (sorts, sparse sums), so together they keep
    # both cores busy once Spark's other steps have ended.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="item-models-fit") as fitting:
        sequence = fitting.submit(sequence_lists)
        ease = fitting.submit(ease_lists, timelines, validation_users, settings, run_id)
        return written + sequence.result() + ease.result()


def ease_lists(timelines: Timelines, validation_users: np.ndarray, settings: BatchSettings,
               run_id: str) -> list[Written]:
    """The EASE tables of both fits, each committed as soon as it is computed; the validation fit's user lists for
    ``validation_users`` only (the users the validation choices replay)."""
    users, items, fit = timelines.users, timelines.items, ~timelines.validation
    served_history = EaseHistory.of(users, items, settings.ease_max_items)
    validation_history = EaseHistory.of(users[fit], items[fit], settings.ease_max_items)
    served_gram = gram_matrix(served_history.matrix)
    validation_gram = gram_of_part(served_history, served_gram, validation_history)
    log.info("EASE over %d movies from %d impressions (validation fit: %d)", len(served_history.itemids), len(users),
             int(fit.sum()))
    served = fit_on_gram(served_history, served_gram, settings.ease_lambda)
    del served_history, served_gram
    written = [write_arrow_table(ease_weights(served, settings.ease_per_item), settings, Table.ITEM_EASE, run_id),
               write_arrow_table(user_ease(served, settings.ease_per_user), settings, Table.USER_EASE, run_id)]
    # Its lists are committed: the validation fit is made without the served one beside it.
    del served
    return_freed_memory()
    validation_gram = validation_gram.astype(np.float64)
    # Validation reads the users' lists only: the choice replays them, never the per-movie weights.
    validation = fit_on_gram(validation_history, validation_gram, settings.ease_lambda)
    del validation_history, validation_gram
    written.append(write_arrow_table(user_ease(validation, settings.ease_per_user, userids=validation_users), settings,
                                     Table.VALIDATION_USER_EASE, run_id))
    return written


def main(argv: Sequence[str] | None = None) -> None:
    job_main("item_models", run, argv, __doc__)


if __name__ == "__main__":
    main()
