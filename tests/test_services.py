"""The services profile against real servers started here on 127.0.0.1 (Redis, Elasticsearch 8, Feast's
feature server, Triton): each loader's version switch, verification and failure midway; the service over
HTTP; a dependency stopped mid-test and its recovery; Triton = PyTorch; embedded = services."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import redis
import requests
import torch
from conftest import REPO_ROOT
from elasticsearch import Elasticsearch
from processes import free_port, stop, wait_for

from contracts.published import open_model, open_models
from contracts.settings import FeastSettings, RedisLoaderSettings, ServingSettings
from feature_repo import publish
from loaders import es_loader, redis_layout, redis_loader, triton_repo
from models import fusion_choice
from models import train as train_models
from models.export_readers import load_user_features, load_user_recall_data
from models.ranking_model import load_ranking
from models.recall_sources import NEXT_ITEM
from models.request_path import recommend
from models.stores import ServingBundle
from online import local_services
from online.app import create_app
from online.bundle import BundleHolder
from online.embedded import load_embedded_bundle
from online.services import load_services_bundle

pytestmark = pytest.mark.slow


@dataclasses.dataclass
class Stack:
    settings: ServingSettings
    processes: dict[str, subprocess.Popen]

    def stop(self, name: str) -> None:
        local_services.stop_process(self.processes.pop(name))

    def start(self, name: str) -> None:
        self.processes[name] = local_services.start(local_services.BUILDERS[name](self.settings), self.settings)

    def start_stopped(self) -> None:
        for name in local_services.BUILDERS:
            if name not in self.processes:
                self.start(name)


@pytest.fixture(scope="module")
def stack(tiny_batch, tmp_path_factory) -> Iterator[Stack]:
    """The tiny batch, trained models, and the four servers on free ports, loaded by the loaders."""
    folder = tmp_path_factory.mktemp("services")
    yaml = folder / "feature_store.yaml"  # a private registry; the online store is this Redis
    yaml.write_text(publish.REDIS_YAML.read_text().replace("registry: data/registry.db",
                                                           f"registry: {folder / 'registry.db'}"))
    settings = ServingSettings(output_dir=tiny_batch.output_dir, services_dir=folder,
                               services_cache=REPO_ROOT / ".services" / "cache",
                               triton_venv=REPO_ROOT / ".venv-triton", feast_yaml=yaml,
                               redis_port=free_port(), events_redis_port=free_port(), elasticsearch_url=f"http://127.0.0.1:{free_port()}",
                               feast_server_url=f"http://127.0.0.1:{free_port()}",
                               triton_url=f"127.0.0.1:{free_port()}", profile="services", breaker_seconds=1.0)
    running = Stack(settings, {})
    try:
        if None in open_models(settings.models_dir):
            train_models.main(["--output", str(settings.output_dir), "--max-epochs", "2", "--no-delta"])
        # On 90 movies any quotas recall the same candidates, so the chosen ones ask no store but Redis: every
        # store must be asked here for its outage to show.
        fusion_choice.main(["--output", str(settings.output_dir), "--keep-quotas"])
        running.start("redis")
        running.start("redis-events")
        running.start("elasticsearch")
        publish.publish(FeastSettings(**settings.narrowed(FeastSettings).model_dump(exclude={"online_store"}),
                                      online_store="redis"))
        redis_loader.load(settings.narrowed(RedisLoaderSettings))
        es_loader.load(settings)
        triton_repo.write(settings, "python")
        running.start("triton")
        running.start("feast")
        yield running
    finally:
        for process in running.processes.values():
            local_services.stop_process(process)


@pytest.fixture(autouse=True)
def every_server_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that fails with a server stopped leaves it started for the next ones (one failure, not a cascade)."""
    yield
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").start_stopped()


def redis_client(settings: ServingSettings) -> redis.Redis:
    return redis.Redis(host=settings.redis_host, port=settings.redis_port)


def events_client(settings: ServingSettings) -> redis.Redis:
    return redis.Redis(host=settings.events_redis_host, port=settings.events_redis_port)


def test_redis_loader_switches_versions_and_keeps_only_the_previous(stack):
    settings = stack.settings
    client = redis_client(settings)
    first = redis_layout.active_version(client, settings.redis_prefix)
    second = redis_loader.load(settings.narrowed(RedisLoaderSettings))
    third = redis_loader.load(settings.narrowed(RedisLoaderSettings))
    assert (second.previous, third.previous) == (first, second.version)
    assert redis_layout.active_version(client, settings.redis_prefix) == third.version
    assert redis_loader.stored_versions(client, settings.redis_prefix) == {second.version, third.version}
    assert first in third.deleted_versions
    # What the service reads decodes to exactly what the batch and the recall model wrote.
    recall_model, _ = open_models(settings.models_dir)
    expected = load_user_recall_data(settings.current_export_dir, recall_model)
    userid = sorted(expected)[3]
    meta = {k.decode(): v.decode() for k, v in
            client.hgetall(redis_layout.meta_key(settings.redis_prefix, third.version)).items()}
    shape = redis_layout.decode_search_shape(meta)
    assert shape is not None and shape[0] == settings.recall_size
    found = redis_layout.decode_user(userid, client.hgetall(
        redis_layout.user_key(settings.redis_prefix, third.version, userid)), shape)
    np.testing.assert_array_equal(found.seen, expected[userid].seen)
    np.testing.assert_array_equal(found.vector, expected[userid].vector)
    assert list(found.terms) == list(expected[userid].terms)
    # The searches published with the record are Elasticsearch's answer to the request's own query.
    from models.recall_sources import term_bands
    from models.stores import CatalogueSearch

    items = load_services_bundle(settings.model_copy(update={"search_every_request": True})).items
    assert items.search_cache is None
    term, vector = items.search(CatalogueSearch(term_bands(found.terms, shape[1], items.max_popularity),
                                                found.vector, found.seen, shape[0]))
    assert len(found.searches.term) > 0 and len(found.searches.vector) > 0
    assert found.searches.term.itemids.tolist() == term.itemids.tolist()
    assert found.searches.vector.itemids.tolist() == vector.itemids.tolist()
    np.testing.assert_allclose(found.searches.term.scores, term.scores, rtol=1e-6)
    np.testing.assert_allclose(found.searches.vector.scores, vector.scores, rtol=1e-5, atol=1e-6)
    # --no-user-searches: the records without them, and the service searches for everyone
    fourth = redis_loader.load(settings.narrowed(RedisLoaderSettings).model_copy(update={"user_searches": False}))
    assert b"user_searches" not in client.hgetall(redis_layout.meta_key(settings.redis_prefix, fourth.version))
    assert load_services_bundle(settings).users.get(userid).searches is None
    redis_loader.load(settings.narrowed(RedisLoaderSettings))
    assert load_services_bundle(settings).users.get(userid).searches is not None


def test_redis_loader_failing_midway_leaves_the_previous_version_serving(stack, monkeypatch):
    settings = stack.settings
    client = redis_client(settings)
    before = redis_layout.active_version(client, settings.redis_prefix)
    bundle = load_services_bundle(settings)
    calls = {"n": 0}
    encode = redis_layout.encode_user

    def failing_encode(user):
        calls["n"] += 1
        if calls["n"] > 10:
            raise ConnectionError("simulated: the loader's host went away")
        return encode(user)

    monkeypatch.setattr(redis_layout, "encode_user", failing_encode)
    with pytest.raises(ConnectionError):
        redis_loader.load(settings.narrowed(RedisLoaderSettings))
    assert redis_layout.active_version(client, settings.redis_prefix) == before
    counter = int(client.get(f"{settings.redis_prefix}:version_counter"))
    assert not list(client.scan_iter(match=f"{redis_layout.version_prefix(settings.redis_prefix, counter)}:*"))
    result = recommend(bundle, 3, 5, 50)
    assert result.fallback is None and len(result.items) == 5


def test_es_loader_moves_the_alias_and_a_failure_midway_keeps_it(stack, monkeypatch):
    settings = stack.settings
    search = Elasticsearch(settings.elasticsearch_url)
    alias = settings.elasticsearch_alias
    first = es_loader.alias_target(search, alias)
    second = es_loader.load(settings)
    third = es_loader.load(settings)
    assert (second.previous, third.previous) == (first, second.index)
    assert es_loader.alias_target(search, alias) == third.index
    assert set(es_loader.versioned_indices(search, alias).values()) == {second.index, third.index}
    mapping = search.indices.get_mapping(index=third.index)[third.index]["mappings"]
    assert mapping["properties"]["vector"]["similarity"] == "max_inner_product"
    assert mapping["properties"]["genres"]["type"] == "keyword"

    documents = es_loader.documents

    def one_bad_document(index, name):
        for number, document in enumerate(documents(index, name)):
            if number == 20:
                document["_source"]["not_in_the_mapping"] = 1  # strict mapping: the bulk request fails
            yield document

    monkeypatch.setattr(es_loader, "documents", one_bad_document)
    with pytest.raises(es_loader.VerificationError, match="not_in_the_mapping"):
        es_loader.load(settings)
    assert es_loader.alias_target(search, alias) == third.index
    assert set(es_loader.versioned_indices(search, alias).values()) == {second.index, third.index}


def test_triton_scores_equal_pytorch(stack):
    settings = stack.settings
    bundle = load_services_bundle(settings)
    ranking = load_ranking(open_model(settings.models_dir / "ranking"))
    user = bundle.users.get(5)
    values = bundle.features.user_features(5)
    rows = bundle.assembler.rows(5, values, np.arange(1, 60))
    with torch.no_grad():
        expected = torch.sigmoid(ranking(torch.from_numpy(rows))).numpy()
    np.testing.assert_allclose(bundle.ranker.score(rows), expected, atol=1e-5)
    assert user is not None and bundle.versions["ranking_model"] == open_model(
        settings.models_dir / "ranking").metadata()["version"]


def test_embedded_and_services_profiles_return_the_same_lists(stack):
    """Same models and data: the same items in the same order with the same scores, for every user, whether the
    services profile reads the searches the loader published or asks Elasticsearch on every request."""
    settings = stack.settings
    published = load_services_bundle(settings)
    searched = load_services_bundle(settings.model_copy(update={"search_every_request": True}))
    assert published.users.get(4).searches is not None and searched.users.get(4).searches is None
    embedded = load_embedded_bundle(settings.model_copy(update={"profile": "embedded"}))
    assert published.next_item is not None and published.versions["next_item_model"] == embedded.next_item.version

    def weighing_next_item(bundle: ServingBundle) -> ServingBundle:
        """Whatever the tiny data's choice, the sequence model weighs in, so its scorer runs in both profiles."""
        return dataclasses.replace(bundle, recall=dataclasses.replace(
            bundle.recall, fusion={**bundle.recall.fusion, NEXT_ITEM: 1.0}))

    compared = 0
    for services in (published, searched):
        for userid in range(1, 32):
            a = recommend(weighing_next_item(embedded), userid, 20, 60)
            b = recommend(weighing_next_item(services), userid, 20, 60)
            assert [i.itemid for i in a.items] == [i.itemid for i in b.items], userid
            assert [i.sources for i in a.items] == [i.sources for i in b.items], userid
            np.testing.assert_allclose([i.score for i in a.items], [i.score for i in b.items], atol=1e-5)
            np.testing.assert_allclose([i.rank_score for i in a.items], [i.rank_score for i in b.items], atol=1e-5)
            assert a.fallback == b.fallback
            compared += a.fallback is None
            assert a.trace is None or a.trace.next_item_scores is not None
    assert compared >= 50  # most tiny users have recall data: the comparison is not all fallbacks


def rec(app, userid: int = 4) -> dict:
    response = app.post("/ml/rec", json={"userid": userid})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_a_stopped_dependency_degrades_the_list_names_it_then_recovers(stack):
    # Elasticsearch asked on every request: without it, the published searches answer for users the batch knows
    # (checked below).
    settings = stack.settings.model_copy(update={"search_every_request": True})
    published = create_app(stack.settings, BundleHolder(stack.settings)).test_client()
    client = create_app(settings, BundleHolder(settings)).test_client()
    # Features through Feast's feature server instead of its Redis online store: the server becomes one.
    server_settings = settings.model_copy(update={"feast_access": "server"})
    through_server = create_app(server_settings, BundleHolder(server_settings)).test_client()
    full = rec(client)
    assert full["degraded"] == [] and full["fallback"] is None
    served_as = {"redis": "popularity", "elasticsearch": None, "triton": None, "feast": "recall_order"}
    for name, app in (("redis", client), ("elasticsearch", client), ("triton", client), ("feast", through_server)):
        stack.stop(name)
        for _ in range(3):  # the first request meets the failure, the next ones the open circuit breaker
            body = rec(app)
            assert body["degraded"] == [name] and 0 < len(body["item_list"]) <= 50, body
            assert body["fallback"] == served_as[name]
        if name == "triton":  # ranked in-process by the same model: the same list
            assert [i["itemid"] for i in body["item_list"]] == [i["itemid"] for i in full["item_list"]]
        if name == "feast":  # read at load only when the features come from Redis
            assert rec(client)["degraded"] == []
        if name == "elasticsearch":  # the user's searches came with their record
            body = rec(published)
            assert body["degraded"] == [] and body["fallback"] is None
            assert [i["itemid"] for i in body["item_list"]] == [i["itemid"] for i in full["item_list"]]
        ready = app.get("/ready")
        assert ready.status_code == 503 and name in ready.get_json()["store"]
        stack.start(name)
        wait_for(lambda app=app: rec(app)["degraded"] == [], f"full lists after {name} restarted", timeout=120)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'recsys_degraded_responses_total{cause="redis"}' in metrics

    # Two at once: the per-item lists of Redis (neighbours, EASE, successors) and popularity, ranked in-process.
    stack.stop("elasticsearch")
    stack.stop("triton")
    body = rec(client)
    assert body["degraded"] == ["elasticsearch", "triton"] and body["fallback"] is None and body["item_list"]
    assert all(set(i["sources"]) <= {"neighbours", "ease", "sequence", "popularity"} for i in body["item_list"])
    stack.start("triton")
    stack.start("elasticsearch")
    wait_for(lambda: rec(client)["degraded"] == [], "full lists after both restarted", timeout=120)


def test_a_hanging_dependency_is_cut_at_its_timeout_then_skipped_by_the_circuit_breaker(stack):
    settings = stack.settings.model_copy(update={"search_every_request": True})
    client = create_app(settings, BundleHolder(settings)).test_client()
    assert rec(client)["degraded"] == []
    es = stack.processes["elasticsearch"]
    os.killpg(es.pid, signal.SIGSTOP)  # paused, not stopped: connections hang
    try:
        started = time.monotonic()
        first = rec(client)
        first_seconds = time.monotonic() - started
        started = time.monotonic()
        second = rec(client)  # within the breaker's interval: Elasticsearch is not waited on
        second_seconds = time.monotonic() - started
        ready = client.get("/ready")
    finally:
        os.killpg(es.pid, signal.SIGCONT)
    assert first["degraded"] == second["degraded"] == ["elasticsearch"]
    assert 1.5 < first_seconds < 5 and second_seconds < 0.5, (first_seconds, second_seconds)
    assert ready.status_code == 503 and "elasticsearch" in ready.get_json()["store"]
    wait_for(lambda: rec(client)["degraded"] == [], "recovery", timeout=30)
    assert client.get("/ready").status_code == 200


def test_a_service_that_never_loaded_still_answers_503(stack):
    """Degrading needs a loaded bundle (its popularity list): before any load there is nothing to serve."""
    nowhere = stack.settings.model_copy(update={"redis_port": free_port()})
    response = create_app(nowhere, BundleHolder(nowhere)).test_client().post("/ml/rec", json={"userid": 4})
    assert response.status_code == 503 and response.get_json()["store"] == "bundle"


def test_the_services_profile_under_gunicorn_over_http(stack, tmp_path):
    settings = stack.settings
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "online.serve", "--profile", "services", "--output", str(settings.output_dir),
         "--feast-yaml", str(settings.feast_yaml), "--port", str(port), "--redis-port", str(settings.redis_port),
         "--events-redis-port", str(settings.events_redis_port), "--elasticsearch-url", settings.elasticsearch_url,
         "--feast-server-url", settings.feast_server_url,
         "--triton-url", settings.triton_url],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/ready", timeout=5).ok, "gunicorn", timeout=120, process=server)
        ready = requests.get(f"{url}/ready", timeout=5).json()
        assert ready["profile"] == "services"
        assert set(ready["dependencies"]) == {"redis", "elasticsearch", "triton", "event_log"}
        body = requests.post(f"{url}/ml/rec", json={"userid": 6, "k": 10}, timeout=10).json()
        assert len(body["item_list"]) == 10 and body["fallback"] is None
        assert body["versions"]["elasticsearch"].startswith(f"{settings.elasticsearch_alias}_v")
        rest = requests.get(f"{url}/users/6/recommendations?k=10", timeout=10).json()
        assert [i["itemid"] for i in rest["item_list"]] == [i["itemid"] for i in body["item_list"]]
    finally:
        stop([server])


def forget_posted_ratings(settings: ServingSettings, userid: int) -> None:
    """What the other tests compare against the batch: the stream gone, the known user's batch row pushed back."""
    from online.embedded import FeastFeaturePusher

    events_client(settings).delete(f"{settings.redis_prefix}:events")
    batch_row = load_user_features(settings.current_export_dir)[userid]
    FeastFeaturePusher(publish.open_store(settings, "redis", settings.redis_address)).push({userid: batch_row})


def test_posted_ratings_in_the_services_profile_are_durable_shared_and_applied_by_the_batchs_rules(stack):
    """The Redis stream as the event log (on a Redis of its own that fsyncs every write), the users' batch state from
    their Redis records: the same state as the embedded profile computes from the exports."""
    settings = stack.settings.model_copy(update={"api_token": "services-token"})
    client = events_client(settings)
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    # The serving Redis holds what a load or the log's replay writes again: its reads do not wait on each fsync.
    assert redis_client(settings).config_get("appendfsync") == {"appendfsync": "everysec"}
    auth = {"Authorization": "Bearer services-token"}
    app = create_app(settings).test_client()
    userid, newcomer = 7, 900_123
    top = app.post("/ml/rec", json={"userid": userid}).get_json()["item_list"][0]["itemid"]
    stamp = int(time.time()) - 3600
    try:
        posted = app.post(f"/users/{userid}/events", json={"itemid": top, "rating": 5, "timestamp": stamp},
                          headers=auth)
        assert posted.status_code == 202 and posted.get_json()["applied"] is True
        assert client.xlen(f"{settings.redis_prefix}:events") == 1
        assert top not in [i["itemid"] for i in app.post("/ml/rec", json={"userid": userid}).get_json()["item_list"]]
        assert app.post(f"/users/{newcomer}/events", json={"itemid": top, "rating": 4}, headers=auth).status_code == 202
        assert app.post("/ml/rec", json={"userid": newcomer}).get_json()["fallback"] is None
        # another worker (a new app) replays the stream; its Feast row is the embedded profile's computation
        other = create_app(settings).extensions["recsys"].holder.current
        assert top in other.users.get(userid).seen.tolist() and other.users.get(newcomer).seen.tolist() == [top]
        # The loader's searches were run on the batch's state: a user who rated since is searched anew
        # (Elasticsearch, then the worker's cache), one who did not reads them with their record.
        assert other.users.get(userid).searches is None and other.users.get(userid + 1).searches is not None
        from models.export_readers import load_batch_user_states, load_item_index, load_update_rules
        from models.user_updates import PostedRating, apply_ratings

        recall_model, _ = open_models(settings.models_dir)
        exports = settings.current_export_dir
        base = load_user_recall_data(exports, recall_model)[userid]
        expected = apply_ratings(load_batch_user_states(exports).of(userid, base),
                                 [PostedRating("e", userid, top, 5.0, stamp)],
                                 load_update_rules(exports, load_item_index(exports, recall_model)))
        np.testing.assert_array_equal(other.features.user_features(userid), expected.features)
        assert other.users.get(userid).terms == expected.recall.terms
        np.testing.assert_array_equal(other.users.get(userid).recent, expected.recall.recent)
        np.testing.assert_array_equal(other.users.get(userid).ease.itemids, expected.recall.ease.itemids)
    finally:
        forget_posted_ratings(settings, userid)


def test_without_the_event_log_the_lists_stay_personal_and_ratings_wait_until_it_is_back(stack):
    """The event log's Redis stopped: the users' lists are served as before (the ratings read so far applied),
    /ready and the write routes name the log, and a rating is taken again once it is back."""
    settings = stack.settings.model_copy(update={"api_token": "services-token"})
    auth = {"Authorization": "Bearer services-token"}
    app = create_app(settings).test_client()
    before = rec(app)
    rating = {"itemid": before["item_list"][0]["itemid"], "rating": 4, "timestamp": int(time.time()) - 60}
    stack.stop("redis-events")
    try:
        during = rec(app)
        assert during["fallback"] is None and during["degraded"] == []
        assert [i["itemid"] for i in during["item_list"]] == [i["itemid"] for i in before["item_list"]]
        ready = app.get("/ready")
        assert ready.status_code == 503 and ready.get_json()["store"] == "event_log"
        refused = app.post("/users/4/events", json=rating, headers=auth)
        assert refused.status_code == 503 and refused.get_json()["store"] == "event_log"
    finally:
        stack.start("redis-events")
    try:
        wait_for(lambda: app.get("/ready").status_code == 200, "ready after the event log restarted", timeout=60)
        assert app.post("/users/4/events", json=rating, headers=auth).status_code == 202
        assert rating["itemid"] not in [i["itemid"] for i in rec(app)["item_list"]]
    finally:
        forget_posted_ratings(settings, 4)


def test_the_batch_reads_the_services_stream_and_agrees_with_the_service(stack, spark, tiny_batch, tmp_path):
    """Ratings posted to the services profile, then the batch with --events-redis on a copy of the output: the
    service's features, seen filter, recent items and terms are the batch's rows; the manifest's boundary is the
    stream's last record."""
    import shutil

    import pandas as pd

    from contracts.feature_spec import SPEC
    from contracts.settings import BatchSettings
    from spark_jobs import run_batch

    settings = stack.settings.model_copy(update={"api_token": "services-token"})
    auth = {"Authorization": "Bearer services-token"}
    app = create_app(settings).test_client()
    exports = settings.current_export_dir
    items = sorted(pd.read_parquet(exports / "item_popularity")["itemid"].astype(int))
    offline = pd.concat([pd.read_parquet(exports / name) for name in ("samples_train", "samples_test")])
    latest = offline.groupby("userid")["timestamp"].max()
    userid, newcomer = 5, 900_321
    stamp = int(time.time()) - 7200
    try:
        for user, itemid, rating, when in ((userid, items[3], 5, int(latest[userid]) + 10),
                                           (userid, items[17], 1, int(latest[userid]) - 999),
                                           (userid, items[3], 5, int(latest[userid]) + 10),  # a repeat
                                           (newcomer, items[8], 4, stamp)):
            response = app.post(f"/users/{user}/events", json={"itemid": itemid, "rating": rating, "timestamp": when},
                                headers=auth)
            assert response.status_code == 202
        bundle = create_app(settings).extensions["recsys"].holder.current
        served = {u: (bundle.features.user_features(u), bundle.users.get(u)) for u in (userid, newcomer)}
        output = tmp_path / "out"  # a copy: the other tests keep the shared batch as it is
        shutil.copytree(settings.output_dir, output, symlinks=True)
        batch = BatchSettings(data_dir=tiny_batch.data_dir, output_dir=output, shuffle_partitions=2,
                              events_redis=f"{settings.events_redis_host}:{settings.events_redis_port}/"
                                           f"{settings.redis_prefix}")
        run_batch.run(spark, batch, "services-events")
        copied = output / "exports" / "current"
        assert json.loads((copied / "manifest.json").read_text())["events_through"] == 3
        features = pd.read_parquet(copied / "user_features").set_index("userid")
        filters = pd.read_parquet(copied / "user_filter").set_index("userid")
        terms = pd.read_parquet(copied / "user_terms").set_index("userid")
        columns = [f.name for f in SPEC.online_user_features]
        for user, (row, recall) in served.items():
            np.testing.assert_array_equal(features.loc[user, columns].to_numpy(np.float32), row)
            assert filters.loc[user, "seen_itemids"].tolist() == recall.seen.tolist()
            assert filters.loc[user, "recent_itemids"].tolist() == recall.recent.tolist()
            assert [(t["genre_id"], t["impressions"], t["clicks"]) for t in terms.loc[user, "terms"]] == recall.terms
    finally:
        forget_posted_ratings(settings, userid)
