import os
import time

from deltalake import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import STALE_SCRATCH_SECONDS, remove_stale_scratch, write_table, write_tables


def per_item_frame(spark: SparkSession) -> DataFrame:
    """Columns the plan proves non-null (ids, literals, an array built of non-null values, a struct) beside a
    nullable one: what Spark's writer makes nullable and the driver's commit must too."""
    return spark.range(1, 6).select(
        F.col("id").cast("int").alias("itemid"),
        F.lit(0.5).alias("weight"),
        F.array(F.col("id").cast("int"), F.lit(7)).alias("terms"),
        F.struct(F.col("id").alias("count"), F.lit("x").alias("name")).alias("summary"),
        F.when(F.col("id") > 2, F.col("id")).alias("maybe"),
    )


def test_a_table_per_movie_or_user_is_committed_by_the_driver_as_spark_would_write_it(spark, tmp_path):
    driver, by_spark = BatchSettings(output_dir=tmp_path / "driver"), BatchSettings(output_dir=tmp_path / "spark")
    frame = per_item_frame(spark)
    assert Table.ITEM_TERMS in Table.PER_ITEM_OR_USER and Table.USER_FILTER not in Table.PER_ITEM_OR_USER
    # A table Spark wrote before, as an older batch did: the driver's commit is its next version.
    frame.limit(1).write.format("delta").save(str(driver.table_path(Table.ITEM_TERMS)))
    written, by_spark_too = write_tables([(Table.ITEM_TERMS, frame), (Table.USER_FILTER, frame)], driver, "run-1")
    reference = write_table(frame, by_spark, Table.ITEM_TERMS, "run-1")
    assert (written.version, written.rows) == (1, 5) and (by_spark_too.version, by_spark_too.rows) == (0, 5)

    committed, sparks = DeltaTable(written.path), DeltaTable(reference.path)
    assert committed.history(1)[0]["engineInfo"].startswith("delta-rs")  # the driver's commit, not Spark's
    assert DeltaTable(by_spark_too.path).history(1)[0]["engineInfo"].startswith("Apache-Spark")
    assert committed.schema().to_json() == sparks.schema().to_json()
    assert committed.history(1)[0]["userMetadata"] == "run-1"
    read_back = spark.read.format("delta").load(written.path)
    assert read_back.schema == spark.read.format("delta").load(reference.path).schema
    assert sorted(map(tuple, read_back.collect())) == sorted(map(tuple, frame.collect()))


def test_scratch_a_killed_run_left_is_removed_and_a_running_ones_kept(tmp_path):
    settings = BatchSettings(output_dir=tmp_path)
    assert remove_stale_scratch(settings) == []  # no scratch folder yet
    left, running = settings.scratch_path("history", "run-1"), settings.scratch_path("history", "run-2")
    for folder in (left, running):
        folder.mkdir(parents=True)
        (folder / "part-0.parquet").write_bytes(b"x")
    long_ago = time.time() - STALE_SCRATCH_SECONDS - 60
    os.utime(left, (long_ago, long_ago))
    assert remove_stale_scratch(settings) == [left]
    assert not left.exists() and (running / "part-0.parquet").exists()
