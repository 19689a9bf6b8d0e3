"""Prometheus metrics of the service: requests by endpoint and status, latency per stage.

Under gunicorn each worker is a process: ``online.serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` so every
worker writes its values there and ``/metrics`` (answered by any worker) adds them all up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.stage_seconds = Histogram("recsys_stage_seconds", "time per request stage", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=self.registry)
        self.fallbacks = Counter("recsys_fallbacks", "responses served by a fallback", ["kind"],
                                 registry=self.registry)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(stage).observe(time.perf_counter() - started)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)
