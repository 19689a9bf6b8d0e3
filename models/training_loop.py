"""Training loops, kept apart from the model definitions: Adam, BCE on logits, AUC on a selection
set each epoch, early stopping with the best weights kept.

The selection set is the validation slice (models/validation.py) by default; which set it is, is
the caller's choice and is recorded with the model.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from models.training_rows import TrainingRows, all_labels, at_most

log = logging.getLogger(__name__)

# (model, feature batch) -> logits; the recall model takes two id columns, the ranker the whole row.
Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]
# model -> a figure to maximise (the ranker's: NDCG@50 of its order of the validation candidates).
SelectionScore = Callable[[nn.Module], float]


@dataclass(frozen=True)
class TrainingConfig:
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    max_epochs: int = 100
    patience: int = 5  # epochs without a better selection AUC before stopping
    seed: int = 2024
    eval_batch_size: int = 65536
    # At scale: an epoch is this many fit rows drawn afresh (None: all of them), and the selection AUC is
    # taken on a fixed random sample of this many selection rows (None: all).
    epoch_rows: int | None = None
    selection_rows: int | None = None


@dataclass
class TrainingResult:
    best_selection_score: float  # AUC (or Recall@K, or the selection score) of the best epoch; nan for a refit
    best_epoch: int
    history: list[dict] = field(default_factory=list)  # per epoch: loss, selection_auc[, selection_score], seconds
    seconds: float = 0.0
    selected_by: str = "selection_auc"  # the history entry the epoch was chosen on


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict(model: nn.Module, forward: Forward, rows: TrainingRows, batch_size: int) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits = [forward(model, rows.features_at(np.arange(start, min(start + batch_size, len(rows)))))
                  for start in range(0, len(rows), batch_size)]
    return torch.sigmoid(torch.cat(logits)).numpy() if logits else np.empty(0, dtype=np.float32)


def auc(model: nn.Module, forward: Forward, rows: TrainingRows, batch_size: int = 65536) -> float:
    return float(roc_auc_score(all_labels(rows), predict(model, forward, rows, batch_size)))


def train(model: nn.Module, forward: Forward, train_set: TrainingRows, selection_set: TrainingRows | None,
          config: TrainingConfig, name: str = "model", selection_score: SelectionScore | None = None) -> TrainingResult:
    """Trains in place; on return the model holds the weights of its best selection-AUC epoch, or of its best
    ``selection_score`` epoch where one is given (the AUC is still taken and recorded).

    Without a selection set it runs exactly ``config.max_epochs`` epochs and keeps the last weights
    (a refit for an epoch count chosen earlier).
    """
    seed_everything(config.seed)
    if selection_set is not None:
        selection_set = at_most(selection_set, config.selection_rows, config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(config.seed)
    initial = float("-inf") if selection_set is not None else float("nan")
    selected_by = "selection_score" if selection_score is not None else "selection_auc"
    result = TrainingResult(best_selection_score=initial, best_epoch=0, selected_by=selected_by)
    best_state = copy.deepcopy(model.state_dict())
    started = time.monotonic()
    for epoch in range(1, config.max_epochs + 1):
        epoch_started = time.monotonic()
        model.train()
        order = torch.randperm(len(train_set), generator=generator)[:config.epoch_rows]
        total_loss = 0.0
        batches = range(0, len(order), config.batch_size)
        for start in tqdm(batches, desc=f"{name} epoch {epoch}", leave=False, mininterval=2.0, disable=None):
            index = order[start:start + config.batch_size].numpy()
            if len(index) < 2:  # batch-norm needs two rows
                continue
            optimiser.zero_grad()
            loss = loss_fn(forward(model, train_set.features_at(index)), train_set.labels_at(index))
            loss.backward()
            optimiser.step()
            total_loss += loss.item() * len(index)
        entry = {"epoch": epoch, "loss": total_loss / len(order)}
        if selection_set is not None:
            entry["selection_auc"] = auc(model, forward, selection_set, config.eval_batch_size)
            if selection_score is not None:
                entry["selection_score"] = selection_score(model)
        entry["seconds"] = round(time.monotonic() - epoch_started, 2)
        result.history.append(entry)
        log.info("%s epoch %d: loss %.4f, selection AUC %.4f, score %.4f (%.1f s)", name, epoch, entry["loss"],
                 entry.get("selection_auc", float("nan")), entry.get("selection_score", float("nan")),
                 entry["seconds"])
        if selection_set is None:
            result.best_epoch = epoch
            continue
        if entry[selected_by] > result.best_selection_score:
            result.best_selection_score, result.best_epoch = entry[selected_by], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= config.patience:
            log.info("%s: no better %s for %d epochs, stopping", name, selected_by, config.patience)
            break
    if selection_set is not None:
        model.load_state_dict(best_state)
    result.seconds = time.monotonic() - started
    log.info("%s: best %s %.4f at epoch %d, %.1f s", name, selected_by, result.best_selection_score,
             result.best_epoch, result.seconds)
    return result
