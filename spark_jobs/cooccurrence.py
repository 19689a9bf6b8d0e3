"""Item co-occurrence: offline histories -> each movie's top neighbours by cosine similarity.

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/cooccurrence.py --output DIR

Over each user's latest ``cooccurrence_history`` offline impressions (train + test; the hold-out is
never read), two movies co-occur once per user who has both. With n_i the users having movie i and
c_ij the users having both, similarity(i, j) = c_ij / sqrt(n_i * n_j) (cosine of the binary
user-item columns). Each movie keeps its ``neighbours_per_item`` most similar movies (ties broken by
the smaller itemid) in ``item_neighbours``: (itemid, neighbours array<struct<itemid, score>>).
The per-user cap bounds the pairs a heavy user adds (n^2) and favours recent taste.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import Written, read_table, write_table
from spark_jobs.runtime import job_main
from spark_jobs.split import Split


def latest_per_user(offline_impressions: DataFrame, history: int) -> DataFrame:
    """(userid, itemid) of each user's latest ``history`` impressions, one row per distinct pair."""
    newest_first = Window.partitionBy("userid").orderBy(F.desc("timestamp"), F.desc("itemid"))
    return (
        offline_impressions.withColumn("recency", F.row_number().over(newest_first))
        .filter(F.col("recency") <= history)
        .select("userid", "itemid")
        .distinct()
    )


def item_neighbours(user_items: DataFrame, neighbours_per_item: int) -> DataFrame:
    """(userid, itemid) pairs -> (itemid, neighbours) with cosine scores, best first."""
    users_per_item = user_items.groupBy("itemid").agg(F.count(F.lit(1)).alias("users"))
    left, right = user_items.alias("left"), user_items.alias("right")
    # Co-occurrence is symmetric: count each unordered pair once, then list it from both sides.
    # Counted by one packed long key (item * 2**32 + neighbour): at 10M ratings ~74 M pairs reach the hash
    # aggregation, and one long key is a smaller entry than two int columns (its stage: 71 -> 52 s of CPU).
    packed = (F.col("left.itemid").cast("long") * (1 << 32) + F.col("right.itemid")).alias("pair")
    pairs = (
        left.join(right, "userid")
        .filter(F.col("left.itemid") < F.col("right.itemid"))
        .groupBy(packed)
        .agg(F.count(F.lit(1)).alias("both"))
        .select(F.shiftright("pair", 32).cast("int").alias("itemid"),
                F.col("pair").bitwiseAND((1 << 32) - 1).cast("int").alias("neighbour"), "both")
    )
    together = pairs.unionByName(
        pairs.select(F.col("neighbour").alias("itemid"), F.col("itemid").alias("neighbour"), "both")
    )
    own = users_per_item.select("itemid", F.col("users").alias("own_users"))
    other = users_per_item.select(F.col("itemid").alias("neighbour"), F.col("users").alias("other_users"))
    scored = (
        together.join(F.broadcast(own), "itemid")
        .join(F.broadcast(other), "neighbour")
        .select("itemid", "neighbour",
                (F.col("both") / F.sqrt(F.col("own_users") * F.col("other_users"))).alias("score"))
    )
    best_first = Window.partitionBy("itemid").orderBy(F.desc("score"), F.asc("neighbour"))
    kept = scored.withColumn("rank", F.row_number().over(best_first)).filter(F.col("rank") <= neighbours_per_item)
    return kept.groupBy("itemid").agg(
        F.transform(
            F.array_sort(F.collect_list(F.struct("rank", "neighbour", "score"))),
            lambda entry: F.struct(entry["neighbour"].alias("itemid"), entry["score"].cast("float").alias("score")),
        ).alias("neighbours")
    )


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    offline = read_table(spark, settings, Table.IMPRESSIONS).filter(F.col("split").isin(*Split.OFFLINE))
    neighbours = latest_per_user(offline, settings.cooccurrence_history).transform(
        lambda pairs: item_neighbours(pairs, settings.neighbours_per_item)
    )
    return [write_table(neighbours, settings, Table.ITEM_NEIGHBOURS, run_id)]


def main(argv: Sequence[str] | None = None) -> None:
    job_main("cooccurrence", run, argv, __doc__)


if __name__ == "__main__":
    main()
