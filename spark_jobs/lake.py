"""The declared tables between stages: Delta for the system of record, Parquet for plain readers.

Delta overwrites are atomic (a new version in the transaction log; readers of the old version are
undisturbed), and every write is tagged with the batch's run id so ``DESCRIBE HISTORY`` tells which
run produced which version.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from pyspark.sql import DataFrame, SparkSession

from contracts.settings import LakeSettings
from contracts.tables import Table
from spark_jobs.driver_memory import return_freed_memory

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class Written:
    table: str
    path: str
    version: int  # the Delta version written; -1 for a Parquet export
    rows: int


# Older than any step keeps its scratch files (minutes at ML-25M's size): those of a run that was killed before it
# could remove them. A younger folder may be a running batch's, on the same output.
STALE_SCRATCH_SECONDS = 6 * 3600


def remove_stale_scratch(settings: LakeSettings) -> list[Path]:
    """Removes the scratch folders a killed run left behind (each can be as large as a table); returns them."""
    now = time.time()
    try:
        stale = [path for path in settings.scratch_dir.iterdir() if now - path.stat().st_mtime > STALE_SCRATCH_SECONDS]
    except FileNotFoundError:
        return []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed %s: scratch files of an earlier run that did not end", path)
    return stale


def write_table(df: DataFrame, settings: LakeSettings, table: str, run_id: str) -> Written:
    path = str(settings.table_path(table))
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", run_id)
        .partitionBy(*Table.PARTITIONS.get(table, ()))
        .save(path)
    )
    version, rows = latest_write(path)
    written = Written(table, path, version, rows)
    log.info("wrote %s: %d rows -> %s (Delta version %d)", table, rows, path, written.version)
    return written


def latest_write(path: str) -> tuple[int, int]:
    """(version, rows written) of a Delta table's latest commit by Spark (rows -1 where its log does not say), read
    from the log by the deltalake package: milliseconds, where Spark's DESCRIBE HISTORY or a count is a job."""
    last = DeltaTable(path).history(1)[0]
    return int(last["version"]), int((last.get("operationMetrics") or {}).get("numOutputRows", -1))


# Files of a table the driver commits. The writer holds several times a file's size while it encodes one, and the
# process keeps that memory afterwards: a 32 M-entry list table (user_ease at 25M ratings) took the driver from
# 420 MB to 1,218 MB with the default size, to 589 MB with this one (pyarrow.parquet's own writer: 652 MB).
DRIVER_FILE_BYTES = 16 << 20


def write_arrow_table(table: pa.Table | pa.RecordBatchReader, settings: LakeSettings, name: str,
                      run_id: str) -> Written:
    """Commits a table the driver computed (Arrow; a reader's batches are written as they come, never all held) as
    the Delta table's next version, by the ``deltalake`` writer: no Spark job. Handing it to Spark instead copies it
    into the JVM (``createDataFrame``: at 25M ratings a 79 MB task that ran the driver's heap out of memory) or
    through a Parquet file Spark reads and writes again (7 jobs and commits per batch). The same overwrite (atomic,
    tagged with the run id) and the same schema as Spark's."""
    path = str(settings.table_path(name))
    write_deltalake(path, table, mode="overwrite", schema_mode="overwrite",
                    partition_by=list(Table.PARTITIONS.get(name, ())) or None,
                    target_file_size=DRIVER_FILE_BYTES,
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": run_id}))
    last = DeltaTable(path).history(1)[0]
    written = Written(name, path, int(last["version"]), int(last["operationMetrics"]["num_added_rows"]))
    return_freed_memory()  # the writer's buffers
    log.info("wrote %s: %d rows -> %s (Delta version %d, from the driver)", name, written.rows, path,
             written.version)
    return written


def read_arrow_table(settings: LakeSettings, name: str, columns: Sequence[str] | None = None, where: str | None = None,
                     among: Sequence[object] = (), version: int | None = None) -> pa.Table:
    """The ``columns`` (default all) of the rows whose ``where`` is one of ``among`` (default every row) in the
    ``version`` (default the latest), read on the driver from the table's files (``deltalake``'s dataset, so any
    storage it reads): no Spark job, and nothing held in the JVM's heap as Spark's ``toArrow`` would.

    Read batch by batch without a scan filter, each batch masked by a compute kernel: a scan's filter runs in
    Arrow's query engine, which allocates from Arrow's C++ default pool (mimalloc) whatever pool Python sets, and
    mimalloc keeps what it frees: the impressions at 25M ratings (640 MB) left the driver ~0.7 GB larger for the rest
    of the run. This way every buffer comes from the pool the driver sets (``driver_memory.use_returning_allocators``)
    and goes back once dropped."""
    dataset = DeltaTable(str(settings.table_path(name)), version=version).to_pyarrow_dataset()
    columns = list(columns) if columns is not None else dataset.schema.names
    schema = pa.schema([dataset.schema.field(column) for column in columns])
    if where is None:
        return pa.Table.from_batches(dataset.to_batches(columns=columns), schema=schema)
    wanted = pa.array(list(among))
    batches = [batch.filter(pc.is_in(batch[where], value_set=wanted)).select(columns)
               for batch in dataset.to_batches(columns=list(dict.fromkeys([*columns, where])))]
    return pa.Table.from_batches(batches, schema=schema)


def write_collected_table(df: DataFrame, settings: LakeSettings, name: str, run_id: str) -> Written:
    """Commits a table of one row per movie or per user (``Table.PER_ITEM_OR_USER``) from the driver: Spark computes
    it and hands it over as Arrow. Spark's own Delta write of such a table costs ~0.9 s of CPU on 2 cores whatever its
    size (planning, the transaction's checks, the commit), the collection and the driver's commit ~0.25 s: on
    ML-100K, where eight such tables are most of what some steps write, that is several seconds of a ~30 s batch."""
    table = df.toArrow()
    return write_arrow_table(table.cast(nullable_schema(table.schema)), settings, name, run_id)


def nullable_field(field: pa.Field) -> pa.Field:
    data_type = field.type
    if pa.types.is_list(data_type):
        data_type = pa.list_(nullable_field(data_type.value_field))
    elif pa.types.is_struct(data_type):
        data_type = pa.struct([nullable_field(child) for child in data_type])
    return field.with_type(data_type).with_nullable(True)


def nullable_schema(schema: pa.Schema) -> pa.Schema:
    """Every field nullable, nested ones too: Spark's Delta writer stores every table so, whatever the plan proves
    (its ``asNullable``), and a table keeps the schema it had when Spark wrote it."""
    return pa.schema([nullable_field(field) for field in schema])


def write_any_table(df: DataFrame, settings: LakeSettings, name: str, run_id: str) -> Written:
    """The table's Delta overwrite, by the driver for a table sized by the movies or users, else by Spark."""
    writer = write_collected_table if name in Table.PER_ITEM_OR_USER else write_table
    return writer(df, settings, name, run_id)


# Concurrent Delta commits of small tables: most of a commit's time is waiting (log writes, job
# scheduling), so Spark runs several side by side; measured here, 5 small overwrites took 14.1 s one
# after another and 4.3 s from 5 threads.
PARALLEL_WRITES = 4


def write_tables(tables: Sequence[tuple[str, DataFrame]], settings: LakeSettings, run_id: str) -> list[Written]:
    """Write independent tables at once (as concurrent Spark jobs; ``write_any_table`` says which the driver commits);
    results in the given order.

    Each table's overwrite is still its own atomic Delta commit; the first failure is raised after
    the others finished, as it would be one after another.
    """
    if len(tables) <= 1:
        return [write_any_table(df, settings, name, run_id) for name, df in tables]
    with ThreadPoolExecutor(max_workers=min(PARALLEL_WRITES, len(tables)), thread_name_prefix="delta-write") as pool:
        futures = [pool.submit(write_any_table, df, settings, name, run_id) for name, df in tables]
        return [future.result() for future in futures]


def read_table(spark: SparkSession, settings: LakeSettings, table: str, version: int | None = None) -> DataFrame:
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(settings.table_path(table)))
