"""Posted ratings in the embedded profile: the API contract and every bad input, the token, idempotence, out of
order, a new user, the state checked against an independent restatement of the batch's rules over the exports,
restart from the log, and visibility across gunicorn workers (and after kill -9)."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import requests
from conftest import REPO_ROOT, private_feast
from processes import free_port, stop, wait_for
from test_online import random_json

from contracts.event_log import EventLog, LogCursor
from contracts.feature_spec import SPEC
from contracts.settings import BatchSettings, ServingSettings
from online.app import create_app

pytestmark = pytest.mark.slow

TOKEN = "test-token"
PAST = int(time.time()) - 86_400  # posted ratings' timestamps: after the data, before the server's clock
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def feast_yaml(trained_tiny, tmp_path_factory):
    """A Feast store of this module's own: the pushes below must not reach the other tests' stores."""
    return private_feast(trained_tiny.output_dir, tmp_path_factory.mktemp("feast-events"))


@pytest.fixture
def settings(trained_tiny, feast_yaml, tmp_path) -> ServingSettings:
    """The tiny batch served with an empty event log of each test's own."""
    return ServingSettings(output_dir=trained_tiny.output_dir, feast_yaml=feast_yaml, api_token=TOKEN,
                           event_log_dir=tmp_path / "events")


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def exports(settings: ServingSettings, name: str) -> pd.DataFrame:
    return pd.read_parquet(settings.current_export_dir / name)


def offline_timeline(settings: ServingSettings, userid: int) -> list[tuple[int, int, int]]:
    """The user's offline impressions (timestamp, itemid, label), from the batch's samples."""
    frames = [exports(settings, name) for name in ("samples_train", "samples_test")]
    rows = pd.concat(frames)
    rows = rows[rows["userid"] == userid]
    return list(zip(rows["timestamp"].astype(int), rows["itemid"].astype(int), rows["label"].astype(int),
                    strict=True))


def expected_features(settings: ServingSettings, userid: int, timeline: list[tuple[int, int, int]]) -> np.ndarray:
    """The batch's rules restated with pandas: the counters over the newest 10 impressions, standardised with the
    run's metadata, demographics from the users' features (0 for a new user)."""
    items = exports(settings, "item_features").set_index("itemid")
    metadata = json.loads((settings.current_export_dir / "feature_metadata.json").read_text())
    stats = {f["name"]: (f["mean"], f["std"]) for f in metadata["features"] if "mean" in f}
    latest = sorted(timeline, reverse=True)[:10]
    users = exports(settings, "user_features").set_index("userid")
    values = []
    for feature in SPEC.online_user_features:
        if feature.name in stats:
            genre = feature.name.split("_")[1][1:]
            count = sum(int(items.loc[item, f"item_g{genre}"]) * (label if feature.name.endswith("clk") else 1)
                        for _, item, label in latest)
            mean, std = stats[feature.name]
            values.append(np.float32((count - mean) / std))
        else:
            values.append(users.loc[userid, feature.name] if userid in users.index else 0)
    return np.asarray(values, dtype=np.float32)


@pytest.fixture(scope="module")
def items(trained_tiny) -> list[int]:
    """The catalogue's movie ids, ascending (sparse, as in the real releases)."""
    popularity = pd.read_parquet(trained_tiny.current_export_dir / "item_popularity")
    return sorted(popularity["itemid"].astype(int))


def recommended(client, userid: int, k: int = 50) -> dict:
    response = client.post("/ml/rec", json={"userid": userid, "k": k})
    assert response.status_code == 200
    return response.get_json()


def test_write_routes_need_the_token_and_are_off_without_one(settings, client):
    body = {"itemid": 1, "rating": 4}
    for path, payload in (("/users/3/events", body), ("/events", {"events": [{"userid": 3, **body}]}),
                          ("/admin/reload", None)):
        assert client.post(path, json=payload).status_code == 401
        assert client.post(path, json=payload, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert client.post(path, json=payload, headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    off = create_app(settings.model_copy(update={"api_token": None})).test_client()
    for path in ("/users/3/events", "/events", "/admin/reload"):
        response = off.post(path, json=body, headers=AUTH)
        assert response.status_code == 404 and "API token" in response.get_json()["error"]
    assert off.get("/users/3/recommendations").status_code == 200  # reading stays open


def test_a_rating_is_durable_applied_and_in_the_next_recommendation(settings, client):
    userid = 3
    before = recommended(client, userid)
    chosen = before["item_list"][0]["itemid"]  # the top recommendation, rated now
    response = client.post(f"/users/{userid}/events", json={"itemid": chosen, "rating": 5, "timestamp": PAST},
                           headers=AUTH)
    assert response.status_code == 202
    body = response.get_json()
    assert body["applied"] is True and body["duplicate"] is False and body["userid"] == userid
    assert body["itemid"] == chosen and body["event_id"] and body["sequence"] == 1 and body["versions"]
    # durable: in the log file before the answer
    records, _ = EventLog(settings.events_dir).read(LogCursor())
    assert [(r["event_id"], r["userid"], r["itemid"], r["rating"]) for r in records] == [
        (body["event_id"], userid, chosen, 5.0)]
    after = recommended(client, userid)
    assert chosen not in [item["itemid"] for item in after["item_list"]]  # seen now
    # Feast holds the user's new row, as the batch's rules give it over the offline impressions + the rating
    timeline = [*offline_timeline(settings, userid), (PAST, chosen, 1)]
    feast_row = create_app(settings).extensions["recsys"].holder.current.features.user_features(userid)
    np.testing.assert_array_equal(feast_row, expected_features(settings, userid, timeline))


def test_the_same_event_twice_or_the_same_impression_twice_is_applied_once(settings, client, items):
    first = client.post("/users/4/events", json={"itemid": items[7], "rating": 4, "timestamp": PAST - 10,
                                                 "event_id": "retry-1"}, headers=AUTH).get_json()
    again = client.post("/users/4/events", json={"itemid": items[7], "rating": 4, "timestamp": PAST - 10,
                                                 "event_id": "retry-1"}, headers=AUTH)
    assert again.status_code == 202 and again.get_json()["duplicate"] is True
    assert again.get_json()["sequence"] == first["sequence"]
    same_impression = client.post("/users/4/events", json={"itemid": items[7], "rating": 2, "timestamp": PAST - 10},
                                  headers=AUTH).get_json()
    assert same_impression["duplicate"] is True
    bulk = client.post("/events", json={"events": [
        {"userid": 4, "itemid": items[8], "rating": 3, "timestamp": PAST - 9, "event_id": "x"},
        {"userid": 4, "itemid": items[8], "rating": 3, "timestamp": PAST - 9, "event_id": "x"},
        {"userid": 5, "itemid": items[8], "rating": 3, "timestamp": PAST - 9}]}, headers=AUTH).get_json()
    assert [e["duplicate"] for e in bulk["events"]] == [False, True, False] and bulk["duplicates"] == 1
    records, _ = EventLog(settings.events_dir).read(LogCursor())
    assert [(r["userid"], r["itemid"]) for r in records] == [(4, items[7]), (4, items[8]), (5, items[8])]


def test_out_of_order_ratings_take_their_place_by_timestamp(settings, client, items):
    userid = 6
    offline = offline_timeline(settings, userid)
    newest = max(t for t, _, _ in offline)
    posted = [(newest + 50, items[11], 5.0), (newest - 1, items[12], 1.0), (newest + 20, items[13], 4.0),
              (newest + 50, items[2], 2.0)]
    for timestamp, itemid, rating in posted:
        assert client.post(f"/users/{userid}/events", json={"itemid": itemid, "rating": rating,
                                                             "timestamp": timestamp}, headers=AUTH).status_code == 202
    holder = create_app(settings).extensions["recsys"].holder  # a second worker: reads the same log
    user = holder.current.users.get(userid)
    timeline = offline + [(t, i, int(r > 3)) for t, i, r in posted]
    newest_first = sorted(timeline, reverse=True)
    assert user.recent.tolist() == [i for _, i, _ in newest_first][:50]
    # the same second: the larger itemid first, as the batch orders
    assert user.recent[:3].tolist() == [items[11], items[2], items[13]]
    np.testing.assert_array_equal(holder.current.features.user_features(userid),
                                  expected_features(settings, userid, timeline))


def test_a_new_user_is_recalled_and_ranked_after_their_first_rating(settings, client):
    newcomer = 900_001
    assert recommended(client, newcomer)["fallback"] == "popularity"
    popular = [item["itemid"] for item in recommended(client, newcomer)["item_list"]]
    response = client.post(f"/users/{newcomer}/events", json={"itemid": popular[3], "rating": 5}, headers=AUTH)
    assert response.status_code == 202
    body = recommended(client, newcomer)
    assert body["fallback"] is None and body["degraded"] == []
    assert popular[3] not in [item["itemid"] for item in body["item_list"]]
    sources = collections.Counter(source for item in body["item_list"] for source in item["sources"])
    assert sources["neighbours"] > 0 or sources["ease"] > 0
    features = create_app(settings).extensions["recsys"].holder.current.features.user_features(newcomer)
    np.testing.assert_array_equal(features, expected_features(settings, newcomer,
                                                              [(response.get_json()["timestamp"], popular[3], 1)]))


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/users/3/events", {"rating": 4}, "'itemid' is required"),
    ("/users/3/events", {"itemid": 1}, "'rating' is required"),
    ("/users/3/events", {"itemid": 99_999, "rating": 4}, "'itemid' 99999 is not in the catalogue"),
    ("/users/3/events", {"itemid": 1, "rating": 7}, "'rating' 7 is outside the dataset's rating scale 1..5"),
    ("/users/3/events", {"itemid": 1, "rating": 3.5}, "rating scale 1..5 step 1"),
    ("/users/3/events", {"itemid": 1, "rating": "4"}, "'rating' must be a number"),
    ("/users/3/events", {"itemid": 1, "rating": 4, "timestamp": 1.5e9}, "'timestamp' must be an integer"),
    ("/users/3/events", {"itemid": 1, "rating": 4, "timestamp": "now"}, "'timestamp' must be an integer"),
    ("/users/3/events", {"itemid": 1, "rating": 4, "timestamp": 4_000_000_000}, "more than 300 s ahead"),
    ("/users/3/events", {"itemid": 1, "rating": 4, "event_id": ""}, "'event_id' must be"),
    ("/users/3/events", {"itemid": 1, "rating": 4, "mood": "happy"}, "unknown field(s) mood"),
    ("/users/3/events", {"itemid": 1, "rating": 4, "userid": 4}, "the path names user 3"),
    ("/users/0/events", {"itemid": 1, "rating": 4}, "'userid' must be between 1"),
    ("/users/abc/events", {"itemid": 1, "rating": 4}, "'userid' must be an integer"),
    ("/users/3/events", [1], "must be a JSON object"),
    ("/events", {"events": []}, "'events' must be a list of 1 to 1000"),
    ("/events", {"events": [{"userid": 3, "itemid": 1, "rating": 4}] * 1001}, "1 to 1000"),
    ("/events", {"events": [{"userid": 3, "itemid": 1, "rating": 4}, {"userid": 3, "itemid": 1}]},
     "'events[1].rating' is required"),
    ("/events", {"events": [{"itemid": 1, "rating": 4}]}, "'events[0].userid' is required"),
    ("/events", {"events": [{"userid": -1, "itemid": 1, "rating": 4}]}, "'events[0].userid' must be between"),
])
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(settings, client, path, body, message):
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 400 and message in response.get_json()["error"], response.get_json()
    assert EventLog(settings.events_dir).read(LogCursor())[0] == []


def test_malformed_and_oversized_bodies_on_the_event_routes(settings, client, items):
    for path in ("/users/3/events", "/events"):
        assert client.post(path, data="{oops", content_type="application/json", headers=AUTH).status_code == 400
        nested = client.post(path, data="[" * 16_000, content_type="application/json", headers=AUTH)
        assert nested.status_code == 400 and "deeper than 1024" in nested.get_json()["error"]
        assert "UTF-8" in client.post(path, data=b'{"itemid": "\xff"}', content_type="application/json",
                                      headers=AUTH).get_json()["error"]
        assert client.post(path, data="itemid=1", content_type="text/plain", headers=AUTH).status_code == 415
    assert client.post("/users/3/events", data="x" * 20_000, content_type="application/json",
                       headers=AUTH).status_code == 413
    assert client.post("/events", data="x" * 300_000, content_type="application/json", headers=AUTH).status_code == 413
    # a full bulk of 1,000 ratings fits its route's limit; no Content-Type is read as JSON
    bulk = {"events": [{"userid": 3 + n % 5, "itemid": items[n % 80], "rating": 4, "timestamp": PAST - 2000 + n}
                       for n in range(1000)]}
    response = client.post("/events", data=json.dumps(bulk), headers=AUTH)
    assert response.status_code == 202 and response.get_json()["accepted"] == 1000
    assert EventLog(settings.events_dir).read(LogCursor())[0][-1]["sequence"] == 1000
    assert EventLog(settings.events_dir).read(LogCursor())[0] == EventLog(settings.events_dir).read(LogCursor())[0]


def test_fuzzed_event_bodies_are_answered_never_with_a_5xx(client):
    rng = random.Random(20261204)
    statuses = collections.Counter()
    for _ in range(300):
        body = random_json(rng)
        if isinstance(body, dict) and rng.random() < 0.5:
            body = {"itemid": rng.randrange(1, 120), "rating": rng.choice([1, 4, 5.0, 2.5, -1]), **body}
        if rng.random() < 0.5:
            response = client.post(f"/users/{rng.choice(['3', '0', 'x', '99999999999', '7'])}/events", json=body,
                                   headers=AUTH)
        else:
            response = client.post("/events", json={"events": [body, body]} if rng.random() < 0.7 else body,
                                   headers=AUTH)
        statuses[response.status_code] += 1
        assert response.status_code < 500, (body, response.get_data(as_text=True)[:300])
        assert response.get_json() is not None
    assert statuses[202] > 0 and statuses[400] > 100


def test_a_restarted_service_catches_up_from_the_log(settings, client, items):
    client.post("/users/8/events", json={"itemid": items[5], "rating": 5, "timestamp": PAST - 5}, headers=AUTH)
    client.post("/users/900002/events", json={"itemid": items[6], "rating": 4}, headers=AUTH)
    restarted = create_app(settings)  # a new process would load the same way
    users = restarted.extensions["recsys"].holder.current.users
    assert items[5] in users.get(8).seen.tolist() and users.get(900002).seen.tolist() == [items[6]]
    assert restarted.test_client().post("/ml/rec", json={"userid": 900002}).get_json()["fallback"] is None


def test_every_gunicorn_worker_sees_a_rating_and_none_is_lost_after_kill_9(settings, items, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "online.serve", "--output", str(settings.output_dir), "--feast-yaml",
               str(settings.feast_yaml), "--event-log", str(settings.events_dir), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RECSYS_API_TOKEN": TOKEN}
    url = f"http://127.0.0.1:{port}"

    def start(log_name: str) -> subprocess.Popen:
        server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=(tmp_path / log_name).open("w"),
                                  stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: requests.get(f"{url}/ready", timeout=2).ok, "gunicorn", timeout=120, process=server)
        return server

    server = start("first.log")
    try:
        accepted = []
        for n in range(12):  # each rating is in the very next request, whichever worker answers it
            itemid = items[20 + n]
            posted = requests.post(f"{url}/users/9/events", json={"itemid": itemid, "rating": 4}, headers=AUTH,
                                   timeout=10)
            assert posted.status_code == 202
            accepted.append(itemid)
            with requests.Session() as fresh:  # a new connection: any worker
                body = fresh.post(f"{url}/ml/rec", json={"userid": 9}, timeout=10).json()
            assert not set(accepted) & {item["itemid"] for item in body["item_list"]}
        os.killpg(server.pid, signal.SIGKILL)  # master and workers, no shutdown
        server.wait(timeout=10)
        server = start("second.log")
        body = requests.post(f"{url}/ml/rec", json={"userid": 9}, timeout=10).json()
        assert not set(accepted) & {item["itemid"] for item in body["item_list"]}
        records, _ = EventLog(settings.events_dir).read(LogCursor())
        assert [r["itemid"] for r in records] == accepted
        # POST /admin/reload replaces every worker (gunicorn's graceful reload)
        reloaded = requests.post(f"{url}/admin/reload", headers=AUTH, timeout=30)
        assert reloaded.status_code == 200 and reloaded.json()["workers"].startswith("all")
        deadline = time.monotonic() + 60
        while (tmp_path / "second.log").read_text().count("Booting worker") < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (tmp_path / "second.log").read_text().count("Booting worker") >= 4
    finally:
        stop([server])


def test_new_users_replayed_from_the_hold_out_are_served_from_their_ratings(trained_tiny):
    from models.evaluate_new_users import POPULARITY_BEFORE, POPULARITY_UNSEEN, evaluate_new_users
    from models.recall_sources import RecallConfig

    config = RecallConfig.served(trained_tiny.models_dir, 200)
    report = evaluate_new_users(trained_tiny.current_export_dir, trained_tiny.models_dir, config, counts=(1, 3))
    assert report["users_evaluated"] > 10 and set(report["lists"]) == {"1", "3"}
    for lists in report["lists"].values():
        assert set(lists) == {"served (recall + ranking, fused)", POPULARITY_BEFORE, POPULARITY_UNSEEN}
        assert all(0.0 <= value <= 1.0 for values in lists.values() for value in values.values())
    # the popularity list a new user got before does not depend on their ratings
    assert report["lists"]["1"][POPULARITY_BEFORE] == report["lists"]["3"][POPULARITY_BEFORE]


def test_the_batch_reads_the_posted_ratings_exactly_once_and_agrees_with_the_service(spark, trained_tiny,
                                                                                     tmp_path, items):
    """Ratings posted through the API (several users, out of order, repeats, a new user), then the batch on the
    raw files plus the events table (the streaming step): the batch's user features, seen filter, recent items
    and terms equal what the service held, cell by cell; the stream lands every record once across reruns; and
    the service over the new run applies nothing twice."""
    import shutil

    from spark_jobs import events as event_stream
    from spark_jobs import run_batch

    output = tmp_path / "out"  # a copy: the other tests keep the shared batch as it is
    shutil.copytree(trained_tiny.output_dir, output, symlinks=True)
    (tmp_path / "feast-parity").mkdir()
    serving = ServingSettings(output_dir=output, api_token=TOKEN,
                              feast_yaml=private_feast(output, tmp_path / "feast-parity"))
    client = create_app(serving).test_client()
    offline = pd.concat([pd.read_parquet(output / "exports/current" / name) for name in ("samples_train",
                                                                                        "samples_test")])
    latest = offline.groupby("userid")["timestamp"].max()
    newcomer = 900_777
    posted = [(3, items[4], 5, int(latest[3]) + 100, None), (3, items[9], 2, int(latest[3]) - 5000, None),
              (3, items[4], 5, int(latest[3]) + 100, None),  # the same impression again
              (11, items[30], 4, int(latest[11]) + 7, "r-1"), (11, items[30], 4, int(latest[11]) + 7, "r-1"),
              (newcomer, items[12], 5, PAST, None), (newcomer, items[40], 1, PAST - 60, None)]
    for userid, itemid, rating, stamp, event_id in posted:
        body = {"itemid": itemid, "rating": rating, "timestamp": stamp, **({"event_id": event_id} if event_id else {})}
        assert client.post(f"/users/{userid}/events", json=body, headers=AUTH).status_code == 202
    bulk = [{"userid": 20, "itemid": items[n], "rating": 3 + n % 3, "timestamp": int(latest[20]) + n}
            for n in range(50, 56)]
    assert client.post("/events", json={"events": bulk}, headers=AUTH).status_code == 202
    users = [3, 11, newcomer, 20]
    bundle = create_app(serving).extensions["recsys"].holder.current
    served = {u: (bundle.features.user_features(u), bundle.users.get(u)) for u in users}

    batch = BatchSettings(data_dir=trained_tiny.data_dir, output_dir=output, shuffle_partitions=2)
    run_batch.run(spark, batch, "with-events")
    records = EventLog(serving.events_dir).read(LogCursor())[0]
    manifest = json.loads((output / "exports/current/manifest.json").read_text())
    assert manifest["events_through"] == records[-1]["sequence"] == 11  # 7 + 6 posted, 2 repeats
    features = exports(serving, "user_features").set_index("userid")
    filters = exports(serving, "user_filter").set_index("userid")
    terms = exports(serving, "user_terms").set_index("userid")
    columns = [f.name for f in SPEC.online_user_features]
    for userid, (feature_row, recall) in served.items():
        np.testing.assert_array_equal(features.loc[userid, columns].to_numpy(np.float32), feature_row)
        assert filters.loc[userid, "seen_itemids"].tolist() == recall.seen.tolist()
        assert filters.loc[userid, "recent_itemids"].tolist() == recall.recent.tolist()
        assert [(t["genre_id"], t["impressions"], t["clicks"]) for t in terms.loc[userid, "terms"]] == recall.terms

    # The stream again: nothing new lands; one more rating lands once.
    event_stream.run(spark, batch, "again")
    assert client.post(f"/users/{newcomer}/events", json={"itemid": items[13], "rating": 4}, headers=AUTH) \
        .status_code == 202
    event_stream.run(spark, batch, "once-more")
    table = spark.read.format("delta").load(str(batch.table_path("events")))
    assert table.count() == 12 and table.select("sequence").distinct().count() == 12

    # The service over the new run: the ratings in it are not applied twice, the later one is applied on top.
    private_feast(output, tmp_path / "feast-parity")
    after = create_app(serving).extensions["recsys"].holder.current
    for userid in (3, 11, 20):
        np.testing.assert_array_equal(after.features.user_features(userid), served[userid][0])
        assert after.users.get(userid).recent.tolist() == served[userid][1].recent.tolist()
    assert after.users.get(newcomer).seen.tolist() == sorted([items[12], items[40], items[13]])
    # a retry of a rating the run already holds is still a repeat
    retry = create_app(serving).test_client().post(
        "/users/11/events", json={"itemid": items[30], "rating": 4, "event_id": "r-1"}, headers=AUTH)
    assert retry.status_code == 202 and retry.get_json()["duplicate"] is True


def test_the_streaming_job_killed_mid_batch_lands_every_rating_once(tmp_path):
    """``kill -9`` of the log consumer (``spark_jobs/events.py`` in a process of its own) just after it planned a
    micro-batch (its offsets in the checkpoint, nothing written yet), and just after its Delta commit (before the
    checkpoint records the batch as done), each followed by a rerun with more ratings in the log: every record
    lands in the table exactly once."""
    from deltalake import DeltaTable

    log, output = EventLog(tmp_path / "events"), tmp_path / "out"
    table, checkpoint = output / "delta" / "events", output / "checkpoints" / "events"
    appended = 0

    def append(count: int) -> None:
        nonlocal appended
        records = [{"event_id": f"e{appended + n}", "userid": 1 + n % 7, "itemid": 1 + n % 50, "rating": 4.0,
                    "timestamp": PAST + appended + n} for n in range(count)]
        with log.exclusive():
            log.append(records, appended)
        appended += count

    def consumer() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "spark_jobs.events", "--output", str(output), "--event-log",
                                 str(log.folder), "--shuffle-partitions", "1"], cwd=REPO_ROOT, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_when(ready, what: str) -> None:
        process = consumer()
        deadline = time.monotonic() + 240
        try:
            while not ready():  # polled tightly: the moment is a few milliseconds wide
                assert process.poll() is None, f"the consumer ended before {what}"
                assert time.monotonic() < deadline, f"no {what} in 240 s"
                time.sleep(0.002)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def delta_versions() -> int:
        return len(list((table / "_delta_log").glob("*.json"))) if table.exists() else 0

    append(400)
    kill_when(lambda: (checkpoint / "offsets" / "0").exists(), "the first micro-batch planned")
    assert not (checkpoint / "commits" / "0").exists()  # killed inside the batch, not after it
    append(300)
    before = delta_versions()
    kill_when(lambda: delta_versions() > before, "a Delta commit of the events")
    done = consumer()
    assert done.wait(timeout=300) == 0
    sequences = DeltaTable(str(table)).to_pyarrow_table(columns=["sequence"])["sequence"].to_pylist()
    assert sorted(sequences) == list(range(1, appended + 1))  # every record, none twice


def test_a_worker_that_kept_a_users_features_reads_them_again_once_another_worker_took_a_rating(settings, items):
    # Two apps over one event log and one Feast store: two gunicorn workers, as far as the state goes.
    reader, writer = create_app(settings), create_app(settings).test_client()
    features = reader.extensions["recsys"].holder.current.features
    userid = 5
    recommended(reader.test_client(), userid)  # the reader keeps the user's batch row
    kept = features.user_features(userid).copy()
    assert features.hits >= 1
    response = writer.post(f"/users/{userid}/events", json={"itemid": items[3], "rating": 5, "timestamp": PAST},
                           headers=AUTH)
    assert response.status_code == 202
    recommended(reader.test_client(), userid)  # the reader's next request reads the log first
    timeline = [*offline_timeline(settings, userid), (PAST, items[3], 1)]
    pushed = expected_features(settings, userid, timeline)
    assert not np.array_equal(kept, pushed)  # the rating changes the row: the check below can fail
    np.testing.assert_array_equal(features.user_features(userid), pushed)
