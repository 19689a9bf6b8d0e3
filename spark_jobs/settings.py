"""One typed settings object for every stage: defaults < environment variables < CLI flags.

Environment variables are the field names upper-cased with the prefix ``RECSYS_`` (for example
``RECSYS_OUTPUT_DIR``); the dataset directory also answers to ``MOVIELENS_DIR``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=Path("../shared/data/ml-100k"),
        validation_alias=AliasChoices("data_dir", "MOVIELENS_DIR", "RECSYS_DATA_DIR"),
        description="MovieLens dataset directory (ML-100K, ML-1M, ML-10M or CSV layout)",
    )
    output_dir: Path = Field(default=Path("output"), description="root of the Delta tables and exports")
    spark_master: str = Field(
        default="local[*]", description="Spark master when not launched by spark-submit"
    )
    spark_driver_memory: str = Field(default="4g", description="driver heap when launched from Python")
    shuffle_partitions: int = Field(default=8, ge=1, description="spark.sql.shuffle.partitions")
    delta_snapshot_partitions: int = Field(
        default=2, ge=1, description="partitions Delta replays its log into (raise it on a cluster)"
    )
    on_bad_lines: Literal["error", "skip"] = Field(
        default="error", description="stop on the first bad input line, or skip and count them"
    )
    keep_export_runs: int = Field(default=3, ge=1, description="export versions kept on disk")
    negatives_per_impression: int = Field(
        default=4, ge=0, description="unrated items sampled per train impression for the ranker (label 0)"
    )
    neighbours_per_item: int = Field(default=50, ge=1, description="co-occurrence neighbours kept per item")
    cooccurrence_history: int = Field(
        default=200, ge=2, description="latest offline items per user that count towards co-occurrence"
    )
    recent_items: int = Field(default=50, ge=1, description="latest offline items kept per user for recall")
    serve_host: str = Field(default="127.0.0.1", description="address the recommendation service binds")
    serve_port: int = Field(default=8000, ge=1, le=65535, description="port of the recommendation service")
    serve_workers: int = Field(default=2, ge=1, description="gunicorn worker processes")
    serve_access_log: bool = Field(
        default=False,
        description="gunicorn's access log, a line per request on stdout (off by default, as in gunicorn: "
        "/metrics counts requests by route and status, and the line costs ~4%% of a request's CPU)",
    )
    recall_size: int = Field(default=200, ge=1, le=2000, description="candidates recalled per request (default)")
    default_k: int = Field(default=50, ge=1, description="recommendations returned per request (default)")
    profile: Literal["embedded", "services"] = Field(
        default="embedded",
        description="where the service reads: in-process stores, or Redis, Elasticsearch, Feast's server, Triton",
    )
    redis_host: str = Field(default="127.0.0.1", description="Redis host (recall data; Feast's online store)")
    redis_port: int = Field(default=6379, ge=1, le=65535, description="Redis port")
    redis_prefix: str = Field(default="recsys", description="key prefix of the loaded recall data in Redis")
    elasticsearch_url: str = Field(default="http://127.0.0.1:9200", description="Elasticsearch base URL")
    elasticsearch_alias: str = Field(default="items", description="the alias the item index is served under")
    feast_server_url: str = Field(default="http://127.0.0.1:6566", description="Feast feature server base URL")
    feast_access: Literal["online_store", "server"] = Field(
        default="online_store",
        description="services profile: read user features from Feast's Redis online store in-process, or from "
                    "Feast's feature server over HTTP",
    )
    triton_url: str = Field(default="127.0.0.1:8001", description="Triton gRPC host:port")
    triton_model: str = Field(default="ml_rec", description="the ranking model's name in Triton")
    services_dir: Path = Field(
        default=Path(".services"), description="local services (no Docker): their data, logs, Triton's models"
    )
    services_cache: Path = Field(
        default=Path(".services/cache"), description="downloaded and unpacked servers, shared by every services_dir"
    )
    allow_shrink: bool = Field(
        default=False,
        description="publish a run whose ratings or samples are fewer than half of the current export's",
    )

    @property
    def delta_dir(self) -> Path:
        return self.output_dir / "delta"

    @property
    def exports_dir(self) -> Path:
        return self.output_dir / "exports"

    @property
    def current_export_dir(self) -> Path:
        """The last good batch's exports: a link switched atomically at the end of each run."""
        return self.exports_dir / "current"

    @property
    def models_dir(self) -> Path:
        """Trained models, one versioned folder per training run under <model>/, with a current link."""
        return self.output_dir / "models"

    @property
    def redis_address(self) -> str:
        return f"{self.redis_host}:{self.redis_port}"

    def table_path(self, table: str) -> Path:
        return self.delta_dir / table


# CLI flag -> settings field. Flags only override what they name.
_FLAGS: dict[str, str] = {
    "--data": "data_dir",
    "--output": "output_dir",
    "--master": "spark_master",
    "--driver-memory": "spark_driver_memory",
    "--shuffle-partitions": "shuffle_partitions",
    "--delta-snapshot-partitions": "delta_snapshot_partitions",
    "--on-bad-lines": "on_bad_lines",
    "--keep-export-runs": "keep_export_runs",
    "--negatives-per-impression": "negatives_per_impression",
    "--neighbours-per-item": "neighbours_per_item",
    "--cooccurrence-history": "cooccurrence_history",
    "--recent-items": "recent_items",
    "--host": "serve_host",
    "--port": "serve_port",
    "--workers": "serve_workers",
    "--access-log": "serve_access_log",
    "--recall-size": "recall_size",
    "--k": "default_k",
    "--allow-shrink": "allow_shrink",
    "--profile": "profile",
    "--redis-host": "redis_host",
    "--redis-port": "redis_port",
    "--redis-prefix": "redis_prefix",
    "--elasticsearch-url": "elasticsearch_url",
    "--elasticsearch-alias": "elasticsearch_alias",
    "--feast-server-url": "feast_server_url",
    "--feast-access": "feast_access",
    "--triton-url": "triton_url",
    "--triton-model": "triton_model",
    "--services-dir": "services_dir",
    "--services-cache": "services_cache",
}


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, field_name in _FLAGS.items():
        field = Settings.model_fields[field_name]
        if field.annotation is bool:
            parser.add_argument(flag, dest=field_name, action="store_const", const=True, default=None,
                                help=field.description)
            continue
        choices = {"on_bad_lines": ("error", "skip"), "profile": ("embedded", "services"),
                   "feast_access": ("online_store", "server")}.get(field_name)
        parser.add_argument(flag, dest=field_name, default=None, choices=choices, help=field.description)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in _FLAGS.values() if getattr(args, name, None) is not None}
    return Settings(**overrides)


def parse_settings(argv: Sequence[str] | None = None, description: str = "") -> Settings:
    parser = argparse.ArgumentParser(description=description)
    add_settings_arguments(parser)
    return settings_from_args(parser.parse_args(argv))
