"""Feast over the batch's exports: apply, materialize (SQLite), and what it serves equals the batch."""

import numpy as np
import pandas as pd
import pytest

from feature_repo import publish
from spark_jobs.feature_spec import SPEC

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def published(tiny_batch, tmp_path_factory):
    # The repo's yaml with the registry and the online store in a temporary folder.
    data = tmp_path_factory.mktemp("feast-data")
    target = publish.FeastTarget("sqlite", tiny_batch.output_dir)
    yaml = data / "feature_store.yaml"
    yaml.write_text(publish.SQLITE_YAML.read_text()
                    .replace("registry: data/registry.db", f"registry: {data / 'registry.db'}")
                    .replace("path: data/online_store.db", f"path: {data / 'online_store.db'}"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(publish, "SQLITE_YAML", yaml)
        summary = publish.publish(target)
        yield target, summary, publish.open_store(target)


def online_frame(store, service: str, key: str, keys: list[int]) -> pd.DataFrame:
    response = store.get_online_features(features=store.get_feature_service(service),
                                         entity_rows=[{key: k} for k in keys]).to_dict()
    return pd.DataFrame(response).set_index(key)  # mapped by the response's own feature names


def test_online_features_equal_the_batch_rows(published, tiny_batch):
    _, summary, store = published
    exports = tiny_batch.current_export_dir
    users = pd.read_parquet(exports / "user_features").set_index("userid")
    items = pd.read_parquet(exports / "item_features").set_index("itemid")
    assert summary["user_features_online"] == len(users) and summary["item_features_online"] == len(items)
    for service, key, batch, features in (("ml_user", "userid", users, SPEC.online_user_features),
                                          ("ml_item", "itemid", items, SPEC.online_item_features)):
        online = online_frame(store, service, key, batch.index.tolist())
        columns = [f.name for f in features]
        assert sorted(online.columns) == sorted(columns)
        np.testing.assert_array_equal(online.loc[batch.index, columns].to_numpy(np.float64),
                                      batch[columns].to_numpy(np.float64))


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
    after = online_frame(publish.open_store(target), "ml_user", "userid", [1])
    pd.testing.assert_frame_equal(before, after)
    assert not list(publish.SQLITE_YAML.parent.glob(".online_store-*.db"))  # the staged file was removed
