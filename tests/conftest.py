"""One Spark session (with Delta) for the whole test run, and small-data helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from contracts.settings import BatchSettings, SparkSettings
from spark_jobs.session import spark_session, stop_session

REPO_ROOT = Path(__file__).resolve().parent.parent
ML_100K = (REPO_ROOT.parent / "shared" / "data" / "ml-100k").resolve()


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    settings = SparkSettings(
        output_dir=tmp_path_factory.mktemp("spark-output"),
        spark_master="local[2]",
        shuffle_partitions=2,
        spark_driver_memory="2g",
    )
    session = spark_session(settings, "tests")
    yield session
    stop_session(session)


@pytest.fixture
def settings(tmp_path: Path) -> BatchSettings:
    return BatchSettings(data_dir=tmp_path / "data", output_dir=tmp_path / "output", shuffle_partitions=2)


def write_lines(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


@pytest.fixture(scope="session")
def tiny_batch(spark, tmp_path_factory) -> BatchSettings:
    """One batch run on a small generated ML-1M-format dataset, shared by the stages that read its output."""
    from spark_jobs import run_batch
    from spark_jobs.synthetic import generate, write_ml1m

    root = tmp_path_factory.mktemp("tiny-batch")
    write_ml1m(generate(2_500, n_users=30, n_items=90, seed=8), root / "data")
    settings = BatchSettings(data_dir=root / "data", output_dir=root / "output", shuffle_partitions=2)
    run_batch.run(spark, settings, "tiny")
    return settings


@pytest.fixture(scope="session")
def trained_tiny(tiny_batch) -> BatchSettings:
    """The tiny batch with both models trained (2 epochs), once per test session."""
    from models import train as train_models

    train_models.main(["--output", str(tiny_batch.output_dir), "--max-epochs", "2", "--no-delta"])
    return tiny_batch


def private_feast(output_dir: Path, folder: Path) -> Path:
    """Feast applied and materialised from ``output_dir``'s batch into a registry and SQLite store of its own
    under ``folder`` (a test that writes to it leaves the other tests' stores alone); its yaml."""
    from contracts.settings import FeastSettings
    from feature_repo import publish

    yaml = folder / "feature_store.yaml"
    yaml.write_text(publish.SQLITE_YAML.read_text()
                    .replace("registry: data/registry.db", f"registry: {folder / 'registry.db'}")
                    .replace("path: data/online_store.db", f"path: {folder / 'online_store.db'}"))
    publish.publish(FeastSettings(output_dir=output_dir, feast_yaml=yaml))
    return yaml


@pytest.fixture(scope="session")
def ml100k_batch(spark, tmp_path_factory) -> BatchSettings:
    """The batch on the pristine ML-100K release (skipped where ../shared/data/ml-100k is absent)."""
    from spark_jobs import run_batch

    if not ML_100K.is_dir():
        pytest.skip("needs ../shared/data/ml-100k")
    settings = BatchSettings(data_dir=ML_100K, output_dir=tmp_path_factory.mktemp("ml-100k") / "out",
                        shuffle_partitions=4)
    run_batch.run(spark, settings, "ml-100k")
    return settings


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[str]:
    """A real redis-server (Debian's package) on a free 127.0.0.1 port, without persistence."""
    import shutil
    import subprocess

    import redis
    from processes import free_port, stop, wait_for

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run .ci/setup (it installs Debian's redis-server)")
    port = free_port()
    log = (tmp_path_factory.mktemp("redis") / "redis.log").open("w")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: redis.Redis(host="127.0.0.1", port=port).ping(), "redis-server", process=process)
        yield f"127.0.0.1:{port}"
    finally:
        stop([process])
