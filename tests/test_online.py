"""The embedded recommendation service: API contract, bad input, fallback, failures, offline = online,
reload under requests, and the app under gunicorn over real HTTP. Small data: seconds per test."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import torch
from conftest import REPO_ROOT
from processes import free_port, stop, wait_for

from feature_repo import publish
from models import train as train_models
from models.artifacts import open_model
from models.recall_data import FeatureAssembler, load_user_features
from models.retrieval import fused_order, recall
from online.app import create_app
from online.bundle import BundleHolder, load_bundle
from online.stores import StoreUnavailableError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tiny_batch, tmp_path_factory):
    """The tiny batch with trained models and its features in a private Feast store."""
    folder = tmp_path_factory.mktemp("feast-online")
    yaml = folder / "feature_store.yaml"
    yaml.write_text(publish.SQLITE_YAML.read_text()
                    .replace("registry: data/registry.db", f"registry: {folder / 'registry.db'}")
                    .replace("path: data/online_store.db", f"path: {folder / 'online_store.db'}"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_FEAST_YAML", str(yaml))
        train_models.main(["--output", str(tiny_batch.output_dir), "--max-epochs", "2", "--no-delta"])
        publish.publish(publish.FeastTarget("sqlite", tiny_batch.output_dir))
        yield tiny_batch, yaml


@pytest.fixture(scope="module")
def client(served):
    settings, _ = served
    app = create_app(settings)
    return app.test_client()


def seen_items(settings) -> dict[int, set[int]]:
    filters = pd.read_parquet(settings.current_export_dir / "user_filter")
    return {int(u): set(map(int, s)) for u, s in zip(filters["userid"], filters["seen_itemids"], strict=True)}


def test_both_endpoints_return_k_scored_items_with_sources_and_versions(client, served):
    settings, _ = served
    response = client.post("/ml/rec", json={"userid": 3, "k": 10})
    assert response.status_code == 200
    body = response.get_json()
    assert len(body["item_list"]) == 10 and body["fallback"] is None and body["userid"] == 3
    assert all(0 < item["score"] < 1 and item["sources"] for item in body["item_list"])
    assert [i["rank_score"] for i in body["item_list"]] == sorted((i["rank_score"] for i in body["item_list"]),
                                                                  reverse=True)
    assert set(body["versions"]) == {"data_run", "feature_spec", "recall_model", "ranking_model", "exports"}
    assert body["request_id"]
    rest = client.get("/users/3/recommendations?k=10").get_json()
    assert [i["itemid"] for i in rest["item_list"]] == [i["itemid"] for i in body["item_list"]]
    assert client.get("/ready").get_json()["versions"] == body["versions"]
    assert client.get("/health").status_code == 200


def test_seen_items_are_never_returned_and_unknown_users_get_popularity(client, served):
    settings, _ = served
    seen = seen_items(settings)
    for userid, items in seen.items():
        returned = {i["itemid"] for i in client.post("/ml/rec", json={"userid": userid}).get_json()["item_list"]}
        assert returned and not returned & items
    unknown = client.post("/ml/rec", json={"userid": 999_999, "k": 5}).get_json()
    assert unknown["fallback"] == "popularity" and len(unknown["item_list"]) == 5
    popularity = pd.read_parquet(settings.current_export_dir / "item_popularity")
    most_liked = popularity.sort_values(["positives", "impressions", "itemid"], ascending=[False, False, True])
    assert [i["itemid"] for i in unknown["item_list"]] == most_liked["itemid"].head(5).tolist()


@pytest.mark.parametrize(("body", "message"), [
    ({}, "'userid' is required"),
    ({"userid": -4}, "between 1 and"),
    ({"userid": 2.5}, "must be an integer"),
    ({"userid": "abc"}, "must be an integer"),
    ({"userid": True}, "must be an integer"),
    ({"userid": 10**30}, "between 1 and"),
    ({"userid": 1, "k": 0}, "'k' must be between 1 and 200"),
    ({"userid": 1, "k": 201}, "'k' must be between 1 and 200"),
    ({"userid": 1, "recall_size": 10, "k": 11}, "'k' must be between 1 and 10"),
    ({"userid": 1, "color": "red"}, "unknown field"),
    ([1, 2], "JSON object"),
])
def test_bad_input_is_a_400_with_a_message(client, body, message):
    response = client.post("/ml/rec", json=body)
    assert response.status_code == 400 and message in response.get_json()["error"]


def test_malformed_requests_and_unknown_routes_are_json_errors(client):
    assert client.post("/ml/rec", data="{not json", content_type="application/json").status_code == 400
    assert client.post("/ml/rec", data="userid=1", content_type="text/plain").status_code == 415
    assert client.post("/ml/rec", data="x" * 20_000, content_type="application/json").status_code == 413
    for response in (client.get("/nowhere"), client.get("/ml/rec"), client.get("/users/x/recommendations")):
        assert response.status_code in (400, 404, 405) and "error" in response.get_json()


def test_a_failing_store_is_a_503_naming_it(served):
    settings, _ = served

    class BrokenFeatures:
        def user_features(self, userid: int):
            raise StoreUnavailableError("feast", "connection refused")

    holder = BundleHolder(settings)
    holder.current = dataclasses.replace(load_bundle(settings), features=BrokenFeatures())
    response = create_app(settings, holder).test_client().post("/ml/rec", json={"userid": 3})
    assert response.status_code == 503 and response.get_json()["store"] == "feast"


def test_offline_equals_online(client, served):
    """The service's rows equal the batch's for the user and items, its scores equal PyTorch's, and its
    list equals the offline evaluation's (same functions)."""
    settings, _ = served
    exports = settings.current_export_dir
    bundle = load_bundle(settings)
    batch_users = load_user_features(exports)
    assembler = FeatureAssembler.from_item_features(pd.read_parquet(exports / "item_features"))
    ranking = train_models.load_ranking(open_model(settings.models_dir / "ranking"))
    for userid in list(batch_users)[:8]:
        served_values = bundle.features.user_features(userid)
        np.testing.assert_array_equal(served_values, batch_users[userid])  # Feast = the batch's row
        body = client.post("/ml/rec", json={"userid": userid}).get_json()
        itemids = np.array([i["itemid"] for i in body["item_list"]])
        rows = assembler.rows(userid, batch_users[userid], itemids)
        with torch.no_grad():
            expected = torch.sigmoid(ranking(torch.from_numpy(rows))).numpy()
        np.testing.assert_allclose([i["score"] for i in body["item_list"]], expected, atol=1e-5)
        # the offline evaluation's ordering of the same user
        candidates, sources = recall(bundle.users.get(userid), bundle.items.index, bundle.recall)
        scores = bundle.ranker.score(assembler.rows(userid, batch_users[userid], candidates.itemids))
        order, _ = fused_order(candidates, sources, scores)
        assert itemids.tolist() == candidates.itemids[order][:50].tolist()


def test_reload_under_requests_never_mixes_versions(served):
    settings, _ = served
    app = create_app(settings)
    client = app.test_client()
    before = client.get("/ready").get_json()["versions"]
    seen_versions, failures = [], []

    def hammer() -> None:
        local = app.test_client()
        for userid in range(1, 40):
            response = local.post("/ml/rec", json={"userid": userid % 30 + 1})
            if response.status_code != 200:
                failures.append(response.status_code)
            else:
                seen_versions.append(tuple(sorted(response.get_json()["versions"].items())))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    # A new model version appears (a retrain), then the service reloads while requests run.
    train_models.main(["--output", str(settings.output_dir), "--max-epochs", "1", "--no-delta", "--only", "ranking"])
    reloaded = client.post("/admin/reload")
    for thread in threads:
        thread.join()
    after = reloaded.get_json()["versions"]
    assert reloaded.status_code == 200 and after["ranking_model"] != before["ranking_model"]
    assert not failures
    assert set(seen_versions) <= {tuple(sorted(before.items())), tuple(sorted(after.items()))}
    assert client.get("/ready").get_json()["versions"] == after


def test_the_app_under_gunicorn_over_http(served, tmp_path):
    settings, yaml = served
    port = free_port()
    env = {**os.environ, "RECSYS_FEAST_YAML": str(yaml), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "online.serve", "--output", str(settings.output_dir), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/ready", timeout=2).ok, "gunicorn", timeout=120, process=server)
        body = requests.post(f"{url}/ml/rec", json={"userid": 5, "k": 10}, timeout=10).json()
        assert len(body["item_list"]) == 10 and body["fallback"] is None
        rest = requests.get(f"{url}/users/5/recommendations?k=10", timeout=10).json()
        assert [i["itemid"] for i in rest["item_list"]] == [i["itemid"] for i in body["item_list"]]
        bad = requests.post(f"{url}/ml/rec", json={"userid": "five"}, timeout=10)
        assert bad.status_code == 400 and "error" in bad.json()
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert "recsys_stage_seconds_bucket" in metrics and "recsys_requests_total" in metrics
    finally:
        stop([server])
    assert Path(tmp_path / "gunicorn.log").read_text().count("Booting worker") == 2
