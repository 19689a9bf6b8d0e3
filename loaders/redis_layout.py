"""The Redis key space the loader writes and the service reads: the contract between the two.

Everything of one load lives under ``<prefix>:v<N>:`` and is never changed after it is written; the
pointer ``<prefix>:active`` names the version to serve. A loader writes a whole new version, verifies
it, then moves the pointer in one ``SET`` (so a reader sees the old or the new version, never a mix);
the version before the active one is kept until the next load, because a service that loaded it keeps
reading it until it reloads.

    <prefix>:active                 "N"
    <prefix>:v<N>:meta              hash: data_run, recall_model, feature_spec, users, items, loaded_at
    <prefix>:v<N>:user:<userid>     hash: seen (int64 LE), recent (int64 LE, newest first),
                                    terms (int64 LE triples genre, impressions, clicks; strongest first),
                                    vector (float32 LE; absent when the recall model has no vector),
                                    ease (the user's EASE list: itemids int64 LE then scores float64 LE;
                                    absent when the batch published none),
                                    recent_timestamps (int64 LE), recent_labels (int8), demographics
                                    (int16 LE): what a posted rating is applied to (models/user_updates.py),
                                    term_list, vector_list (as ease): the catalogue searches run on this
                                    record (absent when the loader ran none)
    <prefix>:v<N>:neighbours:<itemid>  itemids (int64 LE) then similarities (float64 LE), best first
    <prefix>:v<N>:ease:<itemid>     the same layout: the item's EASE weights (item_ease)
    <prefix>:v<N>:meta              also update_rules: JSON of the counters' train means and stds, the recent
                                    list's length, the EASE list's length and the dataset's format;
                                    user_searches: JSON of the searches' size and term_genres (absent: none)
    <prefix>:v<N>:sequence:<itemid> the same layout: the item's successors (item_successors)
    <prefix>:v<N>:popular           itemids (int64 LE) then positives (float64 LE), most positives first

Binary little-endian arrays: a user's record decodes with ``numpy.frombuffer`` without parsing, and the
values are the exact bits the batch and the recall model wrote, so the two profiles rank identically.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from models.recall_sources import PublishedSearches, Ranked, UserRecallData

DEFAULT_PREFIX = "recsys"
INT = np.dtype("<i8")
FLOAT = np.dtype("<f8")
VECTOR = np.dtype("<f4")
SMALL = np.dtype("<i2")
EASE_LISTS = "ease"  # item_list_key's source name of the per-movie EASE weights


def active_key(prefix: str) -> str:
    return f"{prefix}:active"


def version_prefix(prefix: str, version: int) -> str:
    return f"{prefix}:v{version}"


def meta_key(prefix: str, version: int) -> str:
    return f"{version_prefix(prefix, version)}:meta"


def user_key(prefix: str, version: int, userid: int) -> str:
    return f"{version_prefix(prefix, version)}:user:{userid}"


def neighbours_key(prefix: str, version: int, itemid: int) -> str:
    return f"{version_prefix(prefix, version)}:neighbours:{itemid}"


def item_list_key(prefix: str, version: int, source: str, itemid: int) -> str:
    """The per-item list of one of ``ITEM_LIST_SOURCES`` (named by the source)."""
    return f"{version_prefix(prefix, version)}:{source}:{itemid}"


def popular_key(prefix: str, version: int) -> str:
    return f"{version_prefix(prefix, version)}:popular"


def active_version(client: Any, prefix: str) -> int | None:
    """The version ``<prefix>:active`` names (``client``: a ``redis.Redis``), None before the first load."""
    value = client.get(active_key(prefix))
    return None if value is None else int(value)


def encode_user(user: UserRecallData) -> dict[str, bytes]:
    record = {
        "seen": np.asarray(user.seen, dtype=INT).tobytes(),
        "recent": np.asarray(user.recent, dtype=INT).tobytes(),
        "terms": np.asarray(list(user.terms), dtype=INT).reshape(-1).tobytes(),
    }
    if user.vector is not None:
        record["vector"] = np.asarray(user.vector, dtype=VECTOR).tobytes()
    if user.ease is not None:
        record["ease"] = encode_ranked(user.ease.itemids, user.ease.scores)
    if user.searches is not None:
        record["term_list"] = encode_ranked(user.searches.term.itemids, user.searches.term.scores)
        record["vector_list"] = encode_ranked(user.searches.vector.itemids, user.searches.vector.scores)
    return record


def encode_search_shape(search_shape: tuple[int, int]) -> str:
    """The meta field ``user_searches``: the (size, term_genres) every user's published searches were run with."""
    size, term_genres = search_shape
    return json.dumps({"size": size, "term_genres": term_genres})


def decode_search_shape(meta: dict[str, str]) -> tuple[int, int] | None:
    """(size, term_genres) of the version's published searches; None where it has none."""
    if "user_searches" not in meta:
        return None
    shape = json.loads(meta["user_searches"])
    return int(shape["size"]), int(shape["term_genres"])


def decode_user(userid: int, record: dict[bytes, bytes], search_shape: tuple[int, int] | None = None) -> UserRecallData:
    """``search_shape`` (``decode_search_shape``): read the published searches too (None: leave them out)."""
    terms = np.frombuffer(record.get(b"terms", b""), dtype=INT).reshape(-1, 3)
    vector = record.get(b"vector")
    searches = None
    if search_shape is not None and b"term_list" in record and b"vector_list" in record:
        searches = PublishedSearches(decode_ranked(record[b"term_list"]), decode_ranked(record[b"vector_list"]),
                                     *search_shape)
    return UserRecallData(
        userid,
        np.frombuffer(record[b"seen"], dtype=INT).astype(np.int64),
        np.frombuffer(record[b"recent"], dtype=INT).astype(np.int64),
        [(int(g), int(i), int(c)) for g, i, c in terms],
        None if vector is None else np.frombuffer(vector, dtype=VECTOR).astype(np.float32),
        decode_ranked(record[b"ease"]) if b"ease" in record else None,
        searches,
    )


def encode_batch_state(timestamps: np.ndarray, labels: np.ndarray, demographics: np.ndarray) -> dict[str, bytes]:
    return {"recent_timestamps": np.asarray(timestamps, dtype=INT).tobytes(),
            "recent_labels": np.asarray(labels, dtype=np.int8).tobytes(),
            "demographics": np.asarray(demographics, dtype=SMALL).tobytes()}


def decode_batch_state(record: dict[bytes, bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(recent timestamps, recent labels, demographics), None where the version holds none."""
    if b"demographics" not in record:
        return None
    return (np.frombuffer(record.get(b"recent_timestamps", b""), dtype=INT).astype(np.int64),
            np.frombuffer(record.get(b"recent_labels", b""), dtype=np.int8).astype(np.int64),
            np.frombuffer(record[b"demographics"], dtype=SMALL).astype(np.int16))


def encode_ranked(itemids: np.ndarray, scores: np.ndarray) -> bytes:
    return np.asarray(itemids, dtype=INT).tobytes() + np.asarray(scores, dtype=FLOAT).tobytes()


def decode_ranked(blob: bytes | None) -> Ranked:
    if not blob:
        return Ranked.empty()
    half = len(blob) // 2  # int64 ids and float64 scores: the same width, the same count
    return Ranked(np.frombuffer(blob[:half], dtype=INT).astype(np.int64),
                  np.frombuffer(blob[half:], dtype=FLOAT).astype(np.float64))
