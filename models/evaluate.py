"""Top-K evaluation on the online hold-out, through the same recall and ranking code the service runs.

    python -m models.evaluate [--output DIR] [--exports DIR] [--recall-size 200] [--report PATH]

For every user with at least one liked (label 1) item among their held-out last impressions, the
service's own request path (``models.request_path.recommend``) over the embedded profile's stores, with
the user features read from the exports: recall -> feature rows -> the ranking model's ONNX scores -> the
final order -> top K, or the popularity fallback where the service would give it. Items seen offline are
never recommended. Reported at K = 10 and 50:

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
from tqdm import tqdm

from contracts.errors import NotPublishedError
from contracts.published import open_fusion, open_models, open_next_item
from contracts.settings import RecallSettings
from models.ease import Ease
from models.export_readers import liked_holdout, load_user_features
from models.in_memory_stores import CatalogueArrays, InMemoryFeatureClient, in_memory_bundle
from models.outages import SERVERS, with_outage
from models.recall_sources import (
    SOURCE_ORDER,
    ItemIndex,
    RecallConfig,
    UserRecallData,
    exclusion_mask,
    top_n,
    unseen_popular,
)
from models.request_path import recommend
from models.stores import ServingBundle

log = logging.getLogger(__name__)

CUTOFFS: tuple[int, ...] = (10, 50)
SERVED = "served (recall + ranking, fused)"
RANKER_ONLY = "recall + ranking model order alone"
NEXT_ITEM_ONLY = "recall + sequence model order alone"
MERGED = "merged recall, no ranking"
POPULARITY = "popularity"
EASE = "EASE (lambda 300)"


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


def ease_scores(ease: Ease, user: UserRecallData, index: ItemIndex) -> np.ndarray:
    """EASE's score of every item for the user's history, with what may not be recommended at -inf."""
    return np.where(exclusion_mask(index, user.seen), -np.inf, ease.scores(user.seen, index.item_count))


def offline_bundle(exports: Path, models_dir: Path, config: RecallConfig) -> tuple[ServingBundle, CatalogueArrays]:
    """The embedded service's bundle over the same exports and models, the user features read from the
    exports (what Feast materialises from them), and the arrays it holds."""
    recall_model, ranking_model = open_models(models_dir)
    if ranking_model is None:
        raise NotPublishedError(f"no ranking model under {models_dir}: run python -m models.train")
    arrays = CatalogueArrays.load(exports, recall_model)
    next_item_model = open_next_item(models_dir)
    versions = {"exports": str(exports.resolve()), "recall_model": recall_model.version if recall_model else None,
                "ranking_model": ranking_model.version,
                "next_item_model": next_item_model.version if next_item_model else None}
    features = InMemoryFeatureClient(load_user_features(exports))
    return in_memory_bundle(arrays, ranking_model, config, features, versions, next_item_model), arrays


def evaluate(exports: Path, models_dir: Path, config: RecallConfig, cutoffs: Sequence[int] = CUTOFFS,
             with_ease: bool = True, served_lists: dict[int, list[int]] | None = None,
             down: Sequence[str] = (), users: int | None = None, seed: int = 0) -> dict:
    """The report; ``served_lists``, when given, receives each user's served top max(cutoffs) itemids.
    ``down``: servers whose stores do not answer (``models.outages``), so the served list is the degraded one.
    ``users``: every list for a fixed random sample of that many users (drawn with ``seed``; at ML-25M's size
    all 160K users take about half an hour), else for all."""
    started = time.monotonic()
    bundle, arrays = offline_bundle(exports, models_dir, config)
    bundle = with_outage(bundle, down)
    index = arrays.index
    targets = liked_holdout(exports)
    users_with_targets = len(targets)
    if users is not None and users < len(targets):
        chosen = np.random.default_rng(seed).choice(np.array(sorted(targets)), users, replace=False)
        targets = {int(userid): targets[int(userid)] for userid in chosen}
    ease = Ease.fit(d.seen for d in arrays.users.values()) if with_ease else None
    k_max = max(cutoffs)

    table = MetricTable(cutoffs)
    coverage: dict[str, float] = {}
    traced = 0
    for userid, relevant in tqdm(sorted(targets.items()), desc="top-K evaluation", mininterval=2.0, disable=None):
        # The service's request path: the served list, and what it was built from.
        served = recommend(bundle, userid, k_max, config.recall_size)
        table.add(SERVED, np.asarray([item.itemid for item in served.items]), relevant)
        if served_lists is not None:
            served_lists[userid] = [item.itemid for item in served.items]
        user = arrays.users.get(userid)
        seen = user.seen if user is not None else np.empty(0, dtype=np.int64)
        table.add(POPULARITY, unseen_popular(bundle.items.popularity, seen, config.recall_size).itemids, relevant)
        if served.trace is not None:
            traced += 1
            trace = served.trace
            for name, ranked in trace.sources.items():
                table.add(f"source: {name}", ranked.itemids, relevant)
                coverage[name] = coverage.get(name, 0.0) + len(relevant & set(ranked.itemids.tolist())) / len(relevant)
            candidates = trace.candidates
            coverage["merged"] = coverage.get("merged", 0.0) + len(
                relevant & set(candidates.itemids.tolist())) / len(relevant)
            table.add(MERGED, candidates.itemids, relevant)
            if trace.model_scores is not None:
                order = np.lexsort((candidates.itemids, -trace.model_scores))
                table.add(RANKER_ONLY, candidates.itemids[order], relevant)
            if trace.next_item_scores is not None:
                order = np.lexsort((candidates.itemids, -trace.next_item_scores))
                table.add(NEXT_ITEM_ONLY, candidates.itemids[order], relevant)
        if ease is not None and user is not None:
            table.add(EASE, top_n(ease_scores(ease, user, index), k_max), relevant)
    choice = open_fusion(models_dir)
    report = {
        "fusion": {"weights": dict(config.fusion), "chosen_on_validation": choice is not None,
                   "sequence_seeds": config.sequence_seeds,
                   "not_asked": [name for name in SOURCE_ORDER if not config.asks(name)],
                   **({k: v for k, v in choice.items() if k.startswith("validation")} if choice else {})},
        "down": sorted(down),
        "users_evaluated": len(targets),
        "users_with_a_liked_holdout_item": users_with_targets,
        "users_served_a_fallback": len(targets) - traced,
        "recall_size": config.recall_size,
        "quotas": config.quota_counts(config.recall_size),
        "cutoffs": list(cutoffs),
        "lists": table.means(),
        "recall_coverage": {name: round(total / max(traced, 1), 4) for name, total in coverage.items()},
        "versions": bundle.versions,
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
    fusion = report.get("fusion", {})
    if fusion:
        lines.append("")
        chosen = ("chosen on validation" if fusion["chosen_on_validation"]
                  else "the defaults: no choice published (python -m models.fusion_choice)")
        lines.append(f"Final order's weights ({chosen}): {fusion['weights']}; candidates per source: "
                     f"{report['quotas']} of {report['recall_size']}, sequence seeds {fusion.get('sequence_seeds')}"
                     + (f"; not asked: {', '.join(fusion['not_asked'])}" if fusion.get("not_asked") else "") + ".")
        figures = {k: v for k, v in fusion.items() if k.startswith("validation")}
        if figures:
            lines.append(f"Validation: {figures}.")
    lines.append("")
    lines.append(f"Recall coverage of liked hold-out items ({report['recall_size']} candidates): {coverage}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    RecallSettings.add_arguments(parser)
    parser.add_argument("--exports", type=Path, default=None, help="batch exports (default <output>/exports/current)")
    parser.add_argument("--no-ease", dest="ease", action="store_false", help="skip the EASE baseline")
    parser.add_argument("--report", type=Path, default=None, help="JSON report path (default <output>/evaluation.json)")
    parser.add_argument("--users", type=int, default=None,
                        help="evaluate a fixed random sample of this many users (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="the user sample's seed")
    parser.add_argument("--down", default="", help="comma-separated servers to replay as down: the degraded "
                                                   f"lists the services profile serves ({', '.join(SERVERS)})")
    args = parser.parse_args(argv)
    settings = RecallSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exports = args.exports or settings.current_export_dir
    down = [name for name in args.down.split(",") if name]
    config = RecallConfig.served(settings.models_dir, settings.recall_size)
    report = evaluate(exports, settings.models_dir, config, with_ease=args.ease,
                      down=down, users=args.users, seed=args.seed)
    path = args.report or settings.output_dir / "evaluation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    log.info("top-K evaluation of %d users in %.1f s -> %s", report["users_evaluated"], report["seconds"], path)
    return report


if __name__ == "__main__":
    main()
