"""Features: impressions -> training samples (narrow: the trainer assembles their 59 spec features), the
counter history, online user and item features, and the users' genre terms (from the same online counters).

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/features.py --output DIR

Point-in-time genre counters: for an impression at time t, look at the user's (up to) PIT_HISTORY
most recent impressions with a timestamp strictly before t, and count per genre how many there were
(``user_g{k}_imp``) and how many were positive (``user_g{k}_clk``). The user's online features are
the same counters over their last PIT_HISTORY offline impressions: what serving sees after the
batch. Dense features are standardised with the train split's mean and sample standard deviation.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyspark.sql import Column, DataFrame, Row, SparkSession, Window
from pyspark.sql import functions as F

from contracts.feature_spec import (
    GENRE_IDS,
    PIT_HISTORY,
    SPEC,
    FeatureGroup,
    FeatureSpec,
    genre_clicks_name,
    genre_flag_name,
    genre_impressions_name,
)
from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.genre_terms import user_terms
from spark_jobs.lake import Written, read_arrow_table, read_table, write_arrow_table, write_tables
from spark_jobs.runtime import job_main
from spark_jobs.split import Split, user_timeline

log = logging.getLogger(__name__)

SPARK_TYPES = {"int32": "int", "float32": "float"}
GENRE_FLAGS = [genre_flag_name(k) for k in GENRE_IDS]
COUNTERS = [name for k in GENRE_IDS for name in (genre_impressions_name(k), genre_clicks_name(k))]


def add_genre_flags(items: DataFrame) -> DataFrame:
    """genre_ids array -> one 0/1 column per genre."""
    return items.select(
        "*", *(F.array_contains("genre_ids", k).cast("int").alias(genre_flag_name(k)) for k in GENRE_IDS)
    )


# A windowed count is at most PIT_HISTORY, so it fits in COUNTER_BITS bits, and the 36 counters travel packed as
# lanes of a few 64-bit words: a window sums a few words instead of 36 columns. A window's sum is the difference of
# two running sums of the words (for each row Spark adds up every row of a sliding frame again, so a frame of
# PIT_HISTORY rows cost PIT_HISTORY additions a row; a running sum adds one). The running sums' lanes carry into
# each other, the difference's cannot (each of its lanes is a count of at most PIT_HISTORY), so it is exact; a word
# holds few enough lanes that its running sum stays below 2^63 up to 2^USER_IMPRESSION_BITS impressions of one user
# (beyond, Spark's ANSI arithmetic, its default, raises on the overflow: never a wrong count).
COUNTER_BITS = PIT_HISTORY.bit_length()
COUNTER_MASK = (1 << COUNTER_BITS) - 1  # one lane of a word
USER_IMPRESSION_BITS = 24
# A running sum is below impressions * 2^(COUNTER_BITS * (lanes - 1) + 1): the top lane's weight, doubled for the
# lanes under it.
COUNTERS_PER_WORD = (62 - USER_IMPRESSION_BITS - 1) // COUNTER_BITS + 1
COUNTER_WORDS = [COUNTERS[start:start + COUNTERS_PER_WORD] for start in range(0, len(COUNTERS), COUNTERS_PER_WORD)]
PIT_WORDS = [f"pit_word_{n}" for n in range(len(COUNTER_WORDS))]  # strictly before the row's second
THROUGH_WORDS = [f"through_word_{n}" for n in range(len(COUNTER_WORDS))]  # up to and including the row


def counter_increments(word: Sequence[str]) -> Column:
    """One impression's contribution to a packed word: 1 in each lane whose genre flag (and, for a clicks
    lane, label) it has."""
    flags = {genre_impressions_name(k): F.col(genre_flag_name(k)) for k in GENRE_IDS}
    flags |= {genre_clicks_name(k): F.col(genre_flag_name(k)) * F.col("label") for k in GENRE_IDS}
    return sum((F.shiftleft(flags[name].cast("long"), lane * COUNTER_BITS) for lane, name in enumerate(word)),
               F.lit(0).cast("long"))


def unpacked(words: Sequence[str]) -> list[Column]:
    """The 36 int counter columns out of their packed words."""
    return [(F.shiftright(F.col(word_column), lane * COUNTER_BITS).bitwiseAND(COUNTER_MASK)).cast("int").alias(name)
            for word_column, word in zip(words, COUNTER_WORDS, strict=True) for lane, name in enumerate(word)]


def add_timeline_counters(impressions: DataFrame) -> DataFrame:
    """Impressions with item genre flags and label -> their other columns plus, packed, the counters over
    the user's PIT_HISTORY most recent impressions strictly before the row's second (PIT_WORDS) and over
    the PIT_HISTORY rows up to and including the row (THROUGH_WORDS), and whether the row is the last of
    its second.

    One sort of each user's rows gives both. The PIT_HISTORY rows before the *first* impression of a
    (user, timestamp) group in timeline order are exactly the user's most recent impressions strictly
    before that timestamp; every impression of the group takes that first row's counters, carried down
    the timeline as the last non-null value so far. Each window's counters are a difference of running sums:
    through a row, its running sum less the one PIT_HISTORY rows back; before it, the previous row's.
    """
    timeline = user_timeline()
    so_far = timeline.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    columns = [c for c in impressions.columns if c not in GENRE_FLAGS]  # the sort moves narrow rows
    running = [f"running_{n}" for n in range(len(COUNTER_WORDS))]
    with_increments = impressions.select(
        *columns, *(counter_increments(word).alias(f"increment_{n}") for n, word in enumerate(COUNTER_WORDS))
    )
    running_sums = with_increments.select(
        *columns, *(F.sum(f"increment_{n}").over(so_far).alias(total) for n, total in enumerate(running)),
        F.coalesce(F.lag("timestamp").over(timeline) != F.col("timestamp"), F.lit(True)).alias("first_of_second"),
        F.coalesce(F.lead("timestamp").over(timeline) != F.col("timestamp"), F.lit(True)).alias("last_of_second"),
    )

    def rows_back(total: str, rows: int) -> Column:
        return F.lag(total, rows, 0).over(timeline)

    windowed = running_sums.select(
        *columns,
        *(F.when(F.col("first_of_second"), rows_back(total, 1) - rows_back(total, PIT_HISTORY + 1))
          .alias(f"first_{word}") for total, word in zip(running, PIT_WORDS, strict=True)),
        *((F.col(total) - rows_back(total, PIT_HISTORY)).alias(word) for total, word in zip(running, THROUGH_WORDS,
                                                                                             strict=True)),
        "last_of_second",
    )
    return windowed.select(
        *columns,
        *(F.last(f"first_{word}", ignorenulls=True).over(so_far).alias(word) for word in PIT_WORDS),
        *THROUGH_WORDS, "last_of_second",
    )


def pit_counters(timeline_counters: DataFrame, columns: Sequence[str]) -> DataFrame:
    """``columns`` of the timeline rows plus the 36 point-in-time counters (before the row's second)."""
    return timeline_counters.select(*columns, *unpacked(PIT_WORDS))


def add_pit_genre_counters(impressions: DataFrame) -> DataFrame:
    """Impressions with item genre flags and label -> their other columns plus the 36 point-in-time counters."""
    return pit_counters(add_timeline_counters(impressions), [c for c in impressions.columns if c not in GENRE_FLAGS])


def packed_counter_history(timeline_counters: DataFrame) -> DataFrame:
    """Per (user, second with impressions): the counters over their PIT_HISTORY latest impressions up to
    and including that second, packed (THROUGH_WORDS), stamped with it.

    This is the point-in-time table a feature store joins against: the counters of an impression at
    time t are the row of the latest second strictly before t (the entity timestamp t - 1 s), since the
    last row of a second's group sees the same PIT_HISTORY rows as the first row of the next group.
    """
    return timeline_counters.filter(F.col("last_of_second")).select("userid", "timestamp", *THROUGH_WORDS)


def counter_history(timeline_counters: DataFrame) -> DataFrame:
    """``packed_counter_history`` with the 36 counters as int columns."""
    return packed_counter_history(timeline_counters).select("userid", "timestamp", *unpacked(THROUGH_WORDS))


def user_counter_history(impressions: DataFrame) -> DataFrame:
    """``counter_history`` of impressions with item genre flags and label."""
    return counter_history(add_timeline_counters(impressions))


def online_genre_counters(offline_impressions: DataFrame) -> DataFrame:
    """Per user, the counters over their last PIT_HISTORY offline impressions, and the last one's time."""
    return latest_counters(add_timeline_counters(offline_impressions))


def with_posted_counters(every_impression: DataFrame, items_with_flags: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """The online counters of the users with posted ratings recomputed over their offline impressions and those
    ratings (``Split.ONLINE_STATE``: the hold-out left out, as the service does); the others' as they are. A
    second timeline pass, over those users' rows only."""

    def transform(online_counters: DataFrame) -> DataFrame:
        posting = every_impression.filter(F.col("split") == Split.EVENT).select("userid").distinct()
        state = every_impression.filter(F.col("split").isin(*Split.ONLINE_STATE)).join(posting, "userid", "left_semi")
        flagged = state.select(*SAMPLE_COLUMNS).join(F.broadcast(items_with_flags.select("itemid", *GENRE_FLAGS)),
                                                     "itemid")
        return (online_counters.join(posting, "userid", "left_anti")
                .unionByName(latest_counters(add_timeline_counters(flagged))))

    return transform


def latest_counters(timeline_counters: DataFrame) -> DataFrame:
    """Per user, the counters through their latest row of ``add_timeline_counters``, and its time."""
    latest = F.struct("timestamp", "itemid")
    newest = timeline_counters.groupBy("userid").agg(
        F.max_by(F.struct(*THROUGH_WORDS), latest).alias("words"), F.max("timestamp").alias("last_offline_timestamp")
    )
    return newest.select("userid", *unpacked([f"words.{word}" for word in THROUGH_WORDS]), "last_offline_timestamp")


# --- standardisation -------------------------------------------------------------------------

Standardiser = Mapping[str, tuple[float, float]]  # feature -> (mean, std)


def fit_standardiser(train: DataFrame, columns: Sequence[str]) -> Standardiser:
    """Mean and sample std per integer column on the train rows only; std 0 or undefined becomes 1.

    From exact integer sums (count, sum, sum of squares): the variance (n * sum_sq - sum^2) / (n * (n - 1)) is
    rounded once, where Spark's ``stddev_samp`` rounds at every row. And it is cheaper: 36 counters over 6.5 M
    train rows at 10M ratings took 23 s of CPU with Spark's moments, 6.5 s as sums of longs."""
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for c in columns:
        value = F.col(c).cast("long")
        aggregates += [F.sum(value).alias(f"{c}__sum"), F.sum(value * value).alias(f"{c}__squares")]
    row = train.agg(*aggregates).first()
    rows = row["rows"]
    stats = {}
    for c in columns:
        total, squares = row[f"{c}__sum"] or 0, row[f"{c}__squares"] or 0
        mean = total / rows if rows else 0.0  # Python's int division rounds once, as Spark's mean of an exact sum
        variance = Fraction(rows * squares - total * total, rows * (rows - 1)) if rows > 1 else Fraction(0)
        std = math.sqrt(variance)
        stats[c] = (mean, std if std else 1.0)
    return stats


def standardise(stats: Standardiser) -> Callable[[DataFrame], DataFrame]:
    def transform(df: DataFrame) -> DataFrame:
        return df.withColumns(
            {c: ((F.col(c) - F.lit(mean)) / F.lit(std)).cast("float") for c, (mean, std) in stats.items()}
        )

    return transform


# --- assembling the declared tables ----------------------------------------------------------


def with_demographics(users: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Join user side features; a user missing from the users table gets 0 (= unknown)."""
    side = ["gender", "age", "occupation"]

    def transform(df: DataFrame) -> DataFrame:
        return df.join(users.select("userid", *side), "userid", "left").fillna(0, subset=side)

    return transform


SAMPLE_COLUMNS: tuple[str, ...] = ("userid", "itemid", "timestamp", "label", "split")


def training_samples(impressions: DataFrame) -> DataFrame:
    """Offline train/test rows, narrow: (userid, itemid, timestamp, label, split).

    A sample's 59 features are its user's demographics and its movie's features (``user_features``,
    ``item_features``) and the user's counters as of the latest second before it (``user_feature_history``):
    all in other tables, so the trainer assembles them (``models/samples.py``) and no wide row is written."""
    return impressions.filter(F.col("split").isin(*Split.OFFLINE)).select(
        F.col("userid").cast("int"), F.col("itemid").cast("int"), F.col("timestamp").cast("long"),
        F.col("label").cast("int"), "split")


def user_features(users: DataFrame, counters: DataFrame, default_timestamp: int, spec: FeatureSpec) -> DataFrame:
    """Online user features (raw counters) for every known user, with Feast's event timestamp.

    ``counters``: ``online_genre_counters`` of the offline impressions."""
    every_user = users.select("userid").unionByName(counters.select("userid")).distinct()
    columns = [f.name for f in spec.online_user_features]
    return (
        every_user.join(counters, "userid", "left")
        .transform(with_demographics(users))
        .fillna(0, subset=COUNTERS)
        .select(
            F.col("userid").cast("int"),
            *(F.col(c).cast(SPARK_TYPES[spec[c].dtype]) for c in columns),
            F.timestamp_seconds(F.coalesce("last_offline_timestamp", F.lit(default_timestamp))).alias(
                "event_timestamp"
            ),
            F.current_timestamp().alias("created_timestamp"),
        )
    )


UTC_MICROS = pa.timestamp("us", tz="UTC")  # Spark's timestamps as the session writes them (TIMESTAMP_MICROS)
USER_FEATURE_HISTORY_SCHEMA = pa.schema([
    pa.field("userid", pa.int32()), *(pa.field(c, pa.float32()) for c in COUNTERS),
    pa.field("event_timestamp", UTC_MICROS), pa.field("created_timestamp", UTC_MICROS),
])


def standardised_history(packed: pa.RecordBatch, stats: Standardiser, created: datetime) -> pa.RecordBatch:
    """Rows of ``packed_counter_history`` as the Feast source's (``user_feature_history`` standardised): the same
    values as Spark's projection (the counter as a double less the mean, divided by the std, rounded to float)."""
    columns = [packed["userid"].cast(pa.int32())]
    for word_column, word in zip(THROUGH_WORDS, COUNTER_WORDS, strict=True):
        words = packed[word_column].to_numpy()
        for lane, name in enumerate(word):
            mean, std = stats.get(name, (0.0, 1.0))
            counts = ((words >> (lane * COUNTER_BITS)) & COUNTER_MASK).astype(np.float64)
            columns.append(pa.array(((counts - mean) / std).astype(np.float32)))
    seconds = packed["timestamp"].cast(pa.int64()).to_numpy()
    columns.append(pa.array(seconds * 1_000_000, pa.int64()).cast(UTC_MICROS))
    columns.append(pa.array(np.full(len(packed), int(created.timestamp() * 1_000_000)), pa.int64()).cast(UTC_MICROS))
    return pa.RecordBatch.from_arrays(columns, schema=USER_FEATURE_HISTORY_SCHEMA)


def write_user_feature_history(timeline_counters: DataFrame, stats: Standardiser, settings: BatchSettings,
                               run_id: str) -> Written:
    """The counter history, standardised, as ``user_feature_history``: Spark writes it packed (4 words a row) to
    scratch files, and the driver unpacks, standardises and commits it batch by batch (``deltalake``'s writer).
    Spark's Parquet writer encoding the 36 float columns was most of the cost: at 10M ratings (8 M rows) ~30 s of
    CPU against ~6 s for the same table written by ``deltalake``."""
    scratch = settings.scratch_path(Table.USER_FEATURE_HISTORY, run_id)
    try:
        packed_counter_history(timeline_counters).write.mode("overwrite").parquet(str(scratch))
        created = datetime.now(UTC)
        # Little read ahead (the scanner's default is 4 files and 16 batches): this runs beside the item models' fits,
        # which set the driver's peak.
        packed = ds.dataset(scratch, format="parquet").to_batches(batch_readahead=1, fragment_readahead=1)
        batches = (standardised_history(batch, stats, created) for batch in packed)
        return write_arrow_table(pa.RecordBatchReader.from_batches(USER_FEATURE_HISTORY_SCHEMA, batches), settings,
                                 Table.USER_FEATURE_HISTORY, run_id)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def item_features(items_with_flags: DataFrame, catalogue_timestamp: int, spec: FeatureSpec) -> DataFrame:
    """Online item features; the catalogue is known from the first rating on."""
    return items_with_flags.select(
        F.col("itemid").cast("int"),
        *(F.col(f.name).cast(SPARK_TYPES[f.dtype]) for f in spec.online_item_features),
        F.timestamp_seconds(F.lit(catalogue_timestamp)).alias("event_timestamp"),
        F.current_timestamp().alias("created_timestamp"),
    )


def item_vocabulary(items: DataFrame) -> DataFrame:
    """Each catalogue movie id's dense index 1..N in id order: the rows of the models' item tables.

    One window over the whole catalogue (a single partition), which is ~62K rows at ML-25M's size."""
    return items.select(F.col("itemid").cast("int"),
                        F.row_number().over(Window.orderBy("itemid")).cast("int").alias("item_index"))


@dataclass(frozen=True)
class Cardinalities:
    userid: int
    itemid: int


def feature_metadata(
    spec: FeatureSpec,
    stats: Standardiser,
    cardinalities: Cardinalities,
    dataset: Mapping[str, object],
    counts: Mapping[str, int],
    run_id: str,
) -> dict:
    absent = [] if dataset["has_demographics"] else [f.name for f in spec.requiring("demographics")]
    features = []
    for f in spec.features:
        entry = {
            "name": f.name,
            "group": str(f.group),
            "entity": str(f.entity),
            "dtype": f.dtype,
            "cardinality": getattr(cardinalities, f.name) if f.group is FeatureGroup.SPARSE_ID else f.cardinality,
            "available": f.name not in absent,
        }
        if f.name in stats:
            entry["mean"], entry["std"] = stats[f.name]
        features.append(entry)
    return {
        "spec_version": spec.version,
        "run_id": run_id,
        "columns": list(spec.names),
        "label": spec.label,
        "timestamp": spec.timestamp,
        "features": features,
        "absent_features": absent,
        "dataset": dict(dataset),
        "counts": dict(counts),
    }


def impressions_span(every_impression: DataFrame) -> Row:
    """In one job: the dataset's impressions' first timestamp, largest user id and count (``first``, ``max_user``,
    ``rows``), the posted ratings' count (``posted``) and the samples per offline split (``samples_train``...)."""
    split = F.col("split")
    dataset_row = split != Split.EVENT
    return every_impression.agg(
        F.min(F.when(dataset_row, F.col("timestamp"))).alias("first"),
        F.max(F.when(dataset_row, F.col("userid"))).alias("max_user"),
        F.count_if(dataset_row).alias("rows"),
        F.count_if(split == Split.EVENT).alias("posted"),
        *(F.count_if(split == name).alias(f"samples_{name}") for name in Split.OFFLINE),
    ).first()


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    spec = SPEC
    # The one-row dataset table and the users' ids read on the driver: a Spark job each otherwise, which on a small
    # dataset is much of what this step's start waits on.
    dataset = read_arrow_table(settings, Table.DATASET).to_pylist()[0]
    max_user = pc.max(read_arrow_table(settings, Table.USERS, ["userid"])["userid"]).as_py() or 0
    users = read_table(spark, settings, Table.USERS)
    items = read_table(spark, settings, Table.ITEMS).transform(add_genre_flags)
    every_impression = read_table(spark, settings, Table.IMPRESSIONS)
    # The ratings posted to the service shape only the users' online state (below); samples, their counters and
    # statistics come from the dataset's impressions alone.
    impressions = every_impression.filter(F.col("split") != Split.EVENT)
    span = impressions_span(every_impression)
    log.info("features: %d impressions in from %s", span["rows"], settings.table_path(Table.IMPRESSIONS))

    flagged = impressions.select(*SAMPLE_COLUMNS).join(
        F.broadcast(items.select("itemid", *GENRE_FLAGS)), "itemid")
    # Cached: the train statistics, the counter history and the online counters all derive from one sort of the
    # users' timelines, kept narrow (the counters packed) so the cache stays small.
    timeline = add_timeline_counters(flagged).cache()
    train_counters = pit_counters(timeline.filter(F.col("split") == Split.TRAIN), [])
    stats = fit_standardiser(train_counters, [f.name for f in spec.dense])
    online_counters = latest_counters(timeline.filter(F.col("split").isin(*Split.OFFLINE)))
    if span["posted"]:
        online_counters = online_counters.transform(with_posted_counters(every_impression, items))
    online_counters = online_counters.cache()  # one row per user, read by the user features and the terms
    online_users = user_features(users, online_counters, span["first"], spec).transform(standardise(stats))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-history") as history:
        # Beside the other tables' Spark writes: its driver half (unpacking, the commit) is Python's work.
        history_written = history.submit(write_user_feature_history, timeline, stats, settings, run_id)
        written = write_tables([
            (Table.SAMPLES, training_samples(impressions)),
            (Table.USER_FEATURES, online_users),
            (Table.USER_TERMS, user_terms(online_counters)),
            (Table.ITEM_FEATURES, item_features(items, span["first"], spec)),
            (Table.ITEM_VOCABULARY, item_vocabulary(items)),
        ], settings, run_id)
        written.append(history_written.result())

    counts = {"ratings": span["rows"], **{w.table: w.rows for w in written},
              **{f"samples_{split}": span[f"samples_{split}"] for split in Split.OFFLINE}}
    # Users' ids are dense in every release and index the user tables; movies are indexed by the vocabulary.
    cardinalities = Cardinalities(userid=max(max_user, span["max_user"] or 0) + 1,
                                  itemid=counts[Table.ITEM_VOCABULARY] + 1)
    metadata = feature_metadata(spec, stats, cardinalities, dataset, counts, run_id)
    metadata_table = pa.table({"run_id": [run_id], "spec_version": [spec.version], "metadata": [json.dumps(metadata)]})
    written.append(write_arrow_table(metadata_table, settings, Table.FEATURE_METADATA, run_id))
    timeline.unpersist()
    online_counters.unpersist()
    log.info("features: %d columns (spec %s), %s", len(spec.names), spec.version, counts)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    job_main("features", run, argv, __doc__)


if __name__ == "__main__":
    main()
