"""The final order's weights, chosen on validation and published for the service.

    python -m models.fusion_choice [--output DIR]     (also the last step of python -m models.train)

Validation: each user's last ``validation_size`` offline impressions (``validation_holdout``), with the item
models the batch fitted without them (``validation_item_*``, and the EASE lists ``validation_user_ease``) and
each user's seen and latest items without them. Through the request path's own recall
(``models.request_path.recall``) and ranker, every validation user's candidates are scored once per input
(``FUSION_INPUTS``: the item-model sources and the ranker); then coordinate ascent over ``WEIGHT_GRID``
maximises NDCG@50 of the fused top 50 over those users, one weight at a time, until no change helps. That
is done for each count of seeds of the sequence source (``SEQUENCE_SEEDS_GRID``; it changes the
candidates), and the best pair is kept. Beyond ``VALIDATION_USERS`` users, a fixed random sample of them.
An input that does not raise NDCG@50 keeps weight 0 and the served list does without it. The hold-out is
never read here.

The ranker scores a validation user's candidates with their features as of their first validation
impression (``online_user_rows_as_of``, the samples' point-in-time rule), not the served ones, which count
the validation impressions; it was trained without the validation impressions (its selection slice is
``validation_holdout``, ``models/data_splits.py``). What validation does not mask (said in the choice's
metadata): the vector model is refitted on all offline impressions, so the ``vector`` source supplies
candidates only (not weighted).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from contracts.errors import NotPublishedError
from contracts.published import open_models
from contracts.settings import RecallSettings
from contracts.tables import Export, ModelFiles
from models.artifacts import StagedModel
from models.evaluate import metrics_at
from models.fusion import input_scores
from models.recall_sources import EASE, NEIGHBOURS, RANKER, SEQUENCE, RecallConfig
from models.request_path import recall
from models.validation_replay import ValidationData

log = logging.getLogger(__name__)

FUSION_INPUTS: tuple[str, ...] = (EASE, SEQUENCE, NEIGHBOURS, RANKER)
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SEQUENCE_SEEDS_GRID: tuple[int, ...] = (3, 5, 10, 20)  # the latest items whose successors are summed
CHOICE_K = 50
MAX_ROUNDS = 5


@dataclass(frozen=True)
class ScoredCandidates:
    """One validation user's candidates and each input's scaled score of them (rows: FUSION_INPUTS)."""

    itemids: np.ndarray
    inputs: np.ndarray  # (len(FUSION_INPUTS), candidates)
    relevant: frozenset[int]


def mean_ndcg(scored: Sequence[ScoredCandidates], weights: np.ndarray, k: int = CHOICE_K) -> float:
    total = 0.0
    for user in scored:
        fused = weights @ user.inputs
        order = np.lexsort((user.itemids, -fused))
        total += metrics_at(user.itemids[order], user.relevant, k).ndcg
    return total / max(len(scored), 1)


def choose_weights(scored: Sequence[ScoredCandidates], start: Mapping[str, float]) -> tuple[dict[str, float], float]:
    """Coordinate ascent from ``start`` over WEIGHT_GRID (the module docstring's rule)."""
    weights = np.array([float(start.get(name, 0.0)) for name in FUSION_INPUTS])
    best = mean_ndcg(scored, weights)
    for _ in range(MAX_ROUNDS):
        improved = False
        for position in range(len(FUSION_INPUTS)):
            for value in WEIGHT_GRID:
                trial = weights.copy()
                trial[position] = value
                if not trial.any():
                    continue
                score = mean_ndcg(scored, trial)
                if score > best + 1e-9:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return {name: float(w) for name, w in zip(FUSION_INPUTS, weights, strict=True)}, best


def score_validation(data: ValidationData, config: RecallConfig) -> list[ScoredCandidates]:
    users, targets, features, assembler, ranker, items = (data.users, data.targets, data.features, data.assembler,
                                                          data.ranker, data.items)
    scored = []
    for userid, relevant in tqdm(sorted(targets.items()), desc="validation candidates", mininterval=2.0, disable=None):
        user = users.get(userid)
        if user is None:
            continue
        candidates, sources = recall(user, items, config, config.recall_size)
        if len(candidates) == 0:
            continue
        model_scores = None
        if ranker is not None and userid in features:
            rows = assembler.rows(userid, features[userid], candidates.itemids)
            model_scores = np.asarray(ranker.score(rows), dtype=np.float64).reshape(-1)
        inputs = np.stack([input_scores(candidates, sources, model_scores, name) for name in FUSION_INPUTS])
        scored.append(ScoredCandidates(candidates.itemids, inputs, frozenset(relevant)))
    return scored


def choose_and_publish(exports: Path, models_dir: Path, recall_size: int, data: ValidationData | None = None) -> dict:
    """``data``: the validation replay already loaded (``models.train`` has it for the ranker's selection)."""
    started = time.monotonic()
    if not (exports / Export.VALIDATION_HOLDOUT).exists():
        raise NotPublishedError(f"no {Export.VALIDATION_HOLDOUT} in {exports}: rerun the batch (spark_jobs.run_batch)")
    defaults = RecallConfig(recall_size=recall_size)
    if data is None:
        data = ValidationData.load(exports, models_dir)
    else:
        data = data.with_ranker(open_models(models_dir)[1])
    trials = {}
    for seeds in SEQUENCE_SEEDS_GRID:
        config = replace(defaults, sequence_seeds=seeds)
        scored = score_validation(data, config)
        weights, chosen_ndcg = choose_weights(scored, defaults.fusion)
        trials[seeds] = (chosen_ndcg, weights, scored)
        log.info("sequence seeds %d: NDCG@%d %.4f with %s", seeds, CHOICE_K, chosen_ndcg, weights)
    sequence_seeds = max(trials, key=lambda seeds: (trials[seeds][0], -seeds))
    chosen_ndcg, weights, scored = trials[sequence_seeds]
    alone = {name: round(mean_ndcg(scored, np.eye(len(FUSION_INPUTS))[position]), 4)
             for position, name in enumerate(FUSION_INPUTS)}
    default_scored = trials[defaults.sequence_seeds][2] if defaults.sequence_seeds in trials else scored
    metadata = {
        "model": ModelFiles.FUSION, "weights": weights, "sequence_seeds": sequence_seeds,
        "validation_users": len(scored),
        f"validation_ndcg@{CHOICE_K}_by_sequence_seeds": {seeds: round(t[0], 4) for seeds, t in trials.items()},
        f"validation_ndcg@{CHOICE_K}": round(chosen_ndcg, 4),
        f"validation_ndcg@{CHOICE_K}_defaults": round(mean_ndcg(default_scored, np.array(
            [defaults.fusion.get(name, 0.0) for name in FUSION_INPUTS])), 4),
        f"validation_ndcg@{CHOICE_K}_each_input_alone": alone,
        "recall_size": recall_size, "grid": list(WEIGHT_GRID), "exports": str(exports.resolve()),
        "not_masked": "the vector model is refitted on all offline impressions, validation ones included",
        "seconds": round(time.monotonic() - started, 1),
    }
    best_alone = max(alone, key=alone.get)
    if chosen_ndcg + 1e-9 < alone[best_alone]:
        log.warning("the fused order (%.4f) is below %s alone (%.4f) on validation", chosen_ndcg, best_alone,
                    alone[best_alone])
    with StagedModel(models_dir, ModelFiles.FUSION) as staged:
        staged.save_metadata(metadata)
    log.info("fusion chosen on %d validation users: %s, NDCG@%d %.4f (each alone: %s) -> %s", len(scored), weights,
             CHOICE_K, chosen_ndcg, alone, staged.published.path if staged.published else None)
    return metadata


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    RecallSettings.add_arguments(parser)
    parser.add_argument("--exports", type=Path, default=None, help="batch exports (default <output>/exports/current)")
    args = parser.parse_args(argv)
    settings = RecallSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return choose_and_publish(args.exports or settings.current_export_dir, settings.models_dir, settings.recall_size)


if __name__ == "__main__":
    main()
