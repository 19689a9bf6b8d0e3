"""The Spark session the jobs start from Python."""

import subprocess
import sys
import textwrap

from conftest import REPO_ROOT

# A session with a small heap asked for more than it has: what the driver JVM does after that.
OUT_OF_HEAP = textwrap.dedent("""
    import sys
    import time
    from contracts.settings import SparkSettings
    from spark_jobs.session import spark_session

    spark = spark_session(SparkSettings(output_dir=sys.argv[1], spark_master="local[1]", spark_driver_memory="512m"),
                          "out-of-heap")
    jvm, process = spark.sparkContext._jvm, spark.sparkContext._gateway.proc
    try:
        jvm.java.lang.reflect.Array.newInstance(jvm.java.lang.Byte.TYPE, 2_000_000_000)
    except Exception as error:  # the JVM's OutOfMemoryError, or the connection it closed
        print(type(error).__name__)
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    print("driver JVM ended" if process.poll() is not None else "driver JVM running")
""")


def test_a_driver_jvm_out_of_heap_ends_rather_than_running_on(tmp_path):
    result = subprocess.run([sys.executable, "-c", OUT_OF_HEAP, str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=180)
    assert "driver JVM ended" in result.stdout, result.stdout + result.stderr[-3000:]
