"""Item co-occurrence: offline histories -> each movie's top neighbours by cosine similarity, in two fits.

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/cooccurrence.py --output DIR

Over each user's latest ``cooccurrence_history`` offline impressions (train + test; the hold-out is
never read), two movies co-occur once per user who has both. With n_i the users having movie i and
c_ij the users having both, similarity(i, j) = c_ij / sqrt(n_i * n_j) (cosine of the binary
user-item columns). Each movie keeps its ``neighbours_per_item`` most similar movies (ties broken by
the smaller itemid) in ``item_neighbours``: (itemid, neighbours array<struct<itemid, score>>).
The per-user cap bounds the pairs a heavy user adds (n^2) and favours recent taste.

``validation_item_neighbours`` is the same over each user's latest ``cooccurrence_history`` impressions before
their validation impressions (``split.mark_validation``). Spark finds each user's windows (a user's movie in
either window carries which windows hold it, ``windowed_items``); the driver counts the pairs of each window as a
sparse Gram matrix and keeps each movie's best neighbours (``cosine_lists``).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import logging
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from scipy import sparse

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.id_codes import id_codes
from spark_jobs.item_lists import (
    FITS,
    SERVED,
    VALIDATION,
    best_of_rows,
    fit_of,
    fits_frame,
    lists_table,
    rows_per_block,
)
from spark_jobs.lake import Written, read_table, write_tables
from spark_jobs.row_blocks import by_row_blocks
from spark_jobs.runtime import job_main
from spark_jobs.split import Split, mark_validation

log = logging.getLogger(__name__)


def windowed_items(marked: DataFrame, history: int) -> DataFrame:
    """(userid, itemid, fits), one row per distinct pair: SERVED where the movie is among the user's latest
    ``history`` offline impressions, VALIDATION where it is among their latest ``history`` before their
    validation impressions (``marked`` has ``validation``, true on a suffix of each user's timeline)."""
    newest_first = Window.partitionBy("userid").orderBy(F.desc("timestamp"), F.desc("itemid"))
    ranked = marked.select(
        "userid", "itemid", "validation", F.row_number().over(newest_first).alias("recency"),
        F.sum(F.col("validation").cast("int")).over(Window.partitionBy("userid")).alias("held"))
    # The validation impressions are the newest ``held``: the others' recency before them is recency - held.
    fits = (F.when(F.col("recency") <= history, SERVED).otherwise(0)
            + F.when(~F.col("validation") & (F.col("recency") - F.col("held") <= history), VALIDATION).otherwise(0))
    return (ranked.select("userid", "itemid", fits.alias("fits")).filter(F.col("fits") > 0)
            .groupBy("userid", "itemid").agg(F.bit_or("fits").alias("fits")))


def item_neighbours(user_items: DataFrame, neighbours_per_item: int) -> DataFrame:
    """(userid, itemid, fits) -> (fit, itemid, neighbours) with cosine scores, best first, for each fit.

    Counted on the driver: the pairs' counts are the windowed history's Gram matrix, a sparse matrix product
    (C code, by blocks of movies on a few threads), where Spark's self-join hashed every pair a user adds (at 10M
    ratings ~87 M pair rows, aggregated with spills, then ~77 M rows sorted for the top lists: ~270 s of CPU).
    The driver already holds every offline (user, movie) pair for EASE (``item_models``), so this adds no bound
    on the data's size that the batch did not have."""
    started = time.monotonic()
    pairs = user_items.select("userid", "itemid", "fits").toArrow()
    users, items, fits = (np.asarray(pairs.column(name), dtype=np.int64) for name in ("userid", "itemid", "fits"))
    collected = time.monotonic()
    lists = {fit: cosine_lists(users[in_fit], items[in_fit], neighbours_per_item)
             for fit in FITS for in_fit in [fits & fit != 0]}
    log.info("co-occurrence: %d windowed (user, movie) pairs collected in %.1f s, counted in %.1f s", len(users),
             collected - started, time.monotonic() - collected)
    return fits_frame(user_items.sparkSession, lists)


def cosine_lists(users: np.ndarray, items: np.ndarray, per_item: int) -> pa.Table:
    """(itemid, neighbours) from distinct (user, movie) pairs: each movie's ``per_item`` most similar movies
    by c_ij / sqrt(n_i * n_j), best first, ties by the smaller id; movies sharing no user are not listed."""
    itemids, column = id_codes(items)
    userids, row = id_codes(users)
    history = sparse.csr_matrix((np.ones(len(row), dtype=np.int32), (row, column)),
                                shape=(len(userids), len(itemids)))
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
        owner, other, score = best_of_rows(owner, other, score, start, stop, len(itemids), per_item)
        return itemids[owner], itemids[other], score

    return lists_table("itemid", by_row_blocks(len(itemids), rows_per_block(len(itemids)), block_lists))


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    offline = read_table(spark, settings, Table.IMPRESSIONS).filter(F.col("split").isin(*Split.OFFLINE))
    marked = mark_validation(offline, settings.validation_size, settings.validation_min_history)
    # Cached: both tables are a filter of it, written side by side.
    lists = windowed_items(marked, settings.cooccurrence_history).transform(
        lambda items: item_neighbours(items, settings.neighbours_per_item)).cache()
    try:
        return write_tables([(Table.ITEM_NEIGHBOURS, fit_of(lists, SERVED)),
                             (Table.VALIDATION_ITEM_NEIGHBOURS, fit_of(lists, VALIDATION))], settings, run_id)
    finally:
        lists.unpersist()


def main(argv: Sequence[str] | None = None) -> None:
    job_main("cooccurrence", run, argv, __doc__)


if __name__ == "__main__":
    main()
