"""A causal transformer over each user's impression order (SASRec-style) measured against the served sources.

    python bench/sequence_source_benchmark.py --output DIR [--seeds 0 1 2] [--max-epochs 200] [--dim 64]
                                              [--blocks 2] [--dropout 0.2] [--batch-size 128] [--learning-rate 1e-3]

Over a published run and its models (``python -m spark_jobs.run_batch`` and ``python -m models.train``):

1. Validation (what a choice may read): the model is trained on each user's offline impressions without their
   validation ones (``validation_holdout``), its epochs chosen by NDCG@50 of its own top 50 there. Reported on
   the validation users the fusion choice uses: its own top 50; every served source's own list
   (``models.fusion_choice.pool_validation`` with the published quotas and weights); the published fused order
   over the recalled candidates; and the fused order with the model's score of each candidate as a fifth input
   (weights chosen again by the same coordinate ascent), over the same candidates and over them plus the
   model's top 50. A gain counts when it is over 2 standard errors of the per-user gains
   (``models.fusion_choice.clearly_better``).
2. Hold-out (reported, never used to choose): the model retrained on all offline impressions for the chosen
   epochs; its own top 50 on the online hold-out, beside ``models.evaluate``'s report in the output folder; and
   the served request path's candidates of each hold-out user (``models.request_path.recommend``'s trace, as
   ``models.evaluate`` replays it) ordered by the published weights and by the five weights chosen on
   validation over the served candidates.

Records the processor model; prints Markdown-ready JSON and appends it to bench/results/sequence_source.jsonl.

This measured the model before it joined the product (session 22): the fifth input here is added to the four the
final order had then (``FOUR_INPUTS``). ``models.train`` now trains and publishes it (``models/next_item_training.py``)
and the fusion choice weighs it with the others; ``models.evaluate`` reports what the served list gains.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from serve_benchmark import cpu_model

from contracts.settings import RecallSettings
from contracts.tables import Export
from models.candidate_merge import Candidates, merge
from models.evaluate import MetricTable, offline_bundle
from models.export_readers import liked_holdout
from models.fusion import input_scores
from models.fusion_choice import (
    FUSION_INPUTS,
    ScoredCandidates,
    UserPool,
    choose_weights,
    clearly_better,
    pool_validation,
    user_ndcgs,
)
from models.item_vocabulary import ItemVocabulary
from models.next_item_training import offline_impressions, sequences_before_validation
from models.recall_sources import NEXT_ITEM, RANKER, RecallConfig
from models.request_path import recommend
from models.sequence_model import PADDING, CausalSequenceModel
from models.sequence_training import SequenceSettings, fit, left_padded, top_unseen, user_sequences
from models.validation_replay import ValidationData

RESULTS = Path(__file__).resolve().parent / "results" / "sequence_source.jsonl"
SASREC = "sasrec"
K = 50
# The inputs of the final order before the sequence model joined them (it is measured here as a fifth).
FOUR_INPUTS = tuple(name for name in FUSION_INPUTS if name != NEXT_ITEM)


def list_metrics(lists: dict[int, np.ndarray], targets: dict[int, set[int]]) -> dict[str, float]:
    table = MetricTable((10, K))
    for userid in targets:
        if userid in lists:
            table.add("list", lists[userid], targets[userid])
    return {"users": table.users.get("list", 0), **table.means().get("list", {})}


def model_lists(model: CausalSequenceModel, histories: dict[int, np.ndarray],
                vocabulary: ItemVocabulary) -> dict[int, np.ndarray]:
    return {u: vocabulary.itemid_of(indices) for u, (indices, _) in top_unseen(model, histories, K).items()}


@torch.no_grad()
def probabilities(model: CausalSequenceModel, history: np.ndarray) -> np.ndarray:
    """The model's next-item probabilities after ``history`` (per vocabulary index), its items and padding at 0."""
    scores = model.next_item_scores(torch.from_numpy(left_padded(history, model.max_length))[None])[0]
    scores[PADDING] = -torch.inf
    scores[torch.from_numpy(history)] = -torch.inf
    return torch.softmax(scores, 0).numpy().astype(np.float64)


def five_inputs(candidates: Candidates, sources: dict, ranker_scores: np.ndarray | None, chances: np.ndarray,
                vocabulary: ItemVocabulary) -> np.ndarray:
    """The four fusion inputs of the candidates and (fifth row) the model's probability scaled by its largest."""
    rows = [input_scores(candidates, sources, {RANKER: ranker_scores}, name) for name in FOUR_INPUTS]
    mine = chances[vocabulary.index_of(candidates.itemids)]
    rows.append(mine / mine.max() if mine.max() > 0 else mine)
    return np.stack(rows)


def with_model_input(pools: list[UserPool], config: RecallConfig, chances_of: dict[int, np.ndarray],
                     vocabulary: ItemVocabulary, extra: int) -> list[ScoredCandidates]:
    """Each validation user's candidates as the request path merges them, plus the model's top ``extra`` not
    among them, scored by the four inputs and (fifth row) the model's probability scaled by its largest."""
    quotas = config.quota_counts(config.recall_size)
    scored = []
    for pool in pools:
        userid = pool.userid
        sources = {name: ranked for name, ranked in pool.sources.items() if config.asks(name)}
        candidates = merge(sources, config.recall_size, quotas)
        if len(candidates) == 0:
            continue
        chances = chances_of[userid]
        if extra:
            best = vocabulary.itemid_of(np.argsort(-chances[1:], kind="stable")[:extra] + 1)
            added = best[~np.isin(best, candidates.itemids)]
            candidates = Candidates(np.concatenate([candidates.itemids, added]),
                                    np.concatenate([candidates.sources, np.zeros(len(added), np.int64)]))
        model_scores = None
        if RANKER in pool.model_scores:
            at = np.minimum(np.searchsorted(pool.union, candidates.itemids), len(pool.union) - 1)
            scored_by_ranker = pool.union[at] == candidates.itemids
            # the ranker never scored the added items: they take its lowest score among the rest
            ranker_scores = pool.model_scores[RANKER][at]
            model_scores = np.where(scored_by_ranker, ranker_scores, ranker_scores[scored_by_ranker].min())
        scored.append(ScoredCandidates(candidates.itemids,
                                       five_inputs(candidates, sources, model_scores, chances, vocabulary),
                                       pool.relevant))
    return scored


def measure(exports: Path, models_dir: Path, recall_size: int, settings: SequenceSettings) -> dict:
    vocabulary = ItemVocabulary.read(exports / Export.ITEM_VOCABULARY)
    before_validation = sequences_before_validation(exports, vocabulary)
    data = ValidationData.load(exports, models_dir)
    targets = {u: t for u, t in data.targets.items() if u in before_validation}

    def validate(model: CausalSequenceModel) -> float:
        return list_metrics(model_lists(model, {u: before_validation[u] for u in targets}, vocabulary),
                            targets)[f"ndcg@{K}"]

    started = time.monotonic()
    model, report = fit(before_validation, vocabulary.size, settings, validate=validate)
    training_seconds = round(time.monotonic() - started, 1)
    validation = {"sasrec alone": list_metrics(model_lists(model, {u: before_validation[u] for u in targets},
                                                           vocabulary), targets)}

    config = RecallConfig.served(models_dir, recall_size)
    pools = pool_validation(data, config)
    for name in pools[0].sources:
        validation[f"source: {name}"] = list_metrics(
            {p.userid: p.sources[name].itemids for p in pools if name in p.sources}, targets)
    served_weights = dict(config.fusion)
    pooled = [p for p in pools if p.userid in before_validation]
    chances_of = {p.userid: probabilities(model, before_validation[p.userid]) for p in pooled}
    fused = {}
    for extra in (0, K):
        scored = with_model_input(pooled, config, chances_of, vocabulary, extra)
        inputs = (*FOUR_INPUTS, SASREC)
        published = user_ndcgs(scored, np.array([served_weights.get(n, 0.0) for n in inputs]))
        weights, ndcg = choose_weights(scored, {**served_weights, SASREC: 0.0}, inputs)
        chosen = user_ndcgs(scored, np.array([weights[n] for n in inputs]))
        gains = chosen - published
        fused[f"candidates + model's top {extra}" if extra else "the served candidates"] = {
            "published_weights_ndcg@50": round(float(published.mean()), 4), "weights": weights,
            "ndcg@50": round(ndcg, 4), "gain": round(float(gains.mean()), 4),
            "gain_standard_error": round(float(gains.std(ddof=1) / np.sqrt(len(gains))), 4),
            "clearly_better": clearly_better(chosen, published)}

    holdout_targets = liked_holdout(exports)
    everything = user_sequences(offline_impressions(exports, vocabulary))
    final, _ = fit(everything, vocabulary.size, settings, epochs=report["best_epoch"])
    holdout = list_metrics(model_lists(final, {u: everything[u] for u in holdout_targets if u in everything},
                                       vocabulary), holdout_targets)
    chosen_weights = fused["the served candidates"]["weights"]
    return {"settings": settings.__dict__, "training": {**report, "seconds": training_seconds},
            "validation": validation, "validation_fusion": fused, "holdout_sasrec_alone": holdout,
            "holdout_fusion": holdout_fusion(exports, models_dir, config, final, everything, vocabulary,
                                             holdout_targets, chosen_weights)}


def holdout_fusion(exports: Path, models_dir: Path, config: RecallConfig, model: CausalSequenceModel,
                   histories: dict[int, np.ndarray], vocabulary: ItemVocabulary, targets: dict[int, set[int]],
                   weights: dict[str, float]) -> dict:
    bundle, _ = offline_bundle(exports, models_dir, config)
    inputs = (*FOUR_INPUTS, SASREC)
    published = np.array([config.fusion.get(n, 0.0) for n in inputs])
    chosen = np.array([weights[n] for n in inputs])
    lists: dict[str, dict[int, np.ndarray]] = {"published weights": {}, "five weights chosen on validation": {}}
    for userid in sorted(targets):
        trace = recommend(bundle, userid, K, config.recall_size).trace
        if trace is None or userid not in histories:
            continue
        candidates = trace.candidates
        stacked = five_inputs(candidates, dict(trace.sources), trace.model_scores,
                              probabilities(model, histories[userid]), vocabulary)
        for name, w in (("published weights", published), ("five weights chosen on validation", chosen)):
            lists[name][userid] = candidates.itemids[np.lexsort((candidates.itemids, -(w @ stacked)))]
    return {name: list_metrics(found, targets) for name, found in lists.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    RecallSettings.add_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-epochs", type=int, default=SequenceSettings.max_epochs)
    parser.add_argument("--dim", type=int, default=SequenceSettings.dim)
    parser.add_argument("--blocks", type=int, default=SequenceSettings.blocks)
    parser.add_argument("--dropout", type=float, default=SequenceSettings.dropout)
    parser.add_argument("--batch-size", type=int, default=SequenceSettings.batch_size)
    parser.add_argument("--learning-rate", type=float, default=SequenceSettings.learning_rate)
    args = parser.parse_args()
    settings = RecallSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(2)
    runs = []
    for seed in args.seeds:
        sequence = SequenceSettings(seed=seed, max_epochs=args.max_epochs, dim=args.dim, blocks=args.blocks,
                                    dropout=args.dropout, batch_size=args.batch_size,
                                    learning_rate=args.learning_rate)
        runs.append(measure(settings.current_export_dir, settings.models_dir, settings.recall_size, sequence))
    evaluation = settings.output_dir / "evaluation.json"
    result = {"date": time.strftime("%Y-%m-%d"), "cpu_model": cpu_model(), "output": str(settings.output_dir),
              "runs": runs,
              "evaluation_lists": json.loads(evaluation.read_text())["lists"] if evaluation.exists() else None}
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
