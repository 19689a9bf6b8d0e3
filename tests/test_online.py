"""The embedded recommendation service: API contract, bad input, fallback, failures, offline = online,
reload under requests, and the app under gunicorn over real HTTP. Small data: seconds per test."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
import requests
import torch
from conftest import REPO_ROOT, private_feast
from processes import free_port, stop, wait_for

from contracts.errors import StoreUnavailableError
from contracts.published import open_model
from contracts.settings import ServingSettings
from models import train as train_models
from models.export_readers import load_user_features
from models.feature_rows import FeatureAssembler
from models.fusion import fused_order
from models.next_item_training import load_next_item
from models.ranking_model import load_ranking
from models.recall_sources import NEXT_ITEM, RANKER
from models.request_path import recall
from models.sequence_training import left_padded
from online import evaluate_served
from online.app import create_app
from online.bundle import BundleHolder, load_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(trained_tiny, tmp_path_factory):
    """The tiny batch with trained models and its features in a private Feast store."""
    yaml = private_feast(trained_tiny.output_dir, tmp_path_factory.mktemp("feast-online"))
    return ServingSettings(output_dir=trained_tiny.output_dir, feast_yaml=yaml), yaml


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
    assert len(body["item_list"]) == 10 and body["fallback"] is None and body["userid"] == 3 and body["degraded"] == []
    assert all(0 < item["score"] < 1 and item["sources"] for item in body["item_list"])
    assert [i["rank_score"] for i in body["item_list"]] == sorted((i["rank_score"] for i in body["item_list"]),
                                                                  reverse=True)
    assert set(body["versions"]) == {"data_run", "feature_spec", "recall_model", "ranking_model", "next_item_model",
                                     "exports"}
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
    ({"userid": 10**30}, "'userid' must be"),  # orjson reads it as a float: not an integer
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
    malformed = client.post("/ml/rec", data='{"userid": 1,\n "k": }', content_type="application/json")
    assert malformed.status_code == 400 and "line 2 column 7" in malformed.get_json()["error"]
    # 16 KB of brackets, under the body limit: Python's json would overflow its stack (a 500 before)
    nested = client.post("/ml/rec", data="[" * 16_000, content_type="application/json")
    assert nested.status_code == 400 and "deeper than 1024" in nested.get_json()["error"]
    not_utf8 = client.post("/ml/rec", data=b'{"userid": "\xff\xfe"}', content_type="application/json")
    assert not_utf8.status_code == 400 and "UTF-8" in not_utf8.get_json()["error"]
    assert "empty" in client.post("/ml/rec", data=b"", content_type="application/json").get_json()["error"]
    assert client.post("/ml/rec", data="userid=1", content_type="text/plain").status_code == 415
    assert client.post("/ml/rec", data="x" * 20_000, content_type="application/json").status_code == 413
    for response in (client.get("/nowhere"), client.get("/ml/rec"), client.get("/users/x/recommendations")):
        assert response.status_code in (400, 404, 405) and "error" in response.get_json()


def test_the_reference_clients_call_without_a_content_type_is_answered(client):
    """online/main/s2_client.py of the reference design: requests.post(url, data=json.dumps({"userid": 1}))."""
    import requests

    prepared = requests.Request("POST", "http://localhost/ml/rec", data=json.dumps({"userid": 1})).prepare()
    assert "Content-Type" not in prepared.headers  # what that client sends
    response = client.post("/ml/rec", data=prepared.body)
    assert response.status_code == 200 and response.get_json()["userid"] == 1
    assert len(response.get_json()["item_list"]) > 0


def test_a_failing_store_degrades_the_list_and_names_it(served):
    settings, _ = served

    class BrokenFeatures:
        def user_features(self, userid: int):
            raise StoreUnavailableError("feast", "connection refused")

    holder = BundleHolder(settings)
    holder.current = dataclasses.replace(load_bundle(settings), features=BrokenFeatures())
    app = create_app(settings, holder).test_client()
    response = app.post("/ml/rec", json={"userid": 3, "k": 10})
    body = response.get_json()
    assert response.status_code == 200 and body["degraded"] == ["feast"] and body["fallback"] == "recall_order"
    assert len(body["item_list"]) == 10 and all(item["score"] is None for item in body["item_list"])
    assert 'recsys_degraded_responses_total{cause="feast"} 1.0' in app.get("/metrics").get_data(as_text=True)


def test_offline_equals_online(client, served):
    """The service's rows equal the batch's for the user and items, its scores equal PyTorch's, and its
    list equals the offline evaluation's (same functions)."""
    settings, _ = served
    exports = settings.current_export_dir
    bundle = load_bundle(settings)
    batch_users = load_user_features(exports)
    assembler = FeatureAssembler.from_item_features(pd.read_parquet(exports / "item_features"))
    ranking = load_ranking(open_model(settings.models_dir / "ranking"))
    for userid in list(batch_users)[:8]:
        served_values = bundle.features.user_features(userid)
        np.testing.assert_array_equal(served_values, batch_users[userid])  # Feast = the batch's row
        body = client.post("/ml/rec", json={"userid": userid}).get_json()
        itemids = np.array([i["itemid"] for i in body["item_list"]])
        rows = assembler.rows(userid, batch_users[userid], itemids)
        with torch.no_grad():
            expected = torch.sigmoid(ranking(torch.from_numpy(rows))).numpy()
        np.testing.assert_allclose([i["score"] for i in body["item_list"]], expected, atol=1e-5)
        # the offline evaluation's ordering of the same user, the sequence model's input from PyTorch
        user = bundle.users.get(userid)
        candidates, sources = recall(user, bundle.items, bundle.recall, bundle.recall.recall_size)
        scores = bundle.ranker.score(assembler.rows(userid, batch_users[userid], candidates.itemids))
        chances = next_item_chances(settings, user.recent, candidates.itemids)
        order, _ = fused_order(candidates, sources, {RANKER: scores, NEXT_ITEM: chances}, bundle.recall.fusion)
        assert itemids.tolist() == candidates.itemids[order][:50].tolist()


def next_item_chances(settings: ServingSettings, recent: np.ndarray, itemids: np.ndarray) -> np.ndarray:
    """The published sequence model's chances of ``itemids`` after the user's latest items (newest first), in
    PyTorch, relative to the likeliest of them."""
    model, vocabulary = load_next_item(open_model(settings.models_dir / "next_item"))
    history = left_padded(vocabulary.index_of(recent[:model.max_length][::-1]), model.max_length)
    with torch.no_grad():
        logits = model.next_item_scores(torch.from_numpy(history)[None])[0].numpy().astype(np.float64)
    chosen = logits[vocabulary.index_of(itemids)]
    return np.exp(chosen - chosen.max())


def test_the_sequence_model_alone_orders_the_served_candidates(served):
    """With all the final order's weight on the sequence model, the served list is the candidates by its chances."""
    settings, _ = served
    holder = BundleHolder(settings)
    bundle = load_bundle(settings)
    assert bundle.next_item is not None and bundle.versions["next_item_model"] == bundle.next_item.version
    holder.current = dataclasses.replace(bundle, recall=dataclasses.replace(bundle.recall, fusion={NEXT_ITEM: 1.0}))
    app = create_app(settings, holder).test_client()
    for userid in (1, 2, 3, 5, 8):
        body = app.post("/ml/rec", json={"userid": userid, "k": 20}).get_json()
        assert body["fallback"] is None
        itemids = np.array([item["itemid"] for item in body["item_list"]])
        user = bundle.users.get(userid)
        candidates, _ = recall(user, bundle.items, holder.current.recall, bundle.recall.recall_size)
        chances = next_item_chances(settings, user.recent, candidates.itemids)
        position = {itemid: at for at, itemid in enumerate(candidates.itemids.tolist())}
        served_chances = chances[[position[itemid] for itemid in itemids.tolist()]]
        # best first, within float32's rounding, and nothing better left out
        assert np.all(np.diff(served_chances) <= 1e-5) and served_chances[-1] >= np.sort(chances)[::-1][19] - 1e-5
        np.testing.assert_allclose([item["rank_score"] for item in body["item_list"]], served_chances, rtol=1e-4)


def test_reload_under_requests_never_mixes_versions(served):
    settings, _ = served
    settings = settings.model_copy(update={"api_token": "reload-token"})
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
    reloaded = client.post("/admin/reload", headers={"Authorization": "Bearer reload-token"})
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
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "online.serve", "--output", str(settings.output_dir), "--feast-yaml", str(yaml),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
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
        # The hold-out replayed over HTTP: the served lists are the offline evaluation's, user by user.
        report = evaluate_served.evaluate_served(settings, url, "embedded", with_ease=False)
        assert report["users_served_different_from_offline"] == 0 and report["users_evaluated"] > 20
        assert report["lists"][evaluate_served.HTTP_SERVED] == report["lists"][evaluate_served.SERVED]
        evaluate_served.chart(report, tmp_path / "chart.png")
        assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        stop([server])
    assert Path(tmp_path / "gunicorn.log").read_text().count("Booting worker") == 2


def random_json(rng: random.Random, depth: int = 0):
    """A random JSON value: wrong types, huge and negative numbers, unicode, nesting."""
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return rng.choice([None, True, False])
    if choice == 1:
        return rng.choice([0, -1, 1, 5, 2**31, -(2**63), 10**400 if rng.random() < 0.1 else 2**64, 7])
    if choice == 2:
        return rng.choice([0.5, -3.25, 1e308, float("1e-300"), 12.0])
    if choice == 3:
        return rng.choice(["12", " 7 ", "+3", "²", "١٢", "ⅷ", "12abc", "", "\u0000", "💥" * 50, "-5", "1e3"])
    if choice == 4:
        points = (rng.randrange(1, 0x2FFFF) for _ in range(rng.randrange(0, 20)))
        return "".join(chr(p) for p in points if not 0xD800 <= p <= 0xDFFF)  # no lone surrogates: not UTF-8
    if choice == 5:
        return rng.randrange(-10, 3000)
    if choice == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = ["userid", "k", "recall_size", "user", "", "userid\u200b", "K"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def test_fuzzed_requests_are_answered_never_with_a_5xx(client):
    rng = random.Random(20261129)
    statuses = collections.Counter()
    for _ in range(600):
        body = random_json(rng)
        if rng.random() < 0.5 and isinstance(body, dict):
            body = {"userid": rng.randrange(1, 40), **body}
        kind = rng.randrange(4)
        if kind == 0:
            response = client.post("/ml/rec", json=body)
        elif kind == 1:
            raw = json.dumps(body, allow_nan=True)
            cut = raw[: rng.randrange(0, len(raw) + 1)] if rng.random() < 0.3 else raw
            content_type = rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])
            response = client.post("/ml/rec", data=cut.encode(), content_type=content_type)
        elif kind == 2:
            value = body if isinstance(body, str | int) else json.dumps(body)
            response = client.get(f"/users/{quote(str(value), safe='')}/recommendations",
                                  query_string={"k": str(random_json(rng))})
        else:
            response = client.post("/ml/rec", data=b"{\"userid\": 1, \"pad\": \"" + b"x" * rng.randrange(10_000, 40_000)
                                   + b"\"}", content_type="application/json")
        statuses[response.status_code] += 1
        assert response.status_code < 500, (body, response.get_data(as_text=True)[:300])
        payload = response.get_json()
        assert payload is not None
        if response.status_code >= 400:
            assert payload["error"]
    assert client.get("/health").status_code == 200
    assert statuses[200] > 0 and sum(v for s, v in statuses.items() if 400 <= s < 500) > 300
