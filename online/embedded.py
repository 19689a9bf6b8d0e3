"""In-process stores: the batch's exports and the recall model in memory, Feast's SQLite online store
in-process, the ranking model under onnxruntime. Nothing to start."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from feast import FeatureStore

from models.retrieval import ItemIndex, Ranked, RecallConfig, UserRecallData, popularity_recall, recall_sources
from online.stores import StoreUnavailableError
from spark_jobs.feature_spec import SPEC


@dataclass(frozen=True)
class InMemoryUserRecallStore:
    users: dict[int, UserRecallData]

    def get(self, userid: int) -> UserRecallData | None:
        return self.users.get(userid)


@dataclass(frozen=True)
class InMemoryItemIndex:
    """Recall over the catalogue's arrays in memory (``models.retrieval``, as the offline evaluation)."""

    index: ItemIndex

    def sources(self, user: UserRecallData, config: RecallConfig, recall_size: int) -> dict[str, Ranked]:
        return recall_sources(user, self.index, config, recall_size)

    def popular(self, user: UserRecallData | None, n: int) -> Ranked:
        return popularity_recall(user, self.index, n)


class FeastFeatureClient:
    """The user's row from Feast's online store in-process (about 0.5 ms on SQLite)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.service = store.get_feature_service("ml_user")
        self.columns = [f.name for f in SPEC.online_user_features]

    def user_features(self, userid: int) -> np.ndarray | None:
        try:
            response = self.store.get_online_features(features=self.service, entity_rows=[{"userid": userid}])
            values = response.to_dict()
        except Exception as error:  # the store's own errors are many; all mean "cannot answer"
            raise StoreUnavailableError("feast", str(error)) from error
        row = [values[name][0] for name in self.columns]  # by name: the response order is not the schema's
        if any(value is None for value in row):
            return None
        return np.asarray(row, dtype=np.float32)
