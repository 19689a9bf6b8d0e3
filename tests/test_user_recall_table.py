"""Every user's recall data held as flat arrays: each user's record is what one object per user held."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from models.recall_sources import ItemLists, UserRecallData
from models.user_recall_table import UserRecallTable

TERM = pa.struct([("genre_id", pa.int32()), ("impressions", pa.int32()), ("clicks", pa.int32())])


def arrow_tables() -> tuple[pa.Table, pa.Table, pa.Table]:
    filters = pa.table({"userid": pa.array([7, 3, 12, 5], pa.int32()),
                        "seen_itemids": pa.array([[4, 9, 2], [1], None, [300000, 8]], pa.list_(pa.int32())),
                        "recent_itemids": pa.array([[2, 9], [1], [], [8]], pa.list_(pa.int32()))})
    terms = pa.table({"userid": pa.array([5, 7], pa.int32()),  # another order; users 3 and 12 have none
                      "terms": pa.array([[{"genre_id": 4, "impressions": 700, "clicks": 2}],
                                         [{"genre_id": 1, "impressions": 3, "clicks": 1},
                                          {"genre_id": 2, "impressions": 1, "clicks": 0}]], pa.list_(TERM))})
    vectors = pa.table({"userid": pa.array([3, 7, 99], pa.int64()),  # 99 has no filter row; 12 and 5 no vector
                        "vector": pa.array([[0.5, 1.0], [2.0, -1.0], [9.0, 9.0]], pa.list_(pa.float32()))})
    return filters, terms, vectors


def test_each_user_is_the_record_one_object_held_and_the_table_reads_as_a_mapping():
    filters, terms, vectors = arrow_tables()
    ease = ItemLists.from_lists(13, {7: ([5, 6], [0.75, 0.5]), 12: ([1], [0.25])})
    table = UserRecallTable.from_arrow(filters, terms, vectors, ease)

    assert list(table) == [7, 3, 12, 5] and len(table) == 4  # the user filter's order
    assert 3 in table and 4 not in table and "3" not in table and table.get(4) is None
    with pytest.raises(KeyError):
        table[4]
    seven = table[7]
    assert isinstance(seven, UserRecallData) and seven.userid == 7
    np.testing.assert_array_equal(seven.seen, [4, 9, 2])
    np.testing.assert_array_equal(seven.recent, [2, 9])
    assert seven.seen.dtype == seven.recent.dtype == np.int64
    assert seven.terms == [(1, 3, 1), (2, 1, 0)]
    np.testing.assert_array_equal(seven.vector, np.array([2.0, -1.0], np.float32))
    np.testing.assert_array_equal(seven.ease.itemids, [5, 6])
    np.testing.assert_array_equal(seven.ease.scores, [0.75, 0.5])
    twelve = table[12]
    assert len(twelve.seen) == 0 and len(twelve.recent) == 0 and twelve.terms == [] and twelve.vector is None
    np.testing.assert_array_equal(twelve.ease.itemids, [1])
    five, three = table[np.int64(5)], table[3]
    assert five.terms == [(4, 700, 2)] and five.vector is None and five.ease is None
    np.testing.assert_array_equal(five.seen, [300000, 8])
    assert three.terms == [] and three.ease is None
    np.testing.assert_array_equal(three.vector, [0.5, 1.0])
    # Shared arrays are read-only: a reader changes a user by building a new record.
    with pytest.raises(ValueError):
        seven.vector[0] = 1.0
    changed = dataclasses.replace(seven, seen=seven.seen[seven.seen != 9])
    np.testing.assert_array_equal(table[7].seen, [4, 9, 2])
    np.testing.assert_array_equal(changed.seen, [4, 2])
    assert dict(table.items())[5].userid == 5 and [u.userid for u in table.values()] == [7, 3, 12, 5]


def test_without_a_recall_model_or_ease_lists_no_user_has_a_vector_or_a_list():
    filters, terms, _ = arrow_tables()
    table = UserRecallTable.from_arrow(filters, terms, None, None)
    assert all(user.vector is None and user.ease is None for user in table.values())
    assert table[7].terms == [(1, 3, 1), (2, 1, 0)]
