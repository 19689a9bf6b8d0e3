"""Spark session with Delta Lake, the same whether launched from Python or by spark-submit."""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import version
from pathlib import Path

from pyspark.sql import SparkSession

from contracts.settings import SparkJit, SparkSettings

SCALA_BINARY_VERSION = "2.13"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
# A driver JVM out of heap ends, so the batch fails at once: left running, it answered some calls and never others
# (at 25M ratings a collect whose heap ran out waited forever, the batch idle). spark_jobs/delta.conf says the same
# for spark-submit.
DRIVER_JAVA_OPTIONS = "-XX:+ExitOnOutOfMemoryError"
# C1 alone: on ML-100K the JIT's optimising compiler (C2) took ~24 s of the run's ~80 s of CPU, compiling code that
# then ran too briefly to pay it back (the batch 38.4 / 39.4 -> 33.9 s). On 10M ratings C1's slower code cost more
# than it saved (ingest 50 -> 76 s). C1 alone gets a smaller code cache by default (48 MB), which Spark's generated
# classes filled ("Out of space in CodeCache"): the tiered default's size is kept.
QUICK_JIT_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"
# The dataset size below which ``auto`` picks the quick JIT: ML-100K's and ML-latest-small's files are ~5 MB, ML-1M's
# ~25 MB.
QUICK_JIT_MAX_DATASET_BYTES = 16 << 20


def delta_maven_coordinate() -> str:
    """The Delta jar matching the installed delta-spark Python package (resolved from Maven Central)."""
    return f"io.delta:delta-spark_{SCALA_BINARY_VERSION}:{version('delta-spark')}"


def launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands its gateway to Python; its own flags
    # (--master, --packages, --driver-memory) then apply and must not be overridden here.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def dataset_bytes(data_dir: Path) -> int:
    """The size of the dataset directory's files (not its subdirectories); 0 where it does not exist."""
    return sum(path.stat().st_size for path in data_dir.iterdir() if path.is_file()) if data_dir.is_dir() else 0


def quick_jit(jit: SparkJit, data_dir: Path | None) -> bool:
    """Whether the driver JVM compiles with C1 alone: ``quick``, or ``auto`` for a dataset known to be small."""
    if jit == "auto":
        return data_dir is not None and 0 < dataset_bytes(data_dir) < QUICK_JIT_MAX_DATASET_BYTES
    return jit == "quick"


def spark_session(settings: SparkSettings, app_name: str, data_dir: Path | None = None) -> SparkSession:
    """The session, with Delta; ``data_dir`` is the dataset the job reads, where it sizes the JVM's choices."""
    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        # Spark's progress bar where a person watches; logs say which step runs otherwise.
        .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower())
        # Delta replays its log into this many partitions on every read; 50 (the default) is
        # made for clusters and dominates small local runs.
        .config("spark.databricks.delta.snapshotPartitions", str(settings.delta_snapshot_partitions))
        # Feast and pyarrow read microsecond timestamps; Spark's default INT96 is legacy.
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        # Delta writes keep the schema we give them; new columns need an explicit spec change.
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        # No per-file column statistics: every reader takes whole tables (or the files of a version), so
        # data skipping never uses them, and for 60-column rows they are 15-20% of a table's write time.
        .config("spark.databricks.delta.stats.collect", "false")
        # A plan whose generated method outgrows HotSpot's 8,000-byte JIT limit runs as interpreted bytecode: the
        # counter history's 36 standardised columns took 29 s at 10M ratings that way, 1.7 s with whole-stage
        # codegen left off for such a plan (Spark's own advice for HotSpot).
        .config("spark.sql.codegen.hugeMethodLimit", "8000")
    )
    if not launched_by_spark_submit():
        # The JVM starts Python workers for Python data sources (the events step's streaming source) with the
        # interpreter its environment names, not the spark.pyspark.python setting: the JVM inherits this
        # process's environment when getOrCreate starts it, so that is the only place to name this one.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.master(settings.spark_master)
            .config("spark.jars.packages", delta_maven_coordinate())
            .config("spark.driver.memory", settings.spark_driver_memory)
            .config("spark.driver.extraJavaOptions", " ".join(
                [DRIVER_JAVA_OPTIONS] + ([QUICK_JIT_OPTIONS] if quick_jit(settings.spark_jit, data_dir) else [])))
            .config("spark.pyspark.python", sys.executable)
        )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    logging.getLogger(__name__).info(
        "Spark %s on %s (Delta %s)", spark.version, spark.sparkContext.master, version("delta-spark")
    )
    return spark
