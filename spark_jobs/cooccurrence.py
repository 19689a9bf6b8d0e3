"""Item co-occurrence: offline histories -> each movie's top neighbours by cosine similarity, in two fits.

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/cooccurrence.py --output DIR

Over each user's latest ``cooccurrence_history`` offline impressions (train + test; the hold-out is
never read), two movies co-occur once per user who has both. With n_i the users having movie i and
c_ij the users having both, similarity(i, j) = c_ij / sqrt(n_i * n_j) (cosine of the binary
user-item columns). Each movie keeps its ``neighbours_per_item`` most similar movies (ties broken by
the smaller itemid) in ``item_neighbours``: (itemid, neighbours array<struct<itemid, score>>).
The per-user cap bounds the pairs a heavy user adds (n^2) and favours recent taste.

``validation_item_neighbours`` is the same over each user's latest ``cooccurrence_history`` impressions before
their validation impressions (``split.mark_validation``). Both come from one self-join: a user's movie in
either window carries which windows hold it, and a pair counts for the windows holding both its movies, so
the pairs the two windows share (nearly all) are generated and counted once.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.item_lists import FITS, SERVED, VALIDATION, best_per_item, counts_for, fit_of, stacked_by_fit
from spark_jobs.lake import Written, read_table, write_tables
from spark_jobs.runtime import job_main
from spark_jobs.split import Split, mark_validation


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
    """(userid, itemid, fits) -> (fit, itemid, neighbours) with cosine scores, best first, for each fit."""
    fits = F.col("fits")
    users_per_item = stacked_by_fit(
        user_items.groupBy("itemid").agg(*(F.sum(counts_for(fits, fit)).alias(f"users_{fit}") for fit in FITS)),
        ["itemid"], {fit: F.col(f"users_{fit}") for fit in FITS}, "users")
    left, right = user_items.alias("left"), user_items.alias("right")
    # Co-occurrence is symmetric: count each unordered pair once, then list it from both sides.
    # Counted by one packed long key (item * 2**32 + neighbour): at 10M ratings ~74 M pairs reach the hash
    # aggregation, and one long key is a smaller entry than two int columns (its stage: 71 -> 52 s of CPU).
    packed = (F.col("left.itemid").cast("long") * (1 << 32) + F.col("right.itemid")).alias("pair")
    shared = F.col("left.fits").bitwiseAND(F.col("right.fits")).alias("fits")
    counted = (
        left.join(right, "userid")
        .filter(F.col("left.itemid") < F.col("right.itemid"))
        .select(packed, shared)
        .filter(fits > 0)
        .groupBy("pair")
        .agg(*(F.sum(counts_for(fits, fit)).alias(f"both_{fit}") for fit in FITS))
        .select(F.shiftright("pair", 32).cast("int").alias("itemid"),
                F.col("pair").bitwiseAND((1 << 32) - 1).cast("int").alias("neighbour"),
                *(f"both_{fit}" for fit in FITS))
    )
    pairs = stacked_by_fit(counted, ["itemid", "neighbour"], {fit: F.col(f"both_{fit}") for fit in FITS}, "both")
    # Each side from the same row (a union of the pairs with their mirror computed the aggregation twice).
    sides = F.explode(F.array(F.struct(F.col("itemid").alias("itemid"), F.col("neighbour").alias("neighbour")),
                              F.struct(F.col("neighbour").alias("itemid"), F.col("itemid").alias("neighbour"))))
    together = pairs.select("fit", "both", sides.alias("side")).select("fit", "side.itemid", "side.neighbour", "both")
    own = users_per_item.select("fit", "itemid", F.col("users").alias("own_users"))
    other = users_per_item.select("fit", F.col("itemid").alias("neighbour"), F.col("users").alias("other_users"))
    scored = (
        together.join(F.broadcast(own), ["fit", "itemid"])
        .join(F.broadcast(other), ["fit", "neighbour"])
        .select("fit", "itemid", "neighbour",
                (F.col("both") / F.sqrt(F.col("own_users") * F.col("other_users"))).alias("score"))
    )
    return best_per_item(scored, neighbours_per_item, by=["fit"])


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
