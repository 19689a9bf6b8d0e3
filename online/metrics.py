"""Prometheus metrics of the service: requests by endpoint and status, latency per stage, fallbacks by kind
and degraded responses by the store that did not answer.

Under gunicorn each worker is a process: ``online.serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` so every
worker writes its values there and ``/metrics`` (answered by any worker) adds them all up.
"""

from __future__ import annotations

import os
import time
from types import TracebackType

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
        self.degraded = Counter("recsys_degraded_responses", "responses made without a store that did not answer",
                                ["cause"], registry=self.registry)

        self._stages: dict[str, Histogram] = {}

    def timed(self, stage: str) -> StageTimer:
        """``with metrics.timed("recall"): ...`` observes the block's seconds under that stage."""
        child = self._stages.get(stage)
        if child is None:
            child = self._stages[stage] = self.stage_seconds.labels(stage)
        return StageTimer(child)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)


class StageTimer:
    """A plain context manager (five per request: a generator-based one and a label look-up each time
    cost several times more)."""

    __slots__ = ("histogram", "started")

    def __init__(self, histogram: Histogram) -> None:
        self.histogram = histogram
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.histogram.observe(time.perf_counter() - self.started)
