"""What the request path (``models/request_path.py``) reads: each store behind a small protocol, and the
bundle that holds one loaded set of them with their versions.

Implementations: in memory (``models/in_memory_stores.py``: the exports' arrays, for the embedded profile
and the offline evaluation), Feast in-process (``online/embedded.py``), and the servers of the services
profile (``online/services.py``). A store supplies data and answers searches; the recall rules (neighbour
sums, the popularity filter, the merge, the fusion) are the request path's, applied to whatever store
answered. A store that cannot answer raises ``StoreUnavailableError`` naming itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from contracts.errors import StoreUnavailableError
from models.feature_rows import FeatureAssembler
from models.recall_sources import Ranked, RecallConfig, UserRecallData
from models.user_updates import PostedRating

T = TypeVar("T")


class UserRecallStore(Protocol):
    """Per user: genre terms, recall vector, seen items, latest items (None: unknown user)."""

    def get(self, userid: int) -> UserRecallData | None: ...


@dataclass(frozen=True)
class CatalogueSearch:
    """The two catalogue searches of one request; both exclude ``seen`` and return up to ``size`` items,
    best first, ties by the smaller itemid."""

    bands: Sequence[tuple[int, float]]  # term search: (genre, band) of the user's strongest genres
    vector: np.ndarray | None  # vector search: the user's recall vector (None: no vector search)
    seen: np.ndarray
    size: int


class ItemIndexStore(Protocol):
    """The catalogue side of recall."""

    @property
    def popularity(self) -> Ranked:
        """The catalogue by offline positives, best first (the same for every user within a version)."""
        ...

    @property
    def max_popularity(self) -> float: ...

    def neighbour_lists(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, similarities) of the neighbour lists of ``itemids``, list after list in their order; an id
        without a list contributes nothing. Padding ids are <= 0."""
        ...

    def item_lists(self, source: str, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of ``source``'s per-item lists (``ITEM_LIST_SOURCES``) of ``itemids``, as
        ``neighbour_lists`` gives the neighbour lists."""
        ...

    def search(self, query: CatalogueSearch) -> tuple[Ranked, Ranked]:
        """(term, vector) candidates: each item of the banded genres scored band + popularity at its best
        band; the items by inner product with the vector."""
        ...


class FeatureClient(Protocol):
    """The user's online features, in ``SPEC.online_user_features`` order (None: unknown user)."""

    def user_features(self, userid: int) -> np.ndarray | None: ...


class Ranker(Protocol):
    """Model input rows in spec order -> probabilities."""

    version: str

    def score(self, rows: np.ndarray) -> np.ndarray: ...


class NextItemScorer(Protocol):
    """The sequence model: the user's latest items (newest first) and the candidates -> each candidate's chance
    of being the next item, relative to the likeliest candidate's (1 for it)."""

    version: str

    def score(self, recent: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class AcceptedRating:
    rating: PostedRating
    sequence: int  # its place in the event log
    duplicate: bool  # the same event id, or the same (user, item, timestamp), was accepted before: applied once


class RatingSink(Protocol):
    """Where posted ratings go: made durable, then applied to the users' state (``online/live_users.py``)."""

    def knows_item(self, itemid: int) -> bool: ...

    def refusal(self, rating: float) -> str | None:
        """Why ``rating`` is not on the dataset's scale (None: it is)."""
        ...

    def accept(self, ratings: Sequence[PostedRating]) -> list[AcceptedRating]:
        """Durable and applied when it returns, all or none."""
        ...


class InlineExecutor(Executor):
    """Runs the call at once in the caller's thread: with stores in memory, concurrency costs more than it
    saves."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


@dataclass(frozen=True)
class ServingBundle:
    """One loaded set of stores, the model input layout and the ranker, with the versions they hold.

    Immutable: a reload builds a new bundle and swaps the reference, so one request reads one set."""

    users: UserRecallStore
    items: ItemIndexStore
    features: FeatureClient
    assembler: FeatureAssembler
    ranker: Ranker
    recall: RecallConfig
    versions: dict[str, str] = field(default_factory=dict)
    # Name -> a check that raises StoreUnavailableError when the dependency cannot answer (for /ready).
    dependencies: Mapping[str, Callable[[], None]] = field(default_factory=dict)
    # Runs the user-feature fetch and the neighbour lists next to the searches: inline in memory, threads
    # when they are network calls.
    background: Executor = field(default_factory=InlineExecutor)
    feature_timeout: float | None = None  # seconds a request waits for the features (None: no limit)
    # Scores when ``ranker`` does not answer: the same model in-process (the services profile's Triton has
    # the published ONNX file beside it); None: the candidates are served in recall order instead.
    backup_ranker: Ranker | None = None
    # The sequence model, in-process in both profiles (a small graph per new history); None: none is published,
    # and the final order does without its input.
    next_item: NextItemScorer | None = None
    # Posted ratings (the service's write path); None where the bundle has none (the offline evaluation).
    ratings: RatingSink | None = None

    def unavailable(self) -> dict[str, str]:
        """The dependencies that do not answer now, with why."""
        down = {}
        for name, check in self.dependencies.items():
            try:
                check()
            except StoreUnavailableError as error:
                down[name] = str(error)
        return down
