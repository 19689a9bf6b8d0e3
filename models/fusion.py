"""The final order: a weighted sum of the candidates' scores in the recall sources' lists and the models'.

Each input (a source's list, the ranking model's probabilities or the sequence model's chances of being next) is
divided by its largest absolute score among the candidates, so
every input's best candidate counts as its weight; a candidate absent from a list gets nothing from it. The
weights are chosen per dataset on validation (``models/fusion_choice.py``): an input that does not help
there gets weight 0 and the served list does without it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from models.candidate_merge import Candidates
from models.recall_sources import MODEL_INPUTS, Ranked
from models.sorted_keys import find_sorted

FUSION_K = 60  # the rank offset of the candidates served in recall order: 1 / (FUSION_K + position)


def _scaled(values: np.ndarray) -> np.ndarray:
    largest = float(np.abs(values).max()) if len(values) else 0.0
    return values / largest if largest > 0 else np.zeros_like(values)


def input_scores(candidates: Candidates, sources: Mapping[str, Ranked],
                 model_scores: Mapping[str, np.ndarray | None], name: str) -> np.ndarray:
    """One input's scaled score per candidate (0 where the candidate is not in that list, or where the model that
    names it gave no scores). ``model_scores``: per model input (``MODEL_INPUTS``) its score of each candidate."""
    if name in MODEL_INPUTS:
        scores = model_scores.get(name)
        if scores is None:
            return np.zeros(len(candidates))
        return _scaled(np.asarray(scores, dtype=np.float64).reshape(-1))
    ranked = sources.get(name)
    if ranked is None or len(ranked) == 0 or len(candidates) == 0:
        return np.zeros(len(candidates))
    # Each candidate's score in this list, found in the list sorted by id (stable, so a repeated id keeps its first
    # score): a dense table by itemid would be ~209K entries at ML-25M's ids, written per input per request.
    by_id = np.argsort(ranked.itemids, kind="stable")
    position, found = find_sorted(ranked.itemids[by_id], candidates.itemids)
    scaled = _scaled(np.asarray(ranked.scores, dtype=np.float64))
    return np.where(found, scaled[by_id[position]], 0.0)


def fused_order(candidates: Candidates, sources: Mapping[str, Ranked],
                model_scores: Mapping[str, np.ndarray | None],
                weights: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(positions into ``candidates`` best first, fused score per candidate) by the rule above.

    Ties (equal fused scores) go to the smaller itemid, so the order is total and reproducible.
    """
    fused = np.zeros(len(candidates), dtype=np.float64)
    for name, weight in sorted(weights.items()):
        if weight:
            fused += weight * input_scores(candidates, sources, model_scores, name)
    return np.lexsort((candidates.itemids, -fused)), fused
