"""The ranker's epoch chosen for what it does at serving time: ordering the recalled candidates.

Each validation user's candidates come from the request path's own ``recall`` over the validation item models
(``models/validation_replay.py``), with their features as of their first validation impression. After each
epoch the model scores all of them and the figure is the mean NDCG@50 of each user's candidates in the
model's order alone against their liked validation items. A sampled-negative AUC mostly measures telling
random unrated movies from rated ones; this measures the order the service will use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.evaluate import metrics_at
from models.recall_sources import RecallConfig
from models.request_path import recall
from models.validation_replay import ValidationData

log = logging.getLogger(__name__)

SELECTION_K = 50


@dataclass(frozen=True)
class CandidateSelection:
    """The validation users' recalled candidates as model input rows, user after user."""

    rows: torch.Tensor  # float32 (candidates, len(spec)) in spec order
    itemids: np.ndarray  # int64 (candidates,)
    starts: np.ndarray  # int64 (users + 1,): user u's candidates are rows starts[u]:starts[u + 1]
    relevant: tuple[frozenset[int], ...]  # per user, the liked validation items
    k: int = SELECTION_K
    batch_size: int = 65536

    @classmethod
    def recall(cls, data: ValidationData, config: RecallConfig, k: int = SELECTION_K) -> CandidateSelection:
        blocks, itemids, sizes, relevant = [], [], [0], []
        for userid, liked in tqdm(sorted(data.targets.items()), desc="validation candidates", mininterval=2.0,
                                  disable=None):
            user = data.users.get(userid)
            if user is None or userid not in data.features:
                continue
            candidates, _ = recall(user, data.items, config, config.recall_size)
            if len(candidates) == 0:
                continue
            blocks.append(data.assembler.rows(userid, data.features[userid], candidates.itemids))
            itemids.append(candidates.itemids)
            sizes.append(len(candidates))
            relevant.append(frozenset(liked))
        width = len(data.assembler.spec.names)
        rows = np.concatenate(blocks) if blocks else np.empty((0, width), dtype=np.float32)
        log.info("ranker selection: %d validation users, %d candidates", len(relevant), len(rows))
        return cls(torch.from_numpy(rows), np.concatenate(itemids) if itemids else np.empty(0, dtype=np.int64),
                   np.cumsum(sizes), tuple(relevant), k)

    def __len__(self) -> int:
        return len(self.relevant)

    def scores(self, model: nn.Module) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            parts = [model(self.rows[start:start + self.batch_size])
                     for start in range(0, len(self.rows), self.batch_size)]
        return torch.cat(parts).numpy() if parts else np.empty(0, dtype=np.float32)

    def mean_ndcg(self, model: nn.Module) -> float:
        """Mean NDCG@k of each user's candidates in the model's order (ties by the smaller movie id)."""
        scores = self.scores(model)
        total = 0.0
        for user, liked in enumerate(self.relevant):
            start, end = self.starts[user], self.starts[user + 1]
            order = np.lexsort((self.itemids[start:end], -scores[start:end]))
            total += metrics_at(self.itemids[start:end][order], liked, self.k).ndcg
        return total / max(len(self.relevant), 1)
