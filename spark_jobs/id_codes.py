"""Dense codes for the driver's matrices: the distinct ids of a column, ascending, and each row's position
among them (``np.unique(ids, return_inverse=True)``), found through a table over the id range.

np.unique sorts every row to find them (9 M movie ids at 10M ratings: 2.6 s); ids here are non-negative and
bounded by a release's largest id (ML-25M's movies reach ~209K), so a table of that size finds them in one
linear pass."""

from __future__ import annotations

import numpy as np

# Beyond this id a table would outweigh the sort: np.unique does it.
LARGEST_TABLED_ID = 1 << 26


def id_codes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct ids ascending, int64; each row's position among them, int64)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids) or ids.min() < 0 or ids.max() > LARGEST_TABLED_ID:
        distinct, codes = np.unique(ids, return_inverse=True)
        return distinct, codes.reshape(-1).astype(np.int64)
    present = np.zeros(int(ids.max()) + 1, dtype=bool)
    present[ids] = True
    distinct = np.flatnonzero(present)
    position = np.cumsum(present, dtype=np.int64) - 1
    return distinct.astype(np.int64), position[ids]
