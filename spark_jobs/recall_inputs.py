"""Recall inputs: what the term-based recall and the recommendation filter need.

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/recall_inputs.py --output DIR

- ``item_terms``: per movie, its genre ids.
- ``user_terms`` comes from the features step, which computes the counters it is made of
  (``spark_jobs/genre_terms.py``).
- ``user_filter``: per user, every movie seen offline, so recommendations can exclude them, and the
  latest ``recent_items`` of them newest first (co-occurrence recall starts from those).
- ``item_popularity``: per catalogue movie, its offline positives and impressions: the popularity
  source and the cold-start list (most positives first, then most impressions, then itemid).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import Written, read_table, write_tables
from spark_jobs.runtime import job_main
from spark_jobs.split import Split


def item_terms(items: DataFrame) -> DataFrame:
    return items.select("itemid", F.col("genre_ids").alias("terms"))


def user_filter(offline_impressions: DataFrame, recent_items: int = 50) -> DataFrame:
    """Seen items (sorted) and the latest ``recent_items`` (newest first, by timestamp then itemid) with their
    timestamps and labels: the service applies a posted rating to them with the batch's rules
    (``models/user_updates.py``: the counters over the latest PIT_HISTORY, the recent list)."""
    newest_first = F.sort_array(F.collect_list(F.struct("timestamp", "itemid", "label")), asc=False)
    recent = F.slice(newest_first, 1, recent_items)
    return offline_impressions.groupBy("userid").agg(
        F.array_sort(F.collect_set("itemid")).alias("seen_itemids"), recent.alias("recent"),
    ).select("userid", "seen_itemids", F.col("recent")["itemid"].alias("recent_itemids"),
             F.col("recent")["timestamp"].cast("array<long>").alias("recent_timestamps"),
             F.col("recent")["label"].cast("array<int>").alias("recent_labels"))


def item_popularity(items: DataFrame, offline_impressions: DataFrame) -> DataFrame:
    """Every catalogue item with its offline positives and impressions (0 when never rated)."""
    counts = offline_impressions.groupBy("itemid").agg(
        F.sum("label").cast("long").alias("positives"), F.count(F.lit(1)).alias("impressions")
    )
    return (
        items.select("itemid")
        .join(counts, "itemid", "left")
        .fillna(0, subset=["positives", "impressions"])
        .select("itemid", "positives", "impressions")
    )


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    items = read_table(spark, settings, Table.ITEMS)
    impressions = read_table(spark, settings, Table.IMPRESSIONS)
    offline = impressions.filter(F.col("split").isin(*Split.OFFLINE))
    # The users' state: their offline impressions and the ratings they posted to the service, as it applies them.
    state = impressions.filter(F.col("split").isin(*Split.ONLINE_STATE))
    return write_tables([
        (Table.ITEM_TERMS, item_terms(items)),
        (Table.USER_FILTER, user_filter(state, settings.recent_items)),
        (Table.ITEM_POPULARITY, item_popularity(items, offline)),
    ], settings, run_id)


def main(argv: Sequence[str] | None = None) -> None:
    job_main("recall_inputs", run, argv, __doc__)


if __name__ == "__main__":
    main()
