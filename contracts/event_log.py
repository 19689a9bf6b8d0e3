"""The embedded profile's event log: every accepted rating, appended to segment files under
``<output>/events`` and fsync'd before the service answers.

One JSON object per line (``sequence``, ``event_id``, ``userid``, ``itemid``, ``rating``, ``timestamp``).
Segments are named by the sequence number of their first record and a new one starts once
the last passes ``segment_bytes``. Writers (any worker) append under an exclusive ``flock`` of the folder's
lock file, so sequence numbers are dense and one request's records are one ``write``; readers need no lock:
they read complete lines from where they stopped (``LogCursor``), so every worker sees every record in order.
A line cut short by a crash mid-write was never acknowledged: the next writer truncates it away.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

SEGMENT_PREFIX, SEGMENT_SUFFIX = "events-", ".jsonl"
SEGMENT_BYTES = 64 * 1024 * 1024
LOCK_FILE = "append.lock"


def redis_stream_key(prefix: str) -> str:
    """The services profile's event log: a Redis stream of the same records, one JSON field ``record`` per
    entry (``online/redis_event_log.py`` writes it, ``spark_jobs/events.py`` reads it)."""
    return f"{prefix}:events"


def segment_name(first_sequence: int) -> str:
    return f"{SEGMENT_PREFIX}{first_sequence:012d}{SEGMENT_SUFFIX}"


@dataclass(frozen=True)
class LogCursor:
    """Where a reader stopped: a segment and the byte after the last complete line it read."""

    segment: str | None = None  # None: before the first segment
    offset: int = 0


class EventLogError(OSError):
    """The log folder cannot be read or written."""


class EventLog:
    def __init__(self, folder: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self.where = str(folder)
        self.segment_bytes = segment_bytes
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> LogCursor:
        return LogCursor()

    def segments(self) -> list[str]:
        return segment_names(self.folder)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Held while a writer catches up, checks for repeats and appends: one writer at a time, in any process."""
        with open(self.folder / LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def read(self, cursor: LogCursor) -> tuple[list[dict[str, Any]], LogCursor]:
        """The complete records after ``cursor``, and the cursor after them."""
        segment, offset = cursor.segment, cursor.offset
        if segment is not None:
            try:
                if os.stat(self.folder / segment).st_size <= offset and offset < self.segment_bytes:
                    return [], cursor  # the common case: nothing new, one stat
            except FileNotFoundError:
                pass
        records: list[dict[str, Any]] = []
        names = self.segments()
        for name in names:
            if segment is not None and name < segment:
                continue
            start = offset if name == segment else 0
            with open(self.folder / name, "rb") as file:
                file.seek(start)
                data = file.read()
            complete = data.rfind(b"\n") + 1
            for line in data[:complete].splitlines():
                if line.strip():
                    records.append(orjson.loads(line))
            segment, offset = name, start + complete
            if complete < len(data):
                break  # a line being written (or cut short): read it whole next time
        return records, LogCursor(segment, offset)

    def append(self, records: list[dict[str, Any]], last_sequence: int) -> list[dict[str, Any]]:
        """Appends ``records`` numbered from ``last_sequence + 1`` and fsyncs them; call within ``exclusive``,
        after reading the log to its end (``last_sequence`` is the last record's). Returns them numbered."""
        numbered = [{"sequence": last_sequence + n, **record} for n, record in enumerate(records, start=1)]
        if not numbered:
            return numbered
        names = self.segments()
        path = self.folder / names[-1] if names else None
        if path is None or path.stat().st_size >= self.segment_bytes:
            path = self.folder / segment_name(numbered[0]["sequence"])
        payload = b"".join(orjson.dumps(record) + b"\n" for record in numbered)
        created = not path.exists()
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._cut_partial_line(descriptor)
            written = os.write(descriptor, payload)
            if written != len(payload):
                raise EventLogError(f"{path}: wrote {written} of {len(payload)} bytes")
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if created:  # the new file's name is durable only once its folder is
            folder = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        return numbered

    @staticmethod
    def _cut_partial_line(descriptor: int) -> None:
        """Drop a last line without its newline (a write cut short by a crash: never acknowledged)."""
        size = os.fstat(descriptor).st_size
        if size == 0 or os.pread(descriptor, 1, size - 1) == b"\n":
            return
        tail_start = max(0, size - 1024 * 1024)
        tail = os.pread(descriptor, size - tail_start, tail_start)
        keep = tail_start + tail.rfind(b"\n") + 1
        log.warning("event log: dropping %d bytes of a line cut short", size - keep)
        os.ftruncate(descriptor, keep)


def segment_names(folder: Path) -> list[str]:
    """The log's segment files, oldest first (none where the folder is absent)."""
    if not folder.is_dir():
        return []
    return sorted(name for name in os.listdir(folder)
                  if name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX))


def segment_first_sequence(name: str) -> int:
    return int(name.removeprefix(SEGMENT_PREFIX).removesuffix(SEGMENT_SUFFIX))


def records_between(folder: Path, after: int, through: int | None = None) -> Iterator[dict[str, Any]]:
    """The complete records with ``after`` < sequence <= ``through`` (None: to the end), in order, reading only
    the segments that can hold them (a segment's records run up to the next one's first sequence). A reader
    that creates nothing: the batch's events step (``spark_jobs/events.py``)."""
    names = segment_names(folder)
    for position, name in enumerate(names):
        following = names[position + 1] if position + 1 < len(names) else None
        if following is not None and segment_first_sequence(following) <= after + 1:
            continue  # every record of this segment is at or before ``after``
        if through is not None and segment_first_sequence(name) > through:
            return
        with open(folder / name, "rb") as file:
            data = file.read()
        for line in data[:data.rfind(b"\n") + 1].splitlines():
            if not line.strip():
                continue
            record = orjson.loads(line)
            if record["sequence"] > after and (through is None or record["sequence"] <= through):
                yield record


def last_sequence(folder: Path) -> int:
    """The last complete record's sequence number (0: no record)."""
    for name in reversed(segment_names(folder)):
        with open(folder / name, "rb") as file:
            data = file.read()
        lines = [line for line in data[:data.rfind(b"\n") + 1].splitlines() if line.strip()]
        if lines:
            return int(orjson.loads(lines[-1])["sequence"])
    return 0
