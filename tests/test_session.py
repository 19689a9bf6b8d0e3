"""The Spark session the jobs start from Python."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from spark_jobs.session import (
    QUICK_JIT_MAX_DATASET_BYTES,
    class_archive,
    delta_maven_coordinate,
    jar_listing,
    quick_jit,
    remembered_jars,
)

# A session with a small heap asked for more than it has: what the driver JVM does after that.
OUT_OF_HEAP = textwrap.dedent("""
    import sys
    import time
    from contracts.settings import SparkSettings
    from spark_jobs.session import spark_session

    spark = spark_session(SparkSettings(output_dir=sys.argv[1], spark_master="local[1]", spark_driver_memory="512m",
                                        spark_jit="quick", spark_class_archive=False), "out-of-heap")
    jvm, process = spark.sparkContext._jvm, spark.sparkContext._gateway.proc
    print("JVM options:", " ".join(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()))
    try:
        jvm.java.lang.reflect.Array.newInstance(jvm.java.lang.Byte.TYPE, 2_000_000_000)
    except Exception as error:  # the JVM's OutOfMemoryError, or the connection it closed
        print(type(error).__name__)
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    print("driver JVM ended" if process.poll() is not None else "driver JVM running")
""")


def test_a_driver_jvm_out_of_heap_ends_rather_than_running_on_and_the_quick_jit_compiles_with_c1_alone(tmp_path):
    result = subprocess.run([sys.executable, "-c", OUT_OF_HEAP, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=180)
    assert "driver JVM ended" in result.stdout, result.stdout + result.stderr[-3000:]
    options = next(line for line in result.stdout.splitlines() if line.startswith("JVM options:")).split()
    assert {"-XX:+ExitOnOutOfMemoryError", "-XX:TieredStopAtLevel=1", "-XX:ReservedCodeCacheSize=240m"} <= set(options)


@pytest.mark.parametrize(("jit", "dataset_mb", "quick"), [
    ("auto", 2, True), ("auto", 40, False), ("auto", None, False), ("auto", 0, False),
    ("quick", 40, True), ("quick", None, True), ("full", 2, False),
])
def test_the_quick_jit_is_for_small_datasets_or_asked_for(tmp_path, jit, dataset_mb, quick):
    data_dir = None
    if dataset_mb is not None:
        data_dir = tmp_path / "data"
        (data_dir / "nested").mkdir(parents=True)
        with (data_dir / "ratings.dat").open("wb") as ratings:
            ratings.truncate(dataset_mb << 20)
        with (data_dir / "nested" / "large.bin").open("wb") as nested:  # subdirectories do not count
            nested.truncate(QUICK_JIT_MAX_DATASET_BYTES * 2)
    assert quick_jit(jit, data_dir) is quick


# A session started from Python with a jar cache of its own: which way it took the Delta jars, and that Delta works.
DELTA_JARS = textwrap.dedent("""
    import sys
    from contracts.settings import SparkSettings
    from spark_jobs.session import spark_session

    spark = spark_session(SparkSettings(output_dir=sys.argv[1], spark_master="local[1]", spark_cache=sys.argv[2],
                                        spark_class_archive=False, spark_jit="quick"), "delta-jars")
    conf = spark.sparkContext.getConf()
    spark.range(3).write.format("delta").mode("overwrite").save(sys.argv[3])
    print("packages:", conf.get("spark.jars.packages", ""))
    print("jars:", conf.get("spark.jars", ""))
    print("rows:", spark.read.format("delta").load(sys.argv[3]).count())
""")


def run_driver(script: str, *args) -> dict[str, str]:
    """Runs a driver script in a process of its own; what it printed as ``name: value`` lines."""
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


# A driver whose execution pages are off its heap: where its memory manager puts them, and a sort that needs pages.
OFF_HEAP = textwrap.dedent("""
    import sys
    from pyspark.sql import functions as F
    from contracts.settings import SparkSettings
    from spark_jobs.session import spark_session

    settings = SparkSettings(output_dir=sys.argv[1], spark_master="local[1]", spark_driver_memory="512m",
                             spark_off_heap=sys.argv[2] or None, spark_jit="quick", spark_class_archive=False)
    spark = spark_session(settings, "off-heap")
    manager = spark.sparkContext._jvm.org.apache.spark.SparkEnv.get().memoryManager()
    print("pages:", manager.tungstenMemoryMode().toString())
    print("off-heap execution bytes:", manager.maxOffHeapStorageMemory())
    rows = spark.range(2_000_000).select(F.rand(7).alias("key")).orderBy("key").agg(F.count(F.lit(1))).first()[0]
    print("sorted rows:", rows)
""")


@pytest.mark.parametrize("off_heap", ["64m", None])
def test_the_execution_pages_go_off_the_heap_when_asked(tmp_path, off_heap):
    driver = run_driver(OFF_HEAP, tmp_path, off_heap or "")
    assert driver["sorted rows"] == "2000000"
    assert driver["pages"] == ("OFF_HEAP" if off_heap else "ON_HEAP")
    assert (int(driver["off-heap execution bytes"]) > 0) == bool(off_heap)


def test_the_delta_jars_are_resolved_once_then_taken_from_where_ivy_put_them(tmp_path):
    cache = tmp_path / "jar-cache"
    first = run_driver(DELTA_JARS, tmp_path, cache, tmp_path / "table")
    assert first["packages"] == delta_maven_coordinate() and first["rows"] == "3"
    noted = remembered_jars(cache)
    assert noted and any("delta-spark" in Path(jar).name for jar in noted)
    second = run_driver(DELTA_JARS, tmp_path, cache, tmp_path / "table")
    assert second["packages"] == "" and second["jars"].split(",") == noted and second["rows"] == "3"


def test_a_noted_jar_that_is_gone_means_resolving_again(tmp_path):
    cache, jar = tmp_path / "cache", tmp_path / "delta.jar"
    assert remembered_jars(cache) is None
    jar.write_bytes(b"jar")
    jar_listing(cache).parent.mkdir()
    jar_listing(cache).write_text(f"{jar}\n")
    assert remembered_jars(cache) == [str(jar)]
    jar.unlink()
    assert remembered_jars(cache) is None


# A driver with a cache of its own: how much of the class-data archive its JVM maps, and what the cache holds after.
CLASS_ARCHIVE = textwrap.dedent("""
    import re
    import subprocess
    import sys
    from pathlib import Path
    from contracts.settings import SparkSettings
    from spark_jobs.session import java_executable, spark_session, stop_session

    cache = Path(sys.argv[2])
    spark = spark_session(SparkSettings(output_dir=sys.argv[1], spark_master="local[1]", spark_cache=cache,
                                        spark_jit="quick"), "class-archive")
    spark.range(5).count()
    info = subprocess.run([str(java_executable().parent / "jcmd"), str(spark.sparkContext._gateway.proc.pid),
                           "VM.info"], capture_output=True, text=True).stdout
    print("mapped:", re.search(r"CDS archive\\(s\\) mapped at: .*size (\\d+)", info).group(1))
    stop_session(spark)
    print("archives:", " ".join(sorted(p.name for p in cache.iterdir() if ".jsa" in p.name)))
""")


def test_a_driver_without_a_class_archive_leaves_one_that_the_next_driver_maps(tmp_path):
    cache = tmp_path / "cache"
    first = run_driver(CLASS_ARCHIVE, tmp_path, cache)
    archive = class_archive(cache)
    assert archive is not None and first["archives"] == archive.name  # in place, no dump file left beside it
    second = run_driver(CLASS_ARCHIVE, tmp_path, cache)
    assert second["archives"] == archive.name
    # the JDK's own archive alone, then that and the driver's classes (~12 MB against ~150 MB on JDK 17)
    assert int(second["mapped"]) > 4 * int(first["mapped"])
