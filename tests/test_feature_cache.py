"""A worker's cache of Feast rows: kept by (user, posted ratings applied), for a user with posted ratings only once
Feast holds the row they give; read-only; errors and unknown users not kept."""

import numpy as np
import pytest

from contracts.errors import StoreUnavailableError
from online.feature_cache import FeatureCache, cached_features, no_posted_ratings


class CountingFeatures:
    """A Feast stand-in that says how often it was read; its rows change when a test pushes one."""

    def __init__(self) -> None:
        self.rows = {1: np.array([1.0, 2.0], dtype=np.float32), 2: np.array([3.0, 4.0], dtype=np.float32),
                     3: np.array([0.0, 1.0], dtype=np.float32)}
        self.reads: list[int] = []
        self.failing = False

    def user_features(self, userid: int) -> np.ndarray | None:
        self.reads.append(userid)
        if self.failing:
            raise StoreUnavailableError("feast", "down")
        row = self.rows.get(userid)
        return None if row is None else row.copy()


class WorkerView:
    """A worker's view of the log: per user, the rows their posted ratings give, oldest first."""

    def __init__(self) -> None:
        self.applied: dict[int, list[np.ndarray]] = {}

    def __call__(self, userid: int) -> tuple[int, np.ndarray | None]:
        rows = self.applied.get(userid, [])
        return len(rows), (rows[-1] if rows else None)


def test_a_row_is_read_once_shared_read_only_and_an_unknown_user_or_an_error_is_not_kept():
    feast = CountingFeatures()
    cache = FeatureCache(feast, no_posted_ratings, entries=10)
    first = cache.user_features(1)
    assert cache.user_features(1).tolist() == first.tolist() == [1.0, 2.0] and feast.reads == [1]
    with pytest.raises(ValueError):  # shared by later requests
        first[0] = 9.0
    assert cache.user_features(7) is None and cache.user_features(7) is None and feast.reads == [1, 7, 7]
    feast.failing = True
    with pytest.raises(StoreUnavailableError):
        cache.user_features(2)
    assert cache.user_features(1).tolist() == [1.0, 2.0]  # a kept row answers while Feast does not
    feast.failing = False
    assert cache.user_features(2).tolist() == [3.0, 4.0] and feast.reads == [1, 7, 7, 2, 2]


def test_a_posted_rating_reads_feast_again_and_a_row_older_than_the_workers_view_is_not_kept():
    feast, view = CountingFeatures(), WorkerView()
    cache = FeatureCache(feast, view, entries=10)
    assert cache.user_features(1).tolist() == [1.0, 2.0]
    pushed = np.array([5.0, 6.0], dtype=np.float32)
    view.applied[1] = [pushed]  # the worker read a rating of user 1 from the log; its taker has not pushed yet
    assert cache.user_features(1).tolist() == [1.0, 2.0]  # Feast's row as it is now...
    assert cache.user_features(1).tolist() == [1.0, 2.0] and feast.reads == [1, 1, 1]  # ...not kept
    feast.rows[1] = pushed  # the taker's push
    assert cache.user_features(1).tolist() == [5.0, 6.0] and cache.user_features(1).tolist() == [5.0, 6.0]
    assert feast.reads == [1, 1, 1, 1]  # kept once it equals the row the ratings give
    view.applied[1].append(np.array([7.0, 8.0], dtype=np.float32))  # a second rating, pushed before the read
    feast.rows[1] = view.applied[1][-1]
    assert cache.user_features(1).tolist() == [7.0, 8.0] and feast.reads == [1, 1, 1, 1, 1]


def test_the_least_recently_used_row_goes_first_and_zero_entries_is_no_cache():
    feast = CountingFeatures()
    cache = FeatureCache(feast, no_posted_ratings, entries=2)
    for userid in (1, 2, 1, 3, 1, 2):  # 2 is the least recently used when 3 comes in
        cache.user_features(userid)
    assert feast.reads == [1, 2, 3, 2]
    assert cached_features(feast, no_posted_ratings, 0) is feast
