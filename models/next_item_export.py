"""The sequence model (``models/sequence_model.py``) as the ONNX graph the service runs: a user's latest movie ids
and the candidates' movie ids in, each candidate's score as the next item out.

    history    int64 (batch, max_length): movie ids, oldest first, left-padded with 0
    candidates int64 (batch, n): movie ids
    scores     float32 (batch, n): the model's logit of each candidate after the history's last item; a movie outside
               the vocabulary scores ``UNKNOWN_SCORE``

Ids become vocabulary indices inside the graph (``models.layers.IdToIndex``), so everything outside the model speaks
movie ids. Only the candidates' rows of the output layer are scored: their softmax among themselves is the model's
probability of each relative to the others, which is all the final order reads (``models/fusion.py``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from models.item_vocabulary import ItemVocabulary
from models.layers import IdToIndex
from models.onnx_export import OPSET, PARITY_TOLERANCE, ParityError
from models.sequence_model import PADDING, CausalSequenceModel

HISTORY_NAME, CANDIDATES_NAME, SCORES_NAME = "history", "candidates", "scores"
UNKNOWN_SCORE = -1e4  # exp(UNKNOWN_SCORE - any real logit) is 0 in float64: no weight in the final order

log = logging.getLogger(__name__)


class NextItemGraph(nn.Module):
    def __init__(self, model: CausalSequenceModel, vocabulary: ItemVocabulary) -> None:
        super().__init__()
        self.model = model.eval()
        self.to_index = IdToIndex(vocabulary)

    def forward(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        state = self.model(self.to_index(history))[:, -1, :]  # (batch, dim): after the last item
        indices = self.to_index(candidates)
        scores = torch.einsum("bd,bnd->bn", state, self.model.items(indices))
        return torch.where(indices == PADDING, torch.full_like(scores, UNKNOWN_SCORE), scores)


def export_next_item(model: CausalSequenceModel, vocabulary: ItemVocabulary, path: Path) -> Path:
    graph = NextItemGraph(model, vocabulary).eval()
    history = torch.zeros(2, model.max_length, dtype=torch.int64)
    history[:, -3:] = torch.from_numpy(vocabulary.itemids[:3]) if len(vocabulary.itemids) >= 3 else 0
    candidates = torch.from_numpy(np.resize(vocabulary.itemids, (2, 4)).astype(np.int64))
    with warnings.catch_warnings():
        # The attention's shape checks become constants of the trace; the parity check covers the shapes served.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            graph, (history, candidates), str(path), input_names=[HISTORY_NAME, CANDIDATES_NAME],
            output_names=[SCORES_NAME], opset_version=OPSET, dynamo=False,
            dynamic_axes={HISTORY_NAME: {0: "batch"}, CANDIDATES_NAME: {0: "batch", 1: "candidates"},
                          SCORES_NAME: {0: "batch", 1: "candidates"}})
    return path


def check_next_item_parity(model: CausalSequenceModel, vocabulary: ItemVocabulary, path: Path,
                           histories: np.ndarray, candidates: np.ndarray,
                           tolerance: float = PARITY_TOLERANCE) -> float:
    """Largest absolute difference between PyTorch's and onnxruntime's scores of the same inputs; raises above
    ``tolerance`` (relative to the largest score, since logits are not bounded like probabilities)."""
    with torch.no_grad():
        expected = NextItemGraph(model, vocabulary)(torch.from_numpy(histories), torch.from_numpy(candidates)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    found = session.run([SCORES_NAME], {HISTORY_NAME: histories, CANDIDATES_NAME: candidates})[0]
    difference = float(np.max(np.abs(expected - found))) if expected.size else 0.0
    scale = max(1.0, float(np.max(np.abs(expected[expected > UNKNOWN_SCORE])))) if expected.size else 1.0
    if difference > tolerance * scale:
        raise ParityError(f"next-item ONNX and PyTorch scores differ by {difference:.2e} "
                          f"(> {tolerance:.0e} x {scale:.1f})")
    log.info("next-item ONNX parity on %d histories: max |difference| %.2e", len(histories), difference)
    return difference
