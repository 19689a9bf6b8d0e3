"""Events: the ratings posted to the service, from its event log into the Delta table ``events``, exactly once.

    PYSPARK_PYTHON=.venv/bin/python spark-submit --properties-file spark_jobs/delta.conf spark_jobs/events.py \
        --output DIR [--event-log DIR]

A Spark Structured Streaming query: the source is the embedded profile's event log (``contracts/event_log.py``,
default ``<output>/events``), or with ``--events-redis host:port/prefix`` the services profile's Redis stream,
read through a Python streaming data source whose offsets are the log's sequence numbers (and stream ids);
the sink is Delta with a checkpoint (``<output>/checkpoints/events``), so every record lands
once however often the job is stopped, started or killed (the checkpoint names the offsets each micro-batch
took, Delta's sink skips a batch it already committed; tested with ``kill -9`` inside a batch and after its
Delta commit). ``trigger(availableNow=True)``: it takes what the log holds
when it starts and stops; the batch runs it as its first step (``run_batch``), and a deployment can run it on a
schedule or in a loop. PySpark starts the source's Python worker with ``PYSPARK_PYTHON``, which must have
this project's packages (the session sets it to this interpreter when it starts the JVM itself).

The table: ``sequence`` (long), ``event_id``, ``userid``, ``itemid``, ``rating``, ``timestamp``; the batch's
split reads it as impressions of the users' online state (``spark_jobs/split.py``).
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

from contracts.event_log import last_sequence, records_between, redis_stream_key
from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import Written
from spark_jobs.runtime import job_main

log = logging.getLogger(__name__)

SOURCE_NAME = "recsys_event_log"
EVENT_SCHEMA = "sequence long, event_id string, userid int, itemid int, rating double, timestamp long"


class SequenceRange(InputPartition):
    def __init__(self, after: int, through: int) -> None:
        self.after, self.through = after, through


class EventLogStreamReader(DataSourceStreamReader):
    """Offsets are ``{"sequence": n}``: a micro-batch takes the records after its start through its end."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def initialOffset(self) -> dict:  # noqa: N802 (PySpark's names)
        return {"sequence": 0}

    def latestOffset(self) -> dict:  # noqa: N802
        return {"sequence": last_sequence(self.folder)}

    def partitions(self, start: dict, end: dict) -> Sequence[InputPartition]:
        return [SequenceRange(int(start["sequence"]), int(end["sequence"]))]

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        assert isinstance(partition, SequenceRange)
        for record in records_between(self.folder, partition.after, partition.through):
            yield (int(record["sequence"]), str(record["event_id"]), int(record["userid"]), int(record["itemid"]),
                   float(record["rating"]), int(record["timestamp"]))

    def commit(self, end: dict) -> None:
        """The log is kept whole (the service replays it on start): nothing to release."""


class StreamRange(InputPartition):
    def __init__(self, after: str, through: str) -> None:
        self.after, self.through = after, through


class RedisStreamReader(DataSourceStreamReader):
    """The services profile's log, a Redis stream: offsets are ``{"sequence": n, "id": <its stream id>}``, so a
    micro-batch reads the entries after its start id through its end id with ``XRANGE``."""

    def __init__(self, address: str) -> None:
        self.address = address

    def _client_and_key(self) -> tuple[Any, str]:
        import redis

        host_port, _, prefix = self.address.partition("/")
        host, _, port = host_port.rpartition(":")
        return redis.Redis(host=host or "127.0.0.1", port=int(port), socket_timeout=30), redis_stream_key(prefix)

    def initialOffset(self) -> dict:  # noqa: N802
        return {"sequence": 0, "id": "0-0"}

    def latestOffset(self) -> dict:  # noqa: N802
        client, key = self._client_and_key()
        last = client.xrevrange(key, count=1)
        if not last:
            return self.initialOffset()
        entry_id, fields = last[0]
        return {"sequence": int(orjson.loads(fields[b"record"])["sequence"]), "id": entry_id.decode()}

    def partitions(self, start: dict, end: dict) -> Sequence[InputPartition]:
        return [StreamRange(str(start["id"]), str(end["id"]))]

    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        assert isinstance(partition, StreamRange)
        client, key = self._client_and_key()
        after = partition.after
        while True:
            entries = client.xrange(key, min=f"({after}", max=partition.through, count=1000)
            for entry_id, fields in entries:
                record = orjson.loads(fields[b"record"])
                yield (int(record["sequence"]), str(record["event_id"]), int(record["userid"]),
                       int(record["itemid"]), float(record["rating"]), int(record["timestamp"]))
                after = entry_id.decode()
            if len(entries) < 1000:
                return

    def commit(self, end: dict) -> None:
        """The stream is kept whole (every worker replays it on start): nothing to trim."""


class EventLogDataSource(DataSource):
    """Option ``path``: the file log's folder; or ``redis``: ``host:port/prefix`` of the Redis stream."""

    @classmethod
    def name(cls) -> str:
        return SOURCE_NAME

    def schema(self) -> str:
        return EVENT_SCHEMA

    def streamReader(self, schema: Any) -> DataSourceStreamReader:  # noqa: N802
        if "redis" in self.options:
            return RedisStreamReader(self.options["redis"])
        return EventLogStreamReader(self.options["path"])


def checkpoint_dir(settings: BatchSettings) -> Path:
    return settings.output_dir / "checkpoints" / Table.EVENTS


def interrupted_batch(checkpoint: Path) -> bool:
    """Whether the last micro-batch the checkpoint planned (``offsets/<n>``) was never marked done
    (``commits/<n>``): the previous run was killed inside it."""
    def last(folder: Path) -> int:
        numbers = [int(f.name) for f in folder.glob("*") if f.name.isdigit()] if folder.exists() else []
        return max(numbers, default=-1)

    return last(checkpoint / "offsets") > last(checkpoint / "commits")


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    """Appends what the log gained since the last run to ``events``; nothing when there is no log."""
    folder = settings.events_dir
    if settings.events_redis is not None:
        source, where = {"redis": settings.events_redis}, f"the redis stream {settings.events_redis}"
    elif last_sequence(folder) == 0:
        log.info("events: no ratings in %s", folder)
        return []
    else:
        source, where = {"path": str(folder.resolve())}, str(folder)
    spark.dataSource.register(EventLogDataSource)
    path = settings.table_path(Table.EVENTS)
    # After a run killed inside a micro-batch, an availableNow query redoes that batch and stops there (seen
    # here: the ratings logged since waited for the next run), so a recovering run starts the query twice.
    for _ in range(2 if interrupted_batch(checkpoint_dir(settings)) else 1):
        query = (spark.readStream.format(SOURCE_NAME).options(**source).load()
                 .writeStream.format("delta").outputMode("append")
                 .option("checkpointLocation", str(checkpoint_dir(settings).resolve()))
                 .option("userMetadata", run_id)
                 .trigger(availableNow=True).start(str(path)))
        query.awaitTermination()
    if not path.exists():
        return []
    table = DeltaTable(str(path))
    rows = table.to_pyarrow_dataset().count_rows()
    log.info("events: %s holds %d rating(s) from %s (Delta version %d)", path, rows, where, table.version())
    return [Written(Table.EVENTS, str(path), table.version(), rows)]


def main(argv: Sequence[str] | None = None) -> None:
    job_main("events", run, argv, __doc__)


if __name__ == "__main__":
    main()
