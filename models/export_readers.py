"""Read a published run's exports (and the recall model's vectors) into the arrays recall reads at serving
time: the catalogue's ``ItemIndex``, each user's ``UserRecallData`` and online feature row.

Used by the offline top-K evaluation, the loaders and the embedded service, so every one of them starts
from the same arrays. Nothing here trains or writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from contracts.feature_spec import SPEC, FeatureSpec
from contracts.published import ModelFolder
from contracts.tables import Export, ModelFiles
from models.recall_sources import ItemIndex, UserRecallData


def _vectors(path: Path, key: str, size: int) -> np.ndarray:
    frame = pd.read_parquet(path)
    frame = frame[frame[key] < size]
    matrix = np.zeros((size, len(frame["vector"].iloc[0])), dtype=np.float32)
    matrix[frame[key].to_numpy()] = np.stack(frame["vector"].to_numpy())
    return matrix


def load_item_index(exports: Path, recall_model: ModelFolder | None) -> ItemIndex:
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

    neighbours = pd.read_parquet(exports / Export.ITEM_NEIGHBOURS)
    width = max((len(n) for n in neighbours["neighbours"]), default=0)
    neighbour_ids = np.full((item_count, max(width, 1)), -1, dtype=np.int64)
    neighbour_scores = np.zeros((item_count, max(width, 1)), dtype=np.float64)
    for itemid, entries in zip(neighbours["itemid"], neighbours["neighbours"], strict=True):
        if itemid < item_count and len(entries):
            neighbour_ids[itemid, : len(entries)] = [e["itemid"] for e in entries]
            neighbour_scores[itemid, : len(entries)] = [e["score"] for e in entries]

    item_vectors = (None if recall_model is None
                    else _vectors(recall_model.path / ModelFiles.ITEM_VECTORS, "itemid", item_count))
    return ItemIndex(item_count, popular, popularity, genre_items, neighbour_ids, neighbour_scores, item_vectors,
                     known)


def load_user_recall_data(exports: Path, recall_model: ModelFolder | None) -> dict[int, UserRecallData]:
    filters = pd.read_parquet(exports / Export.USER_FILTER)
    user_terms = pd.read_parquet(exports / Export.USER_TERMS)
    terms = dict(zip(user_terms["userid"], user_terms["terms"], strict=True))
    vectors = None
    if recall_model is not None:
        frame = pd.read_parquet(recall_model.path / ModelFiles.USER_VECTORS)
        vectors = dict(zip(frame["userid"], frame["vector"], strict=True))
    users = {}
    for userid, seen, recent in zip(filters["userid"], filters["seen_itemids"], filters["recent_itemids"],
                                    strict=True):
        user_terms = [(int(t["genre_id"]), int(t["impressions"]), int(t["clicks"])) for t in terms.get(userid, [])]
        vector = None if vectors is None or userid not in vectors else np.asarray(vectors[userid], dtype=np.float32)
        users[int(userid)] = UserRecallData(int(userid), np.asarray(seen, dtype=np.int64),
                                            np.asarray(recent, dtype=np.int64), user_terms, vector)
    return users



def load_user_features(exports: Path, spec: FeatureSpec = SPEC) -> dict[int, np.ndarray]:
    frame = pd.read_parquet(exports / Export.USER_FEATURES)
    columns = [f.name for f in spec.online_user_features]
    values = frame[columns].to_numpy(np.float32)
    return {int(u): values[i] for i, u in enumerate(frame["userid"])}


def load_item_features(exports: Path) -> pd.DataFrame:
    return pd.read_parquet(exports / Export.ITEM_FEATURES)


def liked_holdout(exports: Path) -> dict[int, set[int]]:
    """Per user, the hold-out items they liked (label 1): what the top-K evaluations look for."""
    holdout = pd.read_parquet(exports / Export.ONLINE_HOLDOUT, columns=["userid", "itemid", "label"])
    liked = holdout[holdout["label"] == 1]
    return {int(u): set(group["itemid"].astype(int)) for u, group in liked.groupby("userid")}
