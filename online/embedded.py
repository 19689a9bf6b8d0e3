"""The embedded profile: the batch's exports and the recall model in memory (``models/in_memory_stores.py``),
Feast's SQLite online store in-process, the ranking model under onnxruntime. Nothing to start."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode
from feast.infra.online_stores.helpers import get_online_store_from_config
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from contracts.errors import NotPublishedError, StoreUnavailableError
from contracts.feature_spec import SPEC
from contracts.published import open_published
from contracts.settings import ServingSettings
from feature_repo.names import USER_PUSH_SOURCE, USER_VIEW
from feature_repo.publish import open_store
from models.export_readers import dataset_format_name, load_batch_user_states, load_update_rules
from models.in_memory_stores import CatalogueArrays, in_memory_bundle
from models.recall_sources import RecallConfig
from models.stores import ServingBundle
from online.event_log import EventLog
from online.live_users import LiveUserRecallStore, LiveUsers
from spark_jobs.formats import FORMATS_BY_NAME

log = logging.getLogger(__name__)


class FeastFeatureClient:
    """The user's row from Feast's online store in-process, through the store's own ``online_read`` on the
    ``user_fv`` view (~0.25 ms on SQLite). ``FeatureStore.get_online_features`` returns the same values
    but spends ~0.5-1 ms more per call preparing the request and assembling the response."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
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


class FeastFeaturePusher:
    """Users' feature rows into Feast's online store through the ``user_fv`` view's push source."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.features = SPEC.online_user_features

    def push(self, rows: Mapping[int, tuple[np.ndarray, int]]) -> None:
        userids = list(rows)
        values = np.stack([rows[userid][0] for userid in userids])
        frame = pd.DataFrame({"userid": np.asarray(userids, dtype=np.int32)})
        for column, feature in enumerate(self.features):
            frame[feature.name] = values[:, column].astype(feature.dtype)
        frame["event_timestamp"] = pd.to_datetime([rows[userid][1] for userid in userids], unit="s", utc=True)
        frame["created_timestamp"] = datetime.now(UTC)
        try:
            self.store.push(USER_PUSH_SOURCE, frame, to=PushMode.ONLINE)
        except Exception as error:  # the store's own errors are many; all mean "cannot write"
            raise StoreUnavailableError("feast", f"push of {len(userids)} user(s): {error}") from error


def load_embedded_bundle(settings: ServingSettings) -> ServingBundle:
    """The batch run and models ``current`` points to (spec-checked: what the loaders publish too), with the
    user features from Feast's SQLite online store."""
    published = open_published(settings)
    try:
        arrays = CatalogueArrays.load(published.exports, published.recall_model)
        features = FeastFeatureClient(open_store(settings, "sqlite", settings.redis_address))
    except FileNotFoundError as error:  # an export gone, or Feast's registry not written yet
        raise NotPublishedError(f"{error} (run the batch, then python -m feature_repo.publish)") from error
    recall = RecallConfig.served(settings.models_dir, settings.recall_size)
    bundle = in_memory_bundle(arrays, published.ranking_model, recall, features, published.versions)
    live = LiveUsers(EventLog(settings.events_dir), bundle.users, load_batch_user_states(published.exports),
                     load_update_rules(published.exports, arrays.index),
                     FORMATS_BY_NAME[dataset_format_name(published.exports)], FeastFeaturePusher(features.store),
                     after_sequence=published.events_through)
    live.refresh()  # catches up from the log: every rating accepted before this worker started
    live.push()  # and Feast holds their users' rows (a new batch's materialisation replaced them)
    bundle = dataclasses.replace(bundle, users=LiveUserRecallStore(live), ratings=live)
    log.info("serving bundle loaded: %s; %d user(s) with posted ratings (event log %s)", bundle.versions,
             len(live.users_with_ratings), settings.events_dir)
    return bundle
