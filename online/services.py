"""The services profile's stores: Redis (user recall data, item neighbours, popularity), Elasticsearch
(term and vector recall in one ``_msearch`` round trip), Feast (the user's features from its Redis
online store in-process, or from its feature server over HTTP with ``--feast-access server``; item
features prefetched from the server at load), and Triton (gRPC) for ranking. The sequence model (next-item
scores) runs in-process, from its published ONNX file.

Each store is pinned, when the bundle is loaded, to the versions the loaders published (Redis key
version, the concrete index behind the alias, the Triton model version), so a request reads one
consistent set and a reload moves all of them together. Every call has a short timeout and maps its
client's errors to ``StoreUnavailableError`` naming the store; clients reconnect on the next request, so
a server that comes back is used again without a restart.

The stores supply data; the recall rules are the request path's (``models/request_path.py``): the neighbour
lists Redis returns are summed and the popularity list filtered there as for the embedded profile, and the
Elasticsearch queries (``loaders/es_layout.py``) reproduce the in-memory term and vector searches, so both
profiles return the same candidates for the same data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import pandas as pd
import redis
import requests
import tritonclient.grpc as triton
from elastic_transport import TransportError
from elasticsearch import Elasticsearch
from elasticsearch import exceptions as es_errors
from elasticsearch.serializer import NdjsonSerializer, OrjsonSerializer
from tritonclient.utils import InferenceServerException

from contracts.errors import NotPublishedError, StoreUnavailableError
from contracts.feature_spec import GENRE_IDS, SPEC, check_spec_version, genre_flag_name
from contracts.published import open_model, open_next_item
from contracts.settings import ServingSettings
from contracts.tables import ModelFiles
from feature_repo.names import ITEM_FEATURE_REFS, USER_FEATURE_REFS
from feature_repo.publish import open_store
from loaders import es_layout, redis_layout
from loaders.triton_repo import VERSION_PARAMETER
from models.export_readers import load_item_vectors
from models.feature_rows import FeatureAssembler
from models.onnx_next_item import OnnxNextItemScorer
from models.onnx_ranker import OnnxRanker
from models.recall_sources import Ranked, RecallConfig, UserRecallData
from models.stores import CatalogueSearch, FeatureClient, ServingBundle
from models.user_updates import DEMOGRAPHICS, BatchUser, RecentImpressions, UpdateRules
from online.circuit_breaker import CircuitBreaker
from online.embedded import FeastFeatureClient, FeastFeaturePusher
from online.feature_cache import cached_features, no_posted_ratings
from online.live_users import LiveUserRecallStore, LiveUsers
from online.redis_event_log import RedisEventLog
from online.search_cache import SearchCache
from spark_jobs.formats import FORMATS_BY_NAME

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 2.0
DEPENDENCIES = ("redis", "elasticsearch", "feast", "triton")


class _OrjsonNdjsonSerializer(NdjsonSerializer):
    def json_dumps(self, data: Any) -> bytes:
        return orjson.dumps(data, default=self.default, option=orjson.OPT_SERIALIZE_NUMPY)

    def json_loads(self, data: bytes) -> Any:
        return orjson.loads(data)


class _OrjsonCompatibilitySerializer(OrjsonSerializer):
    mimetype = "application/vnd.elasticsearch+json"


class _OrjsonCompatibilityNdjsonSerializer(_OrjsonNdjsonSerializer):
    mimetype = "application/vnd.elasticsearch+x-ndjson"


# orjson for every body the client writes or reads (the 8.x client answers in its compatibility types):
# ~1 ms less per _msearch of the two recall searches (200+ seen ids sent twice, 400 hits read back).
ORJSON_SERIALIZERS = {serializer.mimetype: serializer for serializer in (
    OrjsonSerializer(), _OrjsonNdjsonSerializer(), _OrjsonCompatibilitySerializer(),
    _OrjsonCompatibilityNdjsonSerializer())}


class RedisUserRecallStore:
    """A user's record; with ``search_shape`` (``redis_layout.decode_search_shape``) their published searches too."""

    def __init__(self, client: redis.Redis, prefix: str, version: int, breaker: CircuitBreaker,
                 search_shape: tuple[int, int] | None = None) -> None:
        self.client, self.prefix, self.version, self.breaker = client, prefix, version, breaker
        self.search_shape = search_shape

    def get(self, userid: int) -> UserRecallData | None:
        return self.breaker.call(self._read, userid)

    def _read(self, userid: int) -> UserRecallData | None:
        try:
            record = self.client.hgetall(redis_layout.user_key(self.prefix, self.version, userid))
        except redis.RedisError as error:
            raise StoreUnavailableError("redis", str(error)) from error
        return redis_layout.decode_user(userid, record, self.search_shape) if record else None


class RedisBatchUserStates:
    """A user's recent timestamps and labels and demographics from their Redis record (read when they post)."""

    def __init__(self, client: redis.Redis, prefix: str, version: int) -> None:
        self.client, self.prefix, self.version = client, prefix, version

    def of(self, userid: int, recall: UserRecallData | None) -> BatchUser:
        try:
            values = self.client.hmget(redis_layout.user_key(self.prefix, self.version, userid),
                                       ["recent_timestamps", "recent_labels", "demographics"])
        except redis.RedisError as error:
            raise StoreUnavailableError("redis", str(error)) from error
        record = {name: value for name, value in zip((b"recent_timestamps", b"recent_labels", b"demographics"),
                                                       values, strict=True) if value is not None}
        state = redis_layout.decode_batch_state(record)
        if state is None or recall is None:
            demographics = state[2] if state is not None else np.zeros(len(DEMOGRAPHICS), dtype=np.int16)
            return BatchUser(userid, recall, RecentImpressions.empty(), demographics)
        timestamps, labels, demographics = state
        return BatchUser(userid, recall, RecentImpressions(recall.recent[:len(timestamps)].astype(np.int64),
                                                           timestamps, labels), demographics)


class RedisItemLists:
    """Per-movie lists of one kind from their Redis keys (``item_list_key``), one ``MGET``."""

    def __init__(self, client: redis.Redis, prefix: str, version: int, source: str) -> None:
        self.client, self.prefix, self.version, self.source = client, prefix, version, source

    def of(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = [redis_layout.item_list_key(self.prefix, self.version, self.source, int(i)) for i in itemids]
        if not keys:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        try:
            lists = [redis_layout.decode_ranked(blob) for blob in self.client.mget(keys)]
        except redis.RedisError as error:
            raise StoreUnavailableError("redis", str(error)) from error
        return np.concatenate([r.itemids for r in lists]), np.concatenate([r.scores for r in lists])


def update_rules(settings: ServingSettings, client: redis.Redis, version: int, meta: dict[str, str],
                 item_frame: pd.DataFrame, catalogue: np.ndarray) -> tuple[UpdateRules, str] | None:
    """The rules posted ratings are applied with, from what the loader published beside the recall data (None:
    a version loaded before it published them) and the recall model's item vectors where readable here."""
    if "update_rules" not in meta:
        return None
    published = json.loads(meta["update_rules"])
    itemids = item_frame["itemid"].to_numpy().astype(np.int64)
    genre_flags = np.zeros((int(max(itemids.max(initial=0), catalogue.max(initial=0))) + 1, len(GENRE_IDS)),
                           dtype=np.int64)
    for column, genre in enumerate(GENRE_IDS):
        genre_flags[itemids, column] = item_frame[genre_flag_name(genre)].to_numpy().astype(np.int64)
    folder = settings.models_dir / ModelFiles.RECALL / meta["recall_model"]
    vectors = None
    if (folder / ModelFiles.ITEM_VECTORS).exists():
        vectors = load_item_vectors(open_model(folder), len(genre_flags))
    else:
        log.warning("no %s here: new users get no folded-in vector (no vector recall)", folder)
    rules = UpdateRules(genre_flags, np.asarray(published["means"], dtype=np.float64),
                        np.asarray(published["stds"], dtype=np.float64), int(published["recent_items"]),
                        RedisItemLists(client, settings.redis_prefix, version, redis_layout.EASE_LISTS),
                        int(published["ease_per_user"]), vectors, np.sort(catalogue))
    return rules, str(published["dataset_format"])


class ServiceItemIndex:
    """Neighbour lists and popularity from Redis, the term and vector searches in Elasticsearch."""

    def __init__(self, client: redis.Redis, prefix: str, version: int, search: Elasticsearch, index: str,
                 item_count: int, redis_breaker: CircuitBreaker, search_breaker: CircuitBreaker,
                 search_cache: SearchCache | None = None) -> None:
        self.client, self.prefix, self.version = client, prefix, version
        self.search_client, self.index, self.item_count = search, index, item_count
        self.redis_breaker, self.search_breaker = redis_breaker, search_breaker
        self.search_cache = search_cache  # None: every search asks Elasticsearch
        try:  # the popularity list is the same for every user and immutable within a version: read once
            self.popularity = redis_layout.decode_ranked(self.client.get(redis_layout.popular_key(prefix, version)))
        except redis.RedisError as error:
            raise StoreUnavailableError("redis", str(error)) from error
        self.max_popularity = float(self.popularity.scores.max()) if len(self.popularity) else 0.0

    def neighbour_lists(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.redis_breaker.call(self._neighbour_lists, itemids)

    def item_lists(self, source: str, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.redis_breaker.call(self._lists, [
            redis_layout.item_list_key(self.prefix, self.version, source, int(item)) for item in itemids])

    def search(self, query: CatalogueSearch) -> tuple[Ranked, Ranked]:
        if self.search_cache is None:
            return self._guarded_search(query)
        return self.search_cache.answer(query, self._guarded_search)

    def _guarded_search(self, query: CatalogueSearch) -> tuple[Ranked, Ranked]:
        return self.search_breaker.call(self._search, query)

    def _neighbour_lists(self, itemids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._lists([redis_layout.neighbours_key(self.prefix, self.version, int(item)) for item in itemids])

    def _lists(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if len(keys) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        try:
            blobs = self.client.mget(keys)
        except redis.RedisError as error:
            raise StoreUnavailableError("redis", str(error)) from error
        lists = [redis_layout.decode_ranked(blob) for blob in blobs]  # a missing key decodes as empty
        return np.concatenate([r.itemids for r in lists]), np.concatenate([r.scores for r in lists])

    def _search(self, query: CatalogueSearch) -> tuple[Ranked, Ranked]:
        """Both searches in one ``_msearch`` round trip."""
        searches: list[dict[str, Any]] = []
        if query.bands:
            searches += [{"index": self.index}, es_layout.term_query(query.bands, query.seen, query.size)]
        if query.vector is not None:
            searches += [{"index": self.index},
                         es_layout.knn_query(query.vector, query.seen, query.size, self.item_count)]
        if not searches:
            return Ranked.empty(), Ranked.empty()
        try:
            responses = self.search_client.msearch(searches=searches)["responses"]
        except (es_errors.ApiError, TransportError) as error:
            raise StoreUnavailableError("elasticsearch", str(error)) from error
        failed = [r["error"] for r in responses if "error" in r]
        if failed:
            raise StoreUnavailableError("elasticsearch", str(failed[0])[:300])
        answers = iter(responses)
        term = Ranked(*es_layout.hits(next(answers))) if query.bands else Ranked.empty()
        vector = Ranked.empty()
        if query.vector is not None:  # already in the model's order (score, then itemid): the search sorts so
            itemids, scores = es_layout.hits(next(answers))
            vector = Ranked(itemids, es_layout.inner_product(scores))
        return term, vector


class FeastServerFeatureClient:
    """Feast's feature server (``feast serve``) over HTTP, one kept-alive connection per worker."""

    def __init__(self, url: str, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/") + "/get-online-features"
        self.session = session or requests.Session()
        self.columns = [f.name for f in SPEC.online_user_features]

    def _fetch(self, refs: tuple[str, ...], entity: str, keys: list[int], timeout: float) -> dict[str, list]:
        try:
            response = self.session.post(self.url, json={"features": list(refs), "entities": {entity: keys}},
                                         timeout=timeout)
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError) as error:
            raise StoreUnavailableError("feast", str(error)) from error
        names = body["metadata"]["feature_names"]
        return {name: result["values"] for name, result in zip(names, body["results"], strict=True)}

    def user_features(self, userid: int) -> np.ndarray | None:
        values = self._fetch(USER_FEATURE_REFS, "userid", [userid], TIMEOUT_SECONDS)
        row = [values[name][0] for name in self.columns]
        if any(value is None for value in row):
            return None
        return np.asarray(row, dtype=np.float32)

    def item_features(self, itemids: list[int]) -> pd.DataFrame:
        """Every item's online features (prefetched once per bundle: ~0.4 s for MovieLens's catalogue)."""
        columns = [f.name for f in SPEC.online_item_features]
        values = self._fetch(ITEM_FEATURE_REFS, "itemid", itemids, 60.0)
        frame = pd.DataFrame({"itemid": itemids, **{name: values[name] for name in columns}})
        missing = frame[columns].isna().any(axis=1)
        if missing.any():
            raise StoreUnavailableError("feast", f"no online features for {int(missing.sum())} items, e.g. "
                                                 f"{frame.loc[missing, 'itemid'].head(3).tolist()}: materialise first")
        return frame


class GuardedFeatureClient:
    """A feature client behind its server's circuit breaker."""

    def __init__(self, client: FeatureClient, breaker: CircuitBreaker) -> None:
        self.client, self.breaker = client, breaker

    def user_features(self, userid: int) -> np.ndarray | None:
        return self.breaker.call(self.client.user_features, userid)


class TritonRanker:
    """The ranking model ``ml_rec`` in Triton over gRPC, pinned to one model version."""

    def __init__(self, url: str, model: str, model_version: int, version: str,
                 breaker: CircuitBreaker | None = None) -> None:
        # A short reconnect backoff: a restarted server is used again within a second, not minutes.
        self.client = triton.InferenceServerClient(url, channel_args=[("grpc.max_reconnect_backoff_ms", 1000),
                                                                      ("grpc.initial_reconnect_backoff_ms", 100)])
        self.model, self.model_version, self.version = model, str(model_version), version
        self.output = [triton.InferRequestedOutput("ml_output")]
        self.breaker = breaker

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.breaker.call(self._infer, rows) if self.breaker is not None else self._infer(rows)

    def _infer(self, rows: np.ndarray) -> np.ndarray:
        request = triton.InferInput("ml_input", list(rows.shape), "FP32")
        request.set_data_from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
        try:
            result = self.client.infer(self.model, [request], model_version=self.model_version, outputs=self.output,
                                       client_timeout=TIMEOUT_SECONDS)
        except InferenceServerException as error:
            raise StoreUnavailableError("triton", str(error)) from error
        return result.as_numpy("ml_output")


def _redis_check(client: redis.Redis, store: str = "redis") -> None:
    try:
        client.ping()
    except redis.RedisError as error:
        raise StoreUnavailableError(store, str(error)) from error


def _es_check(search: Elasticsearch) -> None:
    try:
        search.cluster.health(timeout="1s")
    except (es_errors.ApiError, TransportError) as error:
        raise StoreUnavailableError("elasticsearch", str(error)) from error


def _feast_check(session: requests.Session, url: str) -> None:
    try:
        session.get(url.rstrip("/") + "/health", timeout=TIMEOUT_SECONDS).raise_for_status()
    except requests.RequestException as error:
        raise StoreUnavailableError("feast", str(error)) from error


def _triton_check(ranker: TritonRanker) -> None:
    try:
        ready = ranker.client.is_model_ready(ranker.model, ranker.model_version, client_timeout=TIMEOUT_SECONDS)
    except InferenceServerException as error:
        raise StoreUnavailableError("triton", str(error)) from error
    if not ready:
        raise StoreUnavailableError("triton", f"model {ranker.model} version {ranker.model_version} not ready")


def _pinned_triton(settings: ServingSettings, breaker: CircuitBreaker) -> TritonRanker:
    """The newest ready Triton version of the model, with the ranking model version its config names."""
    probe = TritonRanker(settings.triton_url, settings.triton_model, 0, "")
    try:
        config = probe.client.get_model_config(settings.triton_model, as_json=True,
                                               client_timeout=TIMEOUT_SECONDS)["config"]
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        ready = [int(key.removeprefix(VERSION_PARAMETER)) for key in parameters
                 if key.startswith(VERSION_PARAMETER) and probe.client.is_model_ready(
                     settings.triton_model, key.removeprefix(VERSION_PARAMETER), client_timeout=TIMEOUT_SECONDS)]
    except InferenceServerException as error:
        raise StoreUnavailableError("triton", str(error)) from error
    if not ready:
        raise NotPublishedError(f"triton has no ready version of {settings.triton_model}: "
                            "run python -m loaders.triton_repo")
    version = max(ready)
    return TritonRanker(settings.triton_url, settings.triton_model, version,
                        parameters[f"{VERSION_PARAMETER}{version}"], breaker)


def _backup_ranker(settings: ServingSettings, version: str) -> OnnxRanker | None:
    """The model Triton serves, under onnxruntime in-process, where its published folder is readable here."""
    folder = settings.models_dir / ModelFiles.RANKING / version
    if not (folder / ModelFiles.METADATA).exists():
        log.warning("no %s here: with Triton down the candidates are served in recall order", folder)
        return None
    return OnnxRanker(open_model(folder))


def _usable_search_shape(settings: ServingSettings, recall: RecallConfig,
                         meta: dict[str, str]) -> tuple[int, int] | None:
    """The shape of the users' published searches where they answer this service's requests (else None:
    Elasticsearch is asked on every request)."""
    shape = redis_layout.decode_search_shape(meta)
    if shape is None or settings.search_every_request:
        return None
    size, term_genres = shape
    if size < settings.recall_size or term_genres != recall.term_genres:
        log.warning("the users' published searches were run for %d items over %d genres, this service recalls %d "
                    "over %d: Elasticsearch answers every request (run python -m loaders.redis_loader with "
                    "--recall-size %d)", size, term_genres, settings.recall_size, recall.term_genres,
                    settings.recall_size)
        return None
    return shape


def load_services_bundle(settings: ServingSettings) -> ServingBundle:
    """Pin the published versions in each service and check they belong together."""
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port, socket_timeout=TIMEOUT_SECONDS,
                         socket_connect_timeout=TIMEOUT_SECONDS)
    try:
        version = redis_layout.active_version(client, settings.redis_prefix)
        meta = {k.decode(): v.decode() for k, v in
                client.hgetall(redis_layout.meta_key(settings.redis_prefix, version or 0)).items()}
    except redis.RedisError as error:
        raise StoreUnavailableError("redis", str(error)) from error
    if version is None or not meta:
        raise NotPublishedError(f"no recall data under the prefix {settings.redis_prefix!r} in redis "
                            f"{settings.redis_address}: run python -m loaders.redis_loader")
    check_spec_version(meta["feature_spec"], f"the recall data in redis (version {version})")
    search = Elasticsearch(settings.elasticsearch_url, request_timeout=TIMEOUT_SECONDS, max_retries=0,
                           serializers=ORJSON_SERIALIZERS)
    alias = settings.elasticsearch_alias
    try:
        if not search.indices.exists_alias(name=alias):
            raise NotPublishedError(f"no index behind alias {alias}: run python -m loaders.es_loader")
        index = next(iter(search.indices.get_alias(name=alias).body))
        es_meta = search.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {})
    except (es_errors.ApiError, TransportError) as error:
        raise StoreUnavailableError("elasticsearch", str(error)) from error
    for key in ("data_run", "recall_model", "feature_spec"):
        if es_meta.get(key) != meta[key]:
            raise NotPublishedError(f"redis version {version} holds {key} {meta[key]}, elasticsearch {index} holds "
                                f"{es_meta.get(key)}: run both loaders on the same batch and models")
    # Requests overlap their waits on the servers: the user's features and the neighbour lists meanwhile.
    # Up to three waits per request (features, neighbour and successor lists), for each request thread.
    background = ThreadPoolExecutor(max_workers=3 * settings.request_threads, thread_name_prefix="stores")
    breakers = {name: CircuitBreaker(name, settings.breaker_seconds) for name in DEPENDENCIES}
    cache = None if settings.search_every_request or settings.search_cache == 0 else SearchCache(settings.search_cache)
    items = ServiceItemIndex(client, settings.redis_prefix, version, search, index, int(meta["items"]),
                             breakers["redis"], breakers["elasticsearch"], cache)
    session = requests.Session()
    server = FeastServerFeatureClient(settings.feast_server_url, session)
    item_frame = server.item_features(sorted(int(i) for i in items.popularity.itemids))
    features: FeatureClient = server
    if settings.feast_access == "online_store":  # the same Redis rows, without the server's ~6 ms per call
        # Bounded socket waits: a stopped or saving Redis must become a 503, not a request that hangs.
        timeouts = f"socket_timeout={TIMEOUT_SECONDS},socket_connect_timeout={TIMEOUT_SECONDS}"
        connection = f"{settings.redis_address},{timeouts}"
        features = FeastFeatureClient(open_store(settings, "redis", connection))
    ranker = _pinned_triton(settings, breakers["triton"])
    dependencies = {"redis": lambda: _redis_check(client), "elasticsearch": lambda: _es_check(search),
                    "triton": lambda: _triton_check(ranker)}
    if settings.feast_access == "server":  # else requests read Redis, and the server is needed at load only
        dependencies["feast"] = lambda: _feast_check(session, settings.feast_server_url)
    recall = RecallConfig.served(settings.models_dir, settings.recall_size)
    # The sequence model runs in-process: one small graph per request, read from the published folder like the
    # fusion weights it is weighted by.
    next_item_model = open_next_item(settings.models_dir)
    next_item = OnnxNextItemScorer(next_item_model) if next_item_model is not None else None
    bundle = ServingBundle(
        users=RedisUserRecallStore(client, settings.redis_prefix, version, breakers["redis"],
                                   _usable_search_shape(settings, recall, meta)),
        items=items,
        features=GuardedFeatureClient(features, breakers["feast"]),
        assembler=FeatureAssembler.from_item_features(item_frame),
        ranker=ranker,
        recall=recall,
        versions={"data_run": meta["data_run"], "feature_spec": SPEC.version, "recall_model": meta["recall_model"],
                  "ranking_model": ranker.version,
                  **({"next_item_model": next_item.version} if next_item is not None else {}),
                  "exports": meta["exports"], "redis": f"v{version}",
                  "elasticsearch": index, "triton": f"{ranker.model}/{ranker.model_version}"},
        dependencies=dependencies,
        background=background,
        feature_timeout=2 * TIMEOUT_SECONDS,  # the client's own retries could otherwise wait much longer
        backup_ranker=_backup_ranker(settings, ranker.version),
        next_item=next_item,
    )
    return with_posted_ratings(bundle, settings, client, version, meta, item_frame, items.popularity.itemids)


def with_posted_ratings(bundle: ServingBundle, settings: ServingSettings, client: redis.Redis, version: int,
                        meta: dict[str, str], item_frame: pd.DataFrame, catalogue: np.ndarray) -> ServingBundle:
    """The bundle with the write path: the Redis stream as the event log, the users' states from their Redis
    records, the features pushed to Feast's Redis online store; the log replayed on top of the loaded version."""
    found = update_rules(settings, client, version, meta, item_frame, catalogue)
    if found is None:
        log.warning("redis version %d was loaded without what posted ratings need: run python -m "
                    "loaders.redis_loader again; the write routes answer 503 until then", version)
        # No write path anywhere: only the next load changes a user's row.
        return dataclasses.replace(bundle, features=cached_features(bundle.features, no_posted_ratings,
                                                                     settings.feature_cache))
    rules, dataset_format = found
    timeouts = f"socket_timeout={TIMEOUT_SECONDS},socket_connect_timeout={TIMEOUT_SECONDS}"
    pusher = FeastFeaturePusher(open_store(settings, "redis", f"{settings.redis_address},{timeouts}"))
    log_client = redis.Redis(host=settings.events_redis_host, port=settings.events_redis_port,
                             socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
    live = LiveUsers(RedisEventLog(log_client, settings.redis_prefix), bundle.users,
                     RedisBatchUserStates(client, settings.redis_prefix, version), rules,
                     FORMATS_BY_NAME[dataset_format], pusher, after_sequence=int(meta.get("events_through", 0)))
    live.refresh()  # every rating accepted before this worker started
    live.push()
    log.info("posted ratings: %d user(s) with ratings in %s", len(live.users_with_ratings), live.event_log.where)
    dependencies = {**bundle.dependencies, "event_log": lambda: _redis_check(log_client, "event_log")}
    return dataclasses.replace(bundle, users=LiveUserRecallStore(live), ratings=live, dependencies=dependencies,
                               features=cached_features(bundle.features, live.feature_state, settings.feature_cache))
