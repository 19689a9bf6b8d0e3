"""What the request path reads, each behind a small interface with an embedded (``online/embedded.py``)
and a service (``online/services.py``) implementation. A store that cannot answer raises
``StoreUnavailableError`` naming itself; the app maps it to 503."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.retrieval import Ranked, RecallConfig, UserRecallData


class StoreUnavailableError(RuntimeError):
    def __init__(self, store: str, detail: str) -> None:
        super().__init__(f"{store} unavailable: {detail}")
        self.store = store


class UserRecallStore(Protocol):
    """Per user: genre terms, recall vector, seen items, latest items."""

    def get(self, userid: int) -> UserRecallData | None: ...


class ItemIndexStore(Protocol):
    """The catalogue side of recall: each source's candidates for a user (seen items excluded inside),
    and the popularity list."""

    def sources(self, user: UserRecallData, config: RecallConfig, recall_size: int) -> dict[str, Ranked]: ...

    def popular(self, user: UserRecallData | None, n: int) -> Ranked: ...


class FeatureClient(Protocol):
    """The user's online features, in ``SPEC.online_user_features`` order (None: unknown user)."""

    def user_features(self, userid: int) -> np.ndarray | None: ...


class Ranker(Protocol):
    """Model input rows in spec order -> probabilities."""

    version: str

    def score(self, rows: np.ndarray) -> np.ndarray: ...
