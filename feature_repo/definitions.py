"""Feast objects for the batch's feature tables, derived from the feature specification.

Entities ``user`` (join key ``userid``) and ``item`` (``itemid``); feature views ``user_fv`` (the
user's demographics and standardised genre counters, as served after the batch) and ``item_fv``
(the movie's genre flags); feature services ``ml_user`` and ``ml_item``. ``user_history_fv`` (service
``ml_user_history``) holds the same counters as of every second a user had impressions: the
point-in-time source for training sets (offline only). Field names, dtypes and
order come from ``spark_jobs.feature_spec.SPEC``: a feature added to the spec reaches Feast without
editing this file.

The sources read the batch's Parquet exports, ``<output>/exports/current/<table>``, with ``<output>``
from ``RECSYS_OUTPUT_DIR`` (default ``../output``, relative to this folder, as Feast resolves it).
With ``RECSYS_FEAST_OFFLINE=spark`` (and ``feature_store.spark.yaml``) they are ``SparkSource``s over
the Delta tables ``<output>/delta/<table>`` instead: the platform variant, where training sets are
built by Spark next to the lake.
"""

from __future__ import annotations

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat
from feast.types import FeastType, Float32, Int32

from feature_repo.names import ITEM_SERVICE, ITEM_VIEW, USER_SERVICE, USER_VIEW
from spark_jobs.feature_spec import SPEC, Feature

FEAST_TYPES: dict[str, FeastType] = {"int32": Int32, "float32": Float32}
OUTPUT = os.environ.get("RECSYS_OUTPUT_DIR", "../output")
EXPORTS = os.path.join(OUTPUT, "exports", "current")
OFFLINE = os.environ.get("RECSYS_FEAST_OFFLINE", "file")


def source(name: str, table: str, description: str) -> DataSource:
    """A batch table as a Feast source: its Parquet export (file store) or its Delta table (Spark store)."""
    common = {"name": name, "timestamp_field": "event_timestamp", "created_timestamp_column": "created_timestamp",
              "description": description}
    if OFFLINE == "spark":
        return SparkSource(path=os.path.abspath(os.path.join(OUTPUT, "delta", table)), table_format=DeltaFormat(),
                           **common)
    return FileSource(path=os.path.join(EXPORTS, table), **common)


def fields(features: tuple[Feature, ...]) -> list[Field]:
    return [Field(name=f.name, dtype=FEAST_TYPES[f.dtype], description=f.description) for f in features]


user = Entity(name="user", join_keys=["userid"], value_type=ValueType.INT32, description="a MovieLens user")
item = Entity(name="item", join_keys=["itemid"], value_type=ValueType.INT32, description="a MovieLens movie")

ml_user_source = source("ml_user_source", "user_features", "user features of the current batch run")
ml_item_source = source("ml_item_source", "item_features", "item features of the current batch run")

ml_user_history_source = source("ml_user_history_source", "user_feature_history",
                                "the standardised counters as of each second a user had impressions")

def view(name: str, entity: Entity, features: tuple[Feature, ...], source: DataSource, online: bool) -> FeatureView:
    # ttl 0: no age cut-off. A user's row is their state after the last offline impression, valid until
    # the next batch replaces it.
    return FeatureView(name=name, entities=[entity], ttl=timedelta(0), schema=fields(features), source=source,
                       online=online, tags={"spec_version": SPEC.version})


user_fv = view(USER_VIEW, user, SPEC.online_user_features, ml_user_source, online=True)
item_fv = view(ITEM_VIEW, item, SPEC.online_item_features, ml_item_source, online=True)
user_history_fv = view("user_history_fv", user, SPEC.dense, ml_user_history_source, online=False)

ml_user = FeatureService(name=USER_SERVICE, features=[user_fv])
ml_user_history = FeatureService(name="ml_user_history", features=[user_history_fv])
ml_item = FeatureService(name=ITEM_SERVICE, features=[item_fv])
