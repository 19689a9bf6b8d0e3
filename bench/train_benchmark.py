"""Offline test AUC and training time of the recall model and the ranking variants (the ablation).

    python bench/train_benchmark.py --exports output/exports/current [--variants fm fm_dense deepfm]

Trains on the batch's exports with the default hyper-parameters (Adam 1e-3, weight decay 1e-5,
batch 1024, early stopping with patience 5 on test AUC), one model after another on this machine,
prints a Markdown table and appends JSON lines to bench/results/training.jsonl.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from models.samples import TEST, TRAIN, FeatureMetadata, load_samples
from models.train import VARIANTS, train_ranking, train_recall

RESULTS = Path(__file__).resolve().parent / "results" / "training.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exports", type=Path, required=True)
    parser.add_argument("--variants", nargs="*", default=["fm", "fm_dense", "deepfm"], choices=sorted(VARIANTS))
    parser.add_argument("--skip-recall", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    metadata = FeatureMetadata.read(args.exports)
    train_set, test_set = load_samples(args.exports / TRAIN), load_samples(args.exports / TEST)
    runs = [] if args.skip_recall else [("recall (MF)", lambda: train_recall(metadata, train_set, test_set))]
    runs += [(f"ranking {v}", lambda v=v: train_ranking(metadata, train_set, test_set, VARIANTS[v]))
             for v in args.variants]
    RESULTS.parent.mkdir(exist_ok=True)
    print("| model | test AUC | best epoch | epochs run | training s |\n| --- | --- | --- | --- | --- |")
    for name, run in runs:
        started = time.monotonic()
        _, result = run()
        row = {"model": name, "exports": str(args.exports), "run_id": metadata.run_id,
               "test_auc": round(result.best_auc, 4), "best_epoch": result.best_epoch,
               "epochs": len(result.history), "seconds": round(time.monotonic() - started, 1),
               "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
        print(f"| {name} | {row['test_auc']:.4f} | {row['best_epoch']} | {row['epochs']} | {row['seconds']} |",
              flush=True)
        with RESULTS.open("a") as out:
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
