"""The loaded versions (batch run, models, feature spec) as one immutable value, and its holder.

``load_bundle`` builds everything a request reads; ``BundleHolder.reload`` builds a new bundle next
to the serving one and then swaps the reference in one assignment, so a request (which takes the
reference once, at its start) sees the old or the new bundle, never a mix. The profile chooses the
store implementations here and nowhere else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd

from feature_repo.publish import FeastTarget, open_store
from loaders.published import NothingToLoadError, open_published
from models.recall_data import FeatureAssembler, OnnxRanker, load_item_index, load_user_recall_data
from models.retrieval import RecallConfig
from online.embedded import FeastFeatureClient, InMemoryItemIndex, InMemoryUserRecallStore
from online.stores import FeatureClient, ItemIndexStore, Ranker, StoreUnavailableError, UserRecallStore
from spark_jobs.feature_spec import SpecMismatchError
from spark_jobs.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServingBundle:
    users: UserRecallStore
    items: ItemIndexStore
    features: FeatureClient
    assembler: FeatureAssembler
    ranker: Ranker
    recall: RecallConfig
    versions: dict[str, str] = field(default_factory=dict)
    # Name -> a check that raises StoreUnavailableError when the dependency cannot answer (for /ready).
    dependencies: Mapping[str, Callable[[], None]] = field(default_factory=dict)
    # Runs the user-feature fetch next to recall: inline in memory, a thread when both are network calls.
    background: Executor = field(default_factory=lambda: InlineExecutor())
    feature_timeout: float | None = None  # seconds a request waits for the features (None: no limit)

    def unavailable(self) -> dict[str, str]:
        """The dependencies that do not answer now, with why."""
        down = {}
        for name, check in self.dependencies.items():
            try:
                check()
            except StoreUnavailableError as error:
                down[name] = str(error)
        return down


class InlineExecutor(Executor):
    """Runs the call at once in the caller's thread: concurrency costs more than it saves in memory."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


class NotReadyError(RuntimeError):
    """The batch, the models or Feast's online store are not there yet."""


def load_bundle(settings: Settings) -> ServingBundle:
    """The profile picks the store implementations here and nowhere else."""
    if settings.profile == "services":
        from online.services import load_services_bundle  # its clients are needed by this profile only

        return load_services_bundle(settings)
    return load_embedded_bundle(settings)


def load_embedded_bundle(settings: Settings) -> ServingBundle:
    try:  # the batch run and models ``current`` points to, spec-checked: what the loaders publish too
        published = open_published(settings)
    except NothingToLoadError as error:
        raise NotReadyError(str(error)) from error
    exports, recall_model, ranking_model = published.exports, published.recall_model, published.ranking_model
    feast = open_store(FeastTarget("sqlite", settings.output_dir, settings.redis_address))
    ranker = OnnxRanker(ranking_model)
    bundle = ServingBundle(
        users=InMemoryUserRecallStore(load_user_recall_data(exports, recall_model)),
        items=InMemoryItemIndex(load_item_index(exports, recall_model)),
        features=FeastFeatureClient(feast),
        # Item features are prefetched once per bundle: fetching ~1,700 items per request costs ~400 ms.
        assembler=FeatureAssembler.from_item_features(pd.read_parquet(exports / "item_features")),
        ranker=ranker,
        recall=RecallConfig(recall_size=settings.recall_size),
        versions=published.versions,
    )
    log.info("serving bundle loaded: %s", bundle.versions)
    return bundle


class BundleHolder:
    """Holds the serving bundle; ``current`` is read once per request.

    While nothing is loaded (the batch, the models or a service not there at start), ``retry_if_empty``
    tries again at most every ``retry_seconds``, so the service becomes ready without a restart.
    """

    def __init__(self, settings: Settings, retry_seconds: float = 2.0) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self.current: ServingBundle | None = None
        self.error: str | None = None
        self.retry_seconds = retry_seconds
        self._last_try = 0.0

    def retry_if_empty(self) -> ServingBundle | None:
        if self.current is None and time.monotonic() - self._last_try >= self.retry_seconds:
            self.try_load()
        return self.current

    def reload(self) -> ServingBundle:
        with self._lock:  # one reload at a time; requests never take this lock
            bundle = load_bundle(self.settings)
            self.current, self.error = bundle, None
            return bundle

    def try_load(self) -> None:
        self._last_try = time.monotonic()
        try:
            self.reload()
        except (NotReadyError, FileNotFoundError, StoreUnavailableError, SpecMismatchError) as error:
            self.error = str(error)
            log.warning("not ready: %s", error)
