"""A worker's cache of catalogue searches: the same query answered once, by value, bounded, errors not kept."""

import numpy as np
import pytest

from contracts.errors import StoreUnavailableError
from models.recall_sources import Ranked
from models.stores import CatalogueSearch
from online.search_cache import SearchCache


def query(seen=(1, 2), vector=(1.0, 0.0), bands=((3, 2.0),)) -> CatalogueSearch:
    return CatalogueSearch(list(bands), None if vector is None else np.array(vector, dtype=np.float32),
                           np.array(seen, dtype=np.int64), 10)


class CountingSearch:
    def __init__(self) -> None:
        self.calls: list[CatalogueSearch] = []
        self.failing = False

    def __call__(self, q: CatalogueSearch) -> tuple[Ranked, Ranked]:
        self.calls.append(q)
        if self.failing:
            raise StoreUnavailableError("elasticsearch", "down")
        n = float(len(self.calls))
        return Ranked(np.array([7, 8]), np.array([n, n / 2])), Ranked(np.array([9]), np.array([n]))


def test_an_equal_query_is_answered_from_the_cache_and_any_change_searches_again():
    search, cache = CountingSearch(), SearchCache(entries=10)
    first = cache.answer(query(), search)
    again = cache.answer(query(), search)  # equal by value, other arrays
    assert len(search.calls) == 1 and again[0].scores.tolist() == first[0].scores.tolist() == [1.0, 0.5]
    for changed in (query(seen=(1, 2, 5)), query(vector=(1.0, 0.5)), query(vector=None), query(bands=((4, 2.0),))):
        cache.answer(changed, search)
    assert len(search.calls) == 5 and (cache.hits, cache.misses) == (1, 5)
    with pytest.raises(ValueError):  # shared by later requests: read-only
        first[0].itemids[0] = 1


def test_the_least_recently_used_answer_goes_first_and_errors_are_not_kept():
    search, cache = CountingSearch(), SearchCache(entries=2)
    a, b, c = query(seen=(1,)), query(seen=(2,)), query(seen=(3,))
    cache.answer(a, search)
    cache.answer(b, search)
    cache.answer(a, search)  # a used last: b is the one dropped
    cache.answer(c, search)
    assert len(cache) == 2 and len(search.calls) == 3
    cache.answer(a, search)
    assert len(search.calls) == 3
    cache.answer(b, search)
    assert len(search.calls) == 4
    search.failing = True
    fresh = query(seen=(4,))
    with pytest.raises(StoreUnavailableError):
        cache.answer(fresh, search)
    search.failing = False
    cache.answer(fresh, search)  # asked again once the store answers
    assert len(search.calls) == 6
