"""Typed settings, one class per reader: defaults < environment variables < CLI flags.

Environment variables are the field names upper-cased with the prefix ``RECSYS_`` (for example
``RECSYS_OUTPUT_DIR``); the dataset directory also answers to ``MOVIELENS_DIR``. Each field names its
flag; a command builds its parser from the class it reads, so ``--help`` lists exactly the flags it uses:

    LakeSettings                 where the outputs live: every command
    ├── SparkSettings            a Spark session
    │   ├── BatchSettings        python -m spark_jobs.run_batch (and each job)
    │   └── TrainingSettings     python -m models.train
    ├── RecallSettings           the request's defaults: the service and both evaluations
    ├── RedisSettings            where Redis is
    │   ├── ServicesSettings     the services profile's servers: the Elasticsearch loader
    │   │   └── RedisLoaderSettings  python -m loaders.redis_loader (with RecallSettings)
    │   └── FeastSettings        python -m feature_repo.publish / parity (with FeastRepoSettings)
    ├── FeastRepoSettings        which Feast configuration: the service, local_services
    LocalServicesSettings        python -m online.local_services (services, Feast repo)
    ServingSettings              python -m online.serve (recall, local services)
    EndToEndSettings             python -m online.end_to_end (everything above)

A settings object is a value: commands pass it on (``narrowed`` to what the callee reads, ``as_flags`` to
a child command); nothing is handed over through the process environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Self, TypeVar, Union, get_args, get_origin

from pydantic import AliasChoices, Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="LakeSettings")

OnBadLines = Literal["error", "skip"]
Profile = Literal["embedded", "services"]
FeastAccess = Literal["online_store", "server"]
OnlineStore = Literal["sqlite", "redis"]
OfflineStore = Literal["file", "spark"]
RecallObjective = Literal["bpr", "pointwise"]
RankingVariant = Literal["fm", "fm_dense", "deepfm"]
SelectOn = Literal["validation", "test"]
TrainOnly = Literal["recall", "ranking", "next_item"]
RankerSelection = Literal["candidates", "auc"]
SparkJit = Literal["auto", "full", "quick"]


def setting(default: Any, flag: str, description: str, **constraints: Any) -> Any:
    """A settings field with its CLI flag. A bool that defaults to True takes a ``--no-...`` flag."""
    return Field(default=default, description=description, json_schema_extra={"flag": flag}, **constraints)


def _flag(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    assert isinstance(extra, dict), "every settings field is declared with setting()"
    return str(extra["flag"])


def _choices(field: FieldInfo) -> tuple[str, ...] | None:
    """The values a Literal field (or an optional one) allows, for argparse's ``choices``."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, UnionType):
        annotation = next((a for a in get_args(annotation) if a is not type(None)), None)
    if get_origin(annotation) is Literal:
        return tuple(str(value) for value in get_args(annotation))
    return None


class LakeSettings(BaseSettings):
    """Where the outputs live: the Delta tables, the exports of published runs and the models."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="forbid", frozen=True)

    output_dir: Path = setting(Path("output"), "--output", "root of the Delta tables, exports and models")
    event_log_dir: Path | None = setting(
        None, "--event-log", "folder of the ratings posted to the service, append-only segment files that the "
        "batch reads too (default <output>/events)")

    @property
    def events_dir(self) -> Path:
        """The embedded profile's event log (``contracts/event_log.py``): written by the service, read by the
        batch's events step."""
        return self.event_log_dir or self.output_dir / "events"

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

    def table_path(self, table: str) -> Path:
        return self.delta_dir / table

    @property
    def scratch_dir(self) -> Path:
        return self.output_dir / "scratch"

    def scratch_path(self, name: str, run_id: str) -> Path:
        """Files one step of one run writes and reads back itself (never a declared table, never read by another
        stage), removed once read."""
        return self.scratch_dir / f"{name}-{run_id}"

    # --- the command line -------------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """One flag per field; a flag left out keeps the environment's or the default value."""
        for name, field in cls.model_fields.items():
            flag = _flag(field)
            if field.annotation is bool:
                parser.add_argument(flag, dest=name, action="store_const", const=not field.default, default=None,
                                    help=field.description)
            else:
                parser.add_argument(flag, dest=name, default=None, choices=_choices(field), help=field.description)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        overrides = {name: getattr(args, name) for name in cls.model_fields if getattr(args, name, None) is not None}
        return cls(**overrides)

    @classmethod
    def parse(cls, argv: Sequence[str] | None = None, description: str = "") -> Self:
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        cls.add_arguments(parser)
        return cls.from_args(parser.parse_args(argv))

    def narrowed(self, to: type[S]) -> S:
        """These values as the settings of another stage (its fields these settings lack: env or default)."""
        mine = type(self).model_fields
        return to(**{name: getattr(self, name) for name in to.model_fields if name in mine})

    def as_flags(self) -> list[str]:
        """Every value as the flags that give it, for a child command that reads these settings."""
        flags: list[str] = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if field.annotation is bool:
                if value != field.default:
                    flags.append(_flag(field))
            elif value is not None:
                # One argument, flag=value: a value that starts with "-" (a generated token may) is still a value.
                flags.append(f"{_flag(field)}={value}")
        return flags


class SparkSettings(LakeSettings):
    """A Spark session started from Python (under spark-submit its own flags decide instead)."""

    spark_master: str = setting("local[*]", "--master", "Spark master when not launched by spark-submit")
    spark_driver_memory: str = setting("4g", "--driver-memory", "driver heap when launched from Python")
    spark_off_heap: str | None = setting(
        None, "--driver-off-heap", "memory outside the driver's heap for Spark's execution pages (sorts, aggregations, "
        "shuffles) when launched from Python, e.g. 1g (default none: in the heap). The heap then holds only what Spark "
        "does not count (Parquet's buffers, cached blocks): at ML-25M's size --driver-memory 2g with this at 1g, where "
        "a 3 GB heap holding both runs out (see Large datasets)", pattern=r"^[1-9][0-9]*[kmgKMG]$")
    shuffle_partitions: int = setting(8, "--shuffle-partitions", "spark.sql.shuffle.partitions", ge=1)
    delta_snapshot_partitions: int = setting(
        2, "--delta-snapshot-partitions", "partitions Delta replays its log into (raise it on a cluster)", ge=1)
    spark_cache: Path = setting(
        Path.home() / ".cache" / "recsys" / "spark", "--spark-cache",
        "what a driver started from Python keeps for the next: the Delta jars Spark resolved (taken from Ivy's local "
        "copies after that, resolved again if one is gone) and the class-data archive of the driver JVM's classes")
    spark_class_archive: bool = setting(
        True, "--no-spark-class-archive", "start the driver JVM without the class-data-sharing archive of the classes "
        "an earlier driver loaded (~190 MB in --spark-cache, made when a driver that had none ends)")
    spark_jit: SparkJit = setting(
        "auto", "--spark-jit", "the driver JVM's JIT when launched from Python: full (quick compiles, then optimised "
        "ones), quick (quick compiles only: a small input's run spends much of its CPU compiling), auto (quick for a "
        "dataset of under 16 MB)")


class BatchSettings(SparkSettings):
    """The Spark batch: what it reads and the choices that change what it writes."""

    data_dir: Path = Field(
        default=Path("../shared/data/ml-100k"),
        validation_alias=AliasChoices("data_dir", "MOVIELENS_DIR", "RECSYS_DATA_DIR"),
        description="MovieLens dataset directory (ML-100K, ML-1M, ML-10M or CSV layout)",
        json_schema_extra={"flag": "--data"},
    )
    on_bad_lines: OnBadLines = setting("error", "--on-bad-lines",
                                       "stop on the first bad input line, or skip and count them")
    keep_export_runs: int = setting(3, "--keep-export-runs", "export versions kept on disk", ge=1)
    allow_shrink: bool = setting(
        False, "--allow-shrink", "publish a run whose ratings or samples are fewer than half of the current export's")
    neighbours_per_item: int = setting(50, "--neighbours-per-item", "co-occurrence neighbours kept per item", ge=1)
    cooccurrence_history: int = setting(
        200, "--cooccurrence-history", "latest offline items per user that count towards co-occurrence", ge=2)
    recent_items: int = setting(50, "--recent-items", "latest offline items stored per user (user_filter)", ge=1)
    ease_lambda: float = setting(300.0, "--ease-lambda", "EASE's L2 regularisation (item_ease)", gt=0)
    ease_max_items: int = setting(
        10_000, "--ease-max-items", "EASE covers this many most-rated movies (a dense square of them is inverted)",
        ge=2, le=30_000)
    ease_per_item: int = setting(500, "--ease-per-item", "largest EASE weights kept per movie", ge=1)
    ease_per_user: int = setting(200, "--ease-per-user", "length of each user's EASE list (user_ease)", ge=1)
    successor_window: int = setting(10, "--successor-window", "impressions after a movie that count as its "
                                    "successors (item_successors)", ge=1, le=40)
    successors_per_item: int = setting(200, "--successors-per-item", "successors kept per movie", ge=1)
    validation_size: int = setting(10, "--validation-size", "each user's last offline impressions held out for "
                                   "the validation choices (as the hold-out holds the last 10 impressions)", ge=1)
    events_redis: str | None = setting(
        None, "--events-redis", "read the posted ratings from the services profile's Redis stream, given as "
        "host:port/prefix (e.g. 127.0.0.1:6380/recsys: the events Redis), instead of the event log folder")
    validation_min_history: int = setting(
        5, "--validation-min-history", "offline impressions a user needs before the validation ones to have them",
        ge=1)

    # The settings that change what the batch writes (besides the dataset and the feature spec).
    CONTENT_FIELDS: ClassVar[tuple[str, ...]] = (
        "neighbours_per_item", "cooccurrence_history", "recent_items", "on_bad_lines",
        "ease_lambda", "ease_max_items", "ease_per_item", "ease_per_user", "successor_window", "successors_per_item",
        "validation_size", "validation_min_history")


class TrainingSettings(SparkSettings):
    """The trainers: which models, how they are selected, and where the vectors go."""

    exports: Path | None = setting(None, "--exports", "batch exports to train on (default <output>/exports/current)")
    train_only: TrainOnly | None = setting(None, "--only", "train one of the models (default all three)")
    recall_objective: RecallObjective = setting(
        "bpr", "--objective", "recall: BPR on the offline history, selected on validation Recall@200 (default), or "
        "the reference design's pointwise MF on rated rows (its AUC is comparable)")
    ranking_negatives: bool = setting(
        True, "--no-negatives", "train the ranker on rated rows only, without sampled negatives")
    negatives_per_impression: int = setting(
        4, "--negatives-per-impression", "ranker: unrated movies drawn uniformly per train impression (label 0)", ge=0)
    ranking_variant: RankingVariant = setting("fm_dense", "--variant", "ranking model variant")
    popular_negatives: int = setting(
        0, "--popular-negatives", "ranker: unrated movies drawn per train impression in proportion to their "
        "popularity (label 0), beside the uniform ones, like the recalled candidates (default none: on ML-100K "
        "validation 2 of them lowered the fused NDCG@50, BENCHMARKS.md)", ge=0)
    popular_exponent: float = setting(
        1.0, "--popular-exponent", "ranker: the popularity draws' weight is (impressions of the movie) ** this", ge=0)
    ranker_selection: RankerSelection = setting(
        "candidates", "--ranker-selection", "what picks the ranker's epoch: NDCG@50 of its order of the validation "
        "users' recalled candidates (default, where the batch wrote a validation hold-out) or the AUC on the "
        "selection rows")
    max_epochs: int | None = setting(None, "--max-epochs", "at most this many epochs (default each model's own)",
                                     ge=1)
    select_on: SelectOn = setting(
        "validation", "--select-on", "what picks the epoch: the validation slice of train (default) or, as the "
        "reference design does, the test rows")
    refit: bool = setting(False, "--refit",
                          "retrain on train + validation for the chosen epoch count before testing")
    validation_percent: int = setting(10, "--validation-percent",
                                      "share of each user's train impressions (the last ones) for validation")
    seed: int | None = setting(None, "--seed", "training seed (default 2024)")
    batch_size: int | None = setting(None, "--batch-size", "both models: rows per optimiser step (default 1024)",
                                     ge=2)
    epoch_rows: int | None = setting(None, "--epoch-rows", "both models: rows drawn afresh for each epoch (default "
                                     "all; at ML-25M's size an epoch of the ranker's ~90 M rows takes hours)", ge=1)
    selection_rows: int | None = setting(None, "--selection-rows", "ranking model: a fixed random sample of this "
                                         "many validation rows picks the epoch (default all)", ge=1)
    quota_choice: bool = setting(
        True, "--keep-quotas", "keep the default recall quotas instead of choosing them on validation (the weights "
        "are still chosen): every source stays asked, which a test of each store's outage needs on data so small that "
        "any quotas recall the same candidates")
    next_item_model: bool = setting(
        True, "--no-next-item", "skip the sequence model (the chance of each candidate being the user's next item, one "
        "of the final order's inputs); a version published earlier stays published")
    next_item_epochs: int = setting(
        30, "--next-item-epochs", "the sequence model trains at most this many epochs, the best on validation kept",
        ge=1)
    next_item_seconds: float | None = setting(
        None, "--next-item-seconds", "and at most this long (default no limit: a budget in epochs keeps the result "
        "the same on a busy machine; at ML-25M's size an epoch takes far longer, see Large datasets)", gt=0)
    vectors_to_delta: bool = setting(True, "--no-delta",
                                     "skip writing the vectors as Delta tables (saves starting Spark)")

    @property
    def training_exports(self) -> Path:
        return self.exports or self.current_export_dir


class RecallSettings(LakeSettings):
    """The request's defaults: read by the service and by the offline and served-list evaluations."""

    recall_size: int = setting(200, "--recall-size", "candidates recalled per request (default)", ge=1, le=2000)
    default_k: int = setting(50, "--k", "recommendations returned per request (default)", ge=1)


class RedisSettings(LakeSettings):
    redis_host: str = setting("127.0.0.1", "--redis-host", "Redis host (recall data; Feast's online store)")
    redis_port: int = setting(6379, "--redis-port", "Redis port", ge=1, le=65535)

    @property
    def redis_address(self) -> str:
        return f"{self.redis_host}:{self.redis_port}"


class ServicesSettings(RedisSettings):
    """The services profile's servers: where they are, and where the local ones keep their files."""

    redis_prefix: str = setting("recsys", "--redis-prefix", "key prefix of the loaded recall data in Redis")
    events_redis_host: str = setting("127.0.0.1", "--events-redis-host", "Redis host of the posted ratings' stream "
                                     "(the services profile's event log)")
    events_redis_port: int = setting(
        6380, "--events-redis-port", "its port: a Redis of its own that fsyncs every write before it answers (the "
        "serving Redis holds what a load or the log rebuilds, and its reads must not wait on those fsyncs); the "
        "serving Redis's port puts the log there instead, which then needs appendfsync always", ge=1, le=65535)
    elasticsearch_url: str = setting("http://127.0.0.1:9200", "--elasticsearch-url", "Elasticsearch base URL")
    elasticsearch_alias: str = setting("items", "--elasticsearch-alias", "the alias the item index is served under")
    feast_server_url: str = setting("http://127.0.0.1:6566", "--feast-server-url", "Feast feature server base URL")
    triton_url: str = setting("127.0.0.1:8001", "--triton-url", "Triton gRPC host:port")
    triton_model: str = setting("ml_rec", "--triton-model", "the ranking model's name in Triton")
    services_dir: Path = setting(Path(".services"), "--services-dir",
                                 "local services (no Docker): their data, logs, Triton's models")
    services_cache: Path = setting(Path(".services/cache"), "--services-cache",
                                   "downloaded and unpacked servers, shared by every services_dir")
    triton_venv: Path = setting(Path(".venv-triton"), "--triton-venv",
                                "the local Triton server's own Python environment (.ci/setup makes it)")


class RedisLoaderSettings(RecallSettings, ServicesSettings):
    """python -m loaders.redis_loader: where Redis is, and the request size each user's searches are run at."""

    user_searches: bool = setting(
        True, "--no-user-searches", "publish no term and vector search results with each user's recall data: the "
        "services profile then asks Elasticsearch for them on every request (with them, only for users whose terms or "
        "seen items changed since the load: posted ratings, new users)")


class FeastRepoSettings(LakeSettings):
    """Which Feast configuration a command opens; the definitions read the exports under output_dir."""

    feast_yaml: Path | None = setting(
        None, "--feast-yaml", "another feature_store.yaml (a private registry and online store); default the "
        "repo's own for the online and offline store chosen")
    feast_offline: OfflineStore = setting(
        "file", "--offline-store", "Feast's offline store: the Parquet exports (file) or the Delta tables (spark)")


class FeastSettings(FeastRepoSettings, RedisSettings):
    """python -m feature_repo.publish / parity: the online store to materialise into and read back."""

    online_store: OnlineStore = setting("sqlite", "--online-store", "Feast's online store")


class LocalServicesSettings(ServicesSettings, FeastRepoSettings):
    """python -m online.local_services: the servers to start, and the Feast repo the feature server reads."""


class ServingSettings(RecallSettings, LocalServicesSettings):
    """The recommendation service: where it binds, which profile, and what each profile reads."""

    profile: Profile = setting(
        "embedded", "--profile",
        "where the service reads: in-process stores, or Redis, Elasticsearch, Feast's server, Triton")
    feast_access: FeastAccess = setting(
        "online_store", "--feast-access",
        "services profile: read user features from Feast's Redis online store in-process, or from Feast's feature "
        "server over HTTP")
    search_every_request: bool = setting(
        False, "--search-every-request", "services profile: ask Elasticsearch for the term and vector lists on every "
        "request: neither the lists the Redis loader published with a user's record nor a worker's cache of its last "
        "answers (the same lists; ~4-7 ms of Elasticsearch's CPU a request)")
    search_cache: int = setting(
        10_000, "--search-cache", "services profile: the last Elasticsearch answers each worker keeps (the same query "
        "on the same index version has the same answer; ~6 KB each at 200 candidates; 0: none)", ge=0)
    feature_cache: int = setting(
        100_000, "--feature-cache", "user feature rows each worker keeps after reading them from Feast (~0.5 ms "
        "a request on SQLite), by user and posted ratings applied: a new rating or a reload reads Feast again; ~300 "
        "bytes each; 0: read Feast on every request", ge=0)
    breaker_seconds: float = setting(
        5.0, "--breaker-seconds", "services profile: how long a server that failed or timed out is skipped (its "
        "part of the list degraded) before one request tries it again", gt=0)
    serve_host: str = setting("127.0.0.1", "--host", "address the recommendation service binds")
    serve_port: int = setting(8000, "--port", "port of the recommendation service", ge=1, le=65535)
    serve_workers: int = setting(2, "--workers", "gunicorn worker processes", ge=1)
    serve_threads: int | None = setting(
        None, "--threads", "request threads per worker (gunicorn's gthread worker above 1; default 1: on 2 cores 4 "
        "threads took the services profile's p99 at 50/s from 71 to 60 ms but its p50 from 37 to 39 ms)", ge=1)
    serve_access_log: bool = setting(
        False, "--access-log",
        "gunicorn's access log, a line per request on stdout (off by default, as in gunicorn: /metrics counts "
        "requests by route and status, and the line costs ~4%% of a request's CPU)")
    api_token: str | None = setting(
        None, "--api-token", "bearer token the write routes require (POST /users/<id>/events, /events, "
        "/admin/reload); without one those routes are off (404). Also RECSYS_API_TOKEN")
    metrics_dir: Path | None = setting(
        None, "--metrics-dir", "folder of the workers' Prometheus files (default: a new temporary one per server run)")

    @property
    def url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    @property
    def request_threads(self) -> int:
        return self.serve_threads or 1


class EndToEndSettings(BatchSettings, TrainingSettings, ServingSettings, RedisLoaderSettings):
    """python -m online.end_to_end: every stage's settings, each passed on to the stage that reads it."""
