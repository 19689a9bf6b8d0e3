"""Load what recall and ranking read at serving time from the declared artifacts: the batch's exports
(``exports/current``) and the published models (``models/<name>/current``).

Used by the offline top-K evaluation and by the online service's embedded stores, so both start from
the same arrays. Nothing here trains or writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

from models.artifacts import ModelFolder, open_model
from models.retrieval import ItemIndex, UserRecallData
from spark_jobs.feature_spec import SPEC, Entity, FeatureSpec

USER_FILTER = "user_filter"
USER_TERMS = "user_terms"
ITEM_TERMS = "item_terms"
ITEM_POPULARITY = "item_popularity"
ITEM_NEIGHBOURS = "item_neighbours"
USER_FEATURES = "user_features"
ITEM_FEATURES = "item_features"
USER_VECTORS = "user_vectors.parquet"
ITEM_VECTORS = "item_vectors.parquet"


def _vectors(path: Path, key: str, size: int) -> np.ndarray:
    frame = pd.read_parquet(path)
    frame = frame[frame[key] < size]
    matrix = np.zeros((size, len(frame["vector"].iloc[0])), dtype=np.float32)
    matrix[frame[key].to_numpy()] = np.stack(frame["vector"].to_numpy())
    return matrix


def load_item_index(exports: Path, recall_model: ModelFolder | None) -> ItemIndex:
    popularity_frame = pd.read_parquet(exports / ITEM_POPULARITY)
    item_count = int(popularity_frame["itemid"].max()) + 1
    popularity = np.zeros(item_count, dtype=np.float64)
    popularity[popularity_frame["itemid"].to_numpy()] = popularity_frame["positives"].to_numpy()
    known = np.zeros(item_count, dtype=bool)
    known[popularity_frame["itemid"].to_numpy()] = True
    ranked = popularity_frame.sort_values(["positives", "impressions", "itemid"], ascending=[False, False, True])
    popular = ranked["itemid"].to_numpy().astype(np.int64)

    terms = pd.read_parquet(exports / ITEM_TERMS).explode("terms").dropna(subset=["terms"])
    genre_items = {}
    for genre, group in terms.groupby("terms"):
        items = group["itemid"].to_numpy().astype(np.int64)
        genre_items[int(genre)] = items[np.lexsort((items, -popularity[items]))]

    neighbours = pd.read_parquet(exports / ITEM_NEIGHBOURS)
    width = max((len(n) for n in neighbours["neighbours"]), default=0)
    neighbour_ids = np.full((item_count, max(width, 1)), -1, dtype=np.int64)
    neighbour_scores = np.zeros((item_count, max(width, 1)), dtype=np.float64)
    for itemid, entries in zip(neighbours["itemid"], neighbours["neighbours"], strict=True):
        if itemid < item_count and len(entries):
            neighbour_ids[itemid, : len(entries)] = [e["itemid"] for e in entries]
            neighbour_scores[itemid, : len(entries)] = [e["score"] for e in entries]

    item_vectors = None if recall_model is None else _vectors(recall_model.path / ITEM_VECTORS, "itemid", item_count)
    return ItemIndex(item_count, popular, popularity, genre_items, neighbour_ids, neighbour_scores, item_vectors,
                     known)


def load_user_recall_data(exports: Path, recall_model: ModelFolder | None) -> dict[int, UserRecallData]:
    filters = pd.read_parquet(exports / USER_FILTER)
    user_terms = pd.read_parquet(exports / USER_TERMS)
    terms = dict(zip(user_terms["userid"], user_terms["terms"], strict=True))
    vectors = None
    if recall_model is not None:
        frame = pd.read_parquet(recall_model.path / USER_VECTORS)
        vectors = dict(zip(frame["userid"], frame["vector"], strict=True))
    users = {}
    for userid, seen, recent in zip(filters["userid"], filters["seen_itemids"], filters["recent_itemids"],
                                    strict=True):
        user_terms = [(int(t["genre_id"]), int(t["impressions"]), int(t["clicks"])) for t in terms.get(userid, [])]
        vector = None if vectors is None or userid not in vectors else np.asarray(vectors[userid], dtype=np.float32)
        users[int(userid)] = UserRecallData(int(userid), np.asarray(seen, dtype=np.int64),
                                            np.asarray(recent, dtype=np.int64), user_terms, vector)
    return users


@dataclass(frozen=True)
class FeatureAssembler:
    """Builds model input rows in spec order from one user's feature row and the prefetched item features."""

    user_columns: tuple[str, ...]  # online user features, in the order of ``user_values``
    item_matrix: np.ndarray  # (item_count, len(item columns)) float32, row = itemid
    item_columns: tuple[str, ...]
    spec: FeatureSpec = SPEC

    @classmethod
    def from_item_features(cls, item_features: pd.DataFrame, spec: FeatureSpec = SPEC) -> FeatureAssembler:
        item_columns = tuple(f.name for f in spec.online_item_features)
        size = int(item_features["itemid"].max()) + 1
        matrix = np.zeros((size, len(item_columns)), dtype=np.float32)
        matrix[item_features["itemid"].to_numpy()] = item_features[list(item_columns)].to_numpy(np.float32)
        user_columns = tuple(f.name for f in spec.online_user_features)
        return cls(user_columns, matrix, item_columns, spec)

    @cached_property
    def _layout(self) -> _RowLayout:
        user_position = {name: i for i, name in enumerate(self.user_columns)}
        item_position = {name: i for i, name in enumerate(self.item_columns)}
        user_out, user_in, item_out, item_in = [], [], [], []
        for column, feature in enumerate(self.spec.features):
            if feature.name in ("userid", "itemid"):
                continue
            if feature.entity is Entity.USER:
                user_out.append(column)
                user_in.append(user_position[feature.name])
            else:
                item_out.append(column)
                item_in.append(item_position[feature.name])
        as_index = partial(np.asarray, dtype=np.int64)
        return _RowLayout(self.spec.index_of("userid"), self.spec.index_of("itemid"), as_index(user_out),
                          as_index(user_in), as_index(item_out), as_index(item_in))

    def rows(self, userid: int, user_values: np.ndarray, itemids: np.ndarray) -> np.ndarray:
        """(len(itemids), len(spec)) float32: the user's values repeated, each item's own values."""
        layout = self._layout
        out = np.empty((len(itemids), len(self.spec.names)), dtype=np.float32)
        known = (itemids >= 0) & (itemids < len(self.item_matrix))
        item_values = self.item_matrix[np.where(known, itemids, 0)]
        item_values[~known] = 0.0
        out[:, layout.userid] = userid
        out[:, layout.itemid] = itemids
        out[:, layout.user_out] = np.asarray(user_values, dtype=np.float32)[layout.user_in]
        out[:, layout.item_out] = item_values[:, layout.item_in]
        return out


@dataclass(frozen=True)
class _RowLayout:
    """Where each model input column comes from: the user's row or the item's (positions, in spec order)."""

    userid: int
    itemid: int
    user_out: np.ndarray
    user_in: np.ndarray
    item_out: np.ndarray
    item_in: np.ndarray


def load_user_features(exports: Path, spec: FeatureSpec = SPEC) -> dict[int, np.ndarray]:
    frame = pd.read_parquet(exports / USER_FEATURES)
    columns = [f.name for f in spec.online_user_features]
    values = frame[columns].to_numpy(np.float32)
    return {int(u): values[i] for i, u in enumerate(frame["userid"])}


class OnnxRanker:
    """The ranking model's ONNX file under onnxruntime: rows in spec order -> probabilities."""

    def __init__(self, folder: ModelFolder, threads: int = 1) -> None:
        metadata = folder.metadata()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder.path / metadata["onnx"]), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name, self.output_name = metadata["input_name"], metadata["output_name"]
        self.version = metadata["version"]

    def score(self, rows: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: rows})[0]


def open_models(models_dir: Path) -> tuple[ModelFolder | None, ModelFolder | None]:
    """(recall, ranking) current versions, None where a model was not trained."""
    found = []
    for name in ("recall", "ranking"):
        root = models_dir / name
        found.append(open_model(root) if (root / "current").exists() else None)
    return found[0], found[1]
