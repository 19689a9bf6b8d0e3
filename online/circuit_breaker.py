"""A circuit breaker per server: after a call fails (or times out), the server is skipped for a while instead
of being waited on by every request.

    closed  --call fails-->  open (each call raises at once, naming the last error)
    open    --interval over-->  one call probes the server; the others keep skipping meanwhile
    probe   --answers-->  closed;   --fails-->  open for another interval

A hanging server costs one timeout per interval and worker, not one per request; a server that comes back
is used again within one interval. Each gunicorn worker holds its own breakers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from contracts.errors import StoreUnavailableError

P = ParamSpec("P")
T = TypeVar("T")


class CircuitBreaker:
    def __init__(self, store: str, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.interval, self.clock = store, interval, clock
        self._lock = threading.Lock()
        self._open_until = 0.0  # 0: closed
        self._last_error = ""

    @property
    def is_open(self) -> bool:
        return self._open_until > 0.0

    def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args)``, unless the breaker is open: then ``StoreUnavailableError`` at once. A
        ``StoreUnavailableError`` from the call opens it."""
        with self._lock:
            now = self.clock()
            if now < self._open_until:
                raise StoreUnavailableError(self.store, f"skipped for {self._open_until - now:.1f} s more "
                                                        f"after: {self._last_error}"[:500])
            if self._open_until:  # the interval is over: this call probes, the others keep skipping
                self._open_until = now + self.interval
        try:
            result = function(*args, **kwargs)
        except StoreUnavailableError as error:
            with self._lock:
                self._open_until = self.clock() + self.interval
                self._last_error = str(error)
            raise
        if self._open_until:
            with self._lock:
                self._open_until = 0.0
        return result
