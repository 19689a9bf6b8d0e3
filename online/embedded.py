"""The embedded profile: the batch's exports and the recall model in memory (``models/in_memory_stores.py``),
Feast's SQLite online store in-process, the ranking model under onnxruntime. Nothing to start."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np
from feast import FeatureStore
from feast.infra.online_stores.helpers import get_online_store_from_config
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from contracts.errors import NotPublishedError, StoreUnavailableError
from contracts.event_log import EventLog
from contracts.feature_spec import SPEC
from contracts.published import open_published
from contracts.settings import ServingSettings
from feature_repo.names import USER_PUSH_SOURCE, USER_VIEW
from feature_repo.publish import open_store
from models.export_readers import dataset_format_name, load_batch_user_states, load_update_rules
from models.in_memory_stores import CatalogueArrays, in_memory_bundle
from models.recall_sources import RecallConfig
from models.stores import ServingBundle
from online.feature_cache import cached_features
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
    """Users' feature rows into Feast's online store, for every feature view fed by the push source
    ``ml_user_push`` (``user_fv``).

    The views are found through the push source once, and each push goes to the online store's own
    ``online_write_batch``: what ``FeatureStore.push`` ends in, without its per-call registry reads (~40 ms of
    decoding the registry's protos per call here, against ~1 ms for the write itself). Each row is stamped
    with the push's own time: Feast's Redis store keeps a row only if it is newer than the stored one, and a
    rating may be older than the user's latest impression (it takes its place in the past); the push's time
    is newer push after push (they are serialised by the event log's lock) and than the batch's rows."""

    def __init__(self, store: FeatureStore) -> None:
        self.config = store.config
        self.online_store = get_online_store_from_config(store.config.online_store)
        self.views = [view for view in store.list_feature_views()
                      if view.stream_source is not None and view.stream_source.name == USER_PUSH_SOURCE]
        if not self.views:
            raise NotPublishedError(f"no feature view is fed by the push source {USER_PUSH_SOURCE}: run "
                                    "python -m feature_repo.publish")
        self.features = SPEC.online_user_features
        if isinstance(self.online_store, SqliteOnlineStore):
            # A pushed row is derived state: the ratings are in the fsync'd event log and every start pushes
            # them again, so this connection's commits need not wait for the disk (~1.4 ms a push; an OS crash
            # could lose the last pushes, which the next start redoes). Readers' connections are unchanged.
            self.online_store._get_conn(self.config).execute("PRAGMA synchronous = OFF")

    def push(self, rows: Mapping[int, np.ndarray]) -> None:
        now = datetime.now(UTC)
        data = []
        for userid, values in rows.items():
            key = EntityKey(join_keys=["userid"], entity_values=[Value(int32_val=int(userid))])
            protos = {feature.name: (Value(int32_val=int(value)) if feature.dtype == "int32"
                                     else Value(float_val=float(value)))
                      for feature, value in zip(self.features, np.asarray(values).tolist(), strict=True)}
            data.append((key, protos, now, now))
        try:
            for view in self.views:
                self.online_store.online_write_batch(self.config, view, data, None)
        except Exception as error:  # the store's own errors are many; all mean "cannot write"
            raise StoreUnavailableError("feast", f"push of {len(data)} user(s): {error}") from error


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
    bundle = in_memory_bundle(arrays, published.ranking_model, recall, features, published.versions,
                              published.next_item_model)
    live = LiveUsers(EventLog(settings.events_dir), bundle.users, load_batch_user_states(published.exports),
                     load_update_rules(published.exports, arrays.index),
                     FORMATS_BY_NAME[dataset_format_name(published.exports)], FeastFeaturePusher(features.store),
                     after_sequence=published.events_through)
    live.refresh()  # catches up from the log: every rating accepted before this worker started
    live.push()  # and Feast holds their users' rows (a new batch's materialisation replaced them)
    bundle = dataclasses.replace(bundle, users=LiveUserRecallStore(live), ratings=live,
                                 features=cached_features(bundle.features, live.feature_state, settings.feature_cache))
    log.info("serving bundle loaded: %s; %d user(s) with posted ratings (event log %s)", bundle.versions,
             len(live.users_with_ratings), settings.events_dir)
    return bundle
