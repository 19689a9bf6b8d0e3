"""Top-K evaluation on the online hold-out, through the same recall and ranking code the service runs.

    python -m models.evaluate [--output DIR] [--exports DIR] [--recall-size 200] [--report PATH]

For every user with at least one liked (label 1) item among their held-out last impressions: recall
(``models.retrieval.recall``) -> feature rows (``FeatureAssembler``) -> the ranking model's ONNX
scores -> the final order (``models.retrieval.fused_order``) -> top K. Items seen offline are never
recommended. Reported at K = 10 and 50:

- HitRate@K: share of users with at least one liked hold-out item in their top K;
- Recall@K: mean over users of (liked hold-out items in the top K) / (liked hold-out items);
- NDCG@K: binary relevance, DCG / ideal DCG with min(liked, K) hits at the top.

Lists compared: the served list (recall + ranking + fusion), the candidates in the ranking model's
order alone, the merged candidates in merge order (no ranking), each recall source alone, popularity,
and EASE (closed-form item-item regression, lambda 300) as the reference model. Per stage: recall
coverage (share of liked hold-out items among the candidates) per source and merged. Writes JSON
and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.recall_data import (
    FeatureAssembler,
    OnnxRanker,
    load_item_index,
    load_user_features,
    load_user_recall_data,
    open_models,
)
from models.retrieval import SOURCE_ORDER, ItemIndex, RecallConfig, UserRecallData, fused_order, recall, top_n
from spark_jobs.settings import add_settings_arguments, settings_from_args

log = logging.getLogger(__name__)

CUTOFFS: tuple[int, ...] = (10, 50)
SERVED = "served (recall + ranking, fused)"
RANKER_ONLY = "recall + ranking model order alone"
MERGED = "merged recall, no ranking"
POPULARITY = "popularity"
EASE = "EASE (lambda 300)"
EASE_LAMBDA = 300.0


@dataclass(frozen=True)
class ListMetrics:
    hit: float
    recall: float
    ndcg: float


def metrics_at(recommended: Sequence[int] | np.ndarray, relevant: Iterable[int], k: int) -> ListMetrics:
    """One user's HitRate, Recall and NDCG at k (binary relevance)."""
    wanted = set(int(i) for i in relevant)
    if not wanted:
        raise ValueError("metrics need at least one relevant item")
    top = [int(i) for i in recommended[:k]]
    gains = [1.0 if item in wanted else 0.0 for item in top]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(np.dot(gains, discounts[: len(gains)]))
    ideal = float(discounts[: min(len(wanted), k)].sum())
    found = sum(gains)
    return ListMetrics(float(found > 0), found / len(wanted), dcg / ideal)


class MetricTable:
    """Running means of the metrics per list name and cutoff."""

    def __init__(self, cutoffs: Sequence[int]) -> None:
        self.cutoffs = tuple(cutoffs)
        self.sums: dict[str, dict[str, float]] = {}
        self.users: dict[str, int] = {}

    def add(self, name: str, recommended: np.ndarray, relevant: set[int]) -> None:
        sums = self.sums.setdefault(name, {})
        for k in self.cutoffs:
            m = metrics_at(recommended, relevant, k)
            for metric, value in (("hitrate", m.hit), ("recall", m.recall), ("ndcg", m.ndcg)):
                sums[f"{metric}@{k}"] = sums.get(f"{metric}@{k}", 0.0) + value
        self.users[name] = self.users.get(name, 0) + 1

    def means(self) -> dict[str, dict[str, float]]:
        return {name: {key: round(total / self.users[name], 4) for key, total in sums.items()}
                for name, sums in self.sums.items()}


def ease_item_weights(seen_by_user: dict[int, np.ndarray], item_count: int, lam: float = EASE_LAMBDA) -> np.ndarray:
    """EASE (Steck 2019): B = I - P diagMat(1 / diag(P)), P = (X'X + lam I)^-1, with diag(B) = 0."""
    gram = np.zeros((item_count, item_count), dtype=np.float64)
    for seen in seen_by_user.values():
        items = np.unique(seen[(seen > 0) & (seen < item_count)])
        gram[np.ix_(items, items)] += 1.0
    gram[np.diag_indices(item_count)] += lam
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    weights[np.diag_indices(item_count)] = 0.0
    return weights


def liked_holdout(exports: Path) -> dict[int, set[int]]:
    holdout = pd.read_parquet(exports / "online_holdout", columns=["userid", "itemid", "label"])
    liked = holdout[holdout["label"] == 1]
    return {int(u): set(group["itemid"].astype(int)) for u, group in liked.groupby("userid")}


def _exclude_seen(scores: np.ndarray, user: UserRecallData, index: ItemIndex) -> np.ndarray:
    scores = scores.astype(np.float64, copy=True)
    scores[0] = -np.inf
    scores[~index.known_items] = -np.inf
    scores[user.seen[user.seen < len(scores)]] = -np.inf
    return scores


def evaluate(exports: Path, models_dir: Path, config: RecallConfig, cutoffs: Sequence[int] = CUTOFFS,
             with_ease: bool = True, served_lists: dict[int, list[int]] | None = None) -> dict:
    """The report; ``served_lists``, when given, receives each user's served top max(cutoffs) itemids."""
    started = time.monotonic()
    recall_model, ranking_model = open_models(models_dir)
    index = load_item_index(exports, recall_model)
    users = load_user_recall_data(exports, recall_model)
    ranker = OnnxRanker(ranking_model) if ranking_model is not None else None
    assembler = FeatureAssembler.from_item_features(pd.read_parquet(exports / "item_features"))
    user_features = load_user_features(exports)
    targets = liked_holdout(exports)
    ease = ease_item_weights({u: d.seen for u, d in users.items()}, index.item_count) if with_ease else None
    k_max = max(cutoffs)

    table = MetricTable(cutoffs)
    coverage: dict[str, float] = {}
    evaluated = 0
    for userid, relevant in tqdm(sorted(targets.items()), desc="top-K evaluation", mininterval=2.0, disable=None):
        user = users.get(userid)
        if user is None:
            continue
        evaluated += 1
        candidates, sources = recall(user, index, config)
        for name, ranked in sources.items():
            table.add(f"source: {name}", ranked.itemids, relevant)
            coverage[name] = coverage.get(name, 0.0) + len(relevant & set(ranked.itemids.tolist())) / len(relevant)
        coverage["merged"] = coverage.get("merged", 0.0) + len(
            relevant & set(candidates.itemids.tolist())) / len(relevant)
        table.add(MERGED, candidates.itemids, relevant)
        if ranker is not None and len(candidates):
            scores = ranker.score(assembler.rows(userid, user_features[userid], candidates.itemids))
            table.add(RANKER_ONLY, candidates.itemids[np.lexsort((candidates.itemids, -scores))], relevant)
            order, _ = fused_order(candidates, sources, scores)
            table.add(SERVED, candidates.itemids[order], relevant)
            if served_lists is not None:
                served_lists[userid] = candidates.itemids[order][:k_max].tolist()
        table.add(POPULARITY, sources["popularity"].itemids, relevant)
        if ease is not None:
            history = user.seen[(user.seen > 0) & (user.seen < index.item_count)]
            scores = _exclude_seen(ease[history].sum(axis=0), user, index)
            table.add(EASE, top_n(scores, k_max), relevant)
    report = {
        "users_evaluated": evaluated,
        "recall_size": config.recall_size,
        "quotas": config.quota_counts(config.recall_size),
        "cutoffs": list(cutoffs),
        "lists": table.means(),
        "recall_coverage": {name: round(total / max(evaluated, 1), 4) for name, total in coverage.items()},
        "versions": {
            "exports": str(exports.resolve()),
            "recall_model": recall_model.metadata()["version"] if recall_model else None,
            "ranking_model": ranking_model.metadata()["version"] if ranking_model else None,
        },
        "seconds": round(time.monotonic() - started, 1),
    }
    best_source = max((n for n in report["lists"] if n.startswith("source: ")),
                      key=lambda n: report["lists"][n][f"ndcg@{k_max}"], default=None)
    if best_source and SERVED in report["lists"]:
        report["ranking_gain_over_best_source"] = {
            "best_source": best_source,
            **{key: round(report["lists"][SERVED][key] - report["lists"][best_source][key], 4)
               for key in report["lists"][SERVED]},
        }
    return report


def markdown(report: dict) -> str:
    keys = [f"{m}@{k}" for k in report["cutoffs"] for m in ("hitrate", "recall", "ndcg")]
    lines = ["| list served | " + " | ".join(k.replace("hitrate", "HitRate").replace("recall", "Recall")
                                              .replace("ndcg", "NDCG") for k in keys) + " |",
             "| --- |" + " ---: |" * len(keys)]
    known = [SERVED, RANKER_ONLY, MERGED, *(f"source: {s}" for s in SOURCE_ORDER), POPULARITY, EASE]
    order = [*(name for name in report["lists"] if name not in known), *known]  # rows others add come first
    for name in order:
        if name in report["lists"]:
            values = report["lists"][name]
            lines.append(f"| {name} | " + " | ".join(f"{values[k]:.3f}" for k in keys) + " |")
    coverage = ", ".join(f"{name} {value:.3f}" for name, value in report["recall_coverage"].items())
    lines.append("")
    lines.append(f"Recall coverage of liked hold-out items ({report['recall_size']} candidates): {coverage}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(parser)
    parser.add_argument("--exports", type=Path, default=None, help="batch exports (default <output>/exports/current)")
    parser.add_argument("--no-ease", dest="ease", action="store_false", help="skip the EASE baseline")
    parser.add_argument("--report", type=Path, default=None, help="JSON report path (default <output>/evaluation.json)")
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exports = args.exports or settings.current_export_dir
    report = evaluate(exports, settings.models_dir, RecallConfig(recall_size=settings.recall_size), with_ease=args.ease)
    path = args.report or settings.output_dir / "evaluation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    log.info("top-K evaluation of %d users in %.1f s -> %s", report["users_evaluated"], report["seconds"], path)
    return report


if __name__ == "__main__":
    main()
