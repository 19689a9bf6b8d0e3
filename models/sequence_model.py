"""A causal transformer over a user's impression order (SASRec-style): the next item from the items so far.

Input: item indices of the run's vocabulary (``models/item_vocabulary.py``), oldest first, left-padded with 0
(index 0 is "unknown" there, so it doubles as padding). Each position attends to itself and to the earlier
real items only, so a position's output never depends on what follows it. The score of item ``i`` after
position ``t`` is the dot product of ``t``'s output with ``i``'s embedding (the input table, shared).
"""

from __future__ import annotations

import math

import torch
from torch import nn

PADDING = 0


class CausalSequenceModel(nn.Module):
    def __init__(self, vocabulary_size: int, dim: int = 64, blocks: int = 2, heads: int = 2, max_length: int = 50,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.dim = dim
        self.heads = heads
        self.max_length = max_length
        self.items = nn.Embedding(vocabulary_size, dim, padding_idx=PADDING)
        self.positions = nn.Embedding(max_length, dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.items.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.items.weight[PADDING].zero_()

    def attention_mask(self, sequences: torch.Tensor) -> torch.Tensor:
        """(batch * heads, length, length), True where attention is not allowed: later positions, and padding,
        except a padding position's own (a row with nothing allowed would be NaN, and NaN spreads)."""
        # Comparisons of positions, not triu/eye: their ONNX ops (Trilu, EyeLike) have no boolean kernels in
        # onnxruntime.
        position = torch.arange(sequences.shape[1], device=sequences.device)
        later = position.unsqueeze(0) > position.unsqueeze(1)  # key after query
        padded_key = (sequences == PADDING).unsqueeze(1)  # (batch, 1, length)
        itself = position.unsqueeze(0) == position.unsqueeze(1)
        blocked = later | (padded_key & ~itself)
        return blocked.repeat_interleave(self.heads, dim=0)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """(batch, length) item indices -> (batch, length, dim) outputs, length <= max_length."""
        length = sequences.shape[1]
        positions = torch.arange(self.max_length - length, self.max_length, device=sequences.device)
        hidden = self.items(sequences) * math.sqrt(self.dim) + self.positions(positions)
        hidden = self.dropout(hidden) * (sequences != PADDING).unsqueeze(-1)
        return self.norm(self.encoder(hidden, mask=self.attention_mask(sequences)))

    def next_item_scores(self, sequences: torch.Tensor) -> torch.Tensor:
        """(batch, vocabulary_size): every item's score after each sequence's last position (index 0 included;
        callers leave it out)."""
        return self.forward(sequences)[:, -1, :] @ self.items.weight.T
