"""Layers beyond torchfm's: per-group embeddings and the split of the spec-ordered input tensor.

torchfm provides the building blocks (FeaturesEmbedding, FeaturesLinear, FactorizationMachine,
MultiLayerPerceptron); these modules arrange them for one float input tensor in spec order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torchfm.layer import FeaturesEmbedding, FeaturesLinear

from models.item_vocabulary import ItemVocabulary


class ColumnSelect(nn.Module):
    """Picks columns of the input by position; sparse ones become ids clamped into range.

    An id at or beyond its field's cardinality (a user or movie the model never saw) becomes 0,
    the unknown index, instead of indexing out of the embedding table.
    """

    def __init__(self, positions: Sequence[int], cardinalities: Sequence[int] | None = None) -> None:
        super().__init__()
        self.register_buffer("positions", torch.tensor(list(positions), dtype=torch.long), persistent=False)
        # A run of adjacent columns is taken as a slice: the same values, and in ONNX a Slice, which
        # onnxruntime runs ~5x faster than the Gather an index list becomes.
        self.span = contiguous_span(positions)
        self.sparse = cardinalities is not None
        if cardinalities is not None:
            self.register_buffer("limits", torch.tensor(list(cardinalities), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        selected = select_columns(x, self.positions, self.span)
        if not self.sparse:
            return selected
        ids = selected.long()
        return torch.where((ids >= 0) & (ids < self.limits), ids, torch.zeros_like(ids))


def contiguous_span(positions: Sequence[int]) -> tuple[int, int] | None:
    """(start, stop) when the positions are start, start + 1, ..., stop - 1; None otherwise."""
    positions = list(positions)
    if positions and positions == list(range(positions[0], positions[0] + len(positions))):
        return positions[0], positions[0] + len(positions)
    return None


def select_columns(x: torch.Tensor, positions: torch.Tensor, span: tuple[int, int] | None) -> torch.Tensor:
    return x[:, span[0]:span[1]] if span is not None else torch.index_select(x, 1, positions)


class IdToIndex(nn.Module):
    """Movie ids -> the vocabulary's dense indices (0 for an id outside it), by one gather in a lookup table."""

    def __init__(self, vocabulary: ItemVocabulary) -> None:
        super().__init__()
        # Not part of the state dict: the vocabulary is saved beside the weights and rebuilds this.
        self.register_buffer("table", torch.from_numpy(vocabulary.lookup_table()), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        inside = (ids >= 0) & (ids < self.table.shape[0])
        return torch.where(inside, self.table[torch.where(inside, ids, torch.zeros_like(ids))], torch.zeros_like(ids))


def lookup(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """``table(ids)``, with a faster gradient on CPU while training: index_select's backward is one scatter-add,
    while nn.Embedding's sorts the ids first, 3-4x slower for a batch of 1,024 rows of 19-23 fields (most of
    a training step). The same values and gradients; evaluated (and exported to ONNX) it is the table itself,
    one Gather without shape arithmetic."""
    if not table.training:
        return table(ids)
    return table.weight.index_select(0, ids.reshape(-1)).view(*ids.shape, table.embedding_dim)


def with_offsets(ids: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """Each field's ids shifted into its own rows of a shared table (torchfm's layout)."""
    return ids + ids.new_tensor(offsets).unsqueeze(0)


class LinearTerms(FeaturesLinear):
    """torchfm's per-value biases (same parameters), summed over the fields with ``lookup``."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.sum(lookup(self.fc, with_offsets(ids, self.offsets)), dim=1) + self.bias


class GroupEmbedding(nn.Module):
    """One embedding size for a group of sparse fields (ids 16-d, side features 2-d, ...)."""

    def __init__(self, cardinalities: Sequence[int], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.fields = len(cardinalities)
        self.embedding = FeaturesEmbedding(list(cardinalities), dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # (batch, fields, dim): torchfm's FeaturesEmbedding, looked up with ``lookup``
        return lookup(self.embedding.embedding, with_offsets(ids, self.embedding.offsets))
