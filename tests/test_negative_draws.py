"""The trainer's uniform negatives: Spark's hash in NumPy, and the draws' rules (never a rated movie, no repeat
within an impression, one set per repeated impression, the same whatever the blocks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import functions as F

from contracts.feature_spec import SPEC
from models.feature_rows import FeatureAssembler
from models.item_vocabulary import ItemVocabulary
from models.negative_draws import RatedMovies, draw_negatives, draw_positions
from models.samples import Samples
from models.spark_hash import xxhash64


def test_xxhash64_is_sparks_for_int_and_long_columns(spark):
    rng = np.random.default_rng(3)
    ints = np.r_[rng.integers(-2**31, 2**31, 300), -2**31, 2**31 - 1, 0, -1]
    longs = np.r_[rng.integers(-2**63, 2**63 - 1, 300, dtype=np.int64), -2**63, 2**63 - 1, 0, -1]
    frame = spark.createDataFrame(pd.DataFrame({"a": ints, "b": longs}), "a int, b long")
    expressions = {"int": F.xxhash64("a"), "long": F.xxhash64("b"),
                   "int, long, literals": F.xxhash64("a", "b", F.lit(3), F.lit(17)), "long, int": F.xxhash64("b", "a")}
    rows = frame.select(*(e.alias(name) for name, e in expressions.items())).toPandas()
    ours = {"int": xxhash64([(ints, "int")]), "long": xxhash64([(longs, "long")]),
            "int, long, literals": xxhash64([(ints, "int"), (longs, "long"), (3, "int"), (17, "int")]),
            "long, int": xxhash64([(longs, "long"), (ints, "int")])}
    for name in expressions:
        np.testing.assert_array_equal(ours[name], rows[name].to_numpy(np.int64), err_msg=name)


def test_draw_positions_are_sparks_hash_modulo_the_catalogue_then_checked(spark):
    users, items, timestamps = np.array([1, 1, 2, 9]), np.array([5, 6, 5, 40]), np.array([100, 100, 7, 2**40])
    frame = spark.createDataFrame(pd.DataFrame({"userid": users, "itemid": items, "timestamp": timestamps}),
                                  "userid int, itemid int, timestamp long")
    catalogue = 13
    spark_draws = frame.select(*(
        F.pmod(F.xxhash64("userid", "itemid", "timestamp", F.lit(draw), F.lit(17)), F.lit(catalogue)).alias(str(draw))
        for draw in (1, 2, 3))).toPandas().to_numpy()
    nothing_rated = RatedMovies(np.empty(0, dtype=np.int64))
    drawn = draw_positions(users, items, timestamps, nothing_rated, catalogue, 3)
    expected = spark_draws.copy()
    for draw in (1, 2):  # a repeat of an earlier draw of the same impression is dropped
        expected[:, draw] = np.where((spark_draws[:, :draw] == spark_draws[:, draw:draw + 1]).any(axis=1), -1,
                                     spark_draws[:, draw])
    np.testing.assert_array_equal(drawn, expected)
    # The same draws with user 1's first draw rated: dropped for user 1 only.
    rated = RatedMovies(np.array([1 << 32 | int(spark_draws[0, 0])]))
    checked = draw_positions(users, items, timestamps, rated, catalogue, 3)
    hit = (users[:, None] == 1) & (spark_draws == spark_draws[0, 0])
    np.testing.assert_array_equal(checked, np.where(hit, -1, expected))


def train_rows(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray) -> Samples:
    features = np.zeros((len(users), len(SPEC.names)), dtype=np.float32)
    features[:, SPEC.index_of("userid")] = users
    features[:, SPEC.index_of("itemid")] = items
    return Samples(torch.from_numpy(features), torch.zeros(len(users)), np.asarray(timestamps, dtype=np.int64))


def test_negatives_are_unrated_distinct_and_drawn_once_per_impression():
    rng = np.random.default_rng(8)
    vocabulary = ItemVocabulary(np.arange(10, 250, 4))  # sparse ids: 60 movies
    users = rng.integers(1, 6, 400)
    items = rng.choice(vocabulary.itemids, 400)
    timestamps = rng.integers(0, 50, 400)
    users, items, timestamps = np.r_[users, users[:30]], np.r_[items, items[:30]], np.r_[timestamps, timestamps[:30]]
    train = train_rows(users, items, timestamps)  # the first 30 impressions twice
    later = {1: vocabulary.itemids[:40]}  # user 1 rated two thirds of the catalogue outside train
    rated = RatedMovies.of(np.r_[users, np.ones(40, dtype=np.int64)], np.r_[items, later[1]], vocabulary)
    assembler = FeatureAssembler.from_item_features(pd.DataFrame({"itemid": vocabulary.itemids, **{
        f.name: np.zeros(60, np.int32) for f in SPEC.online_item_features}}))
    negatives = draw_negatives(train, rated, vocabulary, 5, assembler)
    sources = negatives.source_rows
    drawn = pd.DataFrame({"userid": users[sources], "itemid": items[sources], "timestamp": timestamps[sources],
                          "negative": negatives.itemids})
    rated_pairs = set(zip(users.tolist(), items.tolist(), strict=True)) | {(1, int(i)) for i in later[1]}
    assert len(drawn) > 400 and not any(pair in rated_pairs for pair in zip(drawn.userid, drawn.negative, strict=True))
    assert set(drawn.negative) <= set(vocabulary.itemids.tolist())
    per_impression = drawn.groupby(["userid", "itemid", "timestamp"])["negative"]
    assert (per_impression.size() <= 5).all() and (per_impression.nunique() == per_impression.size()).all()
    # A repeated impression is drawn for once, from its first train row.
    assert not drawn.duplicated().any() and (sources < 400).all()
    # In one order (impression, then movie) and the same by blocks of one impression.
    again = draw_negatives(train, rated, vocabulary, 5, assembler, impressions_per_block=1)
    np.testing.assert_array_equal(again.source_rows, negatives.source_rows)
    np.testing.assert_array_equal(again.itemids, negatives.itemids)
    assert len(draw_negatives(train, rated, vocabulary, 0, assembler)) == 0


def test_a_movie_outside_the_vocabulary_is_not_rated_and_never_drawn():
    vocabulary = ItemVocabulary(np.array([2, 3, 5]))
    rated = RatedMovies.of(np.array([1, 1, 1]), np.array([2, 7, 2]), vocabulary)
    np.testing.assert_array_equal(rated.keys, [1 << 32 | 0])
    assert rated.contains(np.array([1, 1, 2]), np.array([0, 1, 0])).tolist() == [True, False, False]


@pytest.mark.parametrize("per_impression", [1, 3])
def test_a_catalogue_the_user_rated_whole_gives_no_negatives(per_impression):
    vocabulary = ItemVocabulary(np.array([4, 8, 15]))
    train = train_rows(np.array([1, 1]), np.array([4, 8]), np.array([10, 11]))
    rated = RatedMovies.of(np.ones(3, dtype=np.int64), vocabulary.itemids, vocabulary)
    assembler = FeatureAssembler.from_item_features(pd.DataFrame({"itemid": vocabulary.itemids, **{
        f.name: np.zeros(3, np.int32) for f in SPEC.online_item_features}}))
    assert len(draw_negatives(train, rated, vocabulary, per_impression, assembler)) == 0
