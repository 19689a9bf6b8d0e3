"""The declared tables and artifacts between stages: the names every writer and reader uses.

Delta tables live under ``<output>/delta/<table>``; the Parquet exports of a published run under
``<output>/exports/current/<export>`` with ``feature_metadata.json`` and ``manifest.json``; model
versions under ``<output>/models/<model>/<version>/``.
"""

from __future__ import annotations


class Table:
    """Names of the Delta tables the batch writes (one folder each under ``<output>/delta``)."""

    DATASET = "dataset"  # one row: which release was read, from where, with demographics or not
    RATINGS = "ratings"  # clean ratings
    USERS = "users"  # clean users with categorical indices
    ITEMS = "items"  # clean movie catalogue with genre ids
    IMPRESSIONS = "impressions"  # labelled, split impressions
    ONLINE_HOLDOUT = "online_holdout"
    SAMPLES = "samples"  # train/test impressions (user, item, timestamp, label, split); features assembled by readers
    USER_FEATURES = "user_features"  # online user features (Feast source)
    USER_FEATURE_HISTORY = "user_feature_history"  # the dense user features as of each second (PIT source)
    ITEM_FEATURES = "item_features"  # online item features (Feast source)
    ITEM_VOCABULARY = "item_vocabulary"  # per catalogue movie id its dense index 1..N, what models embed
    FEATURE_METADATA = "feature_metadata"  # one row: the metadata JSON of the run's features
    USER_TERMS = "user_terms"
    ITEM_TERMS = "item_terms"
    USER_FILTER = "user_filter"  # per user: every item seen offline, and the latest ones newest first
    ITEM_POPULARITY = "item_popularity"  # per item: offline positives and impressions
    ITEM_NEIGHBOURS = "item_neighbours"  # per item: top co-occurring items with their cosine
    ITEM_EASE = "item_ease"  # per item: its largest EASE weights towards other items
    ITEM_SUCCESSORS = "item_successors"  # per item: the items rated soon after it, weighted by distance
    USER_EASE = "user_ease"  # per user: their EASE list (item_ease summed over what they saw), best first
    # The same item models fitted without each user's last offline impressions, and those impressions: what
    # the choices are made on (spark_jobs/item_models.py).
    VALIDATION_PREFIX = "validation_"
    VALIDATION_HOLDOUT = "validation_holdout"
    VALIDATION_ITEM_NEIGHBOURS = VALIDATION_PREFIX + ITEM_NEIGHBOURS
    VALIDATION_ITEM_SUCCESSORS = VALIDATION_PREFIX + ITEM_SUCCESSORS
    VALIDATION_USER_EASE = VALIDATION_PREFIX + USER_EASE
    # The ratings posted to the service, appended from its event log by spark_jobs/events.py (a stream, exactly
    # once); not one of ALL: a run without posted ratings has none.
    EVENTS = "events"
    # Written by the trainer (python -m models.train), not the batch.
    USER_VECTORS = "user_vectors"
    ITEM_VECTORS = "item_vectors"

    # One row per movie or per user: sized by the catalogue and the user base, not the ratings (at ML-25M's size the
    # largest, user_features, is 162K rows). Spark computes them and the driver commits them (spark_jobs/lake.py).
    PER_ITEM_OR_USER: frozenset[str] = frozenset({
        USERS, ITEMS, USER_FEATURES, ITEM_FEATURES, ITEM_VOCABULARY, USER_TERMS, ITEM_TERMS, ITEM_POPULARITY,
    })

    # Partition columns: the exports link the files of one partition (samples' train and test rows).
    PARTITIONS: dict[str, tuple[str, ...]] = {SAMPLES: ("split",)}  # noqa: RUF012 (a constant mapping)

    # The batch's tables.
    ALL: tuple[str, ...] = (
        DATASET, RATINGS, USERS, ITEMS, IMPRESSIONS, ONLINE_HOLDOUT, SAMPLES,
        USER_FEATURES, USER_FEATURE_HISTORY, ITEM_FEATURES, ITEM_VOCABULARY, FEATURE_METADATA, USER_TERMS, ITEM_TERMS,
        USER_FILTER, ITEM_POPULARITY, ITEM_NEIGHBOURS, ITEM_EASE, ITEM_SUCCESSORS, USER_EASE, VALIDATION_HOLDOUT,
        VALIDATION_ITEM_NEIGHBOURS, VALIDATION_ITEM_SUCCESSORS, VALIDATION_USER_EASE,
    )


class Export:
    """Names of the Parquet datasets of a published run (``exports/current/``): each a folder of hard links to
    the data files of one Delta version of its table (``spark_jobs/export.py``)."""

    SAMPLES_TRAIN = "samples_train"
    SAMPLES_TEST = "samples_test"
    USER_FEATURES = Table.USER_FEATURES
    USER_FEATURE_HISTORY = Table.USER_FEATURE_HISTORY
    ITEM_FEATURES = Table.ITEM_FEATURES
    ITEM_VOCABULARY = Table.ITEM_VOCABULARY
    USER_TERMS = Table.USER_TERMS
    ITEM_TERMS = Table.ITEM_TERMS
    USER_FILTER = Table.USER_FILTER
    ONLINE_HOLDOUT = Table.ONLINE_HOLDOUT
    ITEMS = Table.ITEMS
    ITEM_POPULARITY = Table.ITEM_POPULARITY
    ITEM_NEIGHBOURS = Table.ITEM_NEIGHBOURS
    ITEM_EASE = Table.ITEM_EASE
    ITEM_SUCCESSORS = Table.ITEM_SUCCESSORS
    VALIDATION_HOLDOUT = Table.VALIDATION_HOLDOUT
    VALIDATION_ITEM_NEIGHBOURS = Table.VALIDATION_ITEM_NEIGHBOURS
    VALIDATION_ITEM_SUCCESSORS = Table.VALIDATION_ITEM_SUCCESSORS
    USER_EASE = Table.USER_EASE
    VALIDATION_USER_EASE = Table.VALIDATION_USER_EASE
    # Exported as they are in Delta.
    AS_IS: tuple[str, ...] = (USER_FEATURES, USER_FEATURE_HISTORY, ITEM_FEATURES, ITEM_VOCABULARY, USER_TERMS,
                              ITEM_TERMS, USER_FILTER, ONLINE_HOLDOUT, ITEMS, ITEM_POPULARITY, ITEM_NEIGHBOURS,
                              ITEM_EASE, ITEM_SUCCESSORS, USER_EASE, VALIDATION_HOLDOUT, VALIDATION_ITEM_NEIGHBOURS,
                              VALIDATION_ITEM_SUCCESSORS, VALIDATION_USER_EASE)

    METADATA_FILE = "feature_metadata.json"  # the run's feature metadata (spec version, order, mean/std)
    MANIFEST_FILE = "manifest.json"  # run id, spec version, the Delta version each export came from, counts


class ModelFiles:
    """Names inside a model version folder and of the models."""

    RECALL = "recall"
    RANKING = "ranking"
    NEXT_ITEM = "next_item"  # the sequence model: the chance of each candidate being a user's next item
    FUSION = "fusion"  # the final order's weights chosen on validation (metadata.json only)
    CURRENT = "current"  # the link to the version serving now
    WEIGHTS = "weights.pt"
    METADATA = "metadata.json"
    ONNX = "model.onnx"  # the ranking and the sequence model
    ITEM_VOCABULARY = f"{Table.ITEM_VOCABULARY}.parquet"  # the vocabulary the model's item tables are rows of
    USER_VECTORS = f"{Table.USER_VECTORS}.parquet"  # the recall model's, biases folded in
    ITEM_VECTORS = f"{Table.ITEM_VECTORS}.parquet"
