"""Training the vector-recall model for retrieval: BPR over implicit feedback with sampled negatives.

Every offline impression (train and test rows: the user's whole history before the hold-out) is a
positive "the user picked this movie"; each positive is paired with a movie drawn uniformly from the
catalogue, and the model learns to score the picked one higher (BPR: -log sigmoid(s_ui - s_uj)).
The epoch is chosen on the validation slice (``models/validation.py`` applied to those impressions)
by Recall@K of the liked validation movies among the top K unseen ones, K = the recall size; the
model is then refit on the whole history for that many epochs.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.item_vocabulary import ItemVocabulary
from models.matrix_factorization import MatrixFactorization
from models.training_loop import TrainingResult, seed_everything

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BprConfig:
    dim: int = 32
    learning_rate: float = 5e-3
    weight_decay: float = 0.0
    l2: float = 1e-4  # on the embeddings a batch touches
    batch_size: int = 1024
    max_epochs: int = 60
    patience: int = 5
    seed: int = 2024
    recall_at: int = 200
    max_selection_users: int = 5000  # Recall@K is measured on at most this many users
    epoch_rows: int | None = None  # at scale: an epoch is this many impressions drawn afresh (None: all)


@dataclass(frozen=True)
class Interactions:
    """(user, item) pairs, one per impression, with the label (liked or not)."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    labels: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, mask: np.ndarray) -> Interactions:
        return Interactions(self.users[mask], self.items[mask], self.labels[mask])

    def with_item_indices(self, vocabulary: ItemVocabulary) -> Interactions:
        """The same impressions with each movie id replaced by its vocabulary index."""
        return Interactions(self.users, vocabulary.index_of(self.items), self.labels)


def recall_at_k(user_vectors: np.ndarray, item_vectors: np.ndarray, known: Interactions, targets: Interactions,
                k: int, max_users: int, seed: int, users_per_block: int = 256) -> float:
    """Mean over users with a liked target of |liked targets in the top k unseen| / |liked targets|.

    Items are the vectors' rows (vocabulary indices), 0 = unknown. Scored ``users_per_block`` users at a
    time: at ML-25M's catalogue (~62K movies) 5,000 users' scores and their partition index are ~5 GB at once.
    """
    liked = targets.subset(targets.labels > 0)
    users = np.unique(liked.users)
    if len(users) == 0:
        return float("nan")
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    k = min(k, item_vectors.shape[0] - 1)
    seen = np.isin(known.users, users)
    known_users, known_items = known.users[seen], known.items[seen]
    target = np.isin(liked.users, users)
    liked_users, liked_items = liked.users[target], liked.items[target]
    recalls = []
    for start in range(0, len(users), users_per_block):
        block = users[start:start + users_per_block]
        scores = user_vectors[block] @ item_vectors.T
        scores[:, 0] = -np.inf  # id 0 is "unknown"
        in_block = np.isin(known_users, block)
        scores[np.searchsorted(block, known_users[in_block]), known_items[in_block]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        in_top = np.zeros_like(scores, dtype=bool)
        np.put_along_axis(in_top, top, True, axis=1)
        wanted_here = np.isin(liked_users, block)
        rows = np.searchsorted(block, liked_users[wanted_here])
        wanted = np.bincount(rows, minlength=len(block))
        hits = np.bincount(rows, weights=in_top[rows, liked_items[wanted_here]], minlength=len(block))
        recalls.append(hits / wanted)
    return float(np.mean(np.concatenate(recalls)))


def _vectors(model: MatrixFactorization) -> tuple[np.ndarray, np.ndarray]:
    users, items = model.export_vectors()
    return users.numpy(), items.numpy()


def train_bpr(model: MatrixFactorization, fit: Interactions, selection: Interactions | None,
              config: BprConfig, epochs: int | None = None, name: str = "recall") -> TrainingResult:
    """Trains in place. With a selection set: early stopping on Recall@K, best weights kept;
    without: exactly ``epochs`` epochs (the refit)."""
    seed_everything(config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    # The item tables' rows are vocabulary indices: the impressions mapped once, negatives drawn among them.
    fit = fit.with_item_indices(model.vocabulary)
    selection = None if selection is None else selection.with_item_indices(model.vocabulary)
    users, items = torch.from_numpy(fit.users), torch.from_numpy(fit.items)
    result = TrainingResult(best_selection_score=float("-inf") if selection is not None else float("nan"), best_epoch=0)
    best_state = copy.deepcopy(model.state_dict())
    started = time.monotonic()
    for epoch in range(1, (epochs or config.max_epochs) + 1):
        epoch_started = time.monotonic()
        model.train()
        order = torch.randperm(len(fit), generator=generator)[:config.epoch_rows]
        negatives = torch.randint(1, model.items, (len(fit),), generator=generator)
        total = 0.0
        for start in tqdm(range(0, len(order), config.batch_size), desc=f"{name} epoch {epoch}", leave=False,
                          mininterval=2.0, disable=None):
            index = order[start:start + config.batch_size]
            u, i, j = users[index], items[index], negatives[index]
            optimiser.zero_grad()
            margin = model.score(u, i) - model.score(u, j)
            penalty = (model.user_vectors(u).pow(2).sum() + model.item_vectors(i).pow(2).sum()
                       + model.item_vectors(j).pow(2).sum()) / len(index)
            loss = -nn.functional.logsigmoid(margin).mean() + config.l2 * penalty
            loss.backward()
            optimiser.step()
            total += loss.item() * len(index)
        entry = {"epoch": epoch, "loss": total / max(len(order), 1)}
        if selection is not None:
            model.eval()
            with torch.no_grad():
                user_vectors, item_vectors = _vectors(model)
            entry[f"selection_recall@{config.recall_at}"] = recall_at_k(
                user_vectors, item_vectors, fit, selection,
                config.recall_at, config.max_selection_users, config.seed)
        entry["seconds"] = round(time.monotonic() - epoch_started, 2)
        result.history.append(entry)
        metric = entry.get(f"selection_recall@{config.recall_at}", float("nan"))
        log.info("%s epoch %d: loss %.4f, validation Recall@%d %.4f (%.1f s)", name, epoch, entry["loss"],
                 config.recall_at, metric, entry["seconds"])
        if selection is None:
            result.best_epoch = epoch
            continue
        if metric > result.best_selection_score:
            result.best_selection_score, result.best_epoch = metric, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - result.best_epoch >= config.patience:
            break
    if selection is not None:
        model.load_state_dict(best_state)
    result.seconds = time.monotonic() - started
    return result
