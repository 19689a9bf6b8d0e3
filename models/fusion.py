"""The final order: reciprocal-rank fusion of the ranking model's order with two recall sources' own.

Reciprocal-rank fusion (Cormack et al. 2009, k = 60, the paper's constant, not tuned here) of three
orders of the candidates: the ranking model's scores, the co-occurrence source's and the vector source's
own ranks. A candidate absent from a list gets nothing from it. The ranking model alone knows what a user
skips and their genre taste at the moment; the co-occurrence list knows which movies go with the latest
ones: fused, each corrects the other.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.candidate_merge import Candidates
from models.recall_sources import NEIGHBOURS, VECTOR, Ranked

FUSION_K = 60
FUSED_SOURCES: tuple[str, ...] = (NEIGHBOURS, VECTOR)


def fused_order(candidates: Candidates, sources: Mapping[str, Ranked], model_scores: np.ndarray,
                k: int = FUSION_K) -> tuple[np.ndarray, np.ndarray]:
    """(positions into ``candidates`` best first, fused score per candidate) by the rule above.

    Ties (equal fused scores) go to the smaller itemid, so the order is total and reproducible.
    """
    fused = np.zeros(len(candidates), dtype=np.float64)
    by_model = np.lexsort((candidates.itemids, -np.asarray(model_scores, dtype=np.float64).reshape(-1)))
    fused[by_model] += 1.0 / (k + np.arange(1, len(candidates) + 1))
    for name in FUSED_SOURCES:
        ranked = sources.get(name)
        if ranked is None or len(ranked) == 0:
            continue
        # Each candidate's 1-based rank in this source's list (0 where absent), by a dense look-up table.
        size = max(int(ranked.itemids.max()), int(candidates.itemids.max()) if len(candidates) else 0) + 1
        rank_of = np.zeros(size, dtype=np.int64)
        rank_of[ranked.itemids[::-1]] = np.arange(len(ranked), 0, -1)  # reversed: a repeated id keeps its first rank
        rank = rank_of[candidates.itemids]
        present = rank > 0
        fused[present] += 1.0 / (k + rank[present])
    return np.lexsort((candidates.itemids, -fused)), fused
