"""The Spark session the jobs start from Python."""

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO_ROOT

from spark_jobs.session import QUICK_JIT_MAX_DATASET_BYTES, quick_jit

# A session with a small heap asked for more than it has: what the driver JVM does after that.
OUT_OF_HEAP = textwrap.dedent("""
    import sys
    import time
    from contracts.settings import SparkSettings
    from spark_jobs.session import spark_session

    spark = spark_session(SparkSettings(output_dir=sys.argv[1], spark_master="local[1]", spark_driver_memory="512m",
                                        spark_jit="quick"), "out-of-heap")
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
