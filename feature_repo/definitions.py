"""Feast objects for the batch's feature tables, derived from the feature specification.

Entities ``user`` (join key ``userid``) and ``item`` (``itemid``); feature views ``user_fv`` (the
user's demographics and standardised genre counters, as served after the batch) and ``item_fv``
(the movie's genre flags); feature services ``ml_user`` and ``ml_item``. ``user_history_fv`` (service
``ml_user_history``) holds the same counters as of every second a user had impressions: the
point-in-time source for training sets (offline only). ``user_fv``'s source is the push source
``ml_user_push`` over the batch's table: materialise reads the table, and the service pushes a user's row
after each rating posted to it. Field names, dtypes and order come from
``contracts.feature_spec.SPEC``: a feature added to the spec reaches Feast without editing this file.

``feast_objects(output_dir, offline_store)`` builds them from explicit values: the sources read the batch's
Parquet exports, ``<output>/exports/current/<table>`` (``offline_store="file"``), or, for the Spark offline
store, ``SparkSource``s over the Delta tables ``<output>/delta/<table>``: the platform variant, where
training sets are built by Spark next to the lake. ``feature_repo.publish`` calls it with the project's
settings. The module-level objects below are for the plain ``feast`` CLI run in this folder: built with
``<output>`` from ``RECSYS_OUTPUT_DIR`` (default ``../output``, relative to this folder, as Feast resolves
it) and the offline store from ``RECSYS_FEAST_OFFLINE`` (default ``file``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from dataclasses import fields as fields_of
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat
from feast.types import FeastType, Float32, Int32

from contracts.feature_spec import SPEC, Feature
from contracts.tables import Table
from feature_repo.names import (
    HISTORY_SERVICE,
    HISTORY_VIEW,
    ITEM_SERVICE,
    ITEM_VIEW,
    USER_PUSH_SOURCE,
    USER_SERVICE,
    USER_VIEW,
)

FEAST_TYPES: dict[str, FeastType] = {"int32": Int32, "float32": Float32}


@dataclass(frozen=True)
class FeastObjects:
    user: Entity
    item: Entity
    user_fv: FeatureView
    item_fv: FeatureView
    user_history_fv: FeatureView
    ml_user: FeatureService
    ml_item: FeatureService
    ml_user_history: FeatureService

    def all(self) -> list:
        """Everything ``FeatureStore.apply`` registers."""
        return [getattr(self, f.name) for f in fields_of(self)]


def fields(features: tuple[Feature, ...]) -> list[Field]:
    return [Field(name=f.name, dtype=FEAST_TYPES[f.dtype], description=f.description) for f in features]


def feast_objects(output_dir: Path | str, offline_store: str = "file") -> FeastObjects:
    """The Feast objects over the batch output in ``output_dir`` (its exports, or its Delta tables)."""
    if offline_store not in ("file", "spark"):
        raise ValueError(f"offline_store must be 'file' or 'spark', not {offline_store!r}")
    output = str(output_dir)

    def source(name: str, table: str, description: str) -> DataSource:
        common = {"name": name, "timestamp_field": "event_timestamp",
                  "created_timestamp_column": "created_timestamp", "description": description}
        if offline_store == "spark":
            return SparkSource(path=os.path.abspath(os.path.join(output, "delta", table)),
                               table_format=DeltaFormat(), **common)
        return FileSource(path=os.path.join(output, "exports", "current", table), **common)

    def view(name: str, entity: Entity, features: tuple[Feature, ...], source: DataSource,
             online: bool) -> FeatureView:
        # ttl 0: no age cut-off. A user's row is their state after the last offline impression, valid until
        # the next batch replaces it.
        return FeatureView(name=name, entities=[entity], ttl=timedelta(0), schema=fields(features), source=source,
                           online=online, tags={"spec_version": SPEC.version})

    user = Entity(name="user", join_keys=["userid"], value_type=ValueType.INT32, description="a MovieLens user")
    item = Entity(name="item", join_keys=["itemid"], value_type=ValueType.INT32, description="a MovieLens movie")
    # Materialised from the batch's table; the service pushes a user's row after each rating posted to it.
    user_push = PushSource(name=USER_PUSH_SOURCE, batch_source=source(
        "ml_user_source", Table.USER_FEATURES, "user features of the current batch run"),
        description="a user's features after a rating posted to the service (online/live_users.py)")
    user_fv = view(USER_VIEW, user, SPEC.online_user_features, user_push, True)
    item_fv = view(ITEM_VIEW, item, SPEC.online_item_features,
                   source("ml_item_source", Table.ITEM_FEATURES, "item features of the current batch run"), True)
    user_history_fv = view(HISTORY_VIEW, user, SPEC.dense, source(
        "ml_user_history_source", Table.USER_FEATURE_HISTORY,
        "the standardised counters as of each second a user had impressions"), False)
    return FeastObjects(user, item, user_fv, item_fv, user_history_fv,
                        FeatureService(name=USER_SERVICE, features=[user_fv]),
                        FeatureService(name=ITEM_SERVICE, features=[item_fv]),
                        FeatureService(name=HISTORY_SERVICE, features=[user_history_fv]))


# For the feast CLI (``feast apply`` in this folder), which collects module-level objects.
_for_cli = feast_objects(os.environ.get("RECSYS_OUTPUT_DIR", "../output"),
                         os.environ.get("RECSYS_FEAST_OFFLINE", "file"))
user, item = _for_cli.user, _for_cli.item
user_fv, item_fv, user_history_fv = _for_cli.user_fv, _for_cli.item_fv, _for_cli.user_history_fv
ml_user, ml_item, ml_user_history = _for_cli.ml_user, _for_cli.ml_item, _for_cli.ml_user_history
