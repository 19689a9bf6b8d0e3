"""Feast objects for the batch's feature tables, derived from the feature specification.

Entities ``user`` (join key ``userid``) and ``item`` (``itemid``); feature views ``user_fv`` (the
user's demographics and standardised genre counters, as served after the batch) and ``item_fv``
(the movie's genre flags); feature services ``ml_user`` and ``ml_item``. Field names, dtypes and
order come from ``spark_jobs.feature_spec.SPEC``: a feature added to the spec reaches Feast without
editing this file.

The sources read the batch's Parquet exports, ``<output>/exports/current/<table>``, with ``<output>``
from ``RECSYS_OUTPUT_DIR`` (default ``../output``, relative to this folder, as Feast resolves it).
"""

from __future__ import annotations

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import FeastType, Float32, Int32

from spark_jobs.feature_spec import SPEC, Feature

FEAST_TYPES: dict[str, FeastType] = {"int32": Int32, "float32": Float32}
EXPORTS = os.path.join(os.environ.get("RECSYS_OUTPUT_DIR", "../output"), "exports", "current")


def fields(features: tuple[Feature, ...]) -> list[Field]:
    return [Field(name=f.name, dtype=FEAST_TYPES[f.dtype], description=f.description) for f in features]


user = Entity(name="user", join_keys=["userid"], value_type=ValueType.INT32, description="a MovieLens user")
item = Entity(name="item", join_keys=["itemid"], value_type=ValueType.INT32, description="a MovieLens movie")

ml_user_source = FileSource(
    name="ml_user_source",
    path=os.path.join(EXPORTS, "user_features"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="user_features export of the current batch run",
)
ml_item_source = FileSource(
    name="ml_item_source",
    path=os.path.join(EXPORTS, "item_features"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
    description="item_features export of the current batch run",
)

# ttl 0: no age cut-off. A user's row is their state after the last offline impression, valid until
# the next batch replaces it.
user_fv = FeatureView(
    name="user_fv",
    entities=[user],
    ttl=timedelta(0),
    schema=fields(SPEC.online_user_features),
    source=ml_user_source,
    online=True,
    tags={"spec_version": SPEC.version},
)
item_fv = FeatureView(
    name="item_fv",
    entities=[item],
    ttl=timedelta(0),
    schema=fields(SPEC.online_item_features),
    source=ml_item_source,
    online=True,
    tags={"spec_version": SPEC.version},
)

ml_user = FeatureService(name="ml_user", features=[user_fv])
ml_item = FeatureService(name="ml_item", features=[item_fv])
