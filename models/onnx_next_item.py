"""The sequence model's ONNX file (``models/next_item_export.py``) under onnxruntime: the next-item scorer of both
profiles and of the validation replay."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from contracts.published import ModelFolder
from models.next_item_export import CANDIDATES_NAME, HISTORY_NAME, SCORES_NAME


def relative_chances(scores: np.ndarray) -> np.ndarray:
    """Logits -> each one's probability over the largest one's (1 for the likeliest candidate): the softmax among
    the candidates, divided by its largest value, so the normalising sum never has to be computed."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    return np.exp(scores - scores.max())


class OnnxNextItemScorer:
    """A user's latest items (newest first, as the recall data holds them) and candidates -> each candidate's
    chance of being next relative to the likeliest one's (``relative_chances``)."""

    def __init__(self, folder: ModelFolder, threads: int = 1) -> None:
        metadata = folder.metadata()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder.path / metadata["onnx"]), options,
                                            providers=["CPUExecutionProvider"])
        self.max_length = int(metadata["max_length"])
        self.version = metadata["version"]

    def history(self, recent: np.ndarray) -> np.ndarray:
        """(1, max_length): the latest ``max_length`` items oldest first, left-padded with 0."""
        window = np.zeros((1, self.max_length), dtype=np.int64)
        latest = np.asarray(recent, dtype=np.int64)[:self.max_length][::-1]
        if len(latest):
            window[0, -len(latest):] = latest
        return window

    def score(self, recent: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        if len(candidates) == 0:
            return np.empty(0, dtype=np.float64)
        scores = self.session.run([SCORES_NAME], {HISTORY_NAME: self.history(recent),
                                                  CANDIDATES_NAME: np.asarray(candidates, dtype=np.int64)[None]})[0]
        return relative_chances(scores[0])
