"""Export: the Delta tables -> Parquet for plain readers (Feast, the trainers, the loaders).

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/export.py --output DIR

Each run writes a complete new folder ``exports/runs/<run id>/`` with one Parquet dataset per
table, ``feature_metadata.json`` and ``manifest.json`` (the Delta version each export was read
from). Only then is the link ``exports/current`` switched to it, in one atomic rename: readers
see either the previous complete export or the new one, and a failed run leaves the previous one
in place. The newest ``keep_export_runs`` runs are kept.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import json
import logging
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from contracts.atomic import switch_link
from contracts.errors import PublishCheckError
from contracts.settings import BatchSettings
from contracts.tables import Export, Table
from spark_jobs.lake import PARALLEL_WRITES, Written, read_table
from spark_jobs.runtime import job_main
from spark_jobs.split import Split

log = logging.getLogger(__name__)

def exports_of(tables: dict[str, DataFrame]) -> dict[str, DataFrame]:
    samples = tables[Table.SAMPLES]
    return {
        Export.SAMPLES_TRAIN: samples.filter(F.col("split") == Split.TRAIN).drop("split"),
        Export.SAMPLES_TEST: samples.filter(F.col("split") == Split.TEST).drop("split"),
        Export.SAMPLES_TRAIN_NEGATIVES: tables[Table.NEGATIVE_SAMPLES].drop("split"),
        **{name: tables[name] for name in Export.AS_IS},
    }


class ShrinkingRunError(PublishCheckError):
    """A run much smaller than the export serving now: likely a truncated or wrong input."""


# Quantities compared against the current export before switching to a new run.
GUARDED_COUNTS: tuple[str, ...] = ("ratings", "samples")
SHRINK_LIMIT = 0.5


def guard_against_shrinking(settings: BatchSettings, counts: dict[str, int], run_dir: Path) -> None:
    """Refuse to replace ``current`` by a run with fewer than half its ratings or samples."""
    manifest_path = settings.current_export_dir / Export.MANIFEST_FILE
    if settings.allow_shrink or not manifest_path.exists():
        return
    serving = json.loads(manifest_path.read_text()).get("counts", {})
    shrunk = [
        f"{name} {counts[name]:,} < half of {serving[name]:,}"
        for name in GUARDED_COUNTS
        if name in serving and counts[name] < SHRINK_LIMIT * serving[name]
    ]
    if shrunk:
        raise ShrinkingRunError(
            f"this run has {', '.join(shrunk)} in the export serving now "
            f"({settings.current_export_dir.resolve().name}); exports/current was not moved "
            f"(this run's export stays in {run_dir} for inspection). "
            "If the smaller input is intended, run again with --allow-shrink"
        )


def switch_current(settings: BatchSettings, run_dir: Path) -> None:
    """Point exports/current at run_dir with one rename, which is atomic on POSIX file systems."""
    switch_link(settings.current_export_dir, run_dir)


def prune_runs(settings: BatchSettings) -> list[Path]:
    runs = sorted((settings.exports_dir / "runs").iterdir())
    current = settings.current_export_dir.resolve()
    removed = [run for run in runs[: -settings.keep_export_runs] if run.resolve() != current]
    for run in removed:
        shutil.rmtree(run)
    return removed


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    def latest(table: str) -> tuple[dict, DataFrame]:
        last = DeltaTable.forPath(spark, str(settings.table_path(table))).history(1).first()
        version = {"version": int(last["version"]), "run_id": last["userMetadata"]}
        return version, read_table(spark, settings, table, version["version"])

    names = (Table.SAMPLES, Table.NEGATIVE_SAMPLES, Table.FEATURE_METADATA, *Export.AS_IS)
    # Each lookup reads a Delta log: a few hundred milliseconds of mostly waiting, so side by side.
    with ThreadPoolExecutor(max_workers=PARALLEL_WRITES, thread_name_prefix="delta-log") as pool:
        found = dict(zip(names, pool.map(latest, names), strict=True))
    versions = {table: version for table, (version, _) in found.items()}
    tables = {table: df for table, (_, df) in found.items()}
    producing_runs = {v["run_id"] for v in versions.values()}
    if len(producing_runs) > 1:
        log.warning("exporting tables written by different runs: %s", sorted(producing_runs, key=str))

    run_dir = settings.exports_dir / "runs" / run_id
    if run_dir.exists():
        raise FileExistsError(f"{run_dir} exists: run ids must be unique")
    run_dir.mkdir(parents=True)
    def export(name: str, df: DataFrame) -> Written:
        path = run_dir / name
        df.write.mode("errorifexists").parquet(str(path))
        # Row counts from the Parquet footers: no second pass over the data.
        rows = sum(pq.ParquetFile(part).metadata.num_rows for part in pq.ParquetDataset(str(path)).files)
        log.info("exported %s: %d rows -> %s", name, rows, path)
        return Written(name, str(path), -1, rows)

    # Independent datasets, written as concurrent Spark jobs (each mostly waits on file commits).
    with ThreadPoolExecutor(max_workers=PARALLEL_WRITES, thread_name_prefix="export") as pool:
        futures = [pool.submit(export, name, df) for name, df in exports_of(tables).items()]
        written = [future.result() for future in futures]

    metadata = json.loads(tables[Table.FEATURE_METADATA].first()["metadata"])
    (run_dir / Export.METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    rows = {w.table: w.rows for w in written}
    counts = {"ratings": metadata["counts"]["ratings"],
              "samples": rows[Export.SAMPLES_TRAIN] + rows[Export.SAMPLES_TEST]}
    manifest = {
        "run_id": run_id,
        "delta_dir": str(settings.delta_dir.resolve()),
        "delta_versions": versions,
        "exports": {name: {"rows": n} for name, n in rows.items()},
        "counts": counts,
        "spec_version": metadata["spec_version"],
    }
    (run_dir / Export.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    guard_against_shrinking(settings, counts, run_dir)
    switch_current(settings, run_dir)
    log.info("exports/current -> %s", run_dir)
    for removed in prune_runs(settings):
        log.info("removed old export %s", removed)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    job_main("export", run, argv, __doc__)


if __name__ == "__main__":
    main()
