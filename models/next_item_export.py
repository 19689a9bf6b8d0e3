"""The sequence model (``models/sequence_model.py``) as the files the service reads: an ONNX graph from a user's
latest movie ids to their state after the last one, and the item table the state is scored against.

    model.onnx            history int64 (batch, max_length): movie ids, oldest first, left-padded with 0
                          -> state float32 (batch, dim): the model's output after the history's last item
    item_embeddings.npy   float32 (vocabulary size, dim): row i is vocabulary index i's embedding (row 0: unknown)
    item_vocabulary.parquet

A candidate's score as the next item is the dot product of the state with its row (``next_item_logits``); a movie
outside the vocabulary scores ``UNKNOWN_SCORE``. Ids become vocabulary indices inside the graph
(``models.layers.IdToIndex``), so everything outside the model speaks movie ids. The split lets the service keep a
user's state while their history is unchanged (``models/onnx_next_item.py``): a request then costs a few hundred
dot products instead of the transformer.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from contracts.tables import ModelFiles
from models.item_vocabulary import UNKNOWN, ItemVocabulary
from models.layers import IdToIndex
from models.onnx_export import OPSET, PARITY_TOLERANCE, ParityError
from models.sequence_model import CausalSequenceModel

HISTORY_NAME, STATE_NAME = "history", "state"
ITEM_EMBEDDINGS = "item_embeddings.npy"
UNKNOWN_SCORE = -1e4  # exp(UNKNOWN_SCORE - any real logit) is 0 in float64: no weight in the final order

log = logging.getLogger(__name__)


class NextItemState(nn.Module):
    def __init__(self, model: CausalSequenceModel, vocabulary: ItemVocabulary) -> None:
        super().__init__()
        self.model = model.eval()
        self.to_index = IdToIndex(vocabulary)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.model(self.to_index(history))[:, -1, :]


def next_item_logits(state: np.ndarray, item_embeddings: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Each candidate's score after the state (vocabulary ``indices``; index 0, unknown, gets ``UNKNOWN_SCORE``)."""
    scores = item_embeddings[indices] @ state
    return np.where(indices == UNKNOWN, np.float32(UNKNOWN_SCORE), scores)


def export_next_item(model: CausalSequenceModel, vocabulary: ItemVocabulary, folder: Path) -> dict:
    """Writes the three files into ``folder``; returns the metadata entries that name them."""
    graph = NextItemState(model, vocabulary).eval()
    history = torch.zeros(2, model.max_length, dtype=torch.int64)
    history[:, -3:] = torch.from_numpy(np.resize(vocabulary.itemids, 3)) if len(vocabulary.itemids) else 0
    with warnings.catch_warnings():
        # The attention's shape checks become constants of the trace; the parity check covers the shapes served.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(graph, (history,), str(folder / ModelFiles.ONNX), input_names=[HISTORY_NAME],
                          output_names=[STATE_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={HISTORY_NAME: {0: "batch"}, STATE_NAME: {0: "batch"}})
    np.save(folder / ITEM_EMBEDDINGS, model.items.weight.detach().numpy().astype(np.float32))
    vocabulary.write(folder / ModelFiles.ITEM_VOCABULARY)
    return {"onnx": ModelFiles.ONNX, "item_embeddings": ITEM_EMBEDDINGS, "max_length": model.max_length}


def check_next_item_parity(model: CausalSequenceModel, vocabulary: ItemVocabulary, folder: Path,
                           histories: np.ndarray, candidates: np.ndarray,
                           tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest absolute difference between PyTorch's scores of ``candidates`` (movie ids) after ``histories`` and
    the published files' (the ONNX state, then ``next_item_logits``); raises above ``tolerance`` relative to the
    largest score, since logits are not bounded like probabilities."""
    indices = vocabulary.index_of(candidates)
    with torch.no_grad():
        states = NextItemState(model, vocabulary)(torch.from_numpy(histories))
        expected = torch.einsum("bd,bnd->bn", states, model.items(torch.from_numpy(indices))).numpy()
    expected = np.where(indices == UNKNOWN, np.float32(UNKNOWN_SCORE), expected)
    session = ort.InferenceSession(str(folder / ModelFiles.ONNX), providers=["CPUExecutionProvider"])
    found_states = session.run([STATE_NAME], {HISTORY_NAME: histories})[0]
    table = np.load(folder / ITEM_EMBEDDINGS)
    found = np.stack([next_item_logits(state, table, row) for state, row in zip(found_states, indices, strict=True)])
    difference = float(np.max(np.abs(expected - found))) if expected.size else 0.0
    known = expected[indices != UNKNOWN]
    scale = max(1.0, float(np.max(np.abs(known)))) if known.size else 1.0
    if difference > tolerance * scale:
        raise ParityError(f"next-item ONNX and PyTorch scores differ by {difference:.2e} "
                          f"(> {tolerance:.0e} x {scale:.1f})")
    log.info("next-item ONNX parity on %d histories: max |difference| %.2e", len(histories), difference)
    return difference
