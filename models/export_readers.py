"""Read a published run's exports (and the recall model's vectors) into the arrays recall reads at serving
time: the catalogue's ``ItemIndex``, each user's ``UserRecallData`` and online feature row.

Used by the offline top-K evaluation, the loaders and the embedded service, so every one of them starts
from the same arrays. Nothing here trains or writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.feature_spec import GENRE_IDS, SPEC, FeatureSpec, genre_flag_name
from contracts.published import ModelFolder
from contracts.tables import Export, ModelFiles
from models.recall_sources import SEQUENCE, ItemIndex, ItemLists
from models.user_recall_table import UserRecallTable
from models.user_updates import COUNTER_NAMES, DEMOGRAPHICS, BatchUserStates, UpdateRules

# The per-item lists each ITEM_LIST_SOURCES source sums, by export (the validation ones: prefix + name).
ITEM_LIST_EXPORTS: dict[str, str] = {SEQUENCE: Export.ITEM_SUCCESSORS}


def _vectors(path: Path, key: str, size: int) -> np.ndarray:
    frame = pd.read_parquet(path)
    frame = frame[frame[key] < size]
    matrix = np.zeros((size, len(frame["vector"].iloc[0])), dtype=np.float32)
    matrix[frame[key].to_numpy()] = np.stack(frame["vector"].to_numpy())
    return matrix


def load_item_vectors(recall_model: ModelFolder, item_count: int) -> np.ndarray:
    """The recall model's item vectors (biases folded in) as rows by itemid."""
    return _vectors(recall_model.path / ModelFiles.ITEM_VECTORS, "itemid", item_count)


def load_item_lists(path: Path, item_count: int | None, owner: str = "itemid") -> ItemLists:
    """A table of (``owner``, neighbours array<struct<itemid, score>>) as one ragged array indexed by the owner
    (below ``item_count``; None: every owner in the table), by Arrow's columns."""
    table = pq.read_table(path, columns=[owner, "neighbours"])
    if item_count is None:
        item_count = int(pc.max(table[owner]).as_py() or 0) + 1
    table = table.filter(pc.less(table[owner], item_count)).combine_chunks()
    owners = table[owner].to_numpy().astype(np.int64)
    lists = table["neighbours"].chunk(0) if table.num_rows else None
    lengths = np.zeros(item_count, dtype=np.int64)
    if lists is None:
        return ItemLists(np.zeros(item_count + 1, dtype=np.int64), np.empty(0, np.int32), np.empty(0, np.float32))
    list_lengths = pc.list_value_length(lists).fill_null(0).to_numpy().astype(np.int64)
    lengths[owners] = list_lengths
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = pc.list_flatten(lists)
    ids = flat.field("itemid").to_numpy().astype(np.int32)
    scores = flat.field("score").to_numpy().astype(np.float32)
    if np.all(owners[1:] > owners[:-1]):
        # Rows in owner order (as the batch writes them): the entries are already where the offsets say, so no
        # second copy of them is made (at 25M the users' EASE lists are 32 M entries).
        return ItemLists(offsets, ids, scores)
    # The table's rows in any order: put each owner's entries at its own offset.
    source_starts = np.concatenate([[0], np.cumsum(list_lengths)[:-1]])
    position = (np.repeat(offsets[owners] - source_starts, list_lengths) + np.arange(len(ids)))
    itemids, values = np.empty(len(ids), np.int32), np.empty(len(ids), np.float32)
    itemids[position], values[position] = ids, scores
    return ItemLists(offsets, itemids, values)


def load_item_index(exports: Path, recall_model: ModelFolder | None, list_prefix: str = "") -> ItemIndex:
    """The catalogue's arrays; ``list_prefix`` ``validation_`` takes the item models fitted without the
    validation impressions (``spark_jobs/item_models.py``) instead of the served ones."""
    popularity_frame = pd.read_parquet(exports / Export.ITEM_POPULARITY)
    item_count = int(popularity_frame["itemid"].max()) + 1
    popularity = np.zeros(item_count, dtype=np.float64)
    popularity[popularity_frame["itemid"].to_numpy()] = popularity_frame["positives"].to_numpy()
    known = np.zeros(item_count, dtype=bool)
    known[popularity_frame["itemid"].to_numpy()] = True
    ranked = popularity_frame.sort_values(["positives", "impressions", "itemid"], ascending=[False, False, True])
    popular = ranked["itemid"].to_numpy().astype(np.int64)

    terms = pd.read_parquet(exports / Export.ITEM_TERMS).explode("terms").dropna(subset=["terms"])
    genre_items = {}
    for genre, group in terms.groupby("terms"):
        items = group["itemid"].to_numpy().astype(np.int64)
        genre_items[int(genre)] = items[np.lexsort((items, -popularity[items]))]

    neighbours = pd.read_parquet(exports / (list_prefix + Export.ITEM_NEIGHBOURS))
    width = max((len(n) for n in neighbours["neighbours"]), default=0)
    neighbour_ids = np.full((item_count, max(width, 1)), -1, dtype=np.int32)
    neighbour_scores = np.zeros((item_count, max(width, 1)), dtype=np.float32)
    for itemid, entries in zip(neighbours["itemid"], neighbours["neighbours"], strict=True):
        if itemid < item_count and len(entries):
            neighbour_ids[itemid, : len(entries)] = [e["itemid"] for e in entries]
            neighbour_scores[itemid, : len(entries)] = [e["score"] for e in entries]

    item_vectors = None if recall_model is None else load_item_vectors(recall_model, item_count)
    item_lists = {source: load_item_lists(exports / (list_prefix + name), item_count)
                  for source, name in ITEM_LIST_EXPORTS.items() if (exports / (list_prefix + name)).exists()}
    return ItemIndex(item_count, popular, popularity, genre_items, neighbour_ids, neighbour_scores, item_vectors,
                     known, item_lists)


def load_user_recall_data(exports: Path, recall_model: ModelFolder | None,
                          ease_export: str = Export.USER_EASE) -> UserRecallTable:
    """Every user's recall data; ``ease_export`` ``validation_user_ease`` gives the EASE lists of the
    validation fit."""
    filters = pq.read_table(exports / Export.USER_FILTER, columns=["userid", "seen_itemids", "recent_itemids"])
    user_terms = pq.read_table(exports / Export.USER_TERMS, columns=["userid", "terms"])
    vectors = None
    if recall_model is not None:
        vectors = pq.read_table(recall_model.path / ModelFiles.USER_VECTORS, columns=["userid", "vector"])
    ease = load_item_lists(exports / ease_export, None, owner="userid") if (exports / ease_export).exists() else None
    return UserRecallTable.from_arrow(filters, user_terms, vectors, ease)


def load_user_features(exports: Path, spec: FeatureSpec = SPEC) -> dict[int, np.ndarray]:
    frame = pd.read_parquet(exports / Export.USER_FEATURES)
    columns = [f.name for f in spec.online_user_features]
    values = frame[columns].to_numpy(np.float32)
    return {int(u): values[i] for i, u in enumerate(frame["userid"])}


def load_item_features(exports: Path) -> pd.DataFrame:
    return pd.read_parquet(exports / Export.ITEM_FEATURES)


def liked_holdout(exports: Path, export: str = Export.ONLINE_HOLDOUT) -> dict[int, set[int]]:
    """Per user, the hold-out items they liked (label 1): what the top-K evaluations look for (``export``
    ``validation_holdout``: what the validation choices look for)."""
    holdout = pd.read_parquet(exports / export, columns=["userid", "itemid", "label"])
    liked = holdout[holdout["label"] == 1]
    return {int(u): set(group["itemid"].astype(int)) for u, group in liked.groupby("userid")}


def load_batch_user_states(exports: Path) -> BatchUserStates:
    """Each user's recent timestamps and labels (``user_filter``) and demographics (``user_features``)."""
    features = pq.read_table(exports / Export.USER_FEATURES, columns=["userid", *DEMOGRAPHICS])
    userids = features["userid"].to_numpy().astype(np.int64)
    rows = {int(userid): row for row, userid in enumerate(userids.tolist())}
    demographics = np.stack([features[name].to_numpy().astype(np.int16) for name in DEMOGRAPHICS], axis=1)
    filters = pq.read_table(exports / Export.USER_FILTER, columns=["userid", "recent_timestamps", "recent_labels"])
    lengths = np.zeros(len(userids), dtype=np.int64)
    filter_rows = np.asarray([rows.get(int(u), -1) for u in filters["userid"].to_numpy().tolist()], dtype=np.int64)
    timestamps_lists = filters["recent_timestamps"].combine_chunks()
    labels_lists = filters["recent_labels"].combine_chunks()
    list_lengths = pc.list_value_length(timestamps_lists).fill_null(0).to_numpy().astype(np.int64)
    kept = filter_rows >= 0
    lengths[filter_rows[kept]] = list_lengths[kept]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat_timestamps = pc.list_flatten(timestamps_lists).to_numpy().astype(np.int64)
    flat_labels = pc.list_flatten(labels_lists).to_numpy().astype(np.int8)
    timestamps, labels = np.zeros(int(offsets[-1]), np.int64), np.zeros(int(offsets[-1]), np.int8)
    # Each filter row's entries to its user's offsets in one scatter, as load_item_lists lays out its lists.
    starts = np.concatenate([[0], np.cumsum(list_lengths)[:-1]]).astype(np.int64)
    source = np.repeat(kept, list_lengths)
    target = np.repeat(offsets[filter_rows[kept]] - starts[kept], list_lengths[kept]) + np.flatnonzero(source)
    timestamps[target], labels[target] = flat_timestamps[source], flat_labels[source]
    return BatchUserStates(rows, offsets, timestamps, labels, demographics)


def dataset_format_name(exports: Path) -> str:
    """Which release the run was read from (``spark_jobs.formats``): its rating scale, for instance."""
    return str(json.loads((exports / Export.METADATA_FILE).read_text())["dataset"]["format"])


def load_update_rules(exports: Path, index: ItemIndex) -> UpdateRules:
    """What ``models.user_updates.apply_ratings`` reads of a published run: the movies' genres, the counters'
    train statistics, the recent list's length, the per-movie EASE weights and the recall model's item vectors."""
    items = pq.read_table(exports / Export.ITEM_FEATURES, columns=["itemid", *map(genre_flag_name, GENRE_IDS)])
    itemids = items["itemid"].to_numpy().astype(np.int64)
    genre_flags = np.zeros((max(index.item_count, int(itemids.max(initial=0)) + 1), len(GENRE_IDS)), dtype=np.int64)
    for column, genre in enumerate(GENRE_IDS):
        genre_flags[itemids, column] = items[genre_flag_name(genre)].to_numpy()
    metadata = json.loads((exports / Export.METADATA_FILE).read_text())
    statistics = {entry["name"]: (entry["mean"], entry["std"]) for entry in metadata["features"] if "mean" in entry}
    means = np.asarray([statistics[name][0] for name in COUNTER_NAMES], dtype=np.float64)
    stds = np.asarray([statistics[name][1] for name in COUNTER_NAMES], dtype=np.float64)
    manifest = json.loads((exports / Export.MANIFEST_FILE).read_text())
    batch = manifest.get("batch_settings", {})
    ease_path = exports / Export.ITEM_EASE
    ease_lists = load_item_lists(ease_path, index.item_count) if ease_path.exists() else None
    return UpdateRules(genre_flags, means, stds, int(batch.get("recent_items", 50)), ease_lists,
                       int(batch.get("ease_per_user", 200)), index.item_vectors, index.catalogue_ids)
