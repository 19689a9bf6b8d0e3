from chispa import assert_df_equality
from deltalake import DeltaTable
from pyspark.sql import functions as F

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import write_arrow_table, write_table
from spark_jobs.split import HOLDOUT_COLUMNS, Split, add_label, add_split, online_holdout


def impressions_of(spark, counts: dict[int, int]):
    rows = [(user, item, 4.0, 1000 + item) for user, n in counts.items() for item in range(1, n + 1)]
    return spark.createDataFrame(rows, "userid int, itemid int, rating double, timestamp long")


def test_label_is_rating_above_3(spark):
    ratings = spark.createDataFrame([(1, i, float(r), i) for i, r in enumerate([1, 2, 3, 3.5, 4, 5])],
                                    "userid int, itemid int, rating double, timestamp long")
    labels = [r.label for r in ratings.transform(add_label).orderBy("itemid").collect()]
    assert labels == [0, 0, 0, 1, 1, 1]


def test_split_boundaries(spark):
    # Positions are 1-based; the reference's 0-based row number is position - 1.
    # user 1: 20 impressions -> 10 held out; n = 10 offline: row number < 8 is train (8), 2 test.
    # user 2: 12 impressions (the minimum) -> 10 held out; n = 2: row number < 1.6: both train.
    # user 3: 11 impressions -> too few to split: all train.
    # user 4: 25 impressions -> n = 15: row number < 12 is train (12), 3 test.
    # user 5: 15 impressions -> n = 5: row number < 4 is train (4), 1 test.
    split = impressions_of(spark, {1: 20, 2: 12, 3: 11, 4: 25, 5: 15}).transform(add_split)
    expected_rows = (
        [(1, p, "train") for p in range(1, 9)] + [(1, p, "test") for p in range(9, 11)]
        + [(1, p, "holdout") for p in range(11, 21)]
        + [(2, 1, "train"), (2, 2, "train")] + [(2, p, "holdout") for p in range(3, 13)]
        + [(3, p, "train") for p in range(1, 12)]
        + [(4, p, "train") for p in range(1, 13)] + [(4, p, "test") for p in range(13, 16)]
        + [(4, p, "holdout") for p in range(16, 26)]
        + [(5, p, "train") for p in range(1, 5)] + [(5, 5, "test")] + [(5, p, "holdout") for p in range(6, 16)]
    )
    expected = spark.createDataFrame(expected_rows, "userid int, position int, split string")
    assert_df_equality(split.select("userid", "position", "split"), expected,
                       ignore_row_order=True, ignore_nullable=True)


def test_order_is_timestamp_then_itemid(spark):
    rows = [(1, 30, 4.0, 100), (1, 10, 4.0, 200), (1, 20, 4.0, 100)]
    df = spark.createDataFrame(rows, "userid int, itemid int, rating double, timestamp long").transform(add_split)
    assert [(r.itemid, r.position) for r in df.orderBy("position").collect()] == [(20, 1), (30, 2), (10, 3)]


def test_online_holdout_is_the_last_ten_of_the_version_written_with_sparks_schema(spark, tmp_path):
    settings = BatchSettings(output_dir=tmp_path)
    write_table(impressions_of(spark, {1: 30}).transform(add_label).transform(add_split), settings,
                Table.IMPRESSIONS, "run-0")  # an older version
    impressions = impressions_of(spark, {1: 15, 2: 5}).transform(add_label).transform(add_split)
    version = write_table(impressions, settings, Table.IMPRESSIONS, "run-1").version
    write_table(impressions_of(spark, {3: 20}).transform(add_label).transform(add_split), settings,
                Table.IMPRESSIONS, "run-2")  # a later one, not what the hold-out is read from
    holdout = online_holdout(settings, version)
    assert holdout.column_names == ["userid", "itemid", "rating", "label", "timestamp"]
    assert sorted(zip(holdout["userid"].to_pylist(), holdout["itemid"].to_pylist(), strict=True)) == \
        [(1, item) for item in range(6, 16)]
    by_spark = impressions.filter(F.col("split") == Split.HOLDOUT).select(*HOLDOUT_COLUMNS)
    write_table(by_spark, settings, "spark_holdout", "run-1")
    written = write_arrow_table(holdout, settings, Table.ONLINE_HOLDOUT, "run-1")
    assert DeltaTable(written.path).schema().to_json() == \
        DeltaTable(str(settings.table_path("spark_holdout"))).schema().to_json()
