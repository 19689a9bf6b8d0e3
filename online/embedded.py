"""In-process stores: the batch's exports and the recall model in memory, Feast's SQLite online store
in-process, the ranking model under onnxruntime. Nothing to start."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from feast import FeatureStore
from feast.infra.online_stores.helpers import get_online_store_from_config
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from feature_repo.names import USER_VIEW
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
    """The user's row from Feast's online store in-process, through the store's own ``online_read`` on the
    ``user_fv`` view (~0.25 ms on SQLite). ``FeatureStore.get_online_features`` returns the same values
    but spends ~0.5-1 ms more per call preparing the request and assembling the response."""

    def __init__(self, store: FeatureStore) -> None:
        self.config = store.config
        self.view = store.get_feature_view(USER_VIEW)
        self.online_store = get_online_store_from_config(store.config.online_store)
        self.columns = [f.name for f in SPEC.online_user_features]

    def user_features(self, userid: int) -> np.ndarray | None:
        key = EntityKey(join_keys=["userid"], entity_values=[Value(int32_val=userid)])
        try:
            [(_, values)] = self.online_store.online_read(self.config, self.view, [key])
        except Exception as error:  # the store's own errors are many; all mean "cannot answer"
            raise StoreUnavailableError("feast", str(error)) from error
        if values is None:
            return None
        row = []
        for name in self.columns:  # by name: the stored order is not the spec's
            value = values.get(name)
            kind = None if value is None else value.WhichOneof("val")
            if kind is None:
                return None
            row.append(getattr(value, kind))
        return np.asarray(row, dtype=np.float32)
