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

import logging
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from contracts.settings import FeastRepoSettings, FeastSettings, OnlineStore
from contracts.tables import Export
from feature_repo.definitions import feast_objects
from feature_repo.names import ITEM_SERVICE, USER_SERVICE

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent
SQLITE_YAML = REPO / "feature_store.yaml"
REDIS_YAML = REPO / "feature_store.redis.yaml"
SPARK_YAML = REPO / "feature_store.spark.yaml"
# What feature_store.redis.yaml names the Redis connection by; the project fills it in from its settings.
REDIS_PLACEHOLDER = "${REDIS_CONNECTION}"


def config_file(repo: FeastRepoSettings, online_store: OnlineStore) -> Path:
    """The feature_store.yaml for the online and offline store chosen, unless the settings name another."""
    if repo.feast_yaml is not None:
        return repo.feast_yaml
    if repo.feast_offline == "spark":
        return SPARK_YAML
    return REDIS_YAML if online_store == "redis" else SQLITE_YAML


def repo_config(repo: FeastRepoSettings, online_store: OnlineStore, redis_connection: str = "",
                sqlite_path: Path | None = None) -> RepoConfig:
    """Feast's configuration from the yaml and explicit values: the Redis connection (``host:port[,opts]``)
    in place of the placeholder, and optionally another SQLite file for the online store."""
    text = config_file(repo, online_store).read_text().replace(REDIS_PLACEHOLDER, redis_connection)
    raw = yaml.safe_load(os.path.expandvars(text))  # other ${VAR}s, as Feast's own loader reads them
    if sqlite_path is not None:
        raw["online_store"]["path"] = str(sqlite_path)
    config = RepoConfig(**raw)
    config.repo_path = REPO  # relative registry and SQLite paths resolve against this folder, as for the CLI
    return config


def open_store(repo: FeastRepoSettings, online_store: OnlineStore, redis_connection: str = "") -> FeatureStore:
    return FeatureStore(repo_path=str(REPO), config=repo_config(repo, online_store, redis_connection))


def open_published_store(settings: FeastSettings) -> FeatureStore:
    """The store ``publish(settings)`` materialises into."""
    return open_store(settings, settings.online_store, settings.redis_address)


def definitions(repo: FeastRepoSettings) -> list:
    """The Feast objects over the batch output under the settings' output folder."""
    return feast_objects(repo.output_dir.resolve(), repo.feast_offline).all()


def cli_environment(repo: FeastRepoSettings, online_store: OnlineStore, redis_connection: str = "") -> dict[str, str]:
    """The environment a ``feast`` CLI child process (``feast serve``, ``feast apply``) reads the same
    configuration from: the yaml, its Redis placeholder and the definitions' output folder."""
    return {"RECSYS_OUTPUT_DIR": str(repo.output_dir.resolve()), "REDIS_CONNECTION": redis_connection,
            "RECSYS_FEAST_OFFLINE": repo.feast_offline,
            "FEAST_FS_YAML_FILE_PATH": str(config_file(repo, online_store))}


def materialize_range(exports: Path) -> tuple[datetime, datetime]:
    stamps = [pd.read_parquet(exports / table, columns=["event_timestamp"])["event_timestamp"]
              for table in (Export.USER_FEATURES, Export.ITEM_FEATURES)]
    first = min(s.min() for s in stamps).to_pydatetime()
    last = max(s.max() for s in stamps).to_pydatetime()
    as_utc = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in (first, last)]
    return as_utc[0] - timedelta(seconds=1), as_utc[1] + timedelta(seconds=1)


def publish(settings: FeastSettings) -> dict:
    exports = settings.current_export_dir
    if not exports.exists():
        raise FileNotFoundError(f"{exports} does not exist: run the batch first (python -m spark_jobs.run_batch)")
    start, end = materialize_range(exports)
    (REPO / "data").mkdir(exist_ok=True)
    online_store, connection = settings.online_store, settings.redis_address
    store = open_store(settings, online_store, connection)
    objects = definitions(settings)
    store.apply(objects)
    log.info("feast apply: %s", ", ".join(o.name for o in objects))
    if online_store == "sqlite":
        serving_db = (REPO / repo_config(settings, online_store).online_store.path).resolve()
        serving_db.parent.mkdir(parents=True, exist_ok=True)
        staged_db = serving_db.with_name(f".{serving_db.stem}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}.db")
        try:
            staged_config = repo_config(settings, online_store, sqlite_path=staged_db)
            staged = FeatureStore(repo_path=str(REPO), config=staged_config)
            staged.apply(objects)  # the same registry entries; creates the new file's tables
            staged.materialize(start, end)
            loaded = count_online_rows(staged, exports)
            os.replace(staged_db, serving_db)
        except BaseException:
            staged_db.unlink(missing_ok=True)
            raise
    else:
        store.materialize(start, end)
        loaded = count_online_rows(store, exports)
    summary = {"online_store": online_store, "range": [start.isoformat(), end.isoformat()],
               "exports": str(exports.resolve()), **loaded}
    log.info("feast materialize %s .. %s into %s: %s", start, end, online_store, loaded)
    return summary


def count_online_rows(store: FeatureStore, exports: Path) -> dict[str, int]:
    """How many users and items the online store answers with values (a read-back check)."""
    counts = {}
    for entity, table, service in (("userid", Export.USER_FEATURES, USER_SERVICE),
                                   ("itemid", Export.ITEM_FEATURES, ITEM_SERVICE)):
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
    settings = FeastSettings.parse(argv, __doc__ or "")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = publish(settings)
    for key, value in summary.items():
        print(f"{key}: {value}")
    return summary


if __name__ == "__main__":
    main()
