"""Offline test AUC of the recall and ranking models under both selection protocols, over seeds.

    python bench/train_benchmark.py --exports output/exports/current [--seeds 2024 2025 2026]

For each model and seed, trains twice with the same hyper-parameters:

- "select on test": early stopping on the test AUC, which is then reported (the reference design's
  protocol: the figure that picked the epoch is the figure reported);
- "select on validation": early stopping on the per-user validation slice of train
  (``models/validation.py``), then the test AUC of the chosen epoch, computed once.

Models: the pointwise MF recall (the reference design's recall objective, so its AUC is comparable),
the ranker on rated rows only (the reference protocol) and the ranker with the uniformly sampled
negatives (what is served; its AUC is still measured on the rated test rows). Prints Markdown and
appends JSON lines to bench/results/training.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from contracts.settings import TrainingSettings
from contracts.tables import Export
from models.data_splits import ON_TEST, ON_VALIDATION, DataSplits, Selection
from models.export_readers import load_item_features
from models.feature_rows import FeatureAssembler
from models.fitting import RANKING_TRAINING, RECALL_TRAINING, VARIANTS, TrainingReport, train_ranking, train_recall
from models.item_vocabulary import ItemVocabulary
from models.negative_draws import draw_negatives, rated_in_run
from models.samples import FeatureMetadata, load_samples

RESULTS = Path(__file__).resolve().parent / "results" / "training.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024, 2025, 2026])
    parser.add_argument("--models", nargs="+", default=["recall", "ranking", "ranking+negatives"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    metadata = FeatureMetadata.read(args.exports)
    vocabulary = ItemVocabulary.read(args.exports / Export.ITEM_VOCABULARY)
    train_set = load_samples(args.exports, Export.SAMPLES_TRAIN)
    test_set = load_samples(args.exports, Export.SAMPLES_TEST)
    with_negatives = "ranking+negatives" in args.models
    assembler = FeatureAssembler.from_item_features(load_item_features(args.exports))
    negatives = (draw_negatives(train_set, rated_in_run(args.exports, (train_set, test_set), vocabulary), vocabulary,
                                TrainingSettings().negatives_per_impression, assembler) if with_negatives else None)

    def run(model: str, select_on: str, seed: int) -> TrainingReport:
        plan = Selection(select_on=select_on)
        if model == "recall":
            splits = DataSplits.carve(train_set, test_set, plan)
            return train_recall(metadata, vocabulary, splits, config=replace(RECALL_TRAINING, seed=seed))[1]
        splits = DataSplits.carve(train_set, test_set, plan, negatives if model == "ranking+negatives" else None)
        return train_ranking(metadata, vocabulary, splits, VARIANTS["fm_dense"],
                             replace(RANKING_TRAINING, seed=seed))[1]

    RESULTS.parent.mkdir(exist_ok=True)
    table: dict[tuple[str, str], list[dict]] = {}
    for model in args.models:
        for select_on in (ON_TEST, ON_VALIDATION):
            for seed in args.seeds:
                started = time.monotonic()
                report: TrainingReport = run(model, select_on, seed)
                row = {"model": model, "select_on": select_on, "seed": seed, "exports": str(args.exports),
                       "run_id": metadata.run_id, "test_auc": round(report.test_auc, 4),
                       "selection_auc": round(report.result.best_selection_score, 4),
                       "best_epoch": report.result.best_epoch, "epochs": len(report.result.history),
                       "seconds": round(time.monotonic() - started, 1), "torch_threads": torch.get_num_threads(),
                       "date": time.strftime("%Y-%m-%d")}
                print(json.dumps(row), flush=True)
                with RESULTS.open("a") as out:
                    out.write(json.dumps(row) + "\n")
                table.setdefault((model, select_on), []).append(row)

    def summary(rows: list[dict], key: str) -> str:
        values = [r[key] for r in rows]
        return f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})"

    print(f"\n{len(args.seeds)} seeds: mean (min-max)\n")
    print("| model | select on test: test AUC (reference protocol) | select on validation: validation AUC | "
          "select on validation: test AUC (reported) | best epochs | seconds per run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model in args.models:
        on_test, on_validation = table[(model, ON_TEST)], table[(model, ON_VALIDATION)]
        epochs = ", ".join(str(r["best_epoch"]) for r in on_validation)
        seconds = np.mean([r["seconds"] for r in on_test + on_validation])
        print(f"| {model} | {summary(on_test, 'test_auc')} | {summary(on_validation, 'selection_auc')} | "
              f"{summary(on_validation, 'test_auc')} | {epochs} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
