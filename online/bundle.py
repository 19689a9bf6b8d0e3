"""The bundle holder: which profile loads the bundle (``models.stores.ServingBundle``, the loaded versions as
one immutable value), and its atomic swap on reload.

``BundleHolder.reload`` builds a new bundle next to the serving one and then swaps the reference in one
assignment, so a request (which takes the reference once, at its start) sees the old or the new bundle,
never a mix. The profile chooses the store implementations here (``LOADERS``) and nowhere else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from contracts.errors import DependencyError
from contracts.settings import Profile, ServingSettings
from models.stores import ServingBundle
from online.embedded import load_embedded_bundle
from online.services import load_services_bundle

log = logging.getLogger(__name__)

LOADERS: dict[Profile, Callable[[ServingSettings], ServingBundle]] = {
    "embedded": load_embedded_bundle,
    "services": load_services_bundle,
}


def load_bundle(settings: ServingSettings) -> ServingBundle:
    """The profile's bundle; a ``DependencyError`` says what is not there or not answering yet."""
    return LOADERS[settings.profile](settings)


class BundleHolder:
    """Holds the serving bundle; ``current`` is read once per request.

    While nothing is loaded (the batch, the models or a service not there at start), ``retry_if_empty``
    tries again at most every ``retry_seconds``, so the service becomes ready without a restart.
    """

    def __init__(self, settings: ServingSettings, retry_seconds: float = 2.0) -> None:
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
        except DependencyError as error:
            self.error = str(error)
            log.warning("not ready: %s", error)
