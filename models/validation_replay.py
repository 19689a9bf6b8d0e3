"""What a validation replay reads: the users of the batch's validation hold-out (``validation_holdout``: each
user's last ``validation_size`` offline impressions) as they were before it, the item models the batch fitted
without it (``validation_item_*``, the EASE lists ``validation_user_ease``), their liked validation items, and
their feature rows as of the first validation impression (the samples' point-in-time rule).

Two choices replay it through the request path's own recall: the ranker's epoch (``models/candidate_selection.py``)
and the final order's weights (``models/fusion_choice.py``). The hold-out is never read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.published import ModelFolder, open_models, open_next_item
from contracts.tables import Export, Table
from contracts.validation_sample import validation_sample
from models.export_readers import liked_holdout, load_item_features, load_item_index, load_user_recall_data
from models.feature_rows import FeatureAssembler
from models.in_memory_stores import InMemoryItemIndex
from models.onnx_next_item import OnnxNextItemScorer
from models.onnx_ranker import OnnxRanker
from models.recall_sources import UserRecallData
from models.samples import online_user_rows_as_of


def validation_users(users: Mapping[int, UserRecallData], exports: Path) -> dict[int, UserRecallData]:
    """The users with validation impressions, as they were before them: seen and latest items without them
    (the latest ``validation_size`` offline impressions are the head of ``recent``)."""
    held = pd.read_parquet(exports / Export.VALIDATION_HOLDOUT, columns=["userid", "itemid"])
    view = {}
    for userid, group in held.groupby("userid"):
        user = users.get(int(userid))
        if user is None:
            continue
        items = group["itemid"].to_numpy().astype(np.int64)
        view[int(userid)] = replace(user, seen=user.seen[~np.isin(user.seen, items)],
                                    recent=user.recent[~np.isin(user.recent, items)])
    return view


def sampled_users(targets: dict[int, set[int]]) -> dict[int, set[int]]:
    """The users every validation choice is made on (``contracts.validation_sample``: all of them up to
    ``VALIDATION_USERS``, beyond that a fixed random sample), with their targets. Sampled over every user with a
    liked validation impression, as the batch does; a reader drops the users it has no data for afterwards, so
    the sample stays the batch's."""
    return {u: targets[u] for u in validation_sample(targets)}


@dataclass(frozen=True)
class ValidationData:
    """The validation item models, users as before their validation impressions, their liked validation
    items and their feature rows as of the first of them; the ranker and the sequence model once they are
    published."""

    items: InMemoryItemIndex
    users: dict[int, UserRecallData]
    targets: dict[int, set[int]]
    features: dict[int, np.ndarray]
    assembler: FeatureAssembler
    ranker: OnnxRanker | None
    next_item: OnnxNextItemScorer | None = None

    @classmethod
    def load(cls, exports: Path, models_dir: Path) -> ValidationData:
        """Needs the recall model (its vectors are a recall source); the ranker and the sequence model are read
        where they are published."""
        recall_model, ranking_model = open_models(models_dir)
        index = load_item_index(exports, recall_model, list_prefix=Table.VALIDATION_PREFIX)
        users = validation_users(load_user_recall_data(exports, recall_model, Export.VALIDATION_USER_EASE), exports)
        targets = {u: items for u, items in sampled_users(liked_holdout(exports, Export.VALIDATION_HOLDOUT)).items()
                   if u in users}
        held = pd.read_parquet(exports / Export.VALIDATION_HOLDOUT, columns=["userid", "timestamp"])
        first_held = held[held["userid"].isin(list(targets))].groupby("userid")["timestamp"].min()
        rows = online_user_rows_as_of(exports, first_held.index.to_numpy(), first_held.to_numpy())
        return cls(InMemoryItemIndex(index), users, targets, dict(zip(first_held.index.astype(int), rows, strict=True)),
                   FeatureAssembler.from_item_features(load_item_features(exports)),
                   OnnxRanker(ranking_model) if ranking_model is not None else None, next_item_scorer(models_dir))

    def with_models(self, ranking_model: ModelFolder | None, next_item_model: ModelFolder | None) -> ValidationData:
        return replace(self, ranker=OnnxRanker(ranking_model) if ranking_model is not None else None,
                       next_item=OnnxNextItemScorer(next_item_model) if next_item_model is not None else None)


def next_item_scorer(models_dir: Path) -> OnnxNextItemScorer | None:
    folder = open_next_item(models_dir)
    return OnnxNextItemScorer(folder) if folder is not None else None

