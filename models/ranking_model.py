"""Ranking model: a factorisation machine with one embedding size per feature group, plus a dense MLP.

The input carries movie ids; the model maps them to its item vocabulary's indices first (``IdToIndex``), so
its item tables have one row per catalogue movie whatever the ids' range.

logit = linear(all sparse fields)
      + sum over groups of FM(group's embeddings)      # pairwise interactions within each group
      + MLP(dense features)                            # hidden (4,), batch-norm, ReLU, dropout 0.2
      [+ MLP(all embeddings, flattened)                # DeepFM's deep part: ablation only]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torchfm.layer import FactorizationMachine, MultiLayerPerceptron

from contracts.feature_spec import SPEC, FeatureGroup, FeatureSpec
from contracts.published import ModelFolder
from contracts.tables import ModelFiles
from models.item_vocabulary import ItemVocabulary
from models.layers import ColumnSelect, GroupEmbedding, IdToIndex, LinearTerms, contiguous_span, select_columns


@dataclass(frozen=True)
class RankingConfig:
    embed_dims: Mapping[str, int] = field(
        default_factory=lambda: {FeatureGroup.SPARSE_ID.value: 16, FeatureGroup.SPARSE_SIDE.value: 2}
    )
    dense_mlp: bool = True
    dense_hidden: tuple[int, ...] = (4,)
    dropout: float = 0.2
    deep: bool = False  # DeepFM's deep network over the embeddings (hurt on MovieLens; ablation)
    deep_hidden: tuple[int, ...] = (64, 32)

    def to_dict(self) -> dict:
        return {**asdict(self), "embed_dims": dict(self.embed_dims)}


class GroupedFactorizationMachine(nn.Module):
    """Input: float tensor (batch, len(spec.names)) in spec order. Output: logits (batch,)."""

    def __init__(self, cardinalities: Mapping[str, int], vocabulary: ItemVocabulary,
                 config: RankingConfig | None = None, spec: FeatureSpec = SPEC) -> None:
        config = config or RankingConfig()
        super().__init__()
        if cardinalities["itemid"] != vocabulary.size:
            raise ValueError(f"itemid cardinality {cardinalities['itemid']} is not the vocabulary's {vocabulary.size}")
        self.config = config
        self.vocabulary = vocabulary
        sparse = spec.sparse
        self.item_field = [f.name for f in sparse].index("itemid")
        self.item_index = IdToIndex(vocabulary)
        # The item column is range-checked by its lookup table; the others by their cardinality.
        limits = [vocabulary.max_itemid + 1 if f.name == "itemid" else cardinalities[f.name] for f in sparse]
        self.sparse_input = ColumnSelect([spec.index_of(f.name) for f in sparse], limits)
        self.linear = LinearTerms([cardinalities[f.name] for f in sparse])
        # torchfm leaves these per-value biases at nn.Embedding's N(0, 1): summed over 23 fields that is
        # logit noise of std ~5 at the start. Starting from zero, like MF biases, trains faster and better.
        nn.init.zeros_(self.linear.fc.weight)
        self.fm = FactorizationMachine(reduce_sum=True)
        groups: dict[str, list[int]] = {}
        for position, f in enumerate(sparse):
            groups.setdefault(f.group.value, []).append(position)
        self.embeddings = nn.ModuleDict()
        for group, positions in groups.items():
            self.embeddings[group] = GroupEmbedding([cardinalities[sparse[p].name] for p in positions],
                                                    config.embed_dims[group])
            self.register_buffer(f"positions_{group}", torch.tensor(positions, dtype=torch.long), persistent=False)
        self.group_spans = {group: contiguous_span(positions) for group, positions in groups.items()}
        dense = spec.dense
        self.dense_input = ColumnSelect([spec.index_of(f.name) for f in dense]) if dense else None

        self.dense_mlp = (
            MultiLayerPerceptron(len(dense), config.dense_hidden, config.dropout)
            if config.dense_mlp and dense else None
        )
        embedded_width = sum(len(p) * config.embed_dims[g] for g, p in groups.items())
        self.deep_mlp = (
            MultiLayerPerceptron(embedded_width, config.deep_hidden, config.dropout) if config.deep else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.sparse_input(x)
        item = self.item_field
        ids = torch.cat([ids[:, :item], self.item_index(ids[:, item:item + 1]), ids[:, item + 1:]], dim=1)
        logit = self.linear(ids)
        flattened = []
        dense = self.dense_input(x) if self.dense_input is not None else None
        for group, embedding in self.embeddings.items():
            group_ids = select_columns(ids, getattr(self, f"positions_{group}"), self.group_spans[group])
            vectors = embedding(group_ids)
            logit = logit + self.fm(vectors)
            flattened.append(vectors.flatten(1))
        if self.dense_mlp is not None:
            logit = logit + self.dense_mlp(dense)
        if self.deep_mlp is not None:
            logit = logit + self.deep_mlp(torch.cat(flattened, dim=1))
        return logit.squeeze(1)


class Probability(nn.Module):
    """Wraps a logit model for serving: sigmoid output, the form exported to ONNX."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(x))


def load_ranking(folder: ModelFolder) -> GroupedFactorizationMachine:
    """A published ranking model version (``models/publishing.py`` wrote it) with its weights, in eval mode."""
    metadata = folder.metadata()
    config = RankingConfig(**{**metadata["config"], "dense_hidden": tuple(metadata["config"]["dense_hidden"]),
                              "deep_hidden": tuple(metadata["config"]["deep_hidden"])})
    vocabulary = ItemVocabulary.read(folder.path / ModelFiles.ITEM_VOCABULARY)
    model = GroupedFactorizationMachine(metadata["cardinalities"], vocabulary, config)
    model.load_state_dict(torch.load(folder.weights, weights_only=True))
    return model.eval()
