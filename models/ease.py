"""EASE (Steck 2019), the evaluation's reference model: a closed-form item-item regression over the
users' offline histories.

    B = I - P diagMat(1 / diag(P)),  P = (X'X + lambda I)^-1,  diag(B) = 0

The Gram matrix X'X is dense over the items it covers, so its size is capped: the ``max_items`` most-rated
movies (by how many users saw them offline; ties by id). 10,000 items are an 800 MB matrix whose inverse
takes about a minute on two cores; ML-100K's 1,682 and ML-1M's 3,706 fit whole. A movie beyond the cap is
ignored in a history and never recommended by EASE.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import sparse

log = logging.getLogger(__name__)

EASE_LAMBDA = 300.0
EASE_MAX_ITEMS = 10_000


@dataclass(frozen=True)
class Ease:
    itemids: np.ndarray  # int64 (n,): the movies covered, the rows and columns of ``weights``
    weights: np.ndarray  # float64 (n, n), zero diagonal

    @classmethod
    def fit(cls, histories: Iterable[np.ndarray], lam: float = EASE_LAMBDA, max_items: int = EASE_MAX_ITEMS) -> Ease:
        """From each user's offline movie ids (id 0 and repeats ignored)."""
        rows, columns = [], []
        for row, seen in enumerate(histories):
            items = np.unique(seen[seen > 0])
            rows.append(np.full(len(items), row, dtype=np.int64))
            columns.append(items)
        users = np.concatenate(rows) if rows else np.empty(0, np.int64)
        items = np.concatenate(columns) if columns else np.empty(0, np.int64)
        itemids, item_column, counts = np.unique(items, return_inverse=True, return_counts=True)
        if len(itemids) > max_items:
            kept = np.sort(np.lexsort((itemids, -counts))[:max_items])
            log.info("EASE over the %d most-rated of %d movies (max_items)", max_items, len(itemids))
            column_of = np.full(len(itemids), -1, dtype=np.int64)
            column_of[kept] = np.arange(len(kept))
            item_column = column_of[item_column]
            users, item_column, itemids = users[item_column >= 0], item_column[item_column >= 0], itemids[kept]
        matrix = sparse.csr_matrix((np.ones(len(users)), (users, item_column)),
                                   shape=(int(users.max()) + 1 if len(users) else 0, len(itemids)))
        gram = (matrix.T @ matrix).toarray()
        gram[np.diag_indices(len(itemids))] += lam
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        weights[np.diag_indices(len(itemids))] = 0.0
        return cls(itemids, weights)

    def scores(self, seen: np.ndarray, item_count: int) -> np.ndarray:
        """(item_count,) scores indexed by movie id for a user who saw ``seen``; -inf for movies not covered."""
        position = np.searchsorted(self.itemids, seen)
        inside = position < len(self.itemids)
        covered = position[inside][self.itemids[position[inside]] == seen[inside]]
        summed = self.weights[np.unique(covered)].sum(axis=0)
        in_range = self.itemids < item_count
        out = np.full(item_count, -np.inf)
        out[self.itemids[in_range]] = summed[in_range]
        return out
