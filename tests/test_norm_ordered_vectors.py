"""The exact inner-product search over vectors ordered by length: the same list as scoring every row."""

from __future__ import annotations

import numpy as np
import pytest

from models.norm_ordered_vectors import FIRST_CHUNK, NormOrderedVectors, chunk_bounds


def test_chunks_double_and_end_at_the_rows():
    assert chunk_bounds(0) == (0,)
    assert chunk_bounds(10) == (0, 10)
    assert chunk_bounds(FIRST_CHUNK * 3 + 5) == (0, FIRST_CHUNK, FIRST_CHUNK * 3, FIRST_CHUNK * 3 + 5)


def full_sort(vectors: NormOrderedVectors, query: np.ndarray, blocked: np.ndarray, n: int) -> tuple[list, list]:
    """Every row scored (chunk by chunk, as a search scores them), the unblocked finite ones sorted."""
    scores = vectors.scores(query)
    kept = ~blocked[vectors.itemids] & np.isfinite(scores)
    ids, kept_scores = vectors.itemids[kept], scores[kept]
    order = np.lexsort((ids, -kept_scores))[:n]
    return ids[order].tolist(), kept_scores[order].tolist()


def skewed_vectors(rng: np.random.Generator, items: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse itemids; lengths spread as a recall model's are (popular items longer), a constant bias column."""
    itemids = np.sort(rng.choice(np.arange(1, items * 3), items, replace=False))
    vectors = rng.standard_normal((items, dims)) * rng.lognormal(0.0, 0.5, (items, 1))
    vectors[:, -2] = 1.0
    return itemids, vectors.astype(np.float32)


@pytest.mark.parametrize("items", [50, 1_500, 9_000])
def test_search_equals_scoring_every_row(items):
    rng = np.random.default_rng(items)
    itemids, raw = skewed_vectors(rng, items, 10)
    vectors = NormOrderedVectors.of(itemids, raw)
    assert np.all(np.diff(vectors.lengths) <= 0)
    for _ in range(60):
        query = (rng.standard_normal(10) * rng.choice([0.01, 1.0, 50.0])).astype(np.float32)
        blocked = rng.random(int(itemids.max()) + 1) < rng.choice([0.0, 0.2, 0.97])
        n = int(rng.integers(0, 260))
        found_ids, found_scores = vectors.search(query, blocked, n)
        expected_ids, expected_scores = full_sort(vectors, query, blocked, n)
        assert found_ids.tolist() == expected_ids and found_scores.tolist() == expected_scores
        assert found_ids.dtype == np.int64 and found_scores.dtype == np.float32


def test_ties_and_equal_lengths_go_to_the_smaller_itemid():
    itemids = np.array([9, 3, 7, 5])
    vectors = NormOrderedVectors.of(itemids, np.array([[1, 0], [0, 1], [1, 0], [1, 0]], dtype=np.float32))
    assert vectors.itemids.tolist() == [3, 5, 7, 9]  # all of length 1: by itemid
    blocked = np.zeros(10, dtype=bool)
    blocked[5] = True
    ids, scores = vectors.search(np.array([2.0, 1.0], dtype=np.float32), blocked, 3)
    assert ids.tolist() == [7, 9, 3] and scores.tolist() == [2.0, 2.0, 1.0]


def test_a_search_that_stops_early_reads_few_rows():
    """One long vector in the query's direction: found in the first chunk, and the others cannot reach it."""
    rng = np.random.default_rng(3)
    raw = (rng.standard_normal((20_000, 8)) * 0.01).astype(np.float32)
    raw[:40, 0] = 5.0 + np.arange(40, dtype=np.float32)
    vectors = NormOrderedVectors.of(np.arange(1, 20_001), raw)
    read = []
    original = vectors.vectors

    class CountingRows:  # records which row ranges the search multiplies
        def __getitem__(self, rows: slice) -> np.ndarray:
            read.append((rows.start, rows.stop))
            return original[rows]

    counting = NormOrderedVectors(vectors.itemids, CountingRows(), vectors.lengths, vectors.bounds)  # type: ignore[arg-type]
    ids, _ = counting.search(np.array([1.0] + [0.0] * 7, dtype=np.float32), np.zeros(20_001, dtype=bool), 10)
    assert ids.tolist() == list(range(40, 30, -1))
    assert read == [(0, FIRST_CHUNK)]
