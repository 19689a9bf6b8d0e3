"""Vector-recall model: matrix factorisation over user id and item (the movie id's vocabulary index).

logit(u, i) = <p_u, q_i> + b_u + b_i + b. The exported vectors fold the biases in:
user vector [p_u, b_u, 1] and item vector [q_i, 1, b_i], so a dot-product index ranks items for a
user exactly as the model does (the global bias b is the same for every item).
"""

from __future__ import annotations

import torch
from torch import nn

from models.item_vocabulary import ItemVocabulary
from models.layers import IdToIndex


class MatrixFactorization(nn.Module):
    """``forward`` takes movie ids; ``score`` takes their vocabulary indices (what the item tables are rows of)."""

    def __init__(self, users: int, vocabulary: ItemVocabulary, dim: int = 16) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.users, self.items = users, vocabulary.size
        self.item_index = IdToIndex(vocabulary)
        self.user_vectors = nn.Embedding(users, dim)
        self.item_vectors = nn.Embedding(self.items, dim)
        self.user_bias = nn.Embedding(users, 1)
        self.item_bias = nn.Embedding(self.items, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        for table in (self.user_vectors, self.item_vectors):
            nn.init.normal_(table.weight, std=0.05)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)

    def _clamp(self, ids: torch.Tensor, limit: int) -> torch.Tensor:
        return torch.where((ids >= 0) & (ids < limit), ids, torch.zeros_like(ids))  # unknown -> 0

    def forward(self, user: torch.Tensor, itemid: torch.Tensor) -> torch.Tensor:
        return self.score(user, self.item_index(itemid))

    def score(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        user, item = self._clamp(user, self.users), self._clamp(item, self.items)
        interaction = (self.user_vectors(user) * self.item_vectors(item)).sum(dim=1)
        return interaction + self.user_bias(user).squeeze(1) + self.item_bias(item).squeeze(1) + self.bias

    def export_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors, item vectors) with the biases folded in; rows: user id, item vocabulary index."""
        with torch.no_grad():
            ones_u = torch.ones(self.users, 1)
            ones_i = torch.ones(self.items, 1)
            users = torch.cat([self.user_vectors.weight, self.user_bias.weight, ones_u], dim=1)
            items = torch.cat([self.item_vectors.weight, ones_i, self.item_bias.weight], dim=1)
        return users, items
