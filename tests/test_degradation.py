"""Degraded responses on the request path: each store that does not answer, alone and two at once, and the
circuit breaker that skips a server after it failed. In memory, seconds; the services profile's real
servers stopped and hanging are in test_services.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from contracts.errors import StoreUnavailableError
from contracts.feature_spec import SPEC
from models.feature_rows import FeatureAssembler
from models.in_memory_stores import InMemoryFeatureClient, InMemoryItemIndex, InMemoryUserRecallStore
from models.outages import with_outage
from models.recall_sources import NEIGHBOURS, POPULARITY, ItemIndex, RecallConfig, UserRecallData
from models.request_path import POPULARITY_FALLBACK, RECALL_ORDER_FALLBACK, recommend
from models.stores import ServingBundle
from online.circuit_breaker import CircuitBreaker

ITEMS = 40


class ByItemRanker:
    """Scores an item by its id (a ranking distinct from every recall order)."""

    version = "by-item"

    def score(self, rows: np.ndarray) -> np.ndarray:
        return rows[:, SPEC.index_of("itemid")] / 100.0


def catalogue() -> ItemIndex:
    rng = np.random.default_rng(3)
    popularity = np.r_[0.0, np.arange(ITEMS - 1, 0, -1, dtype=float)]  # item 1 most popular
    neighbour_ids = rng.integers(1, ITEMS, (ITEMS, 5))
    known = np.r_[False, np.ones(ITEMS - 1, dtype=bool)]
    genre_items = {1: np.arange(1, ITEMS, 2), 2: np.arange(2, ITEMS, 2)}
    return ItemIndex(ITEMS, np.arange(1, ITEMS), popularity, genre_items, neighbour_ids, rng.random((ITEMS, 5)),
                     rng.normal(size=(ITEMS, 4)).astype(np.float32), known)


@pytest.fixture
def bundle() -> ServingBundle:
    user = UserRecallData(7, np.array([1, 2, 3]), np.array([3, 2, 1]), [(2, 5, 3), (1, 4, 1)],
                          np.ones(4, dtype=np.float32))
    items = pd.DataFrame({"itemid": np.arange(1, ITEMS), **{f.name: 0 for f in SPEC.online_item_features}})
    return ServingBundle(
        users=InMemoryUserRecallStore({7: user}), items=InMemoryItemIndex(catalogue()),
        features=InMemoryFeatureClient({7: np.zeros(len(SPEC.online_user_features), dtype=np.float32)}),
        assembler=FeatureAssembler.from_item_features(items), ranker=ByItemRanker(),
        recall=RecallConfig(recall_size=20))


def itemids(result) -> list[int]:
    return [item.itemid for item in result.items]


def test_with_every_store_answering_nothing_is_degraded(bundle):
    full = recommend(bundle, 7, 10, 20)
    assert full.fallback is None and full.degraded == () and len(full.items) == 10
    assert not {1, 2, 3} & set(itemids(full))


def test_without_elasticsearch_the_other_sources_are_ranked(bundle):
    result = recommend(with_outage(bundle, ["elasticsearch"]), 7, 10, 20)
    assert result.degraded == ("elasticsearch",) and result.fallback is None and len(result.items) == 10
    assert set(result.trace.sources[NEIGHBOURS].itemids) and not len(result.trace.sources["term"])
    assert all(set(item.sources) <= {NEIGHBOURS, POPULARITY} for item in result.items)
    assert all(item.score is not None for item in result.items)


def test_without_redis_the_popularity_list_in_memory(bundle):
    result = recommend(with_outage(bundle, ["redis"]), 7, 5, 20)
    assert result.degraded == ("redis",) and result.fallback == POPULARITY_FALLBACK
    assert itemids(result) == [1, 2, 3, 4, 5]  # nothing is known of the user without Redis: no exclusion


def test_without_features_the_candidates_in_recall_order(bundle):
    full = recommend(bundle, 7, 20, 20)
    result = recommend(with_outage(bundle, ["feast"]), 7, 20, 20)
    assert result.degraded == ("feast",) and result.fallback == RECALL_ORDER_FALLBACK
    assert itemids(result) == full.trace.candidates.itemids[:20].tolist()  # merge order, unranked
    assert all(item.score is None for item in result.items)
    ranks = [item.rank_score for item in result.items]
    assert ranks == sorted(ranks, reverse=True)


def test_without_triton_the_backup_ranker_or_recall_order(bundle):
    full = recommend(bundle, 7, 10, 20)
    backed = recommend(with_outage(bundle, ["triton"]), 7, 10, 20)  # the same model in-process
    assert backed.degraded == ("triton",) and backed.fallback is None and itemids(backed) == itemids(full)
    unbacked = dataclasses.replace(with_outage(bundle, ["triton"]), backup_ranker=None)
    result = recommend(unbacked, 7, 10, 20)
    assert result.degraded == ("triton",) and result.fallback == RECALL_ORDER_FALLBACK


def test_two_down_at_once_the_best_of_what_is_left(bundle):
    result = recommend(with_outage(bundle, ["elasticsearch", "triton"]), 7, 10, 20)
    assert result.degraded == ("elasticsearch", "triton") and result.fallback is None and len(result.items) == 10
    assert recommend(with_outage(bundle, ["redis", "elasticsearch"]), 7, 5, 20).fallback == POPULARITY_FALLBACK
    everything = recommend(with_outage(bundle, ["redis", "elasticsearch", "feast", "triton"]), 7, 5, 20)
    assert everything.fallback == POPULARITY_FALLBACK and len(everything.items) == 5


def test_an_unknown_server_name_is_refused(bundle):
    with pytest.raises(ValueError, match="mongodb"):
        with_outage(bundle, ["mongodb"])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_circuit_breaker_skips_a_failed_server_then_probes_it_once():
    clock = Clock()
    breaker = CircuitBreaker("elasticsearch", interval=5.0, clock=clock)
    calls = []

    def search(fail: bool) -> str:
        calls.append(fail)
        if fail:
            raise StoreUnavailableError("elasticsearch", "timed out after 2 s")
        return "hits"

    assert breaker.call(search, False) == "hits" and not breaker.is_open
    with pytest.raises(StoreUnavailableError, match="timed out"):
        breaker.call(search, True)
    assert breaker.is_open
    clock.now += 4.9
    with pytest.raises(StoreUnavailableError, match=r"skipped for 0\.1 s more after: elasticsearch unavailable"):
        breaker.call(search, False)
    assert len(calls) == 2  # skipped: the server was not called
    clock.now += 0.2  # the interval is over: the next call probes the server, and it answers
    assert breaker.call(search, False) == "hits" and len(calls) == 3 and not breaker.is_open
    # A failed probe opens it for another interval.
    with pytest.raises(StoreUnavailableError):
        breaker.call(search, True)
    clock.now += 5.1
    with pytest.raises(StoreUnavailableError, match="timed out"):
        breaker.call(search, True)  # the probe itself fails
    clock.now += 1.0
    with pytest.raises(StoreUnavailableError, match="skipped"):
        breaker.call(search, False)
    assert calls[-1] is True


def test_while_a_probe_runs_other_calls_skip():
    clock = Clock()
    breaker = CircuitBreaker("triton", interval=5.0, clock=clock)
    with pytest.raises(StoreUnavailableError):
        breaker.call(lambda: (_ for _ in ()).throw(StoreUnavailableError("triton", "down")))
    clock.now += 6.0
    seen_inside = []

    def probe() -> str:
        with pytest.raises(StoreUnavailableError, match="skipped"):  # a concurrent request meanwhile
            breaker.call(lambda: "not called")
        seen_inside.append(True)
        return "ok"

    assert breaker.call(probe) == "ok" and seen_inside == [True] and not breaker.is_open
