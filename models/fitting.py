"""How each model is fitted and selected: the recall model (BPR on the offline history by default, or the
reference design's pointwise MF) and the ranking model, each with its epoch chosen as ``DataSplits`` says
and its test AUC taken once afterwards."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from contracts.feature_spec import SPEC
from contracts.tables import ModelFiles
from models.bpr_training import BprConfig, Interactions, train_bpr
from models.candidate_selection import SELECTION_K, CandidateSelection
from models.data_splits import ON_VALIDATION, DataSplits
from models.item_vocabulary import ItemVocabulary
from models.matrix_factorization import MatrixFactorization
from models.ranking_model import GroupedFactorizationMachine, RankingConfig
from models.samples import FeatureMetadata, Samples
from models.training_loop import (
    Forward,
    SelectionScore,
    TrainingConfig,
    TrainingResult,
    auc,
    seed_everything,
    train,
)
from models.training_rows import RowUnion
from models.validation import ValidationRule, validation_mask

log = logging.getLogger(__name__)

RECALL, RANKING = ModelFiles.RECALL, ModelFiles.RANKING
USERID, ITEMID = SPEC.index_of("userid"), SPEC.index_of("itemid")

VARIANTS: dict[str, RankingConfig] = {
    "fm": RankingConfig(dense_mlp=False),
    "fm_dense": RankingConfig(),  # the default
    "deepfm": RankingConfig(deep=True),
}
RECALL_TRAINING = TrainingConfig(learning_rate=1e-3, weight_decay=0.0)
RECALL_BPR = BprConfig()
RANKING_TRAINING = TrainingConfig()
SELECTED_BY = {
    "selection_auc": "AUC on the selection rows (rated rows and sampled negatives)",
    "selection_score": f"NDCG@{SELECTION_K} of the validation users' recalled candidates in the ranker's order alone",
}


def recall_forward(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features[:, USERID].long(), features[:, ITEMID].long())


def ranking_forward(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features)


@dataclass
class TrainingReport:
    result: TrainingResult  # the selection run
    test_auc: float  # of the chosen (or refitted) weights, computed once
    splits: DataSplits = field(repr=False)

    def to_metadata(self) -> dict:
        plan = self.splits.selection_plan
        chosen = self.result.history[self.result.best_epoch - 1] if self.result.best_epoch else {}
        return {
            "selected_on": plan.select_on,
            "validation_rule": self.splits.selection_rows if plan.select_on == ON_VALIDATION else None,
            "rows": {"fit": len(self.splits.fit), "selection": len(self.splits.selection),
                     "test": len(self.splits.test)},
            "selected_by": SELECTED_BY[self.result.selected_by],
            "selection_auc": chosen.get("selection_auc", self.result.best_selection_score),
            f"selection_ndcg@{SELECTION_K}": chosen.get("selection_score"),
            "best_epoch": self.result.best_epoch,
            "refit_on_train_and_validation": plan.refit,
            "test_auc": self.test_auc,
        }


def fit_and_evaluate(build: Callable[[], nn.Module], forward: Forward, splits: DataSplits,
                     config: TrainingConfig, name: str,
                     selection_score: SelectionScore | None = None) -> tuple[nn.Module, TrainingReport]:
    """Select the epoch on the selection set (or ``selection_score``), optionally refit, then take the test AUC
    once."""
    seed_everything(config.seed)
    model = build()
    result = train(model, forward, splits.fit, splits.selection, config, name=name, selection_score=selection_score)
    if splits.selection_plan.refit:
        seed_everything(config.seed)
        model = build()
        train(model, forward, RowUnion((splits.fit, splits.selection)), None,
              replace(config, max_epochs=result.best_epoch), name=f"{name} refit")
    test_auc = auc(model, forward, splits.test, config.eval_batch_size)
    log.info("%s: selected on %s (%s %.4f, epoch %d), test AUC %.4f", name, splits.selection_plan.select_on,
             result.selected_by, result.best_selection_score, result.best_epoch, test_auc)
    return model, TrainingReport(result, test_auc, splits)


def train_recall(metadata: FeatureMetadata, vocabulary: ItemVocabulary, splits: DataSplits, dim: int = 16,
                 config: TrainingConfig = RECALL_TRAINING) -> tuple[MatrixFactorization, TrainingReport]:
    def build() -> MatrixFactorization:
        return MatrixFactorization(metadata.cardinalities["userid"], vocabulary, dim)

    return fit_and_evaluate(build, recall_forward, splits, config, RECALL)


def train_ranking(metadata: FeatureMetadata, vocabulary: ItemVocabulary, splits: DataSplits,
                  model_config: RankingConfig = VARIANTS["fm_dense"], config: TrainingConfig = RANKING_TRAINING,
                  candidates: CandidateSelection | None = None) -> tuple[GroupedFactorizationMachine, TrainingReport]:
    """With ``candidates``, the epoch is the one whose order of the validation candidates is best."""
    def build() -> GroupedFactorizationMachine:
        return GroupedFactorizationMachine(metadata.cardinalities, vocabulary, model_config)

    score = candidates.mean_ndcg if candidates is not None and len(candidates) else None
    return fit_and_evaluate(build, ranking_forward, splits, config, RANKING, score)


def training_metadata(metadata: FeatureMetadata, report: TrainingReport, config: TrainingConfig) -> dict:
    return {
        "cardinalities": metadata.cardinalities,
        "data_run_id": metadata.run_id,
        "training": asdict(config),
        **report.to_metadata(),
        "training_seconds": round(report.result.seconds, 1),
        "auc_history": report.result.history,
    }


def offline_interactions(train_set: Samples, test_set: Samples) -> tuple[Interactions, np.ndarray]:
    """Every offline impression (train and test rows) as (user, item, label), and their timestamps."""
    def both(column: str) -> np.ndarray:
        return np.concatenate([train_set.column(column), test_set.column(column)]).astype(np.int64)

    interactions = Interactions(both("userid"), both("itemid"),
                                np.concatenate([train_set.labels.numpy(), test_set.labels.numpy()]))
    return interactions, np.concatenate([train_set.timestamps, test_set.timestamps])


def train_recall_bpr(metadata: FeatureMetadata, vocabulary: ItemVocabulary, train_set: Samples, test_set: Samples,
                     rule: ValidationRule, config: BprConfig = RECALL_BPR) -> tuple[MatrixFactorization, dict]:
    """Select the epoch count on the validation slice of the offline history, then refit on all of it."""
    history, timestamps = offline_interactions(train_set, test_set)
    in_validation = validation_mask(history.users, history.items, timestamps, rule)

    def build() -> MatrixFactorization:
        return MatrixFactorization(metadata.cardinalities["userid"], vocabulary, config.dim)

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
