"""The users' offline timelines on the driver: what the item models (``item_models.py``, ``cooccurrence.py``)
are fitted from, collected from Spark once.

A timeline is a user's offline impressions ordered by timestamp, then itemid (``split.user_timeline``), each
marked whether it is held for validation (``split.mark_validation``'s rule: the last few of a long enough
timeline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame

from spark_jobs.split import HOLDOUT_COLUMNS  # what the timelines are made from


@dataclass(frozen=True)
class Timelines:
    """One array per column, in timeline order (user, then timestamp, then itemid)."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    validation: np.ndarray  # bool: a validation impression

    @classmethod
    def collect(cls, marked: DataFrame) -> Timelines:
        table = marked.select("userid", "itemid", "timestamp", "validation").toArrow()
        users, items, timestamps = (np.asarray(table.column(name), dtype=np.int64)
                                    for name in ("userid", "itemid", "timestamp"))
        validation = np.asarray(table.column("validation"), dtype=bool)
        # Of a repeated (user, timestamp, movie), the validation copy last: the validation impressions end a timeline.
        order = np.lexsort((validation, items, timestamps, users))
        return cls(users[order], items[order], validation[order])

    @classmethod
    def with_validation(cls, offline: pa.Table, validation_size: int, min_history: int) -> tuple[Timelines, pa.Table]:
        """The timelines of these offline impressions (userid, itemid, rating, label, timestamp) marked by
        ``split.mark_validation``'s rule (each user's last ``validation_size`` where at least ``min_history`` come
        before them), and those impressions as the ``validation_holdout`` table (``split.validation_holdout``'s
        columns and types).

        Marked here, from the one sort the timelines need anyway, instead of by a Spark window (a second sort of
        every impression, and a cache) before the collect."""
        table = offline.select(list(HOLDOUT_COLUMNS))
        users, items, timestamps = (np.asarray(table.column(name), dtype=np.int64)
                                    for name in ("userid", "itemid", "timestamp"))
        # The rating last: a (user, timestamp, movie) rated twice differently holds out the same copy every run.
        order = np.lexsort((np.asarray(table.column("rating")), items, timestamps, users))
        del timestamps
        unmarked = cls(users[order], items[order], np.zeros(len(order), dtype=bool))
        del users, items
        _, lengths = unmarked.user_runs()
        validation = (unmarked.recency() <= validation_size) & np.repeat(lengths >= validation_size + min_history,
                                                                         lengths)
        return cls(unmarked.users, unmarked.items, validation), table.take(pa.array(order[validation]))

    def recency(self) -> np.ndarray:
        """Per impression, its place from the end of its user's timeline: 1 for the newest."""
        starts, lengths = self.user_runs()
        return np.repeat(starts + lengths, lengths) - np.arange(len(self.users))

    def held_per_impression(self) -> np.ndarray:
        """Per impression, how many validation impressions its user's timeline ends with."""
        starts, lengths = self.user_runs()
        held = np.add.reduceat(self.validation.astype(np.int64), starts) if len(starts) else starts
        return np.repeat(held, lengths)

    def user_runs(self) -> tuple[np.ndarray, np.ndarray]:
        """The index of each user's first impression, and how many impressions they have."""
        starts = np.flatnonzero(np.diff(self.users, prepend=self.users[0] - 1) != 0) if len(self.users) else \
            np.zeros(0, dtype=np.int64)
        return starts, np.diff(np.append(starts, len(self.users)))
