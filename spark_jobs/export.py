"""Export: publish one Delta version of each table for plain Parquet readers (Feast, the trainers, the
loaders, the service), by reference: nothing is copied.

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/export.py --output DIR

A Delta version is a set of immutable Parquet files named by the transaction log. Each run makes a new
folder ``exports/runs/<run id>/`` holding, per export, hard links to exactly the data files of the
table's latest version (for ``samples_train`` / ``samples_test``, those of the ``split`` partition), plus
``feature_metadata.json`` and ``manifest.json`` (run id, spec version, per table the Delta version and
the files linked, the row counts). Only then is the link ``exports/current`` switched to it, in one
atomic rename: readers see either the previous complete run or the new one, never a mix, and a failed
or shrunken run leaves the previous one in place. A hard link keeps its file's bytes for as long as the
run folder exists, so a ``VACUUM`` of the tables never removes what a kept run (``keep_export_runs``,
``current`` among them) names. A table whose protocol needs more than plain Parquet files to read
(deletion vectors, column mapping: Delta reader version > 1) is copied instead, and so is an empty one.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from contracts.atomic import switch_link
from contracts.errors import PublishCheckError
from contracts.settings import BatchSettings
from contracts.tables import Export, Table
from spark_jobs.lake import Written, read_table
from spark_jobs.runtime import job_main
from spark_jobs.split import Split

log = logging.getLogger(__name__)

# Each export: its table, and the partition whose files it takes (None: the whole table).
EXPORTED_FROM: dict[str, tuple[str, str | None]] = {
    Export.SAMPLES_TRAIN: (Table.SAMPLES, f"split={Split.TRAIN}"),
    Export.SAMPLES_TEST: (Table.SAMPLES, f"split={Split.TEST}"),
    **{name: (name, None) for name in Export.AS_IS},
}


@dataclass(frozen=True)
class TableVersion:
    table: str
    version: int
    run_id: str | None  # the run that wrote it (Delta's userMetadata)
    files: tuple[Path, ...]  # the data files of this version, absolute
    plain_parquet: bool  # readable from its files alone (Delta reader version 1)


def table_version(settings: BatchSettings, table: str) -> TableVersion:
    """The latest version of ``table``: its number, who wrote it and its data files, read from its Delta log
    by the ``deltalake`` package (milliseconds; through Spark each look-up was a few jobs, ~0.5 s)."""
    delta = DeltaTable(str(settings.table_path(table)))
    last = delta.history(1)[0]
    files = tuple(sorted(Path(unquote(urlparse(uri).path)) for uri in delta.file_uris()))
    return TableVersion(table, delta.version(), last.get("userMetadata"), files,
                        delta.protocol().min_reader_version <= 1)


def events_through(settings: BatchSettings) -> int:
    """The last event-log sequence the run's impressions hold (0: no posted ratings): the service applies the
    records after it on top of this run (``online/live_users.py``)."""
    path = settings.table_path(Table.IMPRESSIONS)
    dataset = DeltaTable(str(path)).to_pyarrow_dataset()
    if "sequence" not in dataset.schema.names:
        return 0
    sequences = dataset.to_table(columns=["sequence"], filter=pc.field("split") == Split.EVENT)["sequence"]
    latest = pc.max(sequences).as_py() if len(sequences) else None
    return int(latest or 0)


def link_files(files: Sequence[Path], folder: Path) -> None:
    """Hard links to ``files`` in ``folder`` (a copy where the file system cannot link them)."""
    folder.mkdir(parents=True)
    for source in files:
        target = folder / source.name  # Delta's file names are unique (a UUID each)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def export_by_reference(spark: SparkSession, settings: BatchSettings, name: str, version: TableVersion,
                        partition: str | None, folder: Path) -> dict:
    files = [f for f in version.files if partition is None or f.parent.name == partition]
    if version.plain_parquet and files:
        link_files(files, folder)
        how = "linked"
    else:  # copied: the table needs Delta's protocol to read, or it has no data file to link
        df = read_table(spark, settings, version.table, version.version)
        if partition is not None:
            column, value = partition.split("=", 1)
            df = df.filter(F.col(column) == value).drop(column)
        df.write.mode("errorifexists").parquet(str(folder))
        how = "copied"
    rows = sum(pq.ParquetFile(part).metadata.num_rows for part in pq.ParquetDataset(str(folder)).files)
    log.info("exported %s (%s, Delta version %d of %s): %d rows -> %s", name, how, version.version,
             version.table, rows, folder)
    return {"table": version.table, "delta_version": version.version, "partition": partition, "rows": rows,
            "how": how, "files": [os.path.relpath(f, settings.delta_dir.resolve()) for f in files]
            if how == "linked" else []}


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
    tables = sorted({table for table, _ in EXPORTED_FROM.values()} | {Table.FEATURE_METADATA})
    versions = {table: table_version(settings, table) for table in tables}
    producing_runs = {v.run_id for v in versions.values()}
    if len(producing_runs) > 1:
        log.warning("exporting tables written by different runs: %s", sorted(producing_runs, key=str))

    run_dir = settings.exports_dir / "runs" / run_id
    if run_dir.exists():
        raise FileExistsError(f"{run_dir} exists: run ids must be unique")
    run_dir.mkdir(parents=True)
    exported = {name: export_by_reference(spark, settings, name, versions[table], partition, run_dir / name)
                for name, (table, partition) in EXPORTED_FROM.items()}
    written = [Written(name, str(run_dir / name), -1, entry["rows"]) for name, entry in exported.items()]

    metadata_version = versions[Table.FEATURE_METADATA]
    metadata_rows = DeltaTable(str(settings.table_path(Table.FEATURE_METADATA)),
                               version=metadata_version.version).to_pyarrow_table(columns=["metadata"])
    metadata = json.loads(metadata_rows.column("metadata")[0].as_py())
    (run_dir / Export.METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    counts = {"ratings": metadata["counts"]["ratings"],
              "samples": exported[Export.SAMPLES_TRAIN]["rows"] + exported[Export.SAMPLES_TEST]["rows"]}
    manifest = {
        "run_id": run_id,
        "delta_dir": str(settings.delta_dir.resolve()),
        "delta_versions": {t: {"version": v.version, "run_id": v.run_id} for t, v in versions.items()},
        "exports": exported,
        "counts": counts,
        "spec_version": metadata["spec_version"],
        # What the readers apply the batch's rules with (the service's posted ratings: the recent list's length).
        "batch_settings": {name: getattr(settings, name) for name in BatchSettings.CONTENT_FIELDS},
        "events_through": events_through(settings),
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
