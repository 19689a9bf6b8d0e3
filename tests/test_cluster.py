"""The batch on a real Spark standalone cluster (a master and a worker on 127.0.0.1) equals local[*].

The master and worker are the installed pyspark's own (``bin/spark-class ...Master`` / ``...Worker``),
started and stopped here; the batch goes in through ``spark-submit --master spark://127.0.0.1:<port>``,
exactly as on a cluster, with the output on a path the driver and the executor share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from conftest import REPO_ROOT
from processes import free_port, stop, wait_for

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import read_table

pytestmark = pytest.mark.slow

SPARK_HOME = Path(pyspark.__file__).resolve().parent
CONF = REPO_ROOT / "spark_jobs" / "delta.conf"
# Columns that differ between two runs by design: when the row was written.
RUN_DEPENDENT = ("created_timestamp",)


def alive_workers(webui_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json", timeout=2) as response:
        return int(json.load(response)["aliveworkers"])


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("spark-cluster")
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOG_DIR": str(logs)}
    master_port, master_ui, worker_ui = free_port(), free_port(), free_port()
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    url = f"spark://127.0.0.1:{master_port}"
    processes = []

    def start(name: str, *args: str) -> None:
        log = (logs / f"{name}.log").open("w")
        processes.append(subprocess.Popen([spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT))

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
              "--port", str(master_port), "--webui-port", str(master_ui))
        wait_for(lambda: alive_workers(master_ui) >= 0, "the Spark master")
        start("worker", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
              "--memory", "2g", "--webui-port", str(worker_ui), "--work-dir", str(logs / "work"), url)
        wait_for(lambda: alive_workers(master_ui) == 1, "the Spark worker's registration")
        yield url
    finally:
        stop(processes)


def comparable(spark, settings: BatchSettings, table: str):
    df = read_table(spark, settings, table)
    return df.drop(*(c for c in RUN_DEPENDENT if c in df.columns))


def without_float_noise(metadata: dict) -> dict:
    """The metadata with the train means and stds taken out (compared separately, approximately)."""
    features = [{k: v for k, v in f.items() if k not in ("mean", "std")} for f in metadata["features"]]
    return {**metadata, "run_id": None, "features": features}


def test_batch_on_standalone_cluster_equals_local_run(spark, standalone_cluster, tiny_batch, tmp_path):
    local_settings = tiny_batch  # the shared local[*] run of the same data
    cluster_settings = BatchSettings(data_dir=tiny_batch.data_dir, output_dir=tmp_path / "cluster")

    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", standalone_cluster,
         "--properties-file", str(CONF), "--driver-memory", "1g", "--executor-memory", "1g",
         "--total-executor-cores", "2", "spark_jobs/run_batch.py",
         "--data", str(cluster_settings.data_dir), "--output", str(cluster_settings.output_dir),
         "--run-id", "on-cluster"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"on {standalone_cluster}" in result.stdout  # the session really ran on the cluster's master

    for table in Table.ALL:
        on_cluster, local = comparable(spark, cluster_settings, table), comparable(spark, local_settings, table)
        if table == Table.FEATURE_METADATA:
            cluster_meta, local_meta = (json.loads(df.first()["metadata"]) for df in (on_cluster, local))
            assert without_float_noise(cluster_meta) == without_float_noise(local_meta)
            for ours, theirs in zip(cluster_meta["features"], local_meta["features"], strict=True):
                if "mean" in theirs:
                    assert (ours["mean"], ours["std"]) == pytest.approx((theirs["mean"], theirs["std"]), rel=1e-9)
        elif table == Table.DATASET:
            assert on_cluster.collect() == local.collect()
        else:
            # Standardised values may differ in the last float bit: sums run in another partition order.
            assert_approx_df_equality(on_cluster, local, 1e-5, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(comparable(spark, cluster_settings, Table.IMPRESSIONS),
                       comparable(spark, local_settings, Table.IMPRESSIONS), ignore_row_order=True)
