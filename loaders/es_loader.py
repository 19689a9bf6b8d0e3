"""Publish the item index to Elasticsearch: a new ``<alias>_v<N>`` index, verified, then the alias moved.

    python -m loaders.es_loader [--output DIR] [--elasticsearch-url URL] [--elasticsearch-alias items]

Creates the index with an explicit mapping (``loaders/es_layout.py``), bulk-indexes one document per
catalogue item, refreshes, verifies the document count and that a kNN query for a sample user returns
the recall model's own top items, then moves the alias in one ``_aliases`` call (readers see the old or
the new index, never none) and deletes indices older than the one it replaced. A failure before the
switch deletes the new index and leaves the alias where it was.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from elasticsearch import Elasticsearch, helpers
from tqdm import tqdm

from contracts.errors import VerificationError
from contracts.published import Published, open_published
from contracts.settings import ServicesSettings
from loaders import es_layout as layout
from models.export_readers import load_item_index, load_user_recall_data
from models.recall_sources import ItemIndex, UserRecallData, vector_recall

log = logging.getLogger(__name__)

VERIFY_TOP = 20


@dataclass(frozen=True)
class EsLoad:
    index: str
    previous: str | None
    documents: int
    deleted_indices: list[str]
    seconds: float


def connect(settings: ServicesSettings) -> Elasticsearch:
    return Elasticsearch(settings.elasticsearch_url, request_timeout=60)


def alias_target(client: Elasticsearch, alias: str) -> str | None:
    if not client.indices.exists_alias(name=alias):
        return None
    return next(iter(client.indices.get_alias(name=alias).body))


def versioned_indices(client: Elasticsearch, alias: str) -> dict[int, str]:
    prefix = f"{alias}{layout.INDEX_PREFIX_SEPARATOR}"
    found = client.indices.get(index=f"{prefix}*", allow_no_indices=True, expand_wildcards="all").body
    return {int(name.removeprefix(prefix)): name for name in found if name.removeprefix(prefix).isdigit()}


def documents(index: ItemIndex, index_name: str) -> Iterator[dict]:
    """One bulk action per catalogue item (``load`` checks the recall model has item vectors first)."""
    vectors = index.item_vectors if index.item_vectors is not None else np.zeros((index.item_count, 0))
    genres_of: dict[int, list[str]] = {}
    for genre, items in index.genre_items.items():
        for item in items:
            genres_of.setdefault(int(item), []).append(str(genre))
    for itemid in np.flatnonzero(index.known_items):
        if itemid == 0:
            continue
        yield {"_index": index_name, "_id": str(itemid), "_source": {
            "itemid": int(itemid), "genres": sorted(genres_of.get(int(itemid), []), key=int),
            "popularity": float(index.popularity[itemid]),
            "vector": [float(v) for v in vectors[itemid]]}}


def verify(client: Elasticsearch, index_name: str, expected_count: int, index: ItemIndex,
           users: Mapping[int, UserRecallData]) -> None:
    count = client.count(index=index_name)["count"]
    if count != expected_count:
        raise VerificationError(f"{index_name} holds {count} documents, {expected_count} were indexed")
    user = next((u for u in users.values() if u.vector is not None), None)
    if user is None:
        raise VerificationError("no user has a recall vector: nothing to check kNN with")
    expected = vector_recall(user, index, VERIFY_TOP).itemids.tolist()
    response = client.search(index=index_name, body=layout.knn_query(user.vector, user.seen, VERIFY_TOP,
                                                                     expected_count))
    found = layout.hits(response)[0].tolist()
    if found != expected:
        raise VerificationError(f"kNN for user {user.userid} on {index_name} returns {found[:5]}..., "
                                f"the recall model's top items are {expected[:5]}...")


def load(settings: ServicesSettings, published: Published | None = None) -> EsLoad:
    started = time.perf_counter()
    published = published or open_published(settings)
    index = load_item_index(published.exports, published.recall_model)
    if index.item_vectors is None:
        raise VerificationError("the recall model has no item vectors")
    users = load_user_recall_data(published.exports, published.recall_model)
    client = connect(settings)
    alias = settings.elasticsearch_alias
    previous = alias_target(client, alias)
    existing = versioned_indices(client, alias)
    name = layout.index_name(alias, max(existing, default=0) + 1)
    expected = int(index.known_items[1:].sum())
    log.info("indexing %d items into %s at %s", expected, name, settings.elasticsearch_url)
    client.indices.create(index=name, **layout.index_body(int(index.item_vectors.shape[1]), published.versions))
    try:
        with tqdm(total=expected, desc=f"elasticsearch {name}", unit="doc", leave=False, mininterval=1.0) as bar:
            try:
                for _ in helpers.streaming_bulk(client, documents(index, name), chunk_size=1000):
                    bar.update()
            except helpers.BulkIndexError as failure:
                first = next(iter(failure.errors[0].values()))
                raise VerificationError(f"{len(failure.errors)} item(s) failed to index into {name}, first item "
                                        f"{first.get('_id')}: {first.get('error', {}).get('reason')}") from failure
        client.indices.refresh(index=name)
        verify(client, name, expected, index, users)
        client.indices.put_settings(index=name, settings={"index": {"blocks": {"write": True}}})
    except BaseException:
        log.error("elasticsearch load into %s failed: deleting it; %s keeps serving", name, previous)
        client.indices.delete(index=name, ignore_unavailable=True)
        raise
    actions: list[dict] = [{"add": {"index": name, "alias": alias}}]
    if previous is not None:
        actions.insert(0, {"remove": {"index": previous, "alias": alias}})
    client.indices.update_aliases(actions=actions)
    stale = sorted(n for n in versioned_indices(client, alias).values() if n not in {name, previous})
    for old in stale:
        client.indices.delete(index=old)
    result = EsLoad(name, previous, expected, stale, time.perf_counter() - started)
    log.info("elasticsearch: alias %s -> %s (was %s), %d documents, deleted %s, %.1f s", alias, name, previous,
             expected, stale, result.seconds)
    return result


def main(argv: Sequence[str] | None = None) -> EsLoad:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ServicesSettings.add_arguments(parser)
    settings = ServicesSettings.from_args(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)  # one line per HTTP call otherwise
    result = load(settings)
    print(f"elasticsearch: {settings.elasticsearch_alias} -> {result.index} (previous {result.previous}); "
          f"{result.documents} items")
    return result


if __name__ == "__main__":
    main()
