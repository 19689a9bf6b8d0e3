"""Start the recommendation service under gunicorn (the production WSGI server).

    python -m online.serve [--profile embedded|services] [--output DIR] [--host 127.0.0.1] [--port 8000]
                           [--workers 2] [--access-log]

Embedded (the default): reads the batch run and models that ``current`` points to, and the Feast SQLite
online store (``python -m feature_repo.publish`` first). Services: reads Redis, Elasticsearch, Feast's
feature server and Triton (``python -m online.local_services up`` and the loaders first; hosts and ports
from the settings). ``kill -HUP <gunicorn pid>`` reloads gracefully: new
workers load the new versions while the old ones finish their requests.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from spark_jobs.settings import parse_settings


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv, __doc__ or "")
    # One folder per server run for the workers' metric files (stale files would add old counts).
    metrics_dir = tempfile.mkdtemp(prefix="recsys-metrics-")
    # The workers build their settings from the environment: pass every resolved setting on.
    env = {**os.environ, **{f"RECSYS_{name.upper()}": str(value) for name, value in settings.model_dump().items()},
           "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    command = [gunicorn, "--config", "python:online.gunicorn_conf", "--bind",
               f"{settings.serve_host}:{settings.serve_port}", "--workers", str(settings.serve_workers),
               *(["--access-logfile", "-"] if settings.serve_access_log else []), "online.wsgi:app"]
    os.execve(gunicorn, command, env)


if __name__ == "__main__":
    main()
