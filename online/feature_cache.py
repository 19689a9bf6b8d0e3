"""A worker's memory of the user feature rows it read from Feast.

A user's online row changes in two ways: the next batch's materialisation, which comes with a new bundle (a
reload; the cache lives in the bundle, so it starts empty), and a posted rating, pushed to Feast by whichever
worker took it, after the rating is in the event log. So a row is kept under the user and the number of their
posted ratings this worker has applied (its view of the log, brought up to date at the start of every request),
and for a user with posted ratings only once Feast's row equals the row those ratings give (the worker applies
the same rules to the same ratings as their taker): a read that came before the taker's push is not kept, and
the next request reads Feast again. A new rating changes the key, so the next request reads Feast. Rows are
shared read-only by every later request.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from models.stores import FeatureClient
from online.lru_cache import LruCache

# Per user: (posted ratings applied, the feature row they give; None without any).
FeatureState = Callable[[int], tuple[int, np.ndarray | None]]


def no_posted_ratings(userid: int) -> tuple[int, np.ndarray | None]:
    """The state of every user where nothing is posted: only the next load changes a row."""
    return 0, None


class FeatureCache:
    """``FeatureClient``: ``client``'s rows, the last ``entries`` kept by (user, posted ratings applied)."""

    def __init__(self, client: FeatureClient, state: FeatureState, entries: int) -> None:
        self.client = client
        self.state = state
        self._rows: LruCache[np.ndarray] = LruCache(entries)

    def user_features(self, userid: int) -> np.ndarray | None:
        ratings, expected = self.state(userid)
        return self._rows.answer(
            (userid, ratings), lambda: _read_only(self.client.user_features(userid)),
            keep=lambda row: row is not None and (expected is None or np.array_equal(row, expected)))

    @property
    def hits(self) -> int:
        return self._rows.hits


def _read_only(row: np.ndarray | None) -> np.ndarray | None:
    if row is not None:
        row.flags.writeable = False
    return row


def cached_features(client: FeatureClient, state: FeatureState, entries: int) -> FeatureClient:
    """``client`` behind a ``FeatureCache`` of ``entries`` rows (0: ``client`` itself)."""
    return FeatureCache(client, state, entries) if entries > 0 else client
