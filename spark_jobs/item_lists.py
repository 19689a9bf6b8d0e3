"""What every item list table shares: its shape, the order of a list, the two fits, and how the driver cuts the
lists it computes.

A list table is (owner, neighbours array<struct<itemid, score>>), best first, ties by the smaller itemid: the
owner is a movie (``item_neighbours``, ``item_ease``, ``item_successors``) or a user (``user_ease``).

The item models are fitted twice, on everything offline (what the service reads) and without each user's
validation impressions (what the validation choices are made on, ``split.mark_validation``). Where both come
from the same rows, a row says which fits count it, as bits of ``fits``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

SERVED = 1  # fitted on every offline impression
VALIDATION = 2  # fitted without each user's validation impressions
FITS: tuple[int, ...] = (SERVED, VALIDATION)


def best_per_item(scored: DataFrame, per_item: int, owner: str = "itemid", by: Sequence[str] = ()) -> DataFrame:
    """(*by, owner, neighbour, score) -> (*by, owner, neighbours) with the ``per_item`` best, ties by the smaller id."""
    best_first = Window.partitionBy(*by, owner).orderBy(F.desc("score"), F.asc("neighbour"))
    kept = scored.withColumn("rank", F.row_number().over(best_first)).filter(F.col("rank") <= per_item)
    return kept.groupBy(*by, owner).agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct("rank", "neighbour", "score"))),
            lambda entry: F.struct(entry["neighbour"].alias("itemid"), entry["score"].cast("float").alias("score")),
        ).alias("neighbours")
    )


def fits_frame(spark: SparkSession, tables: dict[int, pa.Table], per_item: int) -> DataFrame:
    """(fit, owner, neighbours) from each fit's flat (owner, neighbour, score) table the driver computed."""
    per_fit = [spark.createDataFrame(table).select(F.lit(fit).alias("fit"), "*") for fit, table in tables.items()]
    return best_per_item(functools.reduce(DataFrame.unionByName, per_fit), per_item, by=["fit"])


def lists_table(owner: str, blocks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pa.Table:
    """(owner, neighbour, score) from blocks of (owners, neighbours, scores) the driver computed: flat primitive
    columns cross from Arrow to Spark fast (nested lists of structs took ~15 s at ML-100K), and ``best_per_item``
    groups them into lists as every other list table."""
    def joined(position: int, dtype: type) -> pa.Array:
        parts = [block[position] for block in blocks]
        return pa.array((np.concatenate(parts) if parts else np.empty(0)).astype(dtype))
    return pa.table({owner: joined(0, np.int32), "neighbour": joined(1, np.int32), "score": joined(2, np.float64)})


# Entries of one block of rows held dense while its lists are cut: blocks are sized to keep them near this (32 MB
# of float64).
BLOCK_ENTRIES = 1 << 22


def rows_per_block(columns: int) -> int:
    return max(1, BLOCK_ENTRIES // max(columns, 1))


def best_of_rows(owner: np.ndarray, other: np.ndarray, score: np.ndarray, start: int, stop: int, columns: int,
                 per_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries (owner row, other column, score > 0) of rows ``start..stop`` of a sparse matrix, in any order ->
    each row's ``per_row`` best, best first, ties by the smaller column (columns are in ascending id order)."""
    if columns > per_row:
        # Only what can make a list is ordered below: scores at or above the row's ``per_row``-th largest (ties at
        # the cut are kept, so the order decides them). Found by sorting the block's dense scores: a partition
        # (introselect) is ~3x slower than NumPy's sort on rows this full of equal values.
        dense = np.zeros((stop - start, columns))
        dense[owner - start, other] = score
        cut = np.sort(dense, axis=1)[:, columns - per_row]
        candidate = score >= cut[owner - start]
        owner, other, score = owner[candidate], other[candidate], score[candidate]
    order = np.lexsort((other, -score, owner))
    owner, other, score = owner[order], other[order], score[order]
    listed = np.bincount(owner - start, minlength=stop - start)
    rank = np.arange(len(owner)) - np.repeat(np.cumsum(listed) - listed, listed)
    kept = rank < per_row
    return owner[kept], other[kept], score[kept]


def fit_of(lists: DataFrame, fit: int) -> DataFrame:
    """One fit's rows of a (fit, owner, neighbours) table, shaped as its list table."""
    return lists.filter(F.col("fit") == fit).drop("fit")
