"""Train the recall and ranking models from the batch's exports, then publish their artifacts.

    python -m models.train [--output DIR] [--exports DIR] [--only recall|ranking] [--variant fm|fm_dense|deepfm]

Reads ``<exports>/samples_train`` and ``samples_test`` (default: the batch's ``exports/current``),
checks their feature-spec version, trains, and writes versioned folders under ``<output>/models/``:
``recall/`` (weights, user and item vectors as Parquet) and ``ranking/`` (weights, ONNX, metadata).
The vectors also become the Delta tables ``user_vectors`` and ``item_vectors`` (unless ``--no-delta``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from models.artifacts import ModelFolder, StagedModel
from models.onnx_export import INPUT_NAME, ONNX_FILE, OUTPUT_NAME, check_parity, export_onnx
from models.ranking import GroupedFactorizationMachine, RankingConfig
from models.recall import MatrixFactorization
from models.samples import TEST, TRAIN, FeatureMetadata, Samples, load_samples
from models.training import TrainingConfig, TrainingResult, seed_everything, train
from spark_jobs.feature_spec import SPEC
from spark_jobs.settings import Settings, add_settings_arguments, settings_from_args

log = logging.getLogger(__name__)

RECALL = "recall"
RANKING = "ranking"
USER_VECTORS = "user_vectors"
ITEM_VECTORS = "item_vectors"
USERID, ITEMID = SPEC.index_of("userid"), SPEC.index_of("itemid")

VARIANTS: dict[str, RankingConfig] = {
    "fm": RankingConfig(dense_mlp=False),
    "fm_dense": RankingConfig(),  # the default
    "deepfm": RankingConfig(deep=True),
}
RECALL_TRAINING = TrainingConfig(learning_rate=1e-3, weight_decay=0.0)
RANKING_TRAINING = TrainingConfig()


def recall_forward(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features[:, USERID].long(), features[:, ITEMID].long())


def ranking_forward(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features)


def train_recall(metadata: FeatureMetadata, train_set: Samples, test_set: Samples, dim: int = 16,
                 config: TrainingConfig = RECALL_TRAINING) -> tuple[MatrixFactorization, TrainingResult]:
    seed_everything(config.seed)
    model = MatrixFactorization(metadata.cardinalities["userid"], metadata.cardinalities["itemid"], dim)
    return model, train(model, recall_forward, train_set, test_set, config, name=RECALL)


def train_ranking(metadata: FeatureMetadata, train_set: Samples, test_set: Samples,
                  model_config: RankingConfig = VARIANTS["fm_dense"],
                  config: TrainingConfig = RANKING_TRAINING) -> tuple[GroupedFactorizationMachine, TrainingResult]:
    seed_everything(config.seed)
    model = GroupedFactorizationMachine(metadata.cardinalities, model_config)
    return model, train(model, ranking_forward, train_set, test_set, config, name=RANKING)


def _training_metadata(metadata: FeatureMetadata, result: TrainingResult, config: TrainingConfig) -> dict:
    return {
        "cardinalities": metadata.cardinalities,
        "data_run_id": metadata.run_id,
        "training": asdict(config),
        "best_test_auc": result.best_auc,
        "best_epoch": result.best_epoch,
        "training_seconds": round(result.seconds, 1),
        "auc_history": result.history,
    }


def publish_recall(models_dir: Path, model: MatrixFactorization, metadata: FeatureMetadata,
                   result: TrainingResult, config: TrainingConfig, dim: int) -> ModelFolder:
    staged = StagedModel(models_dir, RECALL)
    try:
        users, items = model.export_vectors()
        for name, vectors, key in ((USER_VECTORS, users, "userid"), (ITEM_VECTORS, items, "itemid")):
            frame = pd.DataFrame({key: range(len(vectors)), "vector": list(vectors.numpy())})
            frame.iloc[1:].to_parquet(staged.staging / f"{name}.parquet", index=False)  # id 0 is "unknown"
        staged.save(model, {"model": RECALL, "embedding_dim": dim, "vector_dim": users.shape[1],
                            **_training_metadata(metadata, result, config)})
        return staged.publish()
    except BaseException:
        staged.discard()
        raise


def load_ranking(folder: ModelFolder) -> GroupedFactorizationMachine:
    metadata = folder.metadata()
    config = RankingConfig(**{**metadata["config"], "dense_hidden": tuple(metadata["config"]["dense_hidden"]),
                              "deep_hidden": tuple(metadata["config"]["deep_hidden"])})
    model = GroupedFactorizationMachine(metadata["cardinalities"], config)
    model.load_state_dict(torch.load(folder.weights, weights_only=True))
    return model.eval()


def publish_ranking(models_dir: Path, model: GroupedFactorizationMachine, metadata: FeatureMetadata,
                    result: TrainingResult, config: TrainingConfig, parity_rows: torch.Tensor) -> ModelFolder:
    staged = StagedModel(models_dir, RANKING)
    try:
        model.eval()
        onnx_path = export_onnx(model, staged.staging / ONNX_FILE)
        difference = check_parity(model, onnx_path, parity_rows)
        staged.save(model, {
            "model": RANKING, "config": model.config.to_dict(), "onnx": ONNX_FILE,
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "onnx_parity_max_abs_diff": difference,
            **_training_metadata(metadata, result, config),
        })
        return staged.publish()
    except BaseException:
        staged.discard()
        raise


def vectors_to_delta(settings: Settings, folder: ModelFolder, run_id: str) -> None:
    """The recall vectors as Delta tables, written like every other table of the platform."""
    from pyspark.sql import SparkSession

    from spark_jobs.lake import write_table
    from spark_jobs.session import spark_session

    active = SparkSession.getActiveSession()
    spark = active or spark_session(settings, "movielens-vectors")
    try:
        for name in (USER_VECTORS, ITEM_VECTORS):
            write_table(spark.read.parquet(str(folder.path / f"{name}.parquet")), settings, name, run_id)
    finally:
        if active is None:
            spark.stop()


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(parser)
    parser.add_argument("--exports", type=Path, default=None, help="batch exports (default <output>/exports/current)")
    parser.add_argument("--only", choices=(RECALL, RANKING), default=None)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="fm_dense", help="ranking model variant")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--no-delta", dest="delta", action="store_false",
                        help="skip writing the vectors as Delta tables (saves starting Spark)")
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    exports = args.exports or settings.current_export_dir
    metadata = FeatureMetadata.read(exports)
    train_set, test_set = load_samples(exports / TRAIN), load_samples(exports / TEST)
    log.info("samples from %s: %d train, %d test (batch run %s)", exports, len(train_set), len(test_set),
             metadata.run_id)
    limit = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    summary: dict = {"exports": str(exports)}
    if args.only in (None, RECALL):
        config = replace(RECALL_TRAINING, **limit)
        model, result = train_recall(metadata, train_set, test_set, config=config)
        folder = publish_recall(settings.models_dir, model, metadata, result, config, dim=16)
        summary[RECALL] = {"test_auc": result.best_auc, "seconds": round(result.seconds, 1), "path": str(folder.path)}
        if args.delta:
            vectors_to_delta(settings, folder, metadata.run_id)
    if args.only in (None, RANKING):
        config = replace(RANKING_TRAINING, **limit)
        model, result = train_ranking(metadata, train_set, test_set, VARIANTS[args.variant], config)
        folder = publish_ranking(settings.models_dir, model, metadata, result, config, test_set.features)
        summary[RANKING] = {"variant": args.variant, "test_auc": result.best_auc,
                            "seconds": round(result.seconds, 1), "path": str(folder.path)}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
