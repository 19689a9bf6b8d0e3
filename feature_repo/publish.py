"""Make the current batch run's features available through Feast: apply, then materialize.

    python -m feature_repo.publish [--output DIR] [--online-store sqlite|redis] [--redis-host H --redis-port P]

The time range materialized is the data's own (the earliest to the latest ``event_timestamp`` of the
exports, plus one second), never ``now - ttl``, so a re-run after a new batch loads exactly that run
and a wiped online store is filled again.

SQLite (the default) is materialized into a new database file next to the serving one, checked, and
then renamed over it: a failed materialize leaves the previous values served. Redis is written in
place by Feast, entity by entity (one entity's values are never half old, half new); a failed run is
repeated to complete it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml
from feast import FeatureStore
from feast.repo_config import load_repo_config

from spark_jobs.settings import Settings, add_settings_arguments, settings_from_args

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent
SQLITE_YAML = REPO / "feature_store.yaml"
REDIS_YAML = REPO / "feature_store.redis.yaml"
SPARK_YAML = REPO / "feature_store.spark.yaml"


@dataclass(frozen=True)
class FeastTarget:
    """Which feature_store.yaml, and the environment its ``${VAR}``s and the definitions read."""

    online_store: str  # "sqlite" | "redis"
    output_dir: Path
    redis: str = "127.0.0.1:6379"
    offline_store: str = "file"  # "file" (Parquet exports) | "spark" (Delta tables, SQLite online)

    @property
    def yaml(self) -> Path:
        """The configuration: RECSYS_FEAST_YAML names another one (a private registry and online store)."""
        if "RECSYS_FEAST_YAML" in os.environ:
            return Path(os.environ["RECSYS_FEAST_YAML"])
        if self.offline_store == "spark":
            return SPARK_YAML
        return REDIS_YAML if self.online_store == "redis" else SQLITE_YAML

    def environment(self) -> dict[str, str]:
        return {"RECSYS_OUTPUT_DIR": str(self.output_dir.resolve()), "REDIS_CONNECTION": self.redis,
                "RECSYS_FEAST_OFFLINE": self.offline_store, "FEAST_FS_YAML_FILE_PATH": str(self.yaml)}


@contextmanager
def environment(target: FeastTarget) -> Iterator[None]:
    """The variables Feast's yaml and the definitions read, set only while they are read."""
    saved = {name: os.environ.get(name) for name in target.environment()}
    os.environ.update(target.environment())
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def open_store(target: FeastTarget, yaml: Path | None = None) -> FeatureStore:
    with environment(target):
        return FeatureStore(repo_path=str(REPO), fs_yaml_file=yaml or target.yaml)


def definitions(target: FeastTarget) -> list:
    """The Feast objects, imported while the environment names the target's output directory."""
    with environment(target):
        name = "feature_repo.definitions"
        module = importlib.reload(sys.modules[name]) if name in sys.modules else importlib.import_module(name)
    return [module.user, module.item, module.user_fv, module.item_fv, module.user_history_fv,
            module.ml_user, module.ml_item, module.ml_user_history]


def materialize_range(exports: Path) -> tuple[datetime, datetime]:
    stamps = [pd.read_parquet(exports / table, columns=["event_timestamp"])["event_timestamp"]
              for table in ("user_features", "item_features")]
    first = min(s.min() for s in stamps).to_pydatetime()
    last = max(s.max() for s in stamps).to_pydatetime()
    as_utc = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in (first, last)]
    return as_utc[0] - timedelta(seconds=1), as_utc[1] + timedelta(seconds=1)


def _staged_sqlite_yaml(source: Path, staged_db: Path) -> Path:
    """The SQLite configuration with the online store moved to ``staged_db`` (registry unchanged)."""
    config = yaml.safe_load(source.read_text())
    config["online_store"]["path"] = str(staged_db)
    if not Path(config["registry"]).is_absolute():
        config["registry"] = str(REPO / config["registry"])
    path = staged_db.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def publish(target: FeastTarget) -> dict:
    exports = target.output_dir / "exports" / "current"
    if not exports.exists():
        raise FileNotFoundError(f"{exports} does not exist: run the batch first (python -m spark_jobs.run_batch)")
    start, end = materialize_range(exports)
    (REPO / "data").mkdir(exist_ok=True)
    store = open_store(target)
    objects = definitions(target)
    store.apply(objects)
    log.info("feast apply: %s", ", ".join(o.name for o in objects))
    if target.online_store == "sqlite":
        config = load_repo_config(REPO, target.yaml)
        serving_db = (REPO / config.online_store.path).resolve()
        serving_db.parent.mkdir(parents=True, exist_ok=True)
        staged_db = serving_db.with_name(f".{serving_db.stem}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.db")
        staged_yaml = _staged_sqlite_yaml(target.yaml, staged_db)
        try:
            staged = open_store(target, staged_yaml)
            staged.apply(objects)  # the same registry entries; creates the new file's tables
            staged.materialize(start, end)
            loaded = count_online_rows(staged, exports)
            os.replace(staged_db, serving_db)
        except BaseException:
            staged_db.unlink(missing_ok=True)
            raise
        finally:
            staged_yaml.unlink(missing_ok=True)
    else:
        store.materialize(start, end)
        loaded = count_online_rows(store, exports)
    summary = {"online_store": target.online_store, "range": [start.isoformat(), end.isoformat()],
               "exports": str(exports.resolve()), **loaded}
    log.info("feast materialize %s .. %s into %s: %s", start, end, target.online_store, loaded)
    return summary


def count_online_rows(store: FeatureStore, exports: Path) -> dict[str, int]:
    """How many users and items the online store answers with values (a read-back check)."""
    counts = {}
    for entity, table, service in (("userid", "user_features", "ml_user"), ("itemid", "item_features", "ml_item")):
        keys = pd.read_parquet(exports / table, columns=[entity])[entity].astype(int).tolist()
        response = store.get_online_features(features=store.get_feature_service(service),
                                             entity_rows=[{entity: k} for k in keys]).to_dict()
        first_feature = next(name for name in response if name != entity)
        found = sum(value is not None for value in response[first_feature])
        if found != len(keys):
            raise RuntimeError(f"online store answers {found} of {len(keys)} {table} rows after materialize")
        counts[f"{table}_online"] = found
    return counts


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_arguments(parser)
    parser.add_argument("--online-store", choices=("sqlite", "redis"),
                        default=os.environ.get("RECSYS_ONLINE_STORE", "sqlite"))
    args = parser.parse_args(argv)
    settings: Settings = settings_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = publish(FeastTarget(args.online_store, settings.output_dir, settings.redis_address))
    for key, value in summary.items():
        print(f"{key}: {value}")
    return summary


if __name__ == "__main__":
    main()
