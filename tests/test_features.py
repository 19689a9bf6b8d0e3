import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.features import (
    COUNTERS,
    add_genre_flags,
    add_pit_genre_counters,
    add_timeline_counters,
    counter_history,
    fit_standardiser,
    impressions_span,
    item_vocabulary,
    online_genre_counters,
    standardise,
    with_demographics,
    write_user_feature_history,
)
from spark_jobs.lake import read_arrow_table

FLAG_SCHEMA = ", ".join(f"item_g{k} int" for k in range(1, 19))


def flagged_impressions(spark, rows):
    """rows: (userid, itemid, timestamp, label, genres) -> impressions with genre flag columns."""
    data = [(u, i, t, lab, *[int(k in genres) for k in range(1, 19)]) for u, i, t, lab, genres in rows]
    return spark.createDataFrame(data, f"userid int, itemid int, timestamp long, label int, {FLAG_SCHEMA}")


def counters_of(df, *names):
    return {r.itemid: tuple(r[n] for n in names) for r in df.collect()}


def test_impressions_span_counts_the_dataset_rows_apart_from_the_posted_ones(spark):
    impressions = spark.createDataFrame(
        [(1, 10, 500, "train"), (1, 11, 600, "test"), (2, 10, 400, "train"), (2, 12, 900, "holdout"),
         (7, 13, 100, "event")],  # a posted rating: older and from a larger user id, yet not the dataset's
        "userid int, itemid int, timestamp long, split string")
    span = impressions_span(impressions).asDict()
    assert span == {"first": 400, "max_user": 2, "rows": 4, "posted": 1, "samples_train": 2, "samples_test": 1}


def test_genre_flags(spark):
    items = spark.createDataFrame([(1, [1, 18]), (2, [])], "itemid int, genre_ids array<int>")
    flags = {r.itemid: [r[f"item_g{k}"] for k in range(1, 19)] for r in items.transform(add_genre_flags).collect()}
    assert flags[1] == [1] + [0] * 16 + [1]
    assert flags[2] == [0] * 18


def test_item_vocabulary_numbers_sparse_ids_densely_in_id_order(spark):
    items = spark.createDataFrame([(209_171, [1]), (5, []), (900, [2]), (6, [])], "itemid int, genre_ids array<int>")
    expected = spark.createDataFrame([(5, 1), (6, 2), (900, 3), (209_171, 4)], "itemid int, item_index int")
    assert_df_equality(item_vocabulary(items), expected, ignore_row_order=True, ignore_nullable=True)


def test_pit_window_first_zero_exactly_ten_back_eleventh_dropped(spark):
    # 12 impressions of genre 1 (items 1..12, one per second), every even item positive;
    # item 1 is also genre 2 so it shows when it leaves the window.
    rows = [(1, i, 100 + i, int(i % 2 == 0), {1, 2} if i == 1 else {1}) for i in range(1, 13)]
    result = add_pit_genre_counters(flagged_impressions(spark, rows))
    got = counters_of(result, "user_g1_imp", "user_g1_clk", "user_g2_imp")
    assert got[1] == (0, 0, 0)  # no past
    assert got[2] == (1, 0, 1)
    assert got[11] == (10, 5, 1)  # items 1..10: exactly ten back, item 1 still in
    assert got[12] == (10, 5, 0)  # items 2..11: the 11th most recent (item 1) dropped


def test_pit_window_excludes_same_second(spark):
    rows = [
        (1, 1, 100, 1, {3}),
        (1, 2, 200, 1, {3}),
        (1, 3, 200, 0, {3}),  # same second as item 2: neither sees the other
        (1, 4, 300, 0, {3}),
        (2, 5, 50, 1, {3}),  # another user's past never counts
    ]
    result = add_pit_genre_counters(flagged_impressions(spark, rows))
    got = counters_of(result, "user_g3_imp", "user_g3_clk")
    assert got == {1: (0, 0), 2: (1, 1), 3: (1, 1), 4: (3, 2), 5: (0, 0)}


def test_counters_stay_exact_when_the_running_sums_carry_from_lane_to_lane(spark):
    """A window's counters are a difference of running sums whose 4-bit lanes overflow into each other after 15
    impressions of a genre: over 400 impressions of random genres and labels each counter still equals a count of
    the 10 impressions before (and, online, the last 10), counted here one by one."""
    rng = np.random.default_rng(11)
    genres = [set(rng.choice(np.arange(1, 19), rng.integers(1, 6), replace=False).tolist()) for _ in range(400)]
    labels = rng.integers(0, 2, 400).tolist()
    rows = [(1, i, 1000 + i, labels[i], genres[i]) for i in range(400)] + [(2, 7, 1000, 1, {4})]
    impressions = flagged_impressions(spark, rows)

    def counts(window: range) -> dict[str, int]:
        return {name: sum(k in genres[j] and (kind == "imp" or labels[j] == 1) for j in window)
                for k in range(1, 19) for kind, name in (("imp", f"user_g{k}_imp"), ("clk", f"user_g{k}_clk"))}

    for row in add_pit_genre_counters(impressions).filter("userid = 1").collect():
        assert {c: row[c] for c in COUNTERS} == counts(range(max(row.itemid - 10, 0), row.itemid)), row.itemid
    online = {r.userid: r for r in online_genre_counters(impressions).collect()}
    assert {c: online[1][c] for c in COUNTERS} == counts(range(390, 400))
    assert online[2].user_g4_imp == online[2].user_g4_clk == 1


def test_pit_counters_are_36_int_columns(spark):
    result = add_pit_genre_counters(flagged_impressions(spark, [(1, 1, 1, 1, {1})]))
    assert [c for c in result.columns if c.startswith("user_g")] == COUNTERS
    assert len(COUNTERS) == 36
    assert all(dict(result.dtypes)[c] == "int" for c in COUNTERS)


def test_online_counters_cover_the_last_ten_offline(spark):
    rows = [(1, i, 100 + i, 1, {5} if i == 1 else {6}) for i in range(1, 12)]
    online = online_genre_counters(flagged_impressions(spark, rows)).collect()[0]
    assert online.user_g5_imp == 0  # item 1 is the 11th most recent
    assert online.user_g6_imp == 10 and online.user_g6_clk == 10
    assert online.last_offline_timestamp == 111


def test_standardisation_uses_train_statistics_only(spark):
    df = spark.createDataFrame([("train", 1, 5), ("train", 3, 5), ("test", 100, -7)], "split string, a int, b int")
    stats = fit_standardiser(df.filter(F.col("split") == "train"), ["a", "b"])
    assert stats["a"] == (2.0, 2 ** 0.5)
    assert stats["b"] == (5.0, 1.0)  # std 0 -> 1
    result = df.transform(standardise(stats))
    expected = spark.createDataFrame(
        [("train", -(2 ** -0.5), 0.0), ("train", 2 ** -0.5, 0.0), ("test", 98 / 2 ** 0.5, -12.0)],
        "split string, a float, b float",
    )
    assert_df_equality(result, expected, ignore_nullable=True, allow_nan_equality=True)


def test_standardiser_statistics_match_numpy_on_large_counts(spark):
    # Values whose squares' sum exceeds float64's exact integers: the variance must still come out right.
    values = np.random.default_rng(3).integers(0, 3_000_000, size=2_000)
    df = spark.createDataFrame([(int(v),) for v in values], "a long")
    mean, std = fit_standardiser(df, ["a"])["a"]
    assert mean == pytest.approx(values.mean(), rel=1e-15)
    assert std == pytest.approx(values.std(ddof=1), rel=1e-12)


def test_standardiser_with_one_train_row_has_std_one(spark):
    df = spark.createDataFrame([(4,)], "a int")
    assert fit_standardiser(df, ["a"]) == {"a": (4.0, 1.0)}


def test_standardiser_of_no_rows_is_identity(spark):
    df = spark.createDataFrame([], "a int")
    assert fit_standardiser(df, ["a"]) == {"a": (0.0, 1.0)}


def test_unknown_user_gets_zero_demographics(spark):
    users = spark.createDataFrame([(1, 2, 3, 4)], "userid int, gender int, age int, occupation int")
    rows = spark.createDataFrame([(1,), (9,)], "userid int").transform(with_demographics(users))
    expected = spark.createDataFrame([(1, 2, 3, 4), (9, 0, 0, 0)], "userid int, gender int, age int, occupation int")
    assert_df_equality(rows, expected, ignore_row_order=True, ignore_nullable=True)


def test_counter_history_row_of_the_previous_second_is_the_pit_value(spark):
    # items 1..13 over 7 seconds (several per second), mixed genres and labels
    rows = [(1, i, 100 + i // 2, i % 2, {1 + i % 3}) for i in range(1, 14)] + [(2, 50, 100, 1, {2})]
    impressions = flagged_impressions(spark, rows)
    from spark_jobs.features import user_counter_history

    history = {(r.userid, r.timestamp): tuple(r[c] for c in COUNTERS)
               for r in user_counter_history(impressions).collect()}
    assert sorted(history) == sorted({(u, t) for u, _, t, _, _ in rows})  # one row per (user, second)
    pit = add_pit_genre_counters(impressions).collect()
    for row in pit:
        earlier = [t for (u, t) in history if u == row.userid and t < row.timestamp]
        expected = history[(row.userid, max(earlier))] if earlier else (0,) * len(COUNTERS)
        assert tuple(row[c] for c in COUNTERS) == expected, row.itemid


def test_the_history_written_from_the_driver_holds_sparks_standardised_counters(spark, tmp_path):
    """Spark writes the history packed and the driver unpacks and standardises it: every cell equals Spark's own
    projection of the unpacked counters (as float, less the mean, over the std, rounded to float), the timestamps
    are the seconds', and the scratch files are gone."""
    rng = np.random.default_rng(3)
    rows = [(u, i, 1_000 + int(rng.integers(0, 40)), int(rng.integers(0, 2)), set(rng.integers(1, 19, 3).tolist()))
            for u in (1, 2, 3) for i in range(60)]
    timeline = add_timeline_counters(flagged_impressions(spark, rows)).cache()
    stats = {name: (float(n) / 7, 1.5 + n / 3) for n, name in enumerate(COUNTERS)}
    settings = BatchSettings(output_dir=tmp_path / "out", shuffle_partitions=2)
    written = write_user_feature_history(timeline, stats, settings, "run-1")
    history = counter_history(timeline)
    expected = history.select("userid", "timestamp", *(F.col(c).cast("float").alias(c) for c in COUNTERS)).transform(
        standardise(stats)).toPandas().sort_values(["userid", "timestamp"], ignore_index=True)
    got = read_arrow_table(settings, Table.USER_FEATURE_HISTORY).to_pandas().sort_values(
        ["userid", "event_timestamp"], ignore_index=True)
    assert written.rows == len(got) == len(expected) == len({(u, t) for u, _, t, _, _ in rows})
    assert got["userid"].tolist() == expected["userid"].tolist()
    seconds = (got["event_timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    assert seconds.tolist() == expected["timestamp"].tolist()
    assert got["created_timestamp"].nunique() == 1
    for name in COUNTERS:
        np.testing.assert_array_equal(got[name].to_numpy(), expected[name].to_numpy(np.float32), err_msg=name)
    assert not any((settings.output_dir / "scratch").iterdir())
