"""The merge rule: each source's candidates into one list of ``recall_size`` candidates.

Sources are visited round-robin in ``SOURCE_ORDER``, each taking its next candidate while it has quota
left; an item already taken only gains the source's flag. When every quota is spent or exhausted and
fewer than ``recall_size`` items were taken, the remaining candidates are taken in the same round-robin
order without quotas. Every candidate keeps the set of sources that proposed it (a bit mask over
``SOURCE_ORDER``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from models.recall_sources import SOURCE_ORDER, Ranked
from models.sorted_keys import find_sorted

SOURCE_BIT: dict[str, int] = {name: 1 << position for position, name in enumerate(SOURCE_ORDER)}
# The names behind every bit mask, looked up instead of decoded per candidate.
SOURCE_NAMES: tuple[tuple[str, ...], ...] = tuple(
    tuple(name for name in SOURCE_ORDER if mask & SOURCE_BIT[name]) for mask in range(1 << len(SOURCE_ORDER))
)


@dataclass(frozen=True)
class Candidates:
    itemids: np.ndarray  # int64, merge order
    sources: np.ndarray  # int64 bit masks over SOURCE_ORDER

    def __len__(self) -> int:
        return len(self.itemids)

    def source_names(self, position: int) -> list[str]:
        return list(SOURCE_NAMES[int(self.sources[position])])



def merge(sources: Mapping[str, Ranked], recall_size: int, quotas: Mapping[str, int]) -> Candidates:
    """The documented merge rule (module docstring): quota round-robin, then fill without quotas."""
    names = [name for name in SOURCE_ORDER if name in sources]
    # Plain Python lists and locals: this loop visits a few hundred ids per request, and numpy scalars and
    # attribute look-ups cost several times more.
    lists = [sources[name].itemids.tolist() for name in names]
    lengths = [len(items) for items in lists]
    cursor = [0] * len(names)
    taken: dict[int, None] = {}  # an ordered set: the merge order

    def visit(limits: list[int]) -> None:
        used = [0] * len(names)
        active = [source for source in range(len(names)) if limits[source] > 0]
        while active and len(taken) < recall_size:
            still_active = []  # sources with quota and items left, in round-robin order
            for source in active:
                items, position, length = lists[source], cursor[source], lengths[source]
                while position < length and items[position] in taken:
                    position += 1
                if position == length:
                    cursor[source] = position
                    continue
                taken[items[position]] = None
                cursor[source] = position + 1
                used[source] += 1
                if len(taken) >= recall_size:
                    return
                if used[source] < limits[source]:
                    still_active.append(source)
            active = still_active

    visit([quotas.get(name, 0) for name in names])
    visit(lengths)  # no quotas: every source may give all it has left
    itemids = np.fromiter(taken, dtype=np.int64, count=len(taken))
    # Every source that lists a taken item flags it, wherever in its list (before or after its cursor). Found by
    # binary search among the taken ids: a table by itemid would be ~209K entries at ML-25M's ids.
    by_id = np.argsort(itemids)
    listed = np.concatenate([sources[name].itemids for name in names] or [np.empty(0, dtype=np.int64)])
    bits = np.repeat(np.array([SOURCE_BIT[name] for name in names], dtype=np.int64),
                     [len(sources[name]) for name in names])
    position, found = find_sorted(itemids[by_id], listed)
    flags = np.zeros(len(itemids), dtype=np.int64)
    np.bitwise_or.at(flags, by_id[position[found]], bits[found])
    return Candidates(itemids, flags)
