"""The final order's weights, chosen on validation and published for the service.

    python -m models.fusion_choice [--output DIR]     (also the last step of python -m models.train)

Validation: each user's last ``validation_size`` offline impressions (``validation_holdout``), with the item
models the batch fitted without them (``validation_item_*``, and the EASE lists ``validation_user_ease``) and
each user's seen and latest items without them. Through the request path's own recall
(``models.request_path.recall``), ranker and sequence model, every validation user's candidates are scored once
per input (``FUSION_INPUTS``: the item-model sources and the two models); then coordinate ascent over ``WEIGHT_GRID``
maximises NDCG@50 of the fused top 50 over those users, one weight at a time, until no change helps. That
is done for each count of seeds of the sequence source (``SEQUENCE_SEEDS_GRID``; it changes the
candidates), and the best pair is kept. Beyond ``VALIDATION_USERS`` users, a fixed random sample of them.
An input that does not raise NDCG@50 keeps weight 0 and the served list does without it. The hold-out is
never read here.

The ranker scores a validation user's candidates with their features as of their first validation
impression (``online_user_rows_as_of``, the samples' point-in-time rule), not the served ones, which count
the validation impressions; it was trained without the validation impressions (its selection slice is
``validation_holdout``, ``models/data_splits.py``). So was the sequence model (``models/next_item_training.py``),
which reads each user's latest items before them. What validation does not mask (said in the choice's
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
from contracts.published import open_models, open_next_item
from contracts.settings import RecallSettings
from contracts.tables import Export, ModelFiles
from models.artifacts import StagedModel
from models.candidate_merge import merge
from models.evaluate import metrics_at
from models.fusion import input_scores
from models.recall_sources import (
    EASE,
    NEIGHBOURS,
    NEXT_ITEM,
    RANKER,
    SEQUENCE,
    SOURCE_ORDER,
    Ranked,
    RecallConfig,
)
from models.request_path import recall
from models.validation_replay import ValidationData

log = logging.getLogger(__name__)

FUSION_INPUTS: tuple[str, ...] = (EASE, SEQUENCE, NEIGHBOURS, RANKER, NEXT_ITEM)
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SEQUENCE_SEEDS_GRID: tuple[int, ...] = (3, 5, 10, 20)  # the latest items whose successors are summed
QUOTA_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)  # a source's share of the recalled candidates
CHOICE_K = 50
MAX_ROUNDS = 5
QUOTA_ROUNDS = 2
QUOTA_MARGIN = 2.0  # standard errors of the paired per-user gain a new quota must beat


@dataclass(frozen=True)
class ScoredCandidates:
    """One validation user's candidates and each input's scaled score of them (rows: FUSION_INPUTS)."""

    itemids: np.ndarray
    inputs: np.ndarray  # (len(FUSION_INPUTS), candidates)
    relevant: frozenset[int]


def user_ndcgs(scored: Sequence[ScoredCandidates], weights: np.ndarray, k: int = CHOICE_K) -> np.ndarray:
    ndcgs = np.empty(len(scored))
    for position, user in enumerate(scored):
        fused = weights @ user.inputs
        order = np.lexsort((user.itemids, -fused))
        ndcgs[position] = metrics_at(user.itemids[order], user.relevant, k).ndcg
    return ndcgs


def mean_ndcg(scored: Sequence[ScoredCandidates], weights: np.ndarray, k: int = CHOICE_K) -> float:
    return float(user_ndcgs(scored, weights, k).mean()) if len(scored) else 0.0


def clearly_better(trial: np.ndarray, current: np.ndarray) -> bool:
    """Paired over the same users: the mean gain is over QUOTA_MARGIN standard errors of the per-user gains."""
    gains = trial - current
    if len(gains) < 2:
        return bool(gains.sum() > 0)
    return bool(gains.mean() > QUOTA_MARGIN * gains.std(ddof=1) / np.sqrt(len(gains)))


def choose_weights(scored: Sequence[ScoredCandidates], start: Mapping[str, float],
                   inputs: Sequence[str] = FUSION_INPUTS) -> tuple[dict[str, float], float]:
    """Coordinate ascent from ``start`` over WEIGHT_GRID (the module docstring's rule); ``inputs`` name the rows
    of each user's ``inputs``."""
    weights = np.array([float(start.get(name, 0.0)) for name in inputs])
    best = mean_ndcg(scored, weights)
    for _ in range(MAX_ROUNDS):
        improved = False
        for position in range(len(inputs)):
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
    return {name: float(w) for name, w in zip(inputs, weights, strict=True)}, best


@dataclass(frozen=True)
class UserPool:
    """One validation user's list from every source (all asked) and the models' scores of their union: any
    quotas' merge of them is scored without recalling again."""

    userid: int
    sources: dict[str, Ranked]
    union: np.ndarray  # sorted distinct itemids of all the lists
    model_scores: dict[str, np.ndarray]  # per model input (ranker, next item) with a model, per ``union`` item
    relevant: frozenset[int]


def pool_validation(data: ValidationData, config: RecallConfig) -> list[UserPool]:
    every_source = replace(config, quotas={name: 1.0 for name in SOURCE_ORDER})
    pools = []
    for userid, relevant in tqdm(sorted(data.targets.items()), desc="validation candidates", mininterval=2.0,
                                 disable=None):
        user = data.users.get(userid)
        if user is None:
            continue
        _, sources = recall(user, data.items, every_source, config.recall_size)
        union = np.unique(np.concatenate([ranked.itemids for ranked in sources.values()] or [np.empty(0, np.int64)]))
        if len(union) == 0:
            continue
        model_scores = {}
        if data.ranker is not None and userid in data.features:
            rows = data.assembler.rows(userid, data.features[userid], union)
            model_scores[RANKER] = np.asarray(data.ranker.score(rows), dtype=np.float64).reshape(-1)
        if data.next_item is not None:
            # Relative to the union's likeliest item: any subset scaled by its own largest is the request's input.
            model_scores[NEXT_ITEM] = data.next_item.score(user.recent, union)
        pools.append(UserPool(userid, sources, union, model_scores, frozenset(relevant)))
    return pools


def score_pools(pools: Sequence[UserPool], config: RecallConfig) -> list[ScoredCandidates]:
    """Each user's candidates as the request path merges them under ``config`` (its quotas; the sources it does
    not ask left out), with each input's scaled score."""
    quotas = config.quota_counts(config.recall_size)
    scored = []
    for pool in pools:
        sources = {name: ranked for name, ranked in pool.sources.items() if config.asks(name)}
        candidates = merge(sources, config.recall_size, quotas)
        if len(candidates) == 0:
            continue
        at = np.searchsorted(pool.union, candidates.itemids)
        model_scores = {name: scores[at] for name, scores in pool.model_scores.items()}
        inputs = np.stack([input_scores(candidates, sources, model_scores, name) for name in FUSION_INPUTS])
        scored.append(ScoredCandidates(candidates.itemids, inputs, pool.relevant))
    return scored


def choose_quotas(pools: Sequence[UserPool], config: RecallConfig) -> tuple[dict[str, float], float]:
    """Coordinate ascent over QUOTA_GRID, one source's share at a time, with the weights of ``config``. A share
    replaces the current one only when it is clearly better on the same users (``clearly_better``): the
    candidates are coarse to change and small gains there did not carry over to the hold-out; a smaller share
    that scores exactly the same also wins (a source asked for nothing and weighted 0 is not recalled)."""
    weights = np.array([float(config.fusion.get(name, 0.0)) for name in FUSION_INPUTS])
    quotas = {name: float(config.quotas.get(name, 0.0)) for name in SOURCE_ORDER}
    current = user_ndcgs(score_pools(pools, config), weights)
    for _ in range(QUOTA_ROUNDS):
        improved = False
        for name in SOURCE_ORDER:
            for value in QUOTA_GRID:
                trial = {**quotas, name: value}
                if value == quotas[name] or not any(trial.values()):
                    continue
                scores = user_ndcgs(score_pools(pools, replace(config, quotas=trial)), weights)
                same = np.array_equal(scores, current)
                if clearly_better(scores, current) or (same and value < quotas[name]):
                    quotas, current, improved = trial, scores, True
        if not improved:
            break
    return quotas, float(current.mean()) if len(current) else 0.0


def choose_and_publish(exports: Path, models_dir: Path, recall_size: int, data: ValidationData | None = None,
                       quota_choice: bool = True) -> dict:
    """``data``: the validation replay already loaded (``models.train`` has it for the ranker's selection);
    ``quota_choice`` False keeps the default quotas."""
    started = time.monotonic()
    if not (exports / Export.VALIDATION_HOLDOUT).exists():
        raise NotPublishedError(f"no {Export.VALIDATION_HOLDOUT} in {exports}: rerun the batch (spark_jobs.run_batch)")
    defaults = RecallConfig(recall_size=recall_size)
    if data is None:
        data = ValidationData.load(exports, models_dir)
    else:
        data = data.with_models(open_models(models_dir)[1], open_next_item(models_dir))
    # The weights for each sequence-seed count (each recalls again), then the quotas and the weights again for
    # the best count (merges of the same lists).
    trials = {}
    for seeds in SEQUENCE_SEEDS_GRID:
        config = replace(defaults, sequence_seeds=seeds)
        pools = pool_validation(data, config)
        weights, chosen_ndcg = choose_weights(score_pools(pools, config), defaults.fusion)
        trials[seeds] = (chosen_ndcg, weights, pools)
        log.info("sequence seeds %d: NDCG@%d %.4f with %s", seeds, CHOICE_K, chosen_ndcg, weights)
    sequence_seeds = max(trials, key=lambda seeds: (trials[seeds][0], -seeds))
    _, weights, pools = trials[sequence_seeds]
    config = replace(defaults, sequence_seeds=sequence_seeds, fusion=weights)
    quotas = choose_quotas(pools, config)[0] if quota_choice else dict(config.quotas)
    weights, chosen_ndcg = choose_weights(score_pools(pools, replace(config, quotas=quotas)), weights)
    config = replace(config, quotas=quotas, fusion=weights)
    log.info("quotas %s, then weights %s: NDCG@%d %.4f", quotas, weights, CHOICE_K, chosen_ndcg)
    scored = score_pools(pools, config)
    alone = {name: round(mean_ndcg(scored, np.eye(len(FUSION_INPUTS))[position]), 4)
             for position, name in enumerate(FUSION_INPUTS)}
    default_pools = trials[defaults.sequence_seeds][2] if defaults.sequence_seeds in trials else pools
    metadata = {
        "model": ModelFiles.FUSION, "weights": weights, "quotas": quotas,
        "quotas_chosen": "on validation" if quota_choice else "the defaults (--keep-quotas)",
        "sequence_seeds": sequence_seeds,
        "not_asked": [name for name in SOURCE_ORDER if not config.asks(name)],
        "validation_users": len(scored),
        f"validation_ndcg@{CHOICE_K}_by_sequence_seeds": {seeds: round(t[0], 4) for seeds, t in trials.items()},
        f"validation_ndcg@{CHOICE_K}": round(chosen_ndcg, 4),
        f"validation_ndcg@{CHOICE_K}_defaults": round(mean_ndcg(score_pools(default_pools, defaults), np.array(
            [defaults.fusion.get(name, 0.0) for name in FUSION_INPUTS])), 4),
        f"validation_ndcg@{CHOICE_K}_each_input_alone": alone,
        "recall_size": recall_size, "grid": list(WEIGHT_GRID), "quota_grid": list(QUOTA_GRID),
        "exports": str(exports.resolve()),
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
    parser.add_argument("--keep-quotas", action="store_true", help="keep the default recall quotas (the weights are "
                        "still chosen)")
    args = parser.parse_args(argv)
    settings = RecallSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return choose_and_publish(args.exports or settings.current_export_dir, settings.models_dir, settings.recall_size,
                              quota_choice=not args.keep_quotas)


if __name__ == "__main__":
    main()
