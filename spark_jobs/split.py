"""Split: clean ratings -> labelled impressions with a temporal per-user split, and the online hold-out.

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/split.py --output DIR

Per user, impressions are ordered by (timestamp, itemid) and numbered from 1 (``position``). The
last HOLDOUT_SIZE form the online hold-out; of the n before them, the ones with position - 1 <
TRAIN_PERCENT% of n are offline train and the rest offline test (the reference design's 0-based
``cumcount < 0.8 * n``: n = 10 gives 8 train and 2 test). A user with fewer than
MIN_IMPRESSIONS_FOR_SPLIT impressions is too short for a hold-out: all of theirs are train.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import logging
from collections.abc import Callable, Sequence

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from contracts.feature_spec import HOLDOUT_SIZE, MIN_IMPRESSIONS_FOR_SPLIT, POSITIVE_RATING_ABOVE, TRAIN_PERCENT
from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import Written, latest_write, read_arrow_table, read_table, write_arrow_table, write_table
from spark_jobs.runtime import job_main

log = logging.getLogger(__name__)

# The hold-outs' columns, in their order (``online_holdout`` and the item models' ``validation_holdout``).
HOLDOUT_COLUMNS: tuple[str, ...] = ("userid", "itemid", "rating", "label", "timestamp")


class Split:
    TRAIN = "train"
    TEST = "test"
    HOLDOUT = "holdout"
    EVENT = "event"  # a rating posted to the service (the ``events`` table): never split, never a sample
    OFFLINE: tuple[str, ...] = (TRAIN, TEST)
    # What a user's online state is computed over (seen filter, recent items, terms, online counters): the
    # offline impressions and the posted ratings, never the hold-out (the service applies a rating to the
    # offline state in the same way, models/user_updates.py).
    ONLINE_STATE: tuple[str, ...] = (TRAIN, TEST, EVENT)


def user_timeline() -> Window:
    """A user's impressions in time order; itemid breaks ties so the order is total."""
    return Window.partitionBy("userid").orderBy("timestamp", "itemid")


def add_label(ratings: DataFrame) -> DataFrame:
    return ratings.withColumn("label", (F.col("rating") > POSITIVE_RATING_ABOVE).cast("int"))


def split_of(position: Column, impressions: Column) -> Column:
    offline = impressions - HOLDOUT_SIZE
    return (
        F.when(impressions < MIN_IMPRESSIONS_FOR_SPLIT, F.lit(Split.TRAIN))
        .when(position > offline, F.lit(Split.HOLDOUT))
        # 0-based row number < TRAIN_PERCENT% of offline, in integers so no rounding can move the boundary
        .when((position - 1) * 100 < offline * TRAIN_PERCENT, F.lit(Split.TRAIN))
        .otherwise(F.lit(Split.TEST))
    )


def add_split(impressions: DataFrame) -> DataFrame:
    """Adds position (1-based row number in the user's timeline) and split."""
    return (
        impressions.withColumn("position", F.row_number().over(user_timeline()))
        .withColumn("user_impressions", F.count(F.lit(1)).over(Window.partitionBy("userid")))
        .withColumn("split", split_of(F.col("position"), F.col("user_impressions")))
        .drop("user_impressions")
    )


def with_posted_ratings(events: DataFrame | None) -> Callable[[DataFrame], DataFrame]:
    """Split impressions plus the ratings posted to the service as impressions of split ``event`` (label by the
    same rule, no position: the split is the dataset's alone), each with its event-log ``sequence`` (null for
    the dataset's rows): the last one read is the boundary the service applies later ratings from."""

    def transform(impressions: DataFrame) -> DataFrame:
        dataset = impressions.withColumn("sequence", F.lit(None).cast("long"))
        if events is None:
            return dataset
        posted = events.select(F.col("userid").cast("int"), F.col("itemid").cast("int"), F.col("rating").cast("double"),
                               F.col("timestamp").cast("long"), "sequence").transform(add_label)
        return dataset.unionByName(posted.select(
            "userid", "itemid", "rating", "timestamp", "label", F.lit(None).cast("int").alias("position"),
            F.lit(Split.EVENT).alias("split"), F.col("sequence").cast("long")))

    return transform


def online_holdout(settings: BatchSettings, impressions_version: int) -> pa.Table:
    """The hold-out impressions of that ``impressions`` version, read on the driver: committed from there, no Spark
    write and commit of their own (~1 s of a small dataset's split step, which nothing runs beside)."""
    return read_arrow_table(settings, Table.IMPRESSIONS, HOLDOUT_COLUMNS, "split", [Split.HOLDOUT],
                            version=impressions_version)


def mark_validation(offline: DataFrame, validation_size: int, min_history: int) -> DataFrame:
    """Adds ``validation``: true on each user's last ``validation_size`` offline impressions (by timestamp, then
    itemid, as every timeline here) where at least ``min_history`` offline impressions come before them."""
    newest_first = Window.partitionBy("userid").orderBy(F.desc("timestamp"), F.desc("itemid"))
    return (
        offline.withColumn("recency", F.row_number().over(newest_first))
        .withColumn("offline_count", F.count(F.lit(1)).over(Window.partitionBy("userid")))
        .withColumn("validation", (F.col("recency") <= validation_size)
                    & (F.col("offline_count") >= validation_size + min_history))
        .drop("recency", "offline_count")
    )


def validation_holdout(marked: DataFrame) -> DataFrame:
    return marked.filter("validation").select(*HOLDOUT_COLUMNS)


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    ratings_path = settings.table_path(Table.RATINGS)
    ratings = read_table(spark, settings, Table.RATINGS)
    log.info("split: %d ratings in from %s", latest_write(str(ratings_path))[1], ratings_path)
    events = read_table(spark, settings, Table.EVENTS) if settings.table_path(Table.EVENTS).exists() else None
    if events is not None:
        log.info("split: %d posted rating(s) in from %s", events.count(), settings.table_path(Table.EVENTS))
    impressions = ratings.transform(add_label).transform(add_split).transform(with_posted_ratings(events))
    written = write_table(impressions, settings, Table.IMPRESSIONS, run_id)
    holdout = online_holdout(settings, written.version)
    return [written, write_arrow_table(holdout, settings, Table.ONLINE_HOLDOUT, run_id)]


def main(argv: Sequence[str] | None = None) -> None:
    job_main("split", run, argv, __doc__)


if __name__ == "__main__":
    main()
