"""The thin shell every job shares: settings from flags and env, logging, a Spark session, a run id."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence

from pyspark.sql import SparkSession

from contracts.settings import BatchSettings
from spark_jobs.driver_memory import use_returning_allocators
from spark_jobs.lake import Written, new_run_id, remove_stale_scratch
from spark_jobs.session import spark_session, stop_session

JobRun = Callable[[SparkSession, BatchSettings, str], list[Written]]


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("py4j").setLevel(logging.WARNING)


def job_main(name: str, run: JobRun, argv: Sequence[str] | None, description: str | None) -> list[Written]:
    parser = argparse.ArgumentParser(
        prog=f"spark_jobs/{name}.py", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    BatchSettings.add_arguments(parser)
    parser.add_argument("--run-id", default=None, help="tag for the Delta versions written (default: new)")
    args = parser.parse_args(argv)
    settings = BatchSettings.from_args(args)
    configure_logging()
    use_returning_allocators()
    run_id = args.run_id or new_run_id()
    remove_stale_scratch(settings)
    log = logging.getLogger(f"spark_jobs.{name}")
    spark = spark_session(settings, f"movielens-{name}", settings.data_dir)
    started = time.monotonic()
    try:
        written = run(spark, settings, run_id)
    finally:
        stop_session(spark)
    log.info("%s finished in %.1f s (run %s)", name, time.monotonic() - started, run_id)
    for w in written:
        version = f"  (Delta version {w.version})" if w.version >= 0 else ""
        log.info("  %-16s %10d rows  %s%s", w.table, w.rows, w.path, version)
    return written
