"""The jobs run as files under spark-submit, with the Delta settings from spark_jobs/delta.conf."""

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.lake import read_table
from spark_jobs.session import DRIVER_JAVA_OPTIONS, delta_maven_coordinate
from spark_jobs.synthetic import generate, write_ml1m

CONF = REPO_ROOT / "spark_jobs" / "delta.conf"


def test_properties_file_matches_installed_delta():
    properties = dict(line.split(None, 1) for line in CONF.read_text().splitlines()
                      if line.strip() and not line.startswith("#"))
    assert properties["spark.jars.packages"].strip() == delta_maven_coordinate()
    assert delta_maven_coordinate().endswith(version("delta-spark"))
    assert properties["spark.driver.extraJavaOptions"].strip() == DRIVER_JAVA_OPTIONS


@pytest.mark.slow
def test_ingest_runs_under_spark_submit(spark, tmp_path):
    data = tmp_path / "data"
    synthetic = generate(500, n_users=20, n_items=50, seed=1)
    write_ml1m(synthetic, data)
    output = tmp_path / "out"
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    result = subprocess.run(
        [str(spark_submit), "--master", "local[1]", "--properties-file", str(CONF),
         "spark_jobs/ingest.py", "--data", str(data), "--output", str(output)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "ingest finished" in result.stdout
    settings = BatchSettings(output_dir=output)
    assert read_table(spark, settings, Table.RATINGS).count() == len(synthetic.ratings)
