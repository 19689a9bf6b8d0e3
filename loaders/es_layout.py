"""The Elasticsearch item index the loader writes and the service queries: the contract between the two.

One document per catalogue item: ``itemid``, ``genres`` (genre ids as keywords), ``popularity`` (offline
positives) and ``vector`` (the recall model's item vector, ``max_inner_product`` so kNN ranks by the
model's own score, flat index: exact at catalogue sizes like MovieLens's). Indices are ``<alias>_v<N>``;
the service reads the alias.

The two queries reproduce the in-memory term and vector searches (``models.recall_sources``) exactly
(the embedded profile computes the same lists from arrays):

- term: a candidate in any of the user's strongest genres scores ``band(genre) + popularity``, the band
  of its strongest genre only (``dis_max``), bands from ``models.recall_sources.term_bands``; ties by itemid.
- vector: kNN on the user vector; Elasticsearch's ``max_inner_product`` score is a monotone map of the
  inner product, so the order is the model's (``inner_product`` maps it back).
Both exclude the user's seen items inside the query, sort by (score desc, itemid asc) and load no stored
fields: each hit's itemid comes back in its sort values (``hits``), so Elasticsearch skips the fetch phase,
which for 200 hits was ~8 of the ~10 ms each search took here (the lists are the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

INDEX_PREFIX_SEPARATOR = "_v"
MAX_NUM_CANDIDATES = 10_000  # Elasticsearch's limit; above it kNN stops being exact


def index_name(alias: str, version: int) -> str:
    return f"{alias}{INDEX_PREFIX_SEPARATOR}{version}"


def index_body(dimensions: int, versions: dict[str, str]) -> dict[str, Any]:
    """``versions`` (data run, recall model, ...) go into the mapping's ``_meta``: the service checks them
    against Redis's, so it never serves one version's vectors with another's user data."""
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": {
            "_meta": dict(versions),
            "dynamic": "strict",
            "properties": {
                "itemid": {"type": "integer"},
                "genres": {"type": "keyword"},
                "popularity": {"type": "double"},
                "vector": {"type": "dense_vector", "dims": dimensions, "index": True,
                           "similarity": "max_inner_product", "index_options": {"type": "flat"}},
            },
        },
    }


# No _source, no stored fields (not even _id): nothing to fetch per hit.
_IDS_FROM_SORT: dict[str, Any] = {"_source": False, "stored_fields": "_none_", "track_total_hits": False}
_BY_SCORE_THEN_ITEMID: list[dict[str, str]] = [{"_score": "desc"}, {"itemid": "asc"}]


def hits(response: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(itemids, scores) of a response to either query, best first, from each hit's sort values."""
    found = response["hits"]["hits"]
    itemids = np.fromiter((hit["sort"][1] for hit in found), dtype=np.int64, count=len(found))
    scores = np.fromiter((hit["sort"][0] for hit in found), dtype=np.float64, count=len(found))
    return itemids, scores


def _not_seen(seen: np.ndarray) -> dict[str, Any]:
    return {"bool": {"must_not": {"terms": {"itemid": [int(i) for i in seen]}}}}


def term_query(bands: list[tuple[int, float]], seen: np.ndarray, size: int) -> dict[str, Any]:
    """``bands``: (genre id, band) of the user's strongest genres."""
    by_genre = [{"constant_score": {"filter": {"term": {"genres": str(genre)}}, "boost": band}}
                for genre, band in bands]
    return {
        "size": size, **_IDS_FROM_SORT,
        "query": {"function_score": {
            "query": {"bool": {"must": {"dis_max": {"queries": by_genre, "tie_breaker": 0.0}},
                               "filter": _not_seen(seen)}},
            "functions": [{"field_value_factor": {"field": "popularity", "missing": 0}}],
            "score_mode": "sum", "boost_mode": "sum",
        }},
        "sort": _BY_SCORE_THEN_ITEMID,
    }


def knn_query(vector: np.ndarray, seen: np.ndarray, size: int, item_count: int) -> dict[str, Any]:
    return {
        "size": size, **_IDS_FROM_SORT, "sort": _BY_SCORE_THEN_ITEMID,
        "knn": {"field": "vector", "query_vector": [float(v) for v in vector], "k": size,
                "num_candidates": min(MAX_NUM_CANDIDATES, max(size, item_count)), "filter": _not_seen(seen)},
    }


def inner_product(score: np.ndarray) -> np.ndarray:
    """Elasticsearch's ``max_inner_product`` score back to the inner product (it is 1 / (1 - ip) below 1)."""
    score = np.asarray(score, dtype=np.float64)
    return np.where(score >= 1.0, score - 1.0, 1.0 - 1.0 / score)
