"""The sequence model's files (``models/next_item_export.py``) under onnxruntime: the next-item scorer of both
profiles and of the validation replay."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from contracts.published import ModelFolder
from contracts.tables import ModelFiles
from models.item_vocabulary import ItemVocabulary
from models.next_item_export import HISTORY_NAME, STATE_NAME, next_item_logits
from models.onnx_sessions import inference_session

# Users whose state a scorer keeps (~0.5 KB each with its key): a request for one of them skips the transformer.
STATE_CACHE_USERS = 50_000


def relative_chances(scores: np.ndarray) -> np.ndarray:
    """Logits -> each one's probability over the largest one's (1 for the likeliest candidate): the softmax among
    the candidates, divided by its largest value, so the normalising sum never has to be computed."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    return np.exp(scores - scores.max())


class OnnxNextItemScorer:
    """A user's latest items (newest first, as the recall data holds them) and candidates -> each candidate's
    chance of being next relative to the likeliest one's (``relative_chances``).

    The state after a history depends on nothing else, so the latest ``cache_users`` histories' states are kept
    (keyed by the history itself: a posted rating makes a new key, never a stale state)."""

    def __init__(self, folder: ModelFolder, threads: int = 1, cache_users: int = STATE_CACHE_USERS) -> None:
        metadata = folder.metadata()
        self.session = inference_session(folder.path / metadata["onnx"], threads)
        self.item_embeddings = np.load(folder.path / metadata["item_embeddings"])
        self.vocabulary = ItemVocabulary.read(folder.path / ModelFiles.ITEM_VOCABULARY)
        self.max_length = int(metadata["max_length"])
        self.version = metadata["version"]
        self.state_of = lru_cache(maxsize=cache_users)(self._state)

    def history(self, recent: np.ndarray) -> np.ndarray:
        """(1, max_length): the latest ``max_length`` items oldest first, left-padded with 0."""
        window = np.zeros((1, self.max_length), dtype=np.int64)
        latest = np.asarray(recent, dtype=np.int64)[:self.max_length][::-1]
        if len(latest):
            window[0, -len(latest):] = latest
        return window

    def _state(self, window: bytes) -> np.ndarray:
        history = np.frombuffer(window, dtype=np.int64).reshape(1, self.max_length)
        return self.session.run([STATE_NAME], {HISTORY_NAME: history})[0][0]

    def score(self, recent: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        if len(candidates) == 0:
            return np.empty(0, dtype=np.float64)
        state = self.state_of(self.history(recent).tobytes())
        return relative_chances(next_item_logits(state, self.item_embeddings, self.vocabulary.index_of(candidates)))
