"""A worker's memory of its last catalogue searches: the same query against the same pinned index version has
the same answer, so a user who asks again before their terms or seen items change is not searched again.

The loader publishes the batch users' searches with their records (``loaders/redis_loader.py``); what is left
to Elasticsearch is users whose state changed since (posted ratings) and new users, and each of them asks
many times between two ratings. The cache lives in the bundle's item index, so a reload (a new index version)
starts it empty.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from models.recall_sources import Ranked
from models.stores import CatalogueSearch

SearchAnswer = tuple[Ranked, Ranked]


def query_key(query: CatalogueSearch) -> Hashable:
    """Everything the answer depends on, by value (the seen items and the vector as their bytes)."""
    vector = None if query.vector is None else query.vector.tobytes()
    return tuple(query.bands), vector, query.seen.tobytes(), query.size


class SearchCache:
    """The last ``entries`` answers, least recently used dropped first; safe across request threads."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._answers: OrderedDict[Hashable, SearchAnswer] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def answer(self, query: CatalogueSearch, search: Callable[[CatalogueSearch], SearchAnswer]) -> SearchAnswer:
        """The cached answer to ``query``, else ``search(query)`` remembered (an error is not remembered)."""
        key = query_key(query)
        with self._lock:
            found = self._answers.get(key)
            if found is not None:
                self._answers.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        answer = search(query)  # outside the lock: two threads may search the same query once each
        for ranked in answer:  # shared by every later request: a request that wrote into it would fail loudly
            ranked.itemids.flags.writeable = False
            ranked.scores.flags.writeable = False
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.entries:
                self._answers.popitem(last=False)
        return answer

    def __len__(self) -> int:
        return len(self._answers)
