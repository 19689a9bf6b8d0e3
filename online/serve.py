"""Start the recommendation service under gunicorn (the production WSGI server).

    python -m online.serve [--profile embedded|services] [--output DIR] [--host 127.0.0.1] [--port 8000]
                           [--workers 2] [--access-log]

Embedded (the default): reads the batch run and models that ``current`` points to, and the Feast SQLite
online store (``python -m feature_repo.publish`` first). Services: reads Redis, Elasticsearch, Feast's
feature server and Triton (``python -m online.local_services up`` and the loaders first; hosts and ports
from the settings). ``kill -HUP <gunicorn pid>`` reloads gracefully: new workers load the new versions
while the old ones finish their requests; ``POST /admin/reload`` (with the API token) does the same.

gunicorn runs in this process (``ServiceApplication``) and every worker builds its app from the settings
object this command parsed. The service's modules (Flask, Feast, onnxruntime, the clients) are imported
here, in the master: every worker is forked with them already loaded, so a worker started by a graceful
reload only loads the new versions (a second or two) instead of importing everything again (~10 s) while
requests wait. The versions themselves are loaded by each worker, never by the master, so a reload picks
up what ``current`` points to now.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication
from threadpoolctl import threadpool_limits

from contracts.settings import ServingSettings
from online.app import create_app
from spark_jobs.driver_memory import return_freed_memory, use_returning_allocators

# prometheus_client reads its multi-process folder from this variable only, when it is imported.
METRICS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Arrow's C++ readers (Parquet's decoding) allocate from the pool this variable names, read once when Arrow starts;
# pyarrow.set_memory_pool does not reach them. With the default (mimalloc) what they free stays in the worker:
# ~0.24 GiB of a worker's bundle at ML-25M's size.
ARROW_POOL_VARIABLE, ARROW_POOL = "ARROW_DEFAULT_MEMORY_POOL", "system"
API_TOKEN_VARIABLE = f"{ServingSettings.model_config['env_prefix']}API_TOKEN"


class ServiceApplication(BaseApplication):
    """gunicorn with its options from the settings and the app built from them in each worker."""

    def __init__(self, settings: ServingSettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {"bind": f"{self.settings.serve_host}:{self.settings.serve_port}",
                                   "workers": self.settings.serve_workers, "proc_name": "recsys"}
        if self.settings.request_threads > 1:  # gunicorn's gthread worker: waits on the servers overlap
            options["threads"] = self.settings.request_threads
        if self.settings.serve_access_log:
            options["accesslog"] = "-"
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # In each worker. A sync worker scores one request at a time and the workers already fill the cores:
        # BLAS threads of their own (OpenBLAS spins while it waits) only fight them. At ML-25M's catalogue one
        # thread per worker took 200 requests/s from p50 20 ms / p99 36 ms to 6.7 / 12.5 ms.
        threadpool_limits(limits=1, user_api="blas")
        # The bundle is read through Arrow and pandas: with Arrow's own allocator (mimalloc) and glibc's arenas
        # keeping what the reads freed, a worker at ML-25M's size held ~0.6 GiB more than its bundle.
        use_returning_allocators()
        app = create_app(self.settings, reload_workers=reload_every_worker)
        return_freed_memory()
        # What the worker loaded (the modules, the bundle: ~350K objects at ML-100K) lives as long as the worker:
        # left to the collector, a full collection scans it all (~200 ms measured) in the middle of a request.
        gc.freeze()
        return app


def reload_every_worker() -> None:
    """From a worker: gunicorn's graceful reload (its master starts new workers, which load the current versions,
    and stops the old ones once their requests are answered)."""
    os.kill(os.getppid(), signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> None:
    settings = ServingSettings.parse(argv, __doc__ or "")
    if (settings.metrics_dir is None or os.environ.get(METRICS_VARIABLE) != str(settings.metrics_dir)
            or os.environ.get(ARROW_POOL_VARIABLE) != ARROW_POOL):
        # One folder per server run for the workers' metric files (stale files would add old counts), named in
        # the environment of the server process this command becomes, with Arrow's pool.
        metrics_dir = settings.metrics_dir or tempfile.mkdtemp(prefix="recsys-metrics-")
        # The token goes on in the environment, not the command line, which every user of the machine can read.
        flags = settings.model_copy(update={"metrics_dir": metrics_dir, "api_token": None}).as_flags()
        token = {API_TOKEN_VARIABLE: settings.api_token} if settings.api_token else {}
        os.execve(sys.executable, [sys.executable, "-m", "online.serve", *flags],
                  {**os.environ, METRICS_VARIABLE: str(metrics_dir), ARROW_POOL_VARIABLE: ARROW_POOL, **token})
    ServiceApplication(settings).run()


if __name__ == "__main__":
    main()
