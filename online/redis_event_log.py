"""The services profile's event log: a Redis stream, ``<prefix>:events``, on a Redis of its own (``--events-redis-host``
/ ``--events-redis-port``) that fsyncs its append-only file on every write (``appendonly yes``, ``appendfsync
always``: ``online.local_services`` and docker-compose start it so), so a rating is on disk before ``XADD``
answers and the service's 202. Not the serving Redis: a Redis runs every command in one thread, and each write's
fsync (~2 ms) would hold the recommendations' reads behind it.

The same records as the file log (``contracts/event_log.py``), one JSON field per stream entry; the cursor
is the last stream id read. Writers take a Redis lock (``<prefix>:events:lock``, with a timeout so a writer killed
while holding it does not stop the others) to read to the end, check for repeats and append in one
``MULTI``. The stream is not versioned: the ratings outlive every load of the recall data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import redis

from contracts.errors import StoreUnavailableError
from contracts.event_log import redis_stream_key

READ_BATCH = 1000
LOCK_SECONDS = 10.0  # a lock held longer (a writer killed while holding it) expires
LOCK_WAIT_SECONDS = 5.0


class RedisEventLog:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.key = redis_stream_key(prefix)
        self.lock_key = f"{self.key}:lock"
        server = client.connection_pool.connection_kwargs  # two Redis servers in the profile: say which
        self.where = f"the redis stream {self.key} on {server.get('host')}:{server.get('port')}"

    def start(self) -> str:
        return "0-0"

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        lock = self.client.lock(self.lock_key, timeout=LOCK_SECONDS, blocking_timeout=LOCK_WAIT_SECONDS)
        try:
            taken = lock.acquire()
        except redis.RedisError as error:
            raise StoreUnavailableError("event_log", f"event log lock: {error}") from error
        if not taken:
            raise StoreUnavailableError("event_log",
                                        f"event log lock {self.lock_key} not free in {LOCK_WAIT_SECONDS} s")
        try:
            yield
        finally:
            try:
                lock.release()
            except redis.RedisError:  # expired meanwhile, or Redis went away: nothing is left to release
                pass

    def read(self, cursor: str) -> tuple[list[dict[str, Any]], str]:
        records: list[dict[str, Any]] = []
        try:
            while True:
                entries = self.client.xrange(self.key, min=f"({cursor}", max="+", count=READ_BATCH)
                for entry_id, fields in entries:
                    records.append(orjson.loads(fields[b"record"]))
                    cursor = entry_id.decode()
                if len(entries) < READ_BATCH:
                    return records, cursor
        except redis.RedisError as error:
            raise StoreUnavailableError("event_log", f"reading {self.key}: {error}") from error

    def append(self, records: list[dict[str, Any]], last_sequence: int) -> list[dict[str, Any]]:
        numbered = [{"sequence": last_sequence + n, **record} for n, record in enumerate(records, start=1)]
        if not numbered:
            return numbered
        pipe = self.client.pipeline(transaction=True)
        for record in numbered:
            pipe.xadd(self.key, {"record": orjson.dumps(record)})
        try:
            pipe.execute()
        except redis.RedisError as error:
            raise StoreUnavailableError("event_log", f"appending to {self.key}: {error}") from error
        return numbered
