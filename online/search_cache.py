"""A worker's memory of its last catalogue searches: the same query against the same pinned index version has
the same answer, so a user who asks again before their terms or seen items change is not searched again.

The loader publishes the batch users' searches with their records (``loaders/redis_loader.py``); what is left
to Elasticsearch is users whose state changed since (posted ratings) and new users, and each of them asks
many times between two ratings. The cache lives in the bundle's item index, so a reload (a new index version)
starts it empty.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from models.recall_sources import Ranked
from models.stores import CatalogueSearch
from online.lru_cache import LruCache

SearchAnswer = tuple[Ranked, Ranked]


def query_key(query: CatalogueSearch) -> Hashable:
    """Everything the answer depends on, by value (the seen items and the vector as their bytes)."""
    vector = None if query.vector is None else query.vector.tobytes()
    return tuple(query.bands), vector, query.seen.tobytes(), query.size


class SearchCache:
    """The last ``entries`` answers by query value, shared read-only by every later request."""

    def __init__(self, entries: int) -> None:
        self._answers: LruCache[SearchAnswer] = LruCache(entries)

    def answer(self, query: CatalogueSearch, search: Callable[[CatalogueSearch], SearchAnswer]) -> SearchAnswer:
        """The cached answer to ``query``, else ``search(query)`` remembered (an error is not remembered)."""
        return self._answers.answer(query_key(query), lambda: _read_only(search(query)))

    @property
    def hits(self) -> int:
        return self._answers.hits

    @property
    def misses(self) -> int:
        return self._answers.misses

    def __len__(self) -> int:
        return len(self._answers)


def _read_only(answer: SearchAnswer) -> SearchAnswer:
    for ranked in answer:  # shared by every later request: a request that wrote into it would fail loudly
        ranked.itemids.flags.writeable = False
        ranked.scores.flags.writeable = False
    return answer
