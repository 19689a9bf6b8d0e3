"""Spark session with Delta Lake, the same whether launched from Python or by spark-submit."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse

from pyspark import SparkContext
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


# The JVM's own notes on the classes it cannot archive (hundreds of lines) go to its standard output, the job's.
QUIET_CLASS_ARCHIVE = "-Xlog:cds*=off"
STALE_DUMP_SECONDS = 3600  # a dump this old belongs to a driver that ended without finishing it
DUMP_WAIT_SECONDS = 120  # how long a driver's end waits for its JVM to write the archive (~5-15 s on 2 cores)
# Sessions whose JVM writes a class archive as it exits: (the file it writes, where it goes once complete).
_dumps: dict[int, tuple[Path, Path]] = {}


def java_executable() -> Path | None:
    """The java that spark-submit starts (JAVA_HOME's, else the PATH's)."""
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else (Path(w) if (w := shutil.which("java")) else None)
    return found.resolve() if found is not None and found.exists() else None


def class_archive(cache: Path) -> Path | None:
    """The class-data-sharing archive for this JDK and Spark (None: no java found). A JVM checks an archive
    against its classpath and ignores one that does not match; the name changes with what would make it not."""
    java = java_executable()
    if java is None:
        return None
    stat = java.stat()
    key = hashlib.sha256(f"{java}|{stat.st_size}|{stat.st_mtime_ns}|{version('pyspark')}|{version('delta-spark')}"
                         .encode()).hexdigest()[:16]
    return cache / f"driver-classes-{key}.jsa"


def class_archive_options(cache: Path) -> tuple[list[str], tuple[Path, Path] | None]:
    """(JVM options, (the file this JVM dumps its classes to as it exits, the archive's path) if it does): the
    archive where one exists, else a dump of this driver's classes into a file of its own, which ``stop_session``
    puts in place."""
    archive = class_archive(cache)
    if archive is None:
        return [], None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob("driver-classes-*.tmp"):  # 190 MB each
            if time.time() - stale.stat().st_mtime > STALE_DUMP_SECONDS:
                stale.unlink(missing_ok=True)
    except OSError:
        return [], None
    if archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}", QUIET_CLASS_ARCHIVE], None
    dump = archive.with_name(f"{archive.name}.{os.getpid()}.tmp")
    return [f"-XX:ArchiveClassesAtExit={dump}", QUIET_CLASS_ARCHIVE], (dump, archive)


def delta_maven_coordinate() -> str:
    """The Delta jar matching the installed delta-spark Python package (resolved from Maven Central)."""
    return f"io.delta:delta-spark_{SCALA_BINARY_VERSION}:{version('delta-spark')}"


def jar_listing(cache: Path) -> Path:
    """The file naming the jars Spark resolved for this Delta version."""
    return cache / f"{delta_maven_coordinate().replace(':', '_')}.jars"


def remembered_jars(cache: Path) -> list[str] | None:
    """The Delta jars an earlier session resolved, where every one of them is still on disk (None: resolve)."""
    try:
        jars = [line for line in jar_listing(cache).read_text().splitlines() if line]
    except OSError:
        return None
    return jars if jars and all(Path(jar).is_file() for jar in jars) else None


def remember_jars(spark: SparkSession, cache: Path) -> None:
    """Notes the jars this session's ``spark.jars.packages`` resolved to (Ivy's local copies), atomically; a cache
    that cannot be written only costs the next session a resolution."""
    jars = [urlparse(jar).path if jar.startswith("file:") else jar
            for jar in spark.sparkContext.getConf().get("spark.jars", "").split(",") if jar]
    if not jars:
        return
    listing = jar_listing(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staged = listing.with_name(f"{listing.name}.{os.getpid()}.tmp")
        staged.write_text("".join(f"{jar}\n" for jar in jars))
        os.replace(staged, listing)
    except OSError as error:
        logging.getLogger(__name__).warning("could not note the resolved Delta jars in %s: %s", listing, error)


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
        # Cached DataFrames as plain columns: building a compressed cache tries each column's encodings, which cost
        # more than the pass that fills it (the features' timeline at 10M ratings: 47-55 s of CPU compressed, 21-23 s
        # plain, for 744 MB against 425 MB; a cache larger than its memory goes to disk, so the heap stays bounded).
        .config("spark.sql.inMemoryColumnarStorage.compressed", "false")
    )
    resolving, dump = False, None
    if not launched_by_spark_submit():
        # The JVM starts Python workers for Python data sources (the events step's streaming source) with the
        # interpreter its environment names, not the spark.pyspark.python setting: the JVM inherits this
        # process's environment when getOrCreate starts it, so that is the only place to name this one.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        # Ivy resolves spark.jars.packages on every start (~1 s, more on a busy machine) though its answer only
        # changes with the Delta version: the jars it resolved once are given by path after that.
        jars = remembered_jars(settings.spark_cache)
        resolving = jars is None
        # Loading and verifying Spark's classes is much of a driver's start: an archive of the ones the last driver
        # loaded maps them instead (ML-100K's batch: ~2 s).
        archive_options, dump = (class_archive_options(settings.spark_cache) if settings.spark_class_archive
                                 and not SparkContext._active_spark_context else ([], None))
        builder = (
            builder.master(settings.spark_master)
            .config(*(("spark.jars", ",".join(jars)) if jars else ("spark.jars.packages", delta_maven_coordinate())))
            .config("spark.driver.memory", settings.spark_driver_memory)
            .config("spark.driver.extraJavaOptions", " ".join(
                [DRIVER_JAVA_OPTIONS] + ([QUICK_JIT_OPTIONS] if quick_jit(settings.spark_jit, data_dir) else [])
                + archive_options))
            .config("spark.pyspark.python", sys.executable)
        )
        if settings.spark_off_heap is not None:
            # Execution pages outside the heap: at ML-25M's size Spark's on-heap pages (~1.7 GB of long[], up to
            # what its memory manager allows) and Parquet's buffers (which it does not count) ran a 3 GB heap out.
            builder = (builder.config("spark.memory.offHeap.enabled", "true")
                       .config("spark.memory.offHeap.size", settings.spark_off_heap))
    spark = builder.getOrCreate()
    if dump is not None:
        _dumps[id(spark)] = dump
    if resolving:
        remember_jars(spark, settings.spark_cache)
    spark.sparkContext.setLogLevel("WARN")
    logging.getLogger(__name__).info(
        "Spark %s on %s (Delta %s)", spark.version, spark.sparkContext.master, version("delta-spark")
    )
    return spark


def stop_session(spark: SparkSession) -> None:
    """Stops the session; where its JVM writes a class archive, ends the JVM, waits for the archive and puts it in
    place in one rename (a driver starting meanwhile maps the old file or none, never half of one)."""
    dumping = _dumps.pop(id(spark), None)
    gateway = spark.sparkContext._gateway
    spark.stop()
    if dumping is None or gateway is None or getattr(gateway, "proc", None) is None:
        return
    dump, archive = dumping
    log = logging.getLogger(__name__)
    # The JVM ends when its standard input does (pyspark's gateway server watches it) and dumps as it exits.
    gateway.shutdown()
    gateway.proc.stdin.close()
    SparkContext._gateway, SparkContext._jvm = None, None  # a later session starts a JVM of its own
    started = time.monotonic()
    try:
        code = gateway.proc.wait(DUMP_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        log.warning("the driver JVM did not end within %d s: no class archive this time", DUMP_WAIT_SECONDS)
        return
    if code == 0 and dump.is_file() and dump.stat().st_size > 0:
        os.replace(dump, archive)
        log.info("class archive of the driver's classes written in %.1f s: %s", time.monotonic() - started, archive)
    else:
        dump.unlink(missing_ok=True)
