"""Feast over the batch's exports: apply, materialize (SQLite), and what it serves equals the batch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from processes import free_port, stop, wait_for

from contracts.feature_spec import SPEC
from contracts.settings import FeastSettings
from feature_repo import parity, publish

pytestmark = pytest.mark.slow


def private_yaml(source, folder):
    """The repo's yaml with the registry and the SQLite file in a temporary folder."""
    path = folder / source.name
    path.write_text(source.read_text()
                    .replace("registry: data/registry.db", f"registry: {folder / 'registry.db'}")
                    .replace("path: data/online_store.db", f"path: {folder / 'online_store.db'}"))
    return path


@pytest.fixture(scope="module")
def published(tiny_batch, tmp_path_factory):
    target = FeastSettings(output_dir=tiny_batch.output_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish, "SQLITE_YAML", private_yaml(publish.SQLITE_YAML, tmp_path_factory.mktemp("feast")))
        summary = publish.publish(target)
        yield target, summary, publish.open_published_store(target)


def online_frame(store, service: str, key: str, keys: list[int]) -> pd.DataFrame:
    response = store.get_online_features(features=store.get_feature_service(service),
                                         entity_rows=[{key: k} for k in keys]).to_dict()
    return pd.DataFrame(response).set_index(key)  # mapped by the response's own feature names


def assert_online_equals_batch(store, exports):
    users = pd.read_parquet(exports / "user_features").set_index("userid")
    items = pd.read_parquet(exports / "item_features").set_index("itemid")
    for service, key, batch, features in (("ml_user", "userid", users, SPEC.online_user_features),
                                          ("ml_item", "itemid", items, SPEC.online_item_features)):
        online = online_frame(store, service, key, batch.index.tolist())
        columns = [f.name for f in features]
        assert sorted(online.columns) == sorted(columns)
        np.testing.assert_array_equal(online.loc[batch.index, columns].to_numpy(np.float64),
                                      batch[columns].to_numpy(np.float64))


def test_online_features_equal_the_batch_rows(published, tiny_batch):
    _, summary, store = published
    exports = tiny_batch.current_export_dir
    assert summary["user_features_online"] == len(pd.read_parquet(exports / "user_features")) == 30
    assert summary["item_features_online"] == len(pd.read_parquet(exports / "item_features"))
    assert_online_equals_batch(store, exports)


def test_unknown_user_comes_back_as_nulls(published):
    _, _, store = published
    online = online_frame(store, "ml_user", "userid", [999_999])
    assert online.loc[999_999].isna().all()  # the caller decides the default


def test_failed_materialize_leaves_the_previous_values(published, monkeypatch):
    target, _, store = published
    before = online_frame(store, "ml_user", "userid", [1])

    def broken(*args, **kwargs):
        raise RuntimeError("materialize broke midway")

    monkeypatch.setattr("feast.FeatureStore.materialize", broken)
    with pytest.raises(RuntimeError, match="midway"):
        publish.publish(target)
    after = online_frame(publish.open_published_store(target), "ml_user", "userid", [1])
    pd.testing.assert_frame_equal(before, after)
    assert not list(publish.SQLITE_YAML.parent.glob(".online_store-*.db"))  # the staged file was removed


def test_redis_online_store_serves_the_same(tiny_batch, redis_server, tmp_path):
    host, port = redis_server.split(":")
    target = FeastSettings(output_dir=tiny_batch.output_dir, online_store="redis", redis_host=host,
                           redis_port=int(port))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish, "REDIS_YAML", private_yaml(publish.REDIS_YAML, tmp_path))
        summary = publish.publish(target)
        assert summary["online_store"] == "redis" and summary["user_features_online"] == 30
        assert_online_equals_batch(publish.open_published_store(target), tiny_batch.current_export_dir)
        unknown = online_frame(publish.open_published_store(target), "ml_user", "userid", [999_999])
        assert unknown.loc[999_999].isna().all()  # nulls, as with SQLite (the status says PRESENT there)


def test_feast_serve_over_http_equals_the_batch(published, tiny_batch, tmp_path):
    target, _, _ = published
    port = free_port()
    env = {**os.environ, **publish.cli_environment(target, "sqlite")}
    assert "RECSYS_OUTPUT_DIR" not in os.environ  # publishing leaves the process environment as it was
    log = (tmp_path / "feast-serve.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "feast"), "serve", "--host", "127.0.0.1",
                               "--port", str(port), "--registry_ttl_sec", "5"],
                              cwd=publish.REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            return requests.post(f"{url}/get-online-features", timeout=5,
                                 json={"feature_service": "ml_user", "entities": {"userid": [1]}}).ok

        wait_for(answers, "feast serve", timeout=120, process=server)
        users = pd.read_parquet(tiny_batch.current_export_dir / "user_features").set_index("userid")
        keys = users.index.tolist()
        body = requests.post(f"{url}/get-online-features", timeout=10,
                             json={"feature_service": "ml_user", "entities": {"userid": keys}}).json()
        names = body["metadata"]["feature_names"]  # the response's order, not the schema's
        values = {name: result["values"] for name, result in zip(names, body["results"], strict=True)}
        assert values["userid"] == keys
        for feature in SPEC.online_user_features:
            np.testing.assert_array_equal(np.array(values[feature.name], dtype=np.float64),
                                          users[feature.name].to_numpy(np.float64))
    finally:
        stop([server])


def published_store(settings, folder):
    target = FeastSettings(output_dir=settings.output_dir)
    patch = pytest.MonkeyPatch()
    patch.setattr(publish, "SQLITE_YAML", private_yaml(publish.SQLITE_YAML, folder))
    publish.publish(target)
    return patch, publish.open_published_store(target)


@pytest.mark.parametrize("batch", ["tiny_batch", "ml100k_batch"])
def test_feast_point_in_time_join_reproduces_every_sample(batch, request, tmp_path):
    """The generated data has many same-second impressions; ML-100K is the real thing."""
    settings = request.getfixturevalue(batch)
    patch, store = published_store(settings, tmp_path)
    try:
        historical = parity.historical_parity(store, settings.current_export_dir)
        online = parity.online_parity(store, settings.current_export_dir, sample_users=200)
    finally:
        patch.undo()
    samples = sum(len(pd.read_parquet(settings.current_export_dir / n)) for n in ("samples_train", "samples_test"))
    assert historical["sample_rows"] == samples
    assert historical["rows_feast_returned"] + historical["rows_without_earlier_history"] == historical["entity_rows"]
    assert historical["rows_without_earlier_history"] > 0  # first impressions: joined back, not lost
    assert historical["cells_different"] == 0
    assert online["user_cells_different"] == 0 and online["item_cells_different"] == 0


def test_spark_offline_store_over_delta_gives_the_same_pit_join(spark, tiny_batch, tmp_path):
    """The platform variant: SparkSource over the Delta tables, in the running Spark session."""
    target = FeastSettings(output_dir=tiny_batch.output_dir, feast_offline="spark")
    # Feast's Spark store turns quoted-regex column names on in the session it shares with every other test
    # (Delta's own reads then fail in a later batch): put the setting back afterwards.
    regex_names = spark.conf.get("spark.sql.parser.quotedRegexColumnNames", "false")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish, "SPARK_YAML", private_yaml(publish.SPARK_YAML, tmp_path))
        try:
            store = publish.open_published_store(target)
            store.apply(publish.definitions(target))
            source = store.get_feature_view("user_history_fv").batch_source
            assert type(source).__name__ == "SparkSource" and source.path.endswith("delta/user_feature_history")
            historical = parity.historical_parity(store, tiny_batch.current_export_dir)
        finally:
            spark.conf.set("spark.sql.parser.quotedRegexColumnNames", regex_names)
    assert historical["sample_rows"] > 0 and historical["cells_different"] == 0


def test_publishing_a_new_batch_run_serves_its_values(published, tiny_batch, tmp_path):
    """A new export run (here: the current one with user 1's counters changed) replaces the served values."""
    import shutil

    from spark_jobs.export import switch_current

    target, _, _ = published
    current = tiny_batch.current_export_dir
    previous_run = current.resolve()
    new_run = previous_run.parent / "later-run"
    shutil.copytree(previous_run, new_run)
    users = pd.read_parquet(new_run / "user_features")
    column = SPEC.dense[0].name
    users.loc[users["userid"] == 1, column] = np.float32(42.0)
    users.loc[users["userid"] == 1, "event_timestamp"] += pd.Timedelta(seconds=1)
    shutil.rmtree(new_run / "user_features")
    (new_run / "user_features").mkdir()
    users.to_parquet(new_run / "user_features" / "part-0.parquet", index=False)
    try:
        switch_current(tiny_batch, new_run)
        publish.publish(target)
        assert online_frame(publish.open_published_store(target), "ml_user", "userid", [1]).loc[1, column] == 42.0
    finally:
        switch_current(tiny_batch, previous_run)
        publish.publish(target)  # the shared output serves the batch's own values again
        shutil.rmtree(new_run)
