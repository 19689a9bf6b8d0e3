"""The whole batch in order, in one Spark session: ingest, split, features, recall inputs, co-occurrence,
export.

    python -m spark_jobs.run_batch [--data DIR] [--output DIR]
    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/run_batch.py --data DIR

Every table written by one batch carries the same run id in its Delta history. The Parquet exports
switch to the new run only after every job has succeeded.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import logging
import time
from collections.abc import Sequence

from pyspark.sql import SparkSession

from spark_jobs import cooccurrence, export, features, ingest, recall_inputs, split
from spark_jobs.lake import Written
from spark_jobs.runtime import JobRun, job_main
from spark_jobs.settings import Settings

log = logging.getLogger(__name__)

STEPS: tuple[tuple[str, JobRun], ...] = (
    ("ingest", ingest.run),
    ("split", split.run),
    ("features", features.run),
    ("recall_inputs", recall_inputs.run),
    ("cooccurrence", cooccurrence.run),
    ("export", export.run),
)


def run(spark: SparkSession, settings: Settings, run_id: str) -> list[Written]:
    written: list[Written] = []
    for number, (name, step) in enumerate(STEPS, 1):
        log.info("step %d/%d: %s", number, len(STEPS), name)
        started = time.monotonic()
        written += step(spark, settings, run_id)
        log.info("step %d/%d: %s done in %.1f s", number, len(STEPS), name, time.monotonic() - started)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    job_main("run_batch", run, argv, __doc__)


if __name__ == "__main__":
    main()
