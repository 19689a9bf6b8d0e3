"""Posted ratings on top of a bundle's batch users, in each worker: the write path and what every request reads.

``LiveUsers.accept`` takes the log's lock, reads the log to its end (what other workers appended), drops
repeats (the same event id, or the same user, item and timestamp), appends and fsyncs the rest, applies them
and pushes the touched users' features to Feast, all before the service answers. Every request first reads
what the log gained since the worker's last look (one ``stat`` when nothing did), so a rating accepted by
one worker is in every worker's next request. A user's state is recomputed from their batch state and all
their posted ratings (``models.user_updates.apply_ratings``), so order of arrival never matters.

Boundary with the batch: records up to ``after_sequence`` (the last one the published run already
contains; 0 until a run reads the events) are skipped, the rest applied on top of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from contracts.errors import StoreUnavailableError
from models.recall_sources import UserRecallData
from models.stores import AcceptedRating, UserRecallStore
from models.user_updates import BatchUserSource, PostedRating, UpdatedUser, UpdateRules, apply_ratings
from spark_jobs.formats import DatasetFormat

log = logging.getLogger(__name__)

WARN_EVERY_SECONDS = 10.0  # a log that stays down is reported this often, not on every request


class EventLogStore(Protocol):
    """An append-only log of accepted ratings, numbered densely: segment files (``contracts/event_log.py``) or a
    Redis stream (``online/redis_event_log.py``)."""

    where: str  # for messages: the folder or the stream

    def start(self) -> Any:
        """The cursor before the first record."""
        ...

    def exclusive(self) -> AbstractContextManager[None]: ...

    def read(self, cursor: Any) -> tuple[list[dict[str, Any]], Any]: ...

    def append(self, records: list[dict[str, Any]], last_sequence: int) -> list[dict[str, Any]]: ...


class FeaturePusher(Protocol):
    """Writes users' online feature rows (spec order) to the online store."""

    def push(self, rows: Mapping[int, np.ndarray]) -> None: ...


class LiveUsers:
    def __init__(self, event_log: EventLogStore, base: UserRecallStore, states: BatchUserSource, rules: UpdateRules,
                 rating_format: DatasetFormat, features: FeaturePusher | None, after_sequence: int = 0) -> None:
        self.event_log = event_log
        self.base = base
        self.states = states
        self.rules = rules
        self.rating_format = rating_format
        self.features = features
        self.after_sequence = after_sequence
        self._lock = threading.RLock()  # threaded workers share one state
        self._cursor = event_log.start()
        self._warned_at = -WARN_EVERY_SECONDS
        self.last_sequence = 0
        self._ratings: dict[int, list[PostedRating]] = {}
        self._event_ids: dict[str, int] = {}  # event id -> its sequence
        self._keys: dict[tuple[int, int, int], int] = {}  # (user, item, timestamp) -> its sequence
        self._updated: dict[int, UpdatedUser] = {}
        self._known = np.zeros(len(rules.genre_flags), dtype=bool)
        self._known[rules.catalogue_ids[rules.catalogue_ids < len(self._known)]] = True

    # --- reading -------------------------------------------------------------------------------------------

    def refresh(self) -> set[int]:
        """Applies what the log gained since the last look; the users it touched."""
        with self._lock:
            try:
                records, self._cursor = self.event_log.read(self._cursor)
            except OSError as error:
                raise StoreUnavailableError("event_log", str(error)) from error
            touched = set()
            for record in records:
                rating = PostedRating(str(record["event_id"]), int(record["userid"]), int(record["itemid"]),
                                      float(record["rating"]), int(record["timestamp"]))
                sequence = int(record["sequence"])
                self.last_sequence = max(self.last_sequence, sequence)
                if self._repeat(rating) is not None:
                    continue
                # One the published run already holds is remembered (a retry of it stays a repeat), not applied.
                self._remember(rating, sequence, applied=sequence > self.after_sequence)
                if sequence > self.after_sequence:
                    touched.add(rating.userid)
            for userid in touched:
                self._updated.pop(userid, None)
            return touched

    def user(self, userid: int) -> UserRecallData | None:
        """The user's recall data with their posted ratings applied (the batch's where they posted none).

        A log that does not answer leaves the ratings read so far applied (``/ready`` names it); the ones accepted
        by other workers since wait until it answers again, and the write routes answer 503 meanwhile."""
        try:
            self.refresh()
        except StoreUnavailableError as error:
            now = time.monotonic()
            if now - self._warned_at > WARN_EVERY_SECONDS:
                self._warned_at = now
                log.warning("serving without the event log's latest records: %s", error)
        updated = self.updated(userid)
        return updated.recall if updated is not None else self.base.get(userid)

    def updated(self, userid: int) -> UpdatedUser | None:
        with self._lock:
            ratings = self._ratings.get(userid)
            if not ratings:
                return None
            updated = self._updated.get(userid)
            if updated is None:
                batch_user = self.states.of(userid, self.base.get(userid))
                updated = self._updated[userid] = apply_ratings(batch_user, ratings, self.rules)
            return updated

    def feature_state(self, userid: int) -> tuple[int, np.ndarray | None]:
        """How many posted ratings of the user this worker has applied (as far as it has read the log), and the
        online feature row they give: what the worker that took the last of them pushed to Feast. (0, None) for a
        user without any."""
        with self._lock:
            updated = self.updated(userid)
            return (0, None) if updated is None else (len(self._ratings[userid]), updated.features)

    @property
    def users_with_ratings(self) -> list[int]:
        with self._lock:
            return sorted(self._ratings)

    # --- validating ----------------------------------------------------------------------------------------

    def knows_item(self, itemid: int) -> bool:
        return 0 <= itemid < len(self._known) and bool(self._known[itemid])

    def refusal(self, rating: float) -> str | None:
        if self.rating_format.on_scale(rating):
            return None
        fmt = self.rating_format
        return f"outside the dataset's rating scale {fmt.rating_min:g}..{fmt.rating_max:g} step {fmt.rating_step:g}"

    # --- writing -------------------------------------------------------------------------------------------

    def accept(self, ratings: Sequence[PostedRating]) -> list[AcceptedRating]:
        """Appends the new ones durably (one write, one fsync), applies them and pushes the touched users'
        features; a repeat is answered as accepted and applied once."""
        with self._lock, self.event_log.exclusive():
            self.refresh()
            fresh: list[PostedRating] = []
            # Per rating: the sequence it repeats (an int), or its position among ``fresh`` (a 1-tuple).
            places: list[int | tuple[int]] = []
            pending: dict[str | tuple[int, int, int], int] = {}
            for rating in ratings:
                earlier = self._repeat(rating)
                if earlier is not None:
                    places.append(earlier)
                    continue
                position = pending.get(rating.event_id, pending.get(rating.key))
                if position is None:
                    position = pending[rating.event_id] = pending[rating.key] = len(fresh)
                    fresh.append(rating)
                    places.append((position,))
                else:
                    places.append((position, True))  # type: ignore[arg-type]  # a repeat within the request
            try:
                numbered = self.event_log.append(
                    [{"event_id": r.event_id, "userid": r.userid, "itemid": r.itemid, "rating": r.rating,
                      "timestamp": r.timestamp} for r in fresh], self.last_sequence)
            except OSError as error:
                raise StoreUnavailableError("event_log", f"could not append to {self.event_log.where}: {error}") \
                    from error
            self.refresh()  # reads back what was just appended: one path applies every record
            self.push({rating.userid for rating in ratings})
        accepted = []
        for rating, place in zip(ratings, places, strict=True):
            if isinstance(place, int):
                accepted.append(AcceptedRating(rating, place, True))
            else:
                accepted.append(AcceptedRating(rating, int(numbered[place[0]]["sequence"]), len(place) > 1))
        return accepted

    def push(self, userids: set[int] | None = None) -> None:
        """Writes the online features of ``userids`` (default: every user with posted ratings) to Feast."""
        if self.features is None:
            return
        with self._lock:
            rows = {}
            for userid in sorted(self._ratings if userids is None else userids):
                updated = self.updated(userid)
                if updated is not None:
                    rows[userid] = updated.features
        if rows:
            self.features.push(rows)

    def _repeat(self, rating: PostedRating) -> int | None:
        sequence = self._event_ids.get(rating.event_id)
        return sequence if sequence is not None else self._keys.get(rating.key)

    def _remember(self, rating: PostedRating, sequence: int, applied: bool) -> None:
        self._event_ids[rating.event_id] = sequence
        self._keys[rating.key] = sequence
        if applied:
            self._ratings.setdefault(rating.userid, []).append(rating)


class LiveUserRecallStore:
    """The bundle's users as the request path reads them: posted ratings applied."""

    def __init__(self, live: LiveUsers) -> None:
        self.live = live

    def get(self, userid: int) -> UserRecallData | None:
        return self.live.user(userid)
