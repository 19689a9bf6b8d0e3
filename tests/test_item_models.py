"""The batch's item models (spark_jobs/item_models.py) and how the request path sums their lists."""

import itertools
import shutil
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy import sparse

from contracts.settings import BatchSettings
from contracts.tables import Export, Table
from models.ease import Ease
from models.export_readers import load_item_lists
from models.fusion_choice import FUSION_INPUTS, ScoredCandidates, choose_weights, mean_ndcg
from models.recall_sources import ItemLists, UserRecallData, rank_item_lists
from models.validation_replay import sampled_users, validation_users
from spark_jobs.cooccurrence import neighbour_lists
from spark_jobs.id_codes import id_codes
from spark_jobs.item_lists import (
    FITS,
    LIST_ENTRY,
    SERVED,
    VALIDATION,
    best_of_rows,
    lists_table,
)
from spark_jobs.item_models import (
    PAIRS_PER_BLOCK,
    RunningSum,
    best_of_score_rows,
    ease_weights,
    fit_ease,
    movie_blocks,
    successor_lists,
    symmetric_inverse,
    user_ease,
)
from spark_jobs.lake import read_arrow_table, read_table, write_arrow_table
from spark_jobs.split import mark_validation, validation_holdout
from spark_jobs.timelines import Timelines
from tests.item_list_frames import fit_of, fits_frame


def test_successors_weight_each_following_item_by_its_distance(spark, tmp_path):
    # user 1: 10, 20, 30 (20 and 30 in the same second: ordered by itemid), 30 held for validation; user 2: 20, 10
    rows = [(1, 10, 1, False), (1, 30, 2, True), (1, 20, 2, False), (2, 20, 5, False), (2, 10, 6, False)]
    marked = spark.createDataFrame(rows, "userid int, itemid int, timestamp long, validation boolean")

    def lists(fit: int, per_item: int) -> dict[int, list[tuple[int, float]]]:
        successors = successor_lists(Timelines.collect(marked), window=2, per_item=per_item)
        return {r.itemid: [(n.itemid, round(n.score, 5)) for n in r.neighbours]
                for r in fit_of(fits_frame(spark, successors), fit).collect()}

    # 10 -> 20 at distance 1 (weight 1), 30 at 2 (1/2): total 1.5, divided by 2.5
    # 20 -> 30 at 1 (user 1) and 10 at 1 (user 2): total 2, divided by 3; tie on score: the smaller id first
    assert lists(SERVED, 5) == {10: [(20, round(1 / 2.5, 5)), (30, round(0.5 / 2.5, 5))],
                                20: [(10, round(1 / 3, 5)), (30, round(1 / 3, 5))]}
    assert [n for n, _ in lists(SERVED, 1)[20]] == [10]
    # Without the validation impression 30: 10 -> 20 (1, divided by 2), 20 -> 10 (user 2, 1, divided by 2)
    assert lists(VALIDATION, 5) == {10: [(20, 0.5)], 20: [(10, 0.5)]}


def random_offline(spark, seed: int, users: int = 40, items: int = 30, per_user: int = 25):
    """Offline impressions with repeated movies and seconds, some users too short for validation."""
    rng = np.random.default_rng(seed)
    rows = [(user, int(item), int(rng.integers(1, 40)), float(rng.integers(1, 6)), int(rng.integers(0, 2)))
            for user in range(1, users + 1) for item in rng.integers(1, items + 1, rng.integers(1, per_user))]
    return spark.createDataFrame(rows, "userid int, itemid int, timestamp long, rating double, label int")


def test_the_validation_fit_of_one_pass_equals_the_served_fit_over_the_impressions_before_validation(spark,
                                                                                                      tmp_path):
    marked = mark_validation(random_offline(spark, seed=11), validation_size=3, min_history=4)
    before = marked.filter(~F.col("validation"))
    assert 0 < before.count() < marked.count()

    def fits(name: str, lists_of: Callable[[Timelines], dict[int, pa.Table]], rows: DataFrame) -> DataFrame:
        return fits_frame(spark, lists_of(Timelines.collect(rows)))

    def successors(timelines: Timelines) -> dict[int, pa.Table]:
        return successor_lists(timelines, window=3, per_item=6)

    def neighbours_of(timelines: Timelines) -> dict[int, pa.Table]:
        return neighbour_lists(timelines, history=8, per_item=5)

    assert_df_equality(fit_of(fits("s1", successors, marked), VALIDATION),
                       fit_of(fits("s2", successors, before), SERVED), ignore_row_order=True)
    neighbours = fits("n1", neighbours_of, marked)
    assert_df_equality(fit_of(neighbours, VALIDATION), fit_of(fits("n2", neighbours_of, before), SERVED),
                       ignore_row_order=True)
    # The served fit counts every offline impression: it differs from the validation one.
    assert fit_of(neighbours, SERVED).exceptAll(fit_of(neighbours, VALIDATION)).count() > 0


def test_validation_marks_each_users_last_impressions_after_enough_history(spark):
    rows = [(1, item, item) for item in range(1, 8)] + [(2, 1, 1), (2, 2, 2)]
    offline = spark.createDataFrame([(*r, 4.0, 1) for r in rows],
                                    "userid int, itemid int, timestamp long, rating double, label int")
    marked = mark_validation(offline, validation_size=2, min_history=3)
    held = sorted((r.userid, r.itemid) for r in marked.filter("validation").collect())
    assert held == [(1, 6), (1, 7)]  # user 2 has no 3 impressions before their last 2
    expected = spark.createDataFrame([(1, 6, 4.0, 1, 6), (1, 7, 4.0, 1, 7)],
                                     "userid int, itemid int, rating double, label int, timestamp long")
    assert_df_equality(validation_holdout(marked), expected, ignore_row_order=True, ignore_nullable=True)
    # The same marks on the driver, where the batch makes them.
    timelines, holdout = Timelines.with_validation(offline.toArrow(), validation_size=2, min_history=3)
    assert sorted(zip(timelines.users[timelines.validation].tolist(), timelines.items[timelines.validation].tolist(),
                      strict=True)) == held
    assert_df_equality(spark.createDataFrame(holdout), expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("seed", [13, 14])
def test_the_drivers_validation_marks_and_hold_out_are_splits(spark, seed):
    # A rating decided by (user, movie, second): a repeated impression is the same row twice, so which copy Spark's
    # window marks is no choice.
    offline = random_offline(spark, seed=seed) \
        .withColumn("rating", ((F.col("userid") + 7 * F.col("itemid") + F.col("timestamp")) % 5 + 1).cast("double")) \
        .withColumn("label", (F.col("rating") > 3).cast("int"))
    marked = mark_validation(offline, validation_size=3, min_history=4)
    timelines, holdout = Timelines.with_validation(offline.toArrow(), validation_size=3, min_history=4)
    expected = Timelines.collect(marked)
    for name in ("users", "items", "validation"):
        np.testing.assert_array_equal(getattr(timelines, name), getattr(expected, name), err_msg=name)
    assert 0 < timelines.validation.sum() < len(timelines.validation)
    assert_df_equality(spark.createDataFrame(holdout), validation_holdout(marked), ignore_row_order=True)


def test_ease_lists_are_the_reference_ease_weights(spark, tmp_path):
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 120, 1500), rng.integers(1, 60, 1500)  # with repeats: counted once
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    fit = fit_ease(users, items, lam=50.0, max_items=40, columns_per_block=16)  # blocks of 16, 16 and 8
    weights = ease_weights(fit, per_item=10)
    # Read back through Spark, as the batch writes them.
    lists = {r.itemid: r.neighbours for r in spark.createDataFrame(weights).collect()}
    reference = Ease.fit([pairs[pairs[:, 0] == u, 1] for u in range(120)], lam=50.0, max_items=40)
    assert sorted(lists) == reference.itemids.tolist()
    for position, itemid in enumerate(reference.itemids):
        row = reference.weights[position]
        largest = np.argsort(-np.abs(row), kind="stable")[:10]  # by size, negative weights too
        best = largest[np.lexsort((largest, -row[largest]))]
        assert [n.itemid for n in lists[itemid]] == reference.itemids[best].tolist()
        np.testing.assert_allclose([n.score for n in lists[itemid]], row[best], rtol=1e-5)
    # Each user's list: the reference's scores of their history, seen movies excluded, best 7 (in blocks of 16).
    handed = spark.createDataFrame(user_ease(fit, per_user=7, users_per_block=16))
    per_user = {r.userid: r.neighbours for r in handed.collect()}
    for userid in (0, 37, 119):
        seen = pairs[pairs[:, 0] == userid, 1]
        scores = reference.scores(seen, item_count=60)
        scores[seen] = -np.inf
        finite = np.flatnonzero(np.isfinite(scores))
        best = finite[np.lexsort((finite, -scores[finite]))][:7]
        assert [n.itemid for n in per_user[userid]] == best.tolist()
        np.testing.assert_allclose([n.score for n in per_user[userid]], scores[best], rtol=1e-5)
    # Some users' lists only (one id the fit does not know): the same rows as theirs in every user's table.
    some = user_ease(fit, per_user=7, users_per_block=16, userids=np.array([119, 37, 500, 0]))
    assert some.to_pylist() == [row for row in user_ease(fit, per_user=7).to_pylist() if row["userid"] in (0, 37, 119)]


@pytest.mark.slow
def test_the_validation_ease_lists_are_those_of_the_users_the_replay_samples(spark, tiny_batch, tmp_path, monkeypatch):
    """Beyond VALIDATION_USERS users with a liked validation impression, the batch fits the validation user lists
    of exactly the sample the trainers replay."""
    import contracts.validation_sample
    from spark_jobs import item_models

    monkeypatch.setattr(contracts.validation_sample, "VALIDATION_USERS", 5)
    settings = tiny_batch.model_copy(update={"output_dir": tmp_path / "output"})
    shutil.copytree(tiny_batch.table_path(Table.IMPRESSIONS), settings.table_path(Table.IMPRESSIONS))
    item_models.run(spark, settings, "sampled")
    held = read_arrow_table(settings, Table.VALIDATION_HOLDOUT).to_pandas()
    liked = {int(u): set(group["itemid"]) for u, group in held[held["label"] == 1].groupby("userid")}
    assert len(liked) > 5
    replayed = sampled_users(liked)
    assert len(replayed) == 5 and set(replayed) < set(liked)
    listed = read_arrow_table(settings, Table.VALIDATION_USER_EASE)["userid"].to_pylist()
    assert sorted(listed) == sorted(replayed)
    assert set(liked) <= set(read_arrow_table(settings, Table.USER_EASE)["userid"].to_pylist())  # served: everyone's


def test_item_lists_read_back_in_any_row_order_and_sum_like_the_reference(tmp_path):
    lists = {5: ([7, 3], [0.5, 0.25]), 2: ([5], [1.0]), 7: ([3, 2, 5], [0.75, 0.5, 0.125])}
    rows = [{"itemid": i, "neighbours": [{"itemid": a, "score": b} for a, b in zip(*lists[i], strict=True)]}
            for i in (7, 2, 5)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "lists.parquet")
    loaded = load_item_lists(tmp_path / "lists.parquet", item_count=9)
    expected = ItemLists.from_lists(9, lists)
    pq.write_table(pa.Table.from_pylist(sorted(rows, key=lambda row: row["itemid"])), tmp_path / "ordered.parquet")
    for read in (loaded, load_item_lists(tmp_path / "ordered.parquet", item_count=9)):  # as the batch writes them
        for field in ("offsets", "itemids", "scores"):
            np.testing.assert_array_equal(getattr(read, field), getattr(expected, field))
    ids, scores = loaded.of(np.array([7, 5, 8, 4]))  # 8 and 4 have no list
    assert ids.tolist() == [3, 2, 5, 7, 3]
    ranked = rank_item_lists(ids, scores, seen=np.array([7, 5]), n=5)
    assert ranked.itemids.tolist() == [3, 2]  # 3: 0.75 + 0.25; 2: 0.5; the seen 5 and 7 dropped
    assert ranked.scores.tolist() == pytest.approx([1.0, 0.5])


def test_fusion_choice_weights_the_input_that_finds_the_targets_and_drops_the_noise():
    rng = np.random.default_rng(5)
    scored = []
    for _ in range(60):
        itemids = rng.permutation(np.arange(1, 81))
        relevant = frozenset(itemids[:5].tolist())
        informative = np.where(np.isin(itemids, list(relevant)), 1.0, 0.0) * rng.uniform(0.6, 1.0, 80) \
            + rng.uniform(0.0, 0.5, 80)
        noise = rng.uniform(0.0, 1.0, (len(FUSION_INPUTS) - 1, 80))
        inputs = np.vstack([noise[:1], informative, noise[1:]])  # the second input carries the signal
        scored.append(ScoredCandidates(itemids, inputs, relevant))
    # Start from the noise alone: the ascent must find the informative input and weight it above the noise.
    start = dict.fromkeys(FUSION_INPUTS, 1.0) | {FUSION_INPUTS[1]: 0.0}
    weights, chosen = choose_weights(scored, start)
    assert all(weights[FUSION_INPUTS[1]] > weights[name] for name in FUSION_INPUTS if name != FUSION_INPUTS[1])
    assert chosen > mean_ndcg(scored, np.array([start[name] for name in FUSION_INPUTS])) + 0.2


def test_validation_users_are_seen_as_before_their_validation_impressions(tmp_path):
    user = UserRecallData(3, seen=np.array([1, 2, 5, 8, 9]), recent=np.array([9, 8, 5, 2]), terms=[], vector=None)
    pq.write_table(pa.table({"userid": [3, 3, 4], "itemid": [9, 8, 1]}), tmp_path / Export.VALIDATION_HOLDOUT)
    view = validation_users({3: user}, tmp_path)
    assert list(view) == [3]  # user 4 has no recall data
    assert view[3].seen.tolist() == [1, 2, 5] and view[3].recent.tolist() == [5, 2]


def test_quota_choice_makes_room_for_the_source_that_finds_the_targets_and_stops_asking_the_useless_one():
    from dataclasses import replace

    from models.fusion_choice import UserPool, choose_quotas, clearly_better, score_pools
    from models.recall_sources import Ranked, RecallConfig

    def ranked(itemids: list[int]) -> Ranked:
        return Ranked(np.array(itemids, dtype=np.int64), np.linspace(1.0, 0.5, len(itemids)))

    pools = []
    for user in range(40):
        ease = [100 + user * 20 + i for i in range(12)]  # the liked item is its 7th
        popular = list(range(1, 13))
        pools.append(UserPool(user, {"ease": ranked(ease), "popularity": ranked(popular), "term": Ranked.empty()},
                              np.unique(ease + popular), {}, frozenset({ease[6]})))
    # ease's 1 + popularity's 5, then the fill alternates: 10 candidates without ease's 7th
    config = RecallConfig(recall_size=10, quotas={"ease": 0.1, "popularity": 0.5, "term": 0.05},
                          fusion={"ease": 1.0})
    before = score_pools(pools, config)
    assert not any(next(iter(pool.relevant)) in s.itemids for pool, s in zip(pools, before, strict=True))
    quotas, ndcg = choose_quotas(pools, config)
    assert quotas["popularity"] == 0.0 and ndcg > 0.3  # the candidates are ease's 10: its 7th is one
    assert quotas["term"] == 0.0  # an empty source scores the same without a share: not asked any more
    chosen = replace(config, quotas=quotas)
    assert not chosen.asks("popularity") and not chosen.asks("term") and chosen.asks("ease")
    # noise is not a gain: +-0.01 around zero over 40 users is within two standard errors
    noise = np.resize([0.01, -0.01], 40)
    assert not clearly_better(0.5 + noise, np.full(40, 0.5)) and clearly_better(np.full(40, 0.52), np.full(40, 0.5))


@pytest.mark.parametrize("pairs_per_block", [PAIRS_PER_BLOCK, 20])  # one block of movies; many
def test_successor_lists_equal_walking_every_timeline_one_by_one(pairs_per_block):
    rng = np.random.default_rng(8)
    # Few movies, repeats and shared seconds: ties at the list's cut, a movie following itself.
    rows = []
    for user in range(1, 30):
        timeline = sorted((int(rng.integers(1, 6)), int(rng.integers(1, 9))) for _ in range(rng.integers(1, 12)))
        held = int(rng.integers(0, 3))  # the validation impressions end the timeline
        rows += [(user, item, second, k >= len(timeline) - held) for k, (second, item) in enumerate(timeline)]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    users, items, timestamps, validation = (np.array(column) for column in zip(*rows, strict=True))
    order = np.lexsort((validation, items, timestamps, users))
    timelines = Timelines(users[order], items[order], validation[order])
    window, per_item = 3, 4
    got = {fit: {} for fit in FITS}
    assert len(movie_blocks(np.bincount(items) * window, pairs_per_block)) > (1 if pairs_per_block == 20 else 0)
    for fit, table in successor_lists(timelines, window, per_item, pairs_per_block).items():
        got[fit] = {row["itemid"]: [(entry["itemid"], entry["score"]) for entry in row["neighbours"]]
                    for row in table.to_pylist()}

    unit = 6  # lcm(1, 2, 3)
    for fit in FITS:
        weights: dict[int, dict[int, int]] = {}
        for user in set(users.tolist()):
            timeline = sorted((t, i, v) for u, i, t, v in rows if u == user)
            for k, (_, item, _) in enumerate(timeline):
                for distance, (_, successor, held) in enumerate(timeline[k + 1:k + 1 + window], 1):
                    if fit == SERVED or not held:
                        weights.setdefault(item, {}).setdefault(successor, 0)
                        weights[item][successor] += unit // distance
        expected = {item: sorted(((successor, weight / (sum(following.values()) + unit))
                                  for successor, weight in following.items()), key=lambda e: (-e[1], e[0]))[:per_item]
                    for item, following in weights.items()}
        # Ordered on the exact scores, stored as float32 (the tables' type).
        assert got[fit] == {item: [(successor, float(np.float32(score))) for successor, score in scored]
                            for item, scored in expected.items()}
    assert any(a[1] == b[1] for scored in got[SERVED].values() for a, b in itertools.pairwise(scored))


def test_symmetric_inverse_is_the_inverse_mirrored_across_several_blocks_of_rows():
    rng = np.random.default_rng(4)
    factors = rng.standard_normal((1500, 1600))  # 1,500 rows: the mirroring runs over two blocks of rows
    gram = factors @ factors.T + 30.0 * np.eye(1500)
    expected = np.linalg.inv(gram)
    inverse = symmetric_inverse(gram)
    assert np.shares_memory(inverse, gram)  # no second matrix
    np.testing.assert_allclose(inverse, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(inverse, inverse.T)
    assert symmetric_inverse(np.empty((0, 0))).shape == (0, 0)
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        symmetric_inverse(-np.eye(3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("scale", [1.0, 1e-9, 1e6])
def test_best_of_rows_keeps_each_rows_best_by_score_then_smaller_column(scale, dtype):
    rng = np.random.default_rng(8)
    start, stop, columns, per_row = 40, 140, 300, 7
    cells = rng.choice((stop - start) * columns, size=9_000, replace=False)
    owner, other = start + cells // columns, cells % columns
    # Few distinct values, so ties at each row's cut are common; some negative; some rows shorter than a list.
    score = (rng.integers(-3, 12, size=len(cells)) * scale + scale / 3).astype(dtype)
    short = owner >= stop - 10
    owner, other, score = owner[~short | (other < 4)], other[~short | (other < 4)], score[~short | (other < 4)]
    expected = sorted(((o, -s, c) for o, c, s in zip(owner.tolist(), other.tolist(), score.tolist(), strict=True)))
    by_row: dict[int, list[tuple[int, float]]] = {}
    for o, negative, c in expected:
        if len(by_row.setdefault(o, [])) < per_row:
            by_row[o].append((c, -negative))
    shuffled = rng.permutation(len(owner))
    got_owner, got_other, got_score = best_of_rows(owner[shuffled], other[shuffled], score[shuffled], start, stop,
                                                   per_row)
    got: dict[int, list[tuple[int, float]]] = {}
    for o, c, s in zip(got_owner.tolist(), got_other.tolist(), got_score.tolist(), strict=True):
        got.setdefault(o, []).append((c, s))
    assert got == by_row
    assert list(got_owner) == sorted(got_owner)


@pytest.mark.parametrize(("columns", "keep"), [(40, 1), (40, 5), (40, 40), (200, 1), (200, 12), (200, 13),
                                                (200, 14), (203, 30)])
def test_best_of_score_rows_keeps_each_rows_best_by_score_then_smaller_column_and_never_minus_infinity(columns, keep):
    # 200 columns are 13 groups of the cut: lists up to 13 long are cut from the groups' maxima, longer ones not.
    rng = np.random.default_rng(keep)
    # Few distinct values, so ties at each row's cut are common; -inf cells (movies seen) in every row, and rows
    # with fewer finite cells than a list holds; negative zeros tie with zeros.
    scores = rng.integers(-4, 6, size=(60, columns)).astype(np.float32) / 3
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[:5, 3:] = -np.inf
    scores[5:8][scores[5:8] == 0] = -0.0
    expected: list[tuple[int, int, float]] = []
    for row in range(len(scores)):
        ranked = sorted((-score, column) for column, score in enumerate(scores[row].tolist()) if score > -np.inf)
        expected += [(row, column, -negative) for negative, column in ranked[:keep]]
    row, column, score = best_of_score_rows(scores, keep)
    assert list(zip(row.tolist(), column.tolist(), score.tolist(), strict=True)) == expected


def test_ease_scores_are_each_users_history_times_the_weights():
    rng = np.random.default_rng(3)
    users = rng.integers(1, 80, size=2_000)
    items = rng.integers(1, 300, size=2_000)
    fit = fit_ease(users, items, lam=10.0, max_items=250, columns_per_block=64)
    weights = np.hstack(fit.weight_blocks)
    np.testing.assert_allclose(fit.scores(fit.history), fit.history @ weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fit.scores(fit.history[10:20]), fit.scores(fit.history)[10:20])


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 10])
def test_running_sum_is_the_sum_of_every_matrix_added(count):
    rng = np.random.default_rng(count)
    matrices = [sparse.random(30, 40, density=0.1, format="csr", random_state=rng, dtype=np.float64)
                for _ in range(count)]
    matrices = [sparse.csr_matrix((np.round(m.data * 100).astype(np.int64), m.indices, m.indptr), shape=m.shape)
                for m in matrices]
    running = RunningSum((30, 40))
    for matrix in matrices:
        running.add(matrix)
    assert len(running.partials) <= max(count, 1).bit_length()  # a binary counter's partial sums, not every addend
    expected = sum((m.toarray() for m in matrices), np.zeros((30, 40), dtype=np.int64))
    np.testing.assert_array_equal(running.total().toarray(), expected)


def test_lists_are_built_from_blocks_in_list_order_and_refused_out_of_order():
    blocks = [(np.array([3, 3, 5]), np.array([9, 7, 3]), np.array([0.5, 0.25, 1.0])),
              (np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([])),
              (np.array([8]), np.array([3]), np.array([0.125]))]
    table = lists_table("itemid", blocks)
    assert table.schema.field("neighbours").type == pa.list_(LIST_ENTRY)
    assert table.to_pylist() == [
        {"itemid": 3, "neighbours": [{"itemid": 9, "score": 0.5}, {"itemid": 7, "score": 0.25}]},
        {"itemid": 5, "neighbours": [{"itemid": 3, "score": 1.0}]},
        {"itemid": 8, "neighbours": [{"itemid": 3, "score": 0.125}]}]
    assert lists_table("userid", []).num_rows == 0
    with pytest.raises(ValueError, match="itemid lists out of order"):
        lists_table("itemid", blocks[::-1])


# Ids within the table, one beyond it (np.unique then), none.
@pytest.mark.parametrize("ids", [np.array([7, 3, 7, 0, 12, 3]), np.array([5, (1 << 26) + 9, 5]),
                                 np.array([], dtype=int)])
def test_id_codes_are_numpys_unique_with_its_inverse(ids):
    distinct, codes = id_codes(ids)
    expected_distinct, expected_codes = np.unique(ids, return_inverse=True)
    np.testing.assert_array_equal(distinct, expected_distinct)
    np.testing.assert_array_equal(codes, expected_codes)


def test_a_driver_table_is_committed_as_the_next_delta_version_spark_reads_with_the_run_id(spark, tmp_path):
    settings = BatchSettings(output_dir=tmp_path)
    table = lists_table("itemid", [(np.array([3, 3, 5]), np.array([7, 9, 3]), np.array([0.5, 0.25, 1.0]))])
    # A version written by Spark first, as an older batch did: the driver's commit replaces it, same schema.
    spark.createDataFrame(lists_table("itemid", [(np.array([1]), np.array([2]), np.array([0.1]))])).write \
        .format("delta").save(str(settings.table_path(Table.ITEM_EASE)))
    spark_schema = read_table(spark, settings, Table.ITEM_EASE).schema
    written = write_arrow_table(table, settings, Table.ITEM_EASE, "run-1")
    assert (written.version, written.rows) == (1, 2)
    frame = read_table(spark, settings, Table.ITEM_EASE)
    assert frame.schema == spark_schema
    assert [(r.itemid, [(n.itemid, n.score) for n in r.neighbours]) for r in frame.orderBy("itemid").collect()] \
        == [(3, [(7, 0.5), (9, 0.25)]), (5, [(3, 1.0)])]
    last = DeltaTable.forPath(spark, str(settings.table_path(Table.ITEM_EASE))).history(1).collect()[0]
    assert last["userMetadata"] == "run-1"


def test_movie_blocks_cover_every_movie_once_in_order():
    pairs = np.array([5, 0, 30, 1, 1, 1, 8, 0, 2])
    blocks = movie_blocks(pairs, pairs_per_block=10)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(pairs)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    assert (2, 3) in blocks  # the 30 pairs of one movie stay together
    assert movie_blocks(np.zeros(0, dtype=np.int64), 10) == []
    assert movie_blocks(pairs, pairs_per_block=1000) == [(0, len(pairs))]


def test_the_driver_reads_the_latest_versions_rows_wanted_from_every_file_partitioned_or_not(spark, tmp_path):
    settings = BatchSettings(output_dir=tmp_path)
    rows = [(user, item, "train" if item % 3 else "test", float(item % 5)) for user in range(1, 8)
            for item in range(1, 12)]
    frame = spark.createDataFrame(rows, "userid int, itemid int, split string, rating double")
    path = str(settings.table_path(Table.IMPRESSIONS))
    frame.limit(4).write.format("delta").save(path)  # an older version, replaced
    frame.repartition(3).write.format("delta").mode("overwrite").save(path)
    assert DeltaTable.forPath(spark, path).detail().collect()[0]["numFiles"] > 1
    frame.write.format("delta").partitionBy("split").save(str(settings.table_path(Table.SAMPLES)))
    train = sorted((user, item) for user, item, split, _ in rows if split == "train")
    for name in (Table.IMPRESSIONS, Table.SAMPLES):
        table = read_arrow_table(settings, name, ("itemid", "userid"), "split", ("train",))
        assert table.column_names == ["itemid", "userid"]
        assert table.schema.field("userid").type == pa.int32()
        assert sorted(zip(table["userid"].to_pylist(), table["itemid"].to_pylist(), strict=True)) == train
    empty = read_arrow_table(settings, Table.IMPRESSIONS, ("rating",), "split", ("validation",))
    assert empty.num_rows == 0 and empty.schema.field("rating").type == pa.float64()


@pytest.mark.parametrize("max_items", [300, 200])
def test_the_validation_gram_from_the_served_one_is_its_own(max_items):
    """The part's Gram matrix from the whole's equals the one computed from its own history, cell for cell: with
    repeated pairs, a user whose every pair is held back, and (at a cap of 200 of ~250 movies) the part covering
    movies the whole does not."""
    from spark_jobs.item_models import EaseHistory, gram_matrix, gram_of_part

    rng = np.random.default_rng(max_items)
    users = np.r_[rng.integers(1, 90, 6_000), 95, 95]
    items = np.r_[(rng.zipf(1.3, 6_000) % 250) + 1, 7, 8]
    held = np.r_[rng.random(6_000) < 0.15, True, True]  # user 95 rated two movies, both held back
    held[:50] = False
    users, items, held = np.r_[users, users[:50]], np.r_[items, items[:50]], np.r_[held, np.ones(50, bool)]
    whole = EaseHistory.of(users, items, max_items)
    part = EaseHistory.of(users[~held], items[~held], max_items)
    derived = gram_of_part(whole, gram_matrix(whole.matrix), part)
    assert derived.dtype == np.float32
    np.testing.assert_array_equal(derived, gram_matrix(part.matrix))
    assert np.isin(part.itemids, whole.itemids).all() == (max_items == 300)


@pytest.mark.parametrize("id_span", [40, 200_000])  # dense ids (a table by id) and ML-25M's sparse ones
def test_item_list_sums_match_a_sum_per_id_in_list_order(id_span):
    rng = np.random.default_rng(id_span)
    for _ in range(100):
        ids = rng.integers(-1, id_span, int(rng.integers(0, 400)))
        ids[rng.random(len(ids)) < 0.3] = ids[0] if len(ids) else 0  # repeats
        scores = rng.choice([0.25, 0.5, 1.0], len(ids)) * rng.uniform(0.1, 1.0, len(ids))
        seen = rng.choice(ids, min(len(ids), 5)) if len(ids) else np.empty(0, dtype=np.int64)
        sums: dict[int, float] = {}
        for itemid, score in zip(ids.tolist(), scores.tolist(), strict=True):
            if itemid > 0 and itemid not in set(seen.tolist()):
                sums[itemid] = sums.get(itemid, 0.0) + score
        n = int(rng.integers(1, 60))
        expected = sorted(sums, key=lambda itemid: (-sums[itemid], itemid))[:n]
        ranked = rank_item_lists(ids, scores, seen, n)
        assert ranked.itemids.tolist() == expected
        assert ranked.scores.tolist() == [sums[itemid] for itemid in expected]
