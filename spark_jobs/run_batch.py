"""The whole batch in one Spark session: ingest and the posted ratings (``events``, from the service's event
log), split, then features, recall inputs and the item models (co-occurrence among them) side by side, then
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
from concurrent.futures import ThreadPoolExecutor

from pyspark.sql import SparkSession

from contracts.settings import BatchSettings
from spark_jobs import events, export, features, ingest, item_models, recall_inputs, split
from spark_jobs.lake import Written
from spark_jobs.runtime import JobRun, job_main

log = logging.getLogger(__name__)

# Stages in dependency order; the steps of one stage read only what earlier stages wrote, so they run
# at once as concurrent Spark jobs (on a small input most of their time is waiting on Delta commits).
STAGES: tuple[tuple[tuple[str, JobRun], ...], ...] = (
    (("ingest", ingest.run), ("events", events.run)),
    (("split", split.run),),
    (("features", features.run), ("recall_inputs", recall_inputs.run), ("item_models", item_models.run)),
    (("export", export.run),),
)
STEP_COUNT = sum(len(stage) for stage in STAGES)


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    written: list[Written] = []
    number = 0
    for stage in STAGES:
        numbered = [(number + offset, name, step) for offset, (name, step) in enumerate(stage, 1)]
        number += len(stage)
        if len(numbered) == 1:
            written += run_step(*numbered[0], spark, settings, run_id)
            continue
        with ThreadPoolExecutor(max_workers=len(numbered), thread_name_prefix="step") as pool:
            futures = [pool.submit(run_step, *step, spark, settings, run_id) for step in numbered]
            # In step order, and the first failure raised only after every step of the stage ended.
            results = [future.exception() or future.result() for future in futures]
        for result in results:
            if isinstance(result, BaseException):
                raise result
            written += result
    return written


def run_step(number: int, name: str, step: JobRun, spark: SparkSession, settings: BatchSettings,
             run_id: str) -> list[Written]:
    log.info("step %d/%d: %s", number, STEP_COUNT, name)
    started = time.monotonic()
    written = step(spark, settings, run_id)
    log.info("step %d/%d: %s done in %.1f s", number, STEP_COUNT, name, time.monotonic() - started)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    job_main("run_batch", run, argv, __doc__)


if __name__ == "__main__":
    main()
