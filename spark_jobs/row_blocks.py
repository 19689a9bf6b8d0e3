"""The driver's matrix work by blocks of rows on a few threads: NumPy's and SciPy's kernels release the GIL, so
blocks run on every core while each holds only its own dense or sparse slice."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
# Each thread holds a few (block, columns) matrices (~80 MB each at 10,000 movies), so more cores do not mean
# more threads.
BLOCK_THREADS = min(4, os.cpu_count() or 1)


def by_row_blocks(rows: int, rows_per_block: int, compute: Callable[[int, int], T]) -> list[T]:
    """``compute(start, stop)`` over consecutive blocks of rows, results in row order, on up to ``BLOCK_THREADS``
    threads."""
    starts = range(0, rows, rows_per_block)
    with ThreadPoolExecutor(max_workers=BLOCK_THREADS, thread_name_prefix="row-block") as pool:
        return list(pool.map(lambda start: compute(start, min(start + rows_per_block, rows)), starts))
