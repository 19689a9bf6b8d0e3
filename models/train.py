"""Train the recall and ranking models from the batch's exports, then publish their artifacts.

    python -m models.train [--output DIR] [--exports DIR] [--only recall|ranking] [--variant fm|fm_dense|deepfm]
                           [--select-on validation|test] [--refit] [--seed N]

Reads ``<exports>/samples_train`` and ``samples_test`` (default: the batch's ``exports/current``),
checks their feature-spec version, trains, and writes versioned folders under ``<output>/models/``:
the epoch is chosen on a validation slice of the train split (``models/validation.py``) and the test
AUC of that epoch is computed once afterwards. ``--select-on test`` is the reference design's protocol
(stop on the test AUC and report it), kept for comparison. ``--refit`` retrains on train + validation
for the chosen number of epochs before the test AUC is taken.
``recall/`` (weights, user and item vectors as Parquet) and ``ranking/`` (weights, ONNX, metadata).
The vectors also become the Delta tables ``user_vectors`` and ``item_vectors`` (unless ``--no-delta``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.artifacts import ModelFolder, StagedModel
from models.onnx_export import INPUT_NAME, ONNX_FILE, OUTPUT_NAME, check_parity, export_onnx
from models.ranking import GroupedFactorizationMachine, RankingConfig
from models.recall import MatrixFactorization
from models.retrieval_training import BprConfig, Interactions, train_bpr
from models.samples import (
    NEGATIVES,
    TEST,
    TRAIN,
    FeatureMetadata,
    NegativeSamples,
    Samples,
    load_negatives,
    load_samples,
)
from models.training import Forward, TrainingConfig, TrainingResult, auc, seed_everything, train
from models.validation import ValidationRule, validation_mask
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
RECALL_BPR = BprConfig()
RANKING_TRAINING = TrainingConfig()


def recall_forward(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features[:, USERID].long(), features[:, ITEMID].long())


def ranking_forward(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features)


ON_VALIDATION, ON_TEST = "validation", "test"


@dataclass(frozen=True)
class Selection:
    """How the epoch is chosen: on the validation slice (default) or on the test rows (reference)."""

    select_on: str = ON_VALIDATION
    rule: ValidationRule = field(default_factory=ValidationRule)
    refit: bool = False

    def __post_init__(self) -> None:
        if self.select_on not in (ON_VALIDATION, ON_TEST):
            raise ValueError(f"select_on must be {ON_VALIDATION!r} or {ON_TEST!r}, not {self.select_on!r}")
        if self.refit and self.select_on == ON_TEST:
            raise ValueError("--refit folds the validation slice back in: there is none with --select-on test")


@dataclass(frozen=True)
class DataSplits:
    fit: Samples  # what the weights learn from
    selection: Samples  # what picks the epoch
    test: Samples  # touched once, after selection (unless selection is on test)
    selection_plan: Selection

    @classmethod
    def carve(cls, train_set: Samples, test_set: Samples, plan: Selection | None = None,
              negatives: NegativeSamples | None = None) -> DataSplits:
        """Validation slice from the train rows; a sampled negative follows the row it was drawn for.

        The test rows stay rated rows only, so the test AUC remains the reference design's figure.
        """
        plan = plan or Selection()
        if plan.select_on == ON_TEST:
            fit = train_set if negatives is None else train_set.concat(negatives.samples)
            return cls(fit, test_set, test_set, plan)
        if train_set.timestamps is None:
            raise ValueError("carving a validation slice needs the samples' timestamps")
        mask = validation_mask(train_set.column("userid"), train_set.column("itemid"), train_set.timestamps,
                               plan.rule)
        fit, selection = train_set.subset(~mask), train_set.subset(mask)
        if negatives is not None:
            for_selection = negatives.drawn_for(selection)
            fit = fit.concat(negatives.samples.subset(~for_selection))
            selection = selection.concat(negatives.samples.subset(for_selection))
        return cls(fit, selection, test_set, plan)


@dataclass
class TrainingReport:
    result: TrainingResult  # the selection run
    test_auc: float  # of the chosen (or refitted) weights, computed once
    splits: DataSplits = field(repr=False)

    def to_metadata(self) -> dict:
        plan = self.splits.selection_plan
        return {
            "selected_on": plan.select_on,
            "validation_rule": plan.rule.to_dict() if plan.select_on == ON_VALIDATION else None,
            "rows": {"fit": len(self.splits.fit), "selection": len(self.splits.selection),
                     "test": len(self.splits.test)},
            "selection_auc": self.result.best_selection_score,
            "best_epoch": self.result.best_epoch,
            "refit_on_train_and_validation": plan.refit,
            "test_auc": self.test_auc,
        }


def fit_and_evaluate(build: Callable[[], nn.Module], forward: Forward, splits: DataSplits,
                     config: TrainingConfig, name: str) -> tuple[nn.Module, TrainingReport]:
    """Select the epoch on the selection set, optionally refit, then take the test AUC once."""
    seed_everything(config.seed)
    model = build()
    result = train(model, forward, splits.fit, splits.selection, config, name=name)
    if splits.selection_plan.refit:
        seed_everything(config.seed)
        model = build()
        train(model, forward, splits.fit.concat(splits.selection), None,
              replace(config, max_epochs=result.best_epoch), name=f"{name} refit")
    test_auc = auc(model, forward, splits.test, config.eval_batch_size)
    log.info("%s: selected on %s (AUC %.4f, epoch %d), test AUC %.4f", name, splits.selection_plan.select_on,
             result.best_selection_score, result.best_epoch, test_auc)
    return model, TrainingReport(result, test_auc, splits)


def train_recall(metadata: FeatureMetadata, splits: DataSplits, dim: int = 16,
                 config: TrainingConfig = RECALL_TRAINING) -> tuple[MatrixFactorization, TrainingReport]:
    def build() -> MatrixFactorization:
        return MatrixFactorization(metadata.cardinalities["userid"], metadata.cardinalities["itemid"], dim)

    return fit_and_evaluate(build, recall_forward, splits, config, RECALL)


def train_ranking(metadata: FeatureMetadata, splits: DataSplits,
                  model_config: RankingConfig = VARIANTS["fm_dense"],
                  config: TrainingConfig = RANKING_TRAINING) -> tuple[GroupedFactorizationMachine, TrainingReport]:
    def build() -> GroupedFactorizationMachine:
        return GroupedFactorizationMachine(metadata.cardinalities, model_config)

    return fit_and_evaluate(build, ranking_forward, splits, config, RANKING)


def _training_metadata(metadata: FeatureMetadata, report: TrainingReport, config: TrainingConfig) -> dict:
    return {
        "cardinalities": metadata.cardinalities,
        "data_run_id": metadata.run_id,
        "training": asdict(config),
        **report.to_metadata(),
        "training_seconds": round(report.result.seconds, 1),
        "auc_history": report.result.history,
    }


def publish_recall(models_dir: Path, model: MatrixFactorization, training_metadata: dict) -> ModelFolder:
    staged = StagedModel(models_dir, RECALL)
    try:
        users, items = model.export_vectors()
        for name, vectors, key in ((USER_VECTORS, users, "userid"), (ITEM_VECTORS, items, "itemid")):
            frame = pd.DataFrame({key: range(len(vectors)), "vector": list(vectors.numpy())})
            frame.iloc[1:].to_parquet(staged.staging / f"{name}.parquet", index=False)  # id 0 is "unknown"
        staged.save(model, {"model": RECALL, "embedding_dim": model.user_vectors.embedding_dim,
                            "vector_dim": users.shape[1], **training_metadata})
        return staged.publish()
    except BaseException:
        staged.discard()
        raise


def offline_interactions(train_set: Samples, test_set: Samples) -> tuple[Interactions, np.ndarray]:
    """Every offline impression (train and test rows) as (user, item, label), and their timestamps."""
    offline = train_set.concat(test_set)
    interactions = Interactions(offline.column("userid").astype(np.int64), offline.column("itemid").astype(np.int64),
                                offline.labels.numpy())
    return interactions, offline.timestamps


def train_recall_bpr(metadata: FeatureMetadata, train_set: Samples, test_set: Samples, rule: ValidationRule,
                     config: BprConfig = RECALL_BPR) -> tuple[MatrixFactorization, dict]:
    """Select the epoch count on the validation slice of the offline history, then refit on all of it."""
    history, timestamps = offline_interactions(train_set, test_set)
    in_validation = validation_mask(history.users, history.items, timestamps, rule)

    def build() -> MatrixFactorization:
        return MatrixFactorization(metadata.cardinalities["userid"], metadata.cardinalities["itemid"], config.dim)

    seed_everything(config.seed)
    selection = train_bpr(build(), history.subset(~in_validation), history.subset(in_validation), config)
    seed_everything(config.seed)
    model = build()
    refit = train_bpr(model, history, None, config, epochs=selection.best_epoch, name="recall refit")
    log.info("recall (BPR): validation Recall@%d %.4f at epoch %d; refit on %d impressions in %.1f s",
             config.recall_at, selection.best_selection_score, selection.best_epoch, len(history), refit.seconds)
    return model, {
        "objective": "bpr",
        "cardinalities": metadata.cardinalities,
        "data_run_id": metadata.run_id,
        "training": asdict(config),
        "selected_on": ON_VALIDATION,
        "validation_rule": {**rule.to_dict(), "applied_to": "offline impressions (train + test rows)"},
        "rows": {"fit": int((~in_validation).sum()), "selection": int(in_validation.sum()), "refit": len(history)},
        f"validation_recall@{config.recall_at}": selection.best_selection_score,
        "best_epoch": selection.best_epoch,
        "refit_on_train_and_validation": True,
        # The refit learns from the test rows too (they are history before the hold-out), so no test AUC.
        "test_auc": None,
        "training_seconds": round(selection.seconds + refit.seconds, 1),
        "selection_history": selection.history,
    }


def load_ranking(folder: ModelFolder) -> GroupedFactorizationMachine:
    metadata = folder.metadata()
    config = RankingConfig(**{**metadata["config"], "dense_hidden": tuple(metadata["config"]["dense_hidden"]),
                              "deep_hidden": tuple(metadata["config"]["deep_hidden"])})
    model = GroupedFactorizationMachine(metadata["cardinalities"], config)
    model.load_state_dict(torch.load(folder.weights, weights_only=True))
    return model.eval()


def publish_ranking(models_dir: Path, model: GroupedFactorizationMachine, metadata: FeatureMetadata,
                    report: TrainingReport, config: TrainingConfig, parity_rows: torch.Tensor) -> ModelFolder:
    staged = StagedModel(models_dir, RANKING)
    try:
        model.eval()
        onnx_path = export_onnx(model, staged.staging / ONNX_FILE)
        difference = check_parity(model, onnx_path, parity_rows)
        staged.save(model, {
            "model": RANKING, "config": model.config.to_dict(), "onnx": ONNX_FILE,
            "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "onnx_parity_max_abs_diff": difference,
            **_training_metadata(metadata, report, config),
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
    parser.add_argument("--objective", choices=("bpr", "pointwise"), default="bpr",
                        help="recall: BPR on the offline history, selected on validation Recall@200 (default), "
                             "or the reference design's pointwise MF on rated rows (its AUC is comparable)")
    parser.add_argument("--no-negatives", dest="negatives", action="store_false",
                        help="train the ranker on rated rows only, without the batch's sampled negatives")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="fm_dense", help="ranking model variant")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--select-on", choices=(ON_VALIDATION, ON_TEST), default=ON_VALIDATION,
                        help="what picks the epoch: the validation slice of train (default) or, as the "
                             "reference design does, the test rows")
    parser.add_argument("--refit", action="store_true",
                        help="retrain on train + validation for the chosen epoch count before testing")
    parser.add_argument("--validation-percent", type=int, default=ValidationRule.percent)
    parser.add_argument("--seed", type=int, default=None, help="training seed (default 2024)")
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
    overrides = {k: v for k, v in (("max_epochs", args.max_epochs), ("seed", args.seed)) if v is not None}
    plan = Selection(args.select_on, ValidationRule(percent=args.validation_percent), args.refit)
    splits = DataSplits.carve(train_set, test_set, plan)
    summary: dict = {"exports": str(exports), "selected_on": plan.select_on, "refit": plan.refit}
    if args.only in (None, RECALL):
        if args.objective == "bpr":
            model, recall_metadata = train_recall_bpr(metadata, train_set, test_set, plan.rule,
                                                      replace(RECALL_BPR, **overrides))
        else:
            config = replace(RECALL_TRAINING, **overrides)
            model, report = train_recall(metadata, splits, config=config)
            recall_metadata = {"objective": "pointwise", **_training_metadata(metadata, report, config)}
        folder = publish_recall(settings.models_dir, model, recall_metadata)
        summary[RECALL] = {k: v for k, v in recall_metadata.items() if "history" not in k} | {"path": str(folder.path)}
        if args.delta:
            vectors_to_delta(settings, folder, metadata.run_id)
    if args.only in (None, RANKING):
        negatives_path = exports / NEGATIVES
        negatives = load_negatives(negatives_path) if args.negatives and negatives_path.exists() else None
        ranking_splits = DataSplits.carve(train_set, test_set, plan, negatives)
        config = replace(RANKING_TRAINING, **overrides)
        model, report = train_ranking(metadata, ranking_splits, VARIANTS[args.variant], config)
        folder = publish_ranking(settings.models_dir, model, metadata, report, config, test_set.features)
        summary[RANKING] = {"variant": args.variant, **report.to_metadata(),
                            "seconds": round(report.result.seconds, 1), "path": str(folder.path)}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
