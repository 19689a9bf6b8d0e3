"""Item-to-item models over the offline histories, fitted twice: on everything offline (what is served) and
without each user's last ``validation_size`` offline impressions (what the validation choices are made on).

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/item_models.py --output DIR

- ``item_ease``: EASE (Steck 2019), B = I - P diagMat(1 / diag(P)), P = (X'X + lambda I)^-1, diag(B) = 0,
  over the ``ease_max_items`` most-rated movies. X'X is the co-occurrence count of every pair of movies over
  whole histories. The driver collects the (user, movie) impressions once (both fits come from them), forms
  X'X as a sparse product (the same n^2 pairs per user as a self-join, without shuffling them: a heavy
  user's thousands of ratings would otherwise become millions of shuffled rows) and inverts it. A movie
  beyond the cap is neither a seed nor a candidate of this source. Each movie keeps its ``ease_per_item``
  weights largest in size (negative ones too): a user's score for a movie is the sum of its weights from the
  movies they saw, EASE's own score where nothing was cut.
- ``user_ease``: each user's ``ease_per_user`` best EASE scores, movies they saw excluded: what the ``ease``
  source serves (a heavy user's sum runs over hundreds of movies' weights, too many per request).
- ``item_successors``: the movies a user rated after each movie, within the next ``successor_window``
  impressions of their timeline, weighted 1 / distance; a movie's weights divided by (their total + 1),
  its ``successors_per_item`` largest kept. A sequence-aware source: what follows the latest movies.
- ``validation_holdout``: each user's last ``validation_size`` offline impressions (users with at least
  ``validation_min_history`` offline impressions before them), shaped as ``online_holdout``.
- ``validation_user_ease``, ``validation_item_successors``: the item models fitted without those impressions
  (``validation_item_neighbours`` comes from ``spark_jobs/cooccurrence.py``), so a choice made on validation never
  sees its targets. The successors' two fits come from one pass (``spark_jobs/item_lists.py``).

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
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from scipy import sparse

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.item_lists import FITS, SERVED, VALIDATION, best_per_item, fit_of, lists_table, stacked_by_fit
from spark_jobs.lake import Written, read_table, write_tables
from spark_jobs.row_blocks import by_row_blocks
from spark_jobs.runtime import job_main
from spark_jobs.split import Split, mark_validation, validation_holdout

log = logging.getLogger(__name__)


def item_successors(marked: DataFrame, window: int, per_item: int) -> DataFrame:
    """(fit, itemid, neighbours) by the rule in the module docstring, for both fits from one sort of each user's
    timeline: the validation impressions end it, so a pair counts for VALIDATION where its successor is not one."""
    timeline = Window.partitionBy("userid").orderBy("timestamp", "itemid")
    # The next ``window`` items as lead() columns of one window pass (a collect_list over a sliding frame
    # builds an array per row and costs several times more), then one row per (item, distance, successor).
    following = marked.select("itemid", F.array(*(F.lead(F.struct("itemid", "validation"), d).over(timeline)
                                                  for d in range(1, window + 1))).alias("following"))
    pairs = (following.select("itemid", F.posexplode("following").alias("distance", "next"))
             .filter(F.col("next").isNotNull()))
    # 1 / distance in units of 1 / lcm(1..window): whole numbers, so the sums are exact in any order (a
    # cluster adds them in another order than a local run, and floating-point sums would differ in their last bits).
    unit = math.lcm(*range(1, window + 1))
    weight = (F.lit(unit) / (F.col("distance") + 1)).cast("long")
    weights = pairs.groupBy("itemid", F.col("next.itemid").alias("neighbour")).agg(
        F.sum(weight).alias(f"weight_{SERVED}"),
        F.sum(F.when(~F.col("next.validation"), weight).otherwise(0)).alias(f"weight_{VALIDATION}"))
    weights = stacked_by_fit(weights, ["itemid", "neighbour"], {fit: F.col(f"weight_{fit}") for fit in FITS},
                             "weight")
    # The total by a window over the partitioning the ranking needs anyway (a grouped total joined back
    # computed the weights twice).
    total = F.sum("weight").over(Window.partitionBy("fit", "itemid"))
    scored = weights.select("fit", "itemid", "neighbour", (F.col("weight") / (total + F.lit(unit))).alias("score"))
    return best_per_item(scored, per_item, by=["fit"])


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


@dataclass(frozen=True)
class EaseFit:
    itemids: np.ndarray  # int64 (n,): the covered movies, ascending: the rows and columns of ``weights``
    weights: np.ndarray  # float64 (n, n), zero diagonal: row i holds i's weights towards every movie
    userids: np.ndarray  # int64 (u,): the users, ascending: the rows of ``history``
    history: sparse.csr_matrix  # (u, n) 1 where the user saw the movie


def fit_ease(users: np.ndarray, items: np.ndarray, lam: float, max_items: int) -> EaseFit:
    """EASE's closed form over the ``max_items`` most-rated movies of these (user, movie) impressions."""
    users, items = most_rated_pairs(users, items, max_items)
    itemids, column = np.unique(items, return_inverse=True)
    userids, row = np.unique(users, return_inverse=True)
    history = sparse.csr_matrix((np.ones(len(row), dtype=np.float64), (row, column)),
                                shape=(len(userids), len(itemids)))
    gram = (history.T @ history).toarray()
    gram[np.diag_indices(len(itemids))] += lam
    weights = np.linalg.inv(gram)
    del gram  # one n x n matrix fewer at a time (10,000 movies: 800 MB each)
    weights /= -np.diag(weights)  # column j divided by -P_jj, in place (the negated diagonal is a copy)
    weights[np.diag_indices(len(itemids))] = 0.0
    return EaseFit(itemids, weights, userids, history)


def user_ease(fit: EaseFit, per_user: int, users_per_block: int = 1024) -> pa.Table:
    """(userid, neighbour, score): each user's ``per_user`` best EASE scores (their history times the weights),
    movies they saw excluded, ties by the smaller id. By blocks of users: the scores of one block are a
    dense (block, movies) matrix."""
    keep = min(per_user, len(fit.itemids))

    def block_lists(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = fit.history[start:stop]
        summed = np.asarray(block @ fit.weights)
        summed[block.toarray() > 0] = -np.inf
        best = np.argpartition(-summed, keep - 1, axis=1)[:, :keep]
        best_scores = np.take_along_axis(summed, best, axis=1)
        order = np.lexsort((best, -best_scores), axis=1)
        best, best_scores = np.take_along_axis(best, order, axis=1), np.take_along_axis(best_scores, order, axis=1)
        finite = np.isfinite(best_scores)
        return (np.repeat(fit.userids[start:stop], finite.sum(axis=1)), fit.itemids[best[finite]],
                best_scores[finite])

    blocks = by_row_blocks(len(fit.userids), users_per_block, block_lists) if keep else []
    return lists_table("userid", blocks)


def ease_weights(fit: EaseFit, per_item: int, items_per_block: int = 1024) -> pa.Table:
    """(itemid, neighbour, score): each covered movie's ``per_item`` EASE weights largest in size."""
    itemids, weights = fit.itemids, fit.weights
    keep = min(per_item, max(len(itemids) - 1, 0))

    def block_lists(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = weights[start:stop]
        # The largest weights by size, negative ones too: a user's EASE score sums them all, and dropping the
        # negative ones changes the order (ML-100K: NDCG@50 0.239 against EASE's own 0.247).
        best = np.argpartition(-np.abs(rows), keep - 1, axis=1)[:, :keep]
        best_weights = np.take_along_axis(rows, best, axis=1)
        # Best first, ties by the smaller id (the columns are in ascending id order).
        order = np.lexsort((best, -best_weights), axis=1)
        best, best_weights = np.take_along_axis(best, order, axis=1), np.take_along_axis(best_weights, order, axis=1)
        nonzero = best_weights != 0
        return np.repeat(itemids[start:stop], nonzero.sum(axis=1)), itemids[best[nonzero]], best_weights[nonzero]

    return lists_table("itemid", by_row_blocks(len(itemids), items_per_block, block_lists) if keep else [])


def ease_tables(spark: SparkSession, fit: EaseFit, settings: BatchSettings) -> tuple[DataFrame, DataFrame]:
    """(item_ease, user_ease) of one fit."""
    return (best_per_item(spark.createDataFrame(ease_weights(fit, settings.ease_per_item)), settings.ease_per_item),
            user_ease_table(spark, fit, settings))


def user_ease_table(spark: SparkSession, fit: EaseFit, settings: BatchSettings) -> DataFrame:
    return best_per_item(spark.createDataFrame(user_ease(fit, settings.ease_per_user)), settings.ease_per_user,
                         owner="userid")


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    offline = read_table(spark, settings, Table.IMPRESSIONS).filter(F.col("split").isin(*Split.OFFLINE))
    marked = mark_validation(offline, settings.validation_size, settings.validation_min_history).cache()
    successors = item_successors(marked, settings.successor_window, settings.successors_per_item).cache()
    # The tables Spark computes alone are written while the driver fits EASE, so the JVM's work and NumPy's overlap.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="item-models-spark") as spark_side:
        spark_tables = spark_side.submit(write_tables, [
            (Table.VALIDATION_HOLDOUT, validation_holdout(marked)),
            (Table.ITEM_SUCCESSORS, fit_of(successors, SERVED)),
            (Table.VALIDATION_ITEM_SUCCESSORS, fit_of(successors, VALIDATION)),
        ], settings, run_id)
        try:
            # One collect of (user, movie, validation) gives both EASE fits: the driver builds their Gram matrices.
            pairs = marked.select("userid", "itemid", "validation").toArrow()
            users, items = (np.asarray(pairs.column(name), dtype=np.int64) for name in ("userid", "itemid"))
            fit = ~np.asarray(pairs.column("validation"), dtype=bool)
            served = fit_ease(users, items, settings.ease_lambda, settings.ease_max_items)
            log.info("EASE over %d movies from %d impressions (validation fit: %d)", len(served.itemids), len(users),
                     int(fit.sum()))
            served_ease, served_user_ease = ease_tables(spark, served, settings)
            # Its lists have crossed to the JVM: the validation fit is made without the served one beside it.
            del served
            # Validation reads the users' lists only: the choice replays them, never the per-movie weights.
            validation_user_ease = user_ease_table(
                spark, fit_ease(users[fit], items[fit], settings.ease_lambda, settings.ease_max_items), settings)
            ease_written = write_tables([
                (Table.ITEM_EASE, served_ease), (Table.USER_EASE, served_user_ease),
                (Table.VALIDATION_USER_EASE, validation_user_ease),
            ], settings, run_id)
            return spark_tables.result() + ease_written
        finally:
            spark_tables.exception()  # the Spark side has ended before its inputs are released
            successors.unpersist()
            marked.unpersist()


def main(argv: Sequence[str] | None = None) -> None:
    job_main("item_models", run, argv, __doc__)


if __name__ == "__main__":
    main()
