"""Look-ups in a sorted array of distinct keys, the NumPy way to a hash table over tens of millions of keys."""

from __future__ import annotations

import numpy as np


def find_sorted(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query, its position in ``sorted_keys`` (clamped into the array, so it can index it) and whether the key
    there is the query."""
    queries = np.asarray(queries)
    if not len(sorted_keys):
        return np.zeros(queries.shape, dtype=np.int64), np.zeros(queries.shape, dtype=bool)
    position = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return position, sorted_keys[position] == queries
