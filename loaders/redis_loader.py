"""Publish the recall data to Redis: a new versioned key space, verified, then switched to atomically.

    python -m loaders.redis_loader [--output DIR] [--redis-host H] [--redis-port P] [--redis-prefix recsys]

Writes every user's recall record (with their term and vector searches run here on the same data, unless
``--no-user-searches``), every item's co-occurrence neighbours and the popularity list under
``<prefix>:v<N>:`` (layout: ``loaders/redis_layout.py``) with pipelined bulk writes, reads sample users
back and compares them with the source, then moves ``<prefix>:active`` to N in one ``SET``. Versions
other than the new and the one it replaces are deleted afterwards. A failure before the switch deletes
what was written and leaves the previous version serving.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import redis
from tqdm import tqdm

from contracts.errors import VerificationError
from contracts.published import Published, open_published
from contracts.settings import RedisLoaderSettings, ServicesSettings
from loaders import redis_layout as layout
from models.export_readers import (
    dataset_format_name,
    load_batch_user_states,
    load_item_index,
    load_update_rules,
    load_user_recall_data,
)
from models.in_memory_stores import InMemoryItemIndex
from models.recall_sources import (
    ItemIndex,
    ItemLists,
    PublishedSearches,
    Ranked,
    RecallConfig,
    UserRecallData,
    term_bands,
)
from models.stores import CatalogueSearch
from models.user_updates import BatchUserStates, UpdateRules

log = logging.getLogger(__name__)

PIPELINE_COMMANDS = 2000  # commands per round trip: large enough to amortise, small enough to stream
VERIFY_USERS = 50


@dataclass(frozen=True)
class RedisLoad:
    version: int
    previous: int | None
    users: int
    items_with_neighbours: int
    popular: int
    deleted_versions: list[int]
    seconds: float


def connect(settings: ServicesSettings) -> redis.Redis:
    return redis.Redis(host=settings.redis_host, port=settings.redis_port, socket_timeout=30)


def _in_batches(client: redis.Redis, commands: Iterable, total: int, what: str) -> None:
    pipe = client.pipeline(transaction=False)
    pending = 0
    for command in tqdm(commands, total=total, desc=f"redis {what}", unit="key", leave=False, mininterval=1.0):
        command(pipe)
        pending += 1
        if pending == PIPELINE_COMMANDS:
            pipe.execute()
            pending = 0
    if pending:
        pipe.execute()


@dataclass(frozen=True)
class WriteSupport:
    """What posted ratings are applied with in the services profile, published beside the recall data."""

    states: BatchUserStates
    rules: UpdateRules
    dataset_format: str

    def meta(self) -> str:
        rules = self.rules
        return json.dumps({"means": rules.means.tolist(), "stds": rules.stds.tolist(),
                           "recent_items": rules.recent_items, "ease_per_user": rules.ease_per_user,
                           "dataset_format": self.dataset_format})


def with_searches(users: Mapping[int, UserRecallData], index: ItemIndex, size: int,
                  term_genres: int) -> dict[int, UserRecallData]:
    """Each user with their term and vector searches run on their own recall data, as a request would run them:
    the services profile then reads them with the rest of the record instead of asking Elasticsearch (about 7
    ms of its CPU a request, measured in BENCHMARKS.md)."""
    catalogue = InMemoryItemIndex(index)
    searched = {}
    for userid, user in tqdm(users.items(), desc="user searches", unit="user", leave=False, mininterval=1.0):
        bands = term_bands(user.terms, term_genres, index.max_popularity)
        term, vector = catalogue.search(CatalogueSearch(bands, user.vector, user.seen, size))
        searched[userid] = replace(user, searches=PublishedSearches(term, vector, size, term_genres))
    return searched


def write_version(client: redis.Redis, prefix: str, version: int, published: Published,
                  users: Mapping[int, UserRecallData], index: ItemIndex, support: WriteSupport,
                  search_shape: tuple[int, int] | None) -> tuple[int, int]:
    def user_command(user: UserRecallData):  # noqa: ANN202 (a pipeline callback)
        record = layout.encode_user(user)
        state = support.states.of(user.userid, user)
        record |= layout.encode_batch_state(state.recent.timestamps, state.recent.labels, state.demographics)
        return lambda pipe: pipe.hset(layout.user_key(prefix, version, user.userid), mapping=record)

    _in_batches(client, (user_command(u) for u in users.values()), len(users), "users")
    with_neighbours = [i for i in range(index.item_count) if index.neighbour_ids[i, 0] > 0]

    def neighbour_command(itemid: int):  # noqa: ANN202
        ids = index.neighbour_ids[itemid]
        valid = ids > 0
        blob = layout.encode_ranked(ids[valid], index.neighbour_scores[itemid][valid])
        return lambda pipe: pipe.set(layout.neighbours_key(prefix, version, itemid), blob)

    _in_batches(client, (neighbour_command(i) for i in with_neighbours), len(with_neighbours), "neighbours")
    for source, lists in written_item_lists(index, support).items():
        with_list = np.flatnonzero(np.diff(lists.offsets) > 0)

        def list_command(itemid: int, source: str = source, lists: ItemLists = lists):  # noqa: ANN202
            start, end = lists.offsets[itemid], lists.offsets[itemid + 1]
            blob = layout.encode_ranked(lists.itemids[start:end], lists.scores[start:end])
            return lambda pipe: pipe.set(layout.item_list_key(prefix, version, source, int(itemid)), blob)

        _in_batches(client, (list_command(i) for i in with_list), len(with_list), source)
    popular = index.popular
    client.set(layout.popular_key(prefix, version), layout.encode_ranked(popular, index.popularity[popular]))
    # The meta hash goes last: a version with meta is complete.
    client.hset(layout.meta_key(prefix, version), mapping={
        **published.versions, "users": len(users), "items": int(index.known_items.sum()),
        "update_rules": support.meta(),
        **({"user_searches": layout.encode_search_shape(search_shape)} if search_shape is not None else {}),
        # The last posted rating the run holds: the service applies the stream's later ones on top.
        "events_through": published.events_through,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return len(with_neighbours), len(popular)


def written_item_lists(index: ItemIndex, support: WriteSupport) -> dict[str, ItemLists]:
    """The per-item lists written: the recall sources' and the EASE weights a posted rating is summed with."""
    lists = dict(index.item_lists)
    if isinstance(support.rules.ease_lists, ItemLists):
        lists[layout.EASE_LISTS] = support.rules.ease_lists
    return lists


def same_ranked(found: Ranked | None, expected: Ranked | None) -> bool:
    if found is None or expected is None:
        return found is expected
    return np.array_equal(found.itemids, expected.itemids) and np.array_equal(found.scores, expected.scores)


def same_searches(found: PublishedSearches | None, expected: PublishedSearches | None) -> bool:
    if found is None or expected is None:
        return found is expected
    return same_ranked(found.term, expected.term) and same_ranked(found.vector, expected.vector)


def verify_version(client: redis.Redis, prefix: str, version: int, users: Mapping[int, UserRecallData],
                   index: ItemIndex, neighbour_items: int, support: WriteSupport,
                   search_shape: tuple[int, int] | None) -> None:
    ids = sorted(users)
    sample = [ids[i] for i in np.linspace(0, len(ids) - 1, num=min(VERIFY_USERS, len(ids)), dtype=int)]
    pipe = client.pipeline(transaction=False)
    for userid in sample:
        pipe.hgetall(layout.user_key(prefix, version, userid))
    for userid, record in zip(sample, pipe.execute(), strict=True):
        if not record:
            raise VerificationError(f"user {userid} missing from version {version}")
        found, expected = layout.decode_user(userid, record, search_shape), users[userid]
        same = (np.array_equal(found.seen, expected.seen) and np.array_equal(found.recent, expected.recent)
                and list(found.terms) == [tuple(map(int, t)) for t in expected.terms]
                and ((found.vector is None and expected.vector is None)
                     or (found.vector is not None and expected.vector is not None
                         and np.array_equal(found.vector, expected.vector)))
                and same_ranked(found.ease, expected.ease) and same_searches(found.searches, expected.searches))
        stored, wanted = layout.decode_batch_state(record), support.states.of(userid, expected)
        same = same and stored is not None and all(np.array_equal(a, b) for a, b in zip(
            stored, (wanted.recent.timestamps, wanted.recent.labels, wanted.demographics), strict=True))
        if not same:
            raise VerificationError(f"user {userid} reads back different from what was written (version {version})")
    popular = layout.decode_ranked(client.get(layout.popular_key(prefix, version)))
    if not np.array_equal(popular.itemids, index.popular):
        raise VerificationError(f"the popularity list of version {version} reads back different")
    expected = {"user": len(users), "neighbours": neighbour_items,
                **{source: int((np.diff(lists.offsets) > 0).sum())
                   for source, lists in written_item_lists(index, support).items()}}
    counted = dict.fromkeys(expected, 0)
    for kind in counted:
        for _ in client.scan_iter(match=f"{layout.version_prefix(prefix, version)}:{kind}:*", count=5000):
            counted[kind] += 1
    if counted != expected:
        raise VerificationError(f"version {version} holds {counted} keys of each kind, {expected} were written")


def delete_version(client: redis.Redis, prefix: str, version: int) -> None:
    batch = []
    for key in client.scan_iter(match=f"{layout.version_prefix(prefix, version)}:*", count=5000):
        batch.append(key)
        if len(batch) == 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def stored_versions(client: redis.Redis, prefix: str) -> set[int]:
    """Every version with at least one key (complete or not)."""
    found = set()
    for key in client.scan_iter(match=f"{prefix}:v*:*", count=5000):
        head = key.decode().removeprefix(f"{prefix}:v").split(":", 1)[0]
        if head.isdigit():
            found.add(int(head))
    return found


def load(settings: RedisLoaderSettings, published: Published | None = None) -> RedisLoad:
    started = time.perf_counter()
    published = published or open_published(settings)
    users = load_user_recall_data(published.exports, published.recall_model)
    index = load_item_index(published.exports, published.recall_model)
    search_shape = None
    if settings.user_searches:
        config = RecallConfig.served(settings.models_dir, settings.recall_size)
        search_shape = (settings.recall_size, config.term_genres)
        users = with_searches(users, index, *search_shape)
    support = WriteSupport(load_batch_user_states(published.exports), load_update_rules(published.exports, index),
                           dataset_format_name(published.exports))
    client = connect(settings)
    prefix = settings.redis_prefix
    previous = layout.active_version(client, prefix)
    version = int(client.incr(f"{prefix}:version_counter"))
    log.info("writing recall data version %d to redis %s:%d (%d users)", version, settings.redis_host,
             settings.redis_port, len(users))
    try:
        neighbour_items, popular = write_version(client, prefix, version, published, users, index, support,
                                                 search_shape)
        verify_version(client, prefix, version, users, index, neighbour_items, support, search_shape)
    except BaseException:
        log.error("redis load of version %d failed: deleting it; version %s keeps serving", version, previous)
        delete_version(client, prefix, version)
        raise
    client.set(layout.active_key(prefix), version)
    keep = {version} | ({previous} if previous is not None else set())
    stale = sorted(stored_versions(client, prefix) - keep)
    for old in stale:
        delete_version(client, prefix, old)
    result = RedisLoad(version, previous, len(users), neighbour_items, popular, stale, time.perf_counter() - started)
    log.info("redis: version %d active (was %s), %d users, %d neighbour lists, deleted versions %s, %.1f s",
             version, previous, result.users, neighbour_items, stale, result.seconds)
    return result


def main(argv: Sequence[str] | None = None) -> RedisLoad:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    RedisLoaderSettings.add_arguments(parser)
    settings = RedisLoaderSettings.from_args(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = load(settings)
    print(f"redis: version {result.version} active (previous {result.previous}); {result.users} users, "
          f"{result.items_with_neighbours} neighbour lists, {result.popular} popular items")
    return result


if __name__ == "__main__":
    main()
