"""Training and scoring the causal sequence model (``models/sequence_model.py``).

Each user's impressions in the batch's order (timestamp, then item) are cut from the end into windows of
``max_length + 1`` items; a window's first ``max_length`` items are the input and each position's target is
the item after it, padding ignored. The softmax covers the whole vocabulary up to ``softmax_items`` movies (ML-100K's
1,682, ML-1M's 3,706); beyond that it is sampled: a batch scores its own targets and movies drawn uniformly from the
rest, ``softmax_items`` in all. A full softmax over ML-25M's 62K movies left room for 21 windows a batch and made an
epoch ~4.5 h; sampled, a batch keeps its 128 windows and an epoch takes minutes (BENCHMARKS.md "Session 30").

The number of epochs is chosen on validation: every ``check_every`` epochs the top-K of the users to validate is
scored against their validation items, and training stops after ``patience`` checks without a better NDCG@K, keeping
the best, or once ``max_seconds`` have passed (after the batch running then, mid-epoch: at ML-25M's size one epoch
took longer than a 10-minute budget; checked once more then). A batch holds at most ``max_logits`` output scores
(windows x ``max_length`` x the movies scored): with a large catalogue it holds fewer windows, so memory stays
bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.sequence_model import PADDING, CausalSequenceModel

log = logging.getLogger(__name__)

IGNORED = -100  # a position without a target (padding) in the sampled softmax's columns


@dataclass(frozen=True)
class SequenceSettings:
    dim: int = 64
    blocks: int = 2
    heads: int = 2
    max_length: int = 50
    dropout: float = 0.2
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    check_every: int = 5
    patience: int = 3
    max_seconds: float | None = None
    max_logits: int = 1 << 26  # 256 MiB of float32 scores per batch, before their gradients
    softmax_items: int = 4096  # the most movies a batch's softmax covers; a larger vocabulary is sampled
    seed: int = 0

    def scored_items(self, vocabulary_size: int) -> int:
        return min(vocabulary_size, self.softmax_items)

    def windows_per_batch(self, vocabulary_size: int) -> int:
        return max(1, min(self.batch_size,
                          self.max_logits // (self.max_length * self.scored_items(vocabulary_size))))


def user_sequences(impressions: pd.DataFrame) -> dict[int, np.ndarray]:
    """(userid, item_index, timestamp) rows -> per user the item indices ordered by (timestamp, item_index)."""
    ordered = impressions.sort_values(["userid", "timestamp", "item_index"], kind="stable")
    userids = ordered["userid"].to_numpy()
    items = ordered["item_index"].to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.r_[True, userids[1:] != userids[:-1]])
    ends = np.r_[starts[1:], len(userids)]
    return {int(userids[s]): items[s:e] for s, e in zip(starts, ends, strict=True)}


def left_padded(sequence: np.ndarray, length: int) -> np.ndarray:
    tail = sequence[-length:]
    return np.concatenate([np.full(length - len(tail), PADDING, dtype=np.int64), tail])


def training_windows(sequences: Mapping[int, np.ndarray], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), each (windows, max_length): windows of max_length + 1 items cut from each sequence's end
    backwards (the oldest one shorter, left-padded); a sequence of one item gives none."""
    inputs, targets = [], []
    for sequence in sequences.values():
        end = len(sequence)
        while end >= 2:
            window = sequence[max(0, end - max_length - 1):end]
            inputs.append(left_padded(window[:-1], max_length))
            targets.append(left_padded(window[1:], max_length))
            end -= max_length
    if not inputs:
        return np.empty((0, max_length), np.int64), np.empty((0, max_length), np.int64)
    return np.stack(inputs), np.stack(targets)


def sampled_items(targets: torch.Tensor, vocabulary_size: int, count: int,
                  generator: torch.Generator) -> torch.Tensor:
    """The movies a batch's sampled softmax scores: each of its targets once, then others drawn uniformly without
    replacement until there are ``count`` (only the targets where they are more); never the padding index."""
    present = torch.unique(targets)
    present = present[present != PADDING]
    wanted = count - len(present)
    if wanted <= 0:
        return present
    taken = torch.zeros(vocabulary_size, dtype=torch.bool)
    taken[present] = True
    taken[PADDING] = True
    others = torch.randperm(vocabulary_size, generator=generator)
    return torch.cat([present, others[~taken[others]][:wanted]])


def batch_loss(model: CausalSequenceModel, inputs: torch.Tensor, targets: torch.Tensor, softmax_items: int,
               generator: torch.Generator) -> torch.Tensor:
    """Mean cross-entropy of each position's next item: over the whole vocabulary where it has at most
    ``softmax_items`` rows, else over ``sampled_items`` (nothing drawn from ``generator`` in the first case)."""
    outputs = model(inputs)
    vocabulary_size = model.items.num_embeddings
    if vocabulary_size <= softmax_items:
        logits = outputs @ model.items.weight.T
        return F.cross_entropy(logits.reshape(-1, vocabulary_size), targets.reshape(-1), ignore_index=PADDING)
    items = sampled_items(targets, vocabulary_size, softmax_items, generator)
    column = torch.full((vocabulary_size,), IGNORED, dtype=torch.long)
    column[items] = torch.arange(len(items))
    logits = outputs @ model.items.weight[items].T
    return F.cross_entropy(logits.reshape(-1, len(items)), column[targets].reshape(-1), ignore_index=IGNORED)


def train_epoch(model: CausalSequenceModel, inputs: torch.Tensor, targets: torch.Tensor,
                optimizer: torch.optim.Optimizer, batch_size: int, generator: torch.Generator,
                description: str = "sequence model epoch", deadline: float | None = None,
                softmax_items: int = SequenceSettings.softmax_items) -> tuple[float, int]:
    """One pass over the windows in a random order, or as much of it as ends before ``deadline`` (``time.monotonic``;
    at least one batch): (mean loss, batches run)."""
    model.train()
    total, batches = 0.0, 0
    order = torch.randperm(len(inputs), generator=generator).split(batch_size)
    for batch in tqdm(order, desc=description, mininterval=10.0, leave=False, disable=None):
        loss = batch_loss(model, inputs[batch], targets[batch], softmax_items, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, batches = total + float(loss.detach()), batches + 1
        if deadline is not None and time.monotonic() > deadline:
            break
    return total / max(batches, 1), batches


@torch.no_grad()
def top_unseen(model: CausalSequenceModel, histories: Mapping[int, np.ndarray], k: int,
               batch_size: int = 512) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per user, the k best item indices after their history that are not in it, with their scores."""
    model.eval()
    users = list(histories)
    lists = {}
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        windows = torch.from_numpy(np.stack([left_padded(histories[u], model.max_length) for u in chunk]))
        scores = model.next_item_scores(windows)
        scores[:, PADDING] = -torch.inf
        for row, userid in enumerate(chunk):
            scores[row, torch.from_numpy(histories[userid])] = -torch.inf
        best = torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)
        for row, userid in enumerate(chunk):
            lists[userid] = (best.indices[row].numpy(), best.values[row].numpy())
    return lists


def fit(sequences: Mapping[int, np.ndarray], vocabulary_size: int, settings: SequenceSettings,
        validate: Callable[[CausalSequenceModel], float] | None = None,
        epochs: int | None = None) -> tuple[CausalSequenceModel, dict]:
    """The model trained on ``sequences``: for ``epochs`` epochs, or (with ``validate``, a higher-is-better score)
    until ``patience`` checks without a better score, keeping the best state; in either case for at most
    ``max_seconds``. Returns it and a report."""
    started = time.monotonic()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = CausalSequenceModel(vocabulary_size, settings.dim, settings.blocks, settings.heads, settings.max_length,
                                settings.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    inputs, targets = (torch.from_numpy(a) for a in training_windows(sequences, settings.max_length))
    last_epoch = epochs if epochs is not None else settings.max_epochs
    batch_size = settings.windows_per_batch(vocabulary_size)
    best_score, best_epoch, best_state, checks_without_gain = -np.inf, 0, None, 0
    history, stopped, epoch = [], "epochs", 0
    deadline = started + settings.max_seconds if settings.max_seconds is not None else None
    batches_per_epoch = -(-len(inputs) // batch_size)
    for epoch in range(1, last_epoch + 1):
        loss, batches = train_epoch(model, inputs, targets, optimizer, batch_size, generator,
                                    f"sequence model epoch {epoch}", deadline, settings.softmax_items)
        if epoch == 1:
            # At a large catalogue's size an epoch takes far longer than at ML-100K's: say what the budget means.
            seconds = (time.monotonic() - started) * batches_per_epoch / max(batches, 1)
            log.info("sequence model: %d windows of %d, %d per batch, softmax over %d of %d movies; epoch 1 %s %.0f s, "
                     "so %d epochs would take ~%.1f h%s", len(inputs), settings.max_length, batch_size,
                     settings.scored_items(vocabulary_size), vocabulary_size,
                     "took" if batches == batches_per_epoch else f"(cut at {batches} of {batches_per_epoch} batches) "
                     "would have taken", seconds, last_epoch, seconds * last_epoch / 3600,
                     f" (bounded to {settings.max_seconds:.0f} s)" if settings.max_seconds is not None else "")
        out_of_time = deadline is not None and time.monotonic() > deadline
        if validate is None or (epoch % settings.check_every and epoch < last_epoch and not out_of_time):
            if out_of_time:
                stopped = "time"
                break
            continue
        score = validate(model)
        history.append({"epoch": epoch, "loss": round(loss, 4), "score": round(score, 4)})
        log.info("sequence model epoch %d: loss %.4f, validation %.4f", epoch, loss, score)
        if score > best_score:
            best_score, best_epoch, checks_without_gain = score, epoch, 0
            best_state = {name: value.clone() for name, value in model.state_dict().items()}
        else:
            checks_without_gain += 1
            if checks_without_gain >= settings.patience:
                stopped = "patience"
                break
        if out_of_time:
            stopped = "time"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, {"windows": len(inputs), "windows_per_batch": batch_size,
                   "softmax_items": settings.scored_items(vocabulary_size), "epochs_run": epoch,
                   "best_epoch": best_epoch if validate else epoch, "stopped": stopped,
                   "best_score": None if validate is None else round(float(best_score), 4), "history": history}
