"""The ranker trained and selected for ordering candidates: its selection slice is the batch's validation
hold-out, its epoch is picked on its order of recalled candidates, and it learns from popularity-drawn
negatives as well as uniform ones."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from contracts.feature_spec import SPEC
from contracts.tables import Export
from models.candidate_selection import CandidateSelection
from models.data_splits import DataSplits, Selection, ValidationHoldout
from models.feature_rows import FeatureAssembler
from models.negative_rows import ImpressionIndex, NegativeRows
from models.popular_negatives import popular_negatives
from models.training_loop import TrainingConfig, train
from models.training_rows import all_labels
from tests.test_models import random_samples

USER, ITEM = SPEC.index_of("userid"), SPEC.index_of("itemid")


def assembler(items: int = 40) -> FeatureAssembler:
    flags = {f.name: (np.arange(1, items) % (k + 2) == 0).astype(np.int32)
             for k, f in enumerate(SPEC.online_item_features)}
    return FeatureAssembler.from_item_features(pd.DataFrame({"itemid": np.arange(1, items), **flags}))


def no_negatives(train_set) -> NegativeRows:
    empty = np.empty(0, dtype=np.int32)
    return NegativeRows(train_set, empty, empty, assembler(), ImpressionIndex.of(train_set))


def test_the_selection_slice_is_exactly_the_batchs_validation_holdout(tmp_path):
    train_set = random_samples(300, seed=5)
    users, items = train_set.column("userid").astype(np.int64), train_set.column("itemid").astype(np.int64)
    held_rows = np.array([3, 40, 41, 299])
    pq.write_table(pa.table({"userid": users[held_rows], "itemid": items[held_rows],
                             "rating": np.full(4, 4.0), "label": np.ones(4, dtype=np.int32),
                             "timestamp": train_set.timestamps[held_rows]}), tmp_path / Export.VALIDATION_HOLDOUT)
    held_out = ValidationHoldout.read(tmp_path)
    # the same (user, item, timestamp) as any other row counts too: those rows are that impression again
    keys = set(zip(users[held_rows], items[held_rows], train_set.timestamps[held_rows], strict=True))
    expected = np.array([key in keys for key in zip(users, items, train_set.timestamps, strict=True)])
    splits = DataSplits.carve(train_set, random_samples(20, seed=6), Selection(), held_out=held_out)
    assert len(splits.selection) == expected.sum() >= 4
    np.testing.assert_array_equal(splits.selection.rows, np.flatnonzero(expected))
    assert len(splits.fit) == 300 - expected.sum()
    assert splits.selection_rows["train_rows"] == expected.sum()
    assert ValidationHoldout.read(tmp_path / "elsewhere") is None


def test_popular_negatives_follow_popularity_never_a_rated_movie_and_keep_the_source_rows():
    rng = np.random.default_rng(3)
    rows = 3000
    features = np.zeros((rows, len(SPEC.names)), dtype=np.float32)
    features[:, USER] = rng.integers(1, 600, size=rows)
    popular = rng.choice(np.arange(1, 39), size=rows, p=(1 / np.arange(1, 39)) / (1 / np.arange(1, 39)).sum())
    features[:, ITEM] = popular
    features[:, SPEC.index_of("user_g3_clk")] = rng.normal(size=rows)
    from models.samples import Samples
    train_set = Samples(torch.from_numpy(features), torch.from_numpy((rng.random(rows) < .5).astype(np.float32)),
                        rng.integers(0, 10**6, size=rows).astype(np.int64))
    fit_rows = np.arange(rows) % 10 != 0
    drawn = popular_negatives(no_negatives(train_set), fit_rows, per_impression=3, seed=1)
    assert len(drawn) > 0.3 * 3 * fit_rows.sum()  # the rest: rated by the user, or one movie twice
    assert fit_rows[drawn.source_rows].all()  # drawn for fit impressions only
    users = train_set.column("userid").astype(np.int64)
    rated = set(zip(users[fit_rows], popular[fit_rows], strict=True))
    pairs = list(zip(users[drawn.source_rows], drawn.itemids.astype(np.int64), strict=True))
    assert not rated.intersection(pairs)
    assert len(set(zip(drawn.source_rows, drawn.itemids, strict=True))) == len(drawn)  # no repeats
    # popularity-shaped: the movies drawn most are the most rated ones (unrated by the user where drawn)
    counts = np.bincount(popular[fit_rows], minlength=40)
    drawn_counts = np.bincount(drawn.itemids, minlength=40)
    assert np.corrcoef(counts, drawn_counts)[0, 1] > 0.6  # uniform draws would be ~0
    # each negative carries its source impression's user features (point in time) and the drawn item's own
    assembled = drawn.assembled()
    np.testing.assert_array_equal(assembled.features[:, SPEC.index_of("user_g3_clk")],
                                  train_set.features[drawn.source_rows, SPEC.index_of("user_g3_clk")])
    np.testing.assert_array_equal(assembled.column("itemid").astype(np.int64), drawn.itemids)
    assert float(assembled.labels.sum()) == 0
    assert len(popular_negatives(no_negatives(train_set), fit_rows, 0, seed=1)) == 0


class FirstColumn(nn.Module):
    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.column]


def test_candidate_selection_scores_the_models_order_of_each_users_candidates():
    width = len(SPEC.names)
    rows = np.zeros((5, width), dtype=np.float32)
    rows[:, 0] = [0.9, 0.1, 0.5, 0.2, 0.8]  # user 0: items 10, 11, 12; user 1: items 20, 21
    candidates = CandidateSelection(torch.from_numpy(rows), np.array([10, 11, 12, 20, 21]), np.array([0, 3, 5]),
                                    (frozenset({10}), frozenset({20})), k=1)
    # user 0's top 1 is its liked item (NDCG 1), user 1's is not (0)
    assert candidates.mean_ndcg(FirstColumn(0)) == 0.5
    rows[:, 0] = -rows[:, 0]
    assert candidates.mean_ndcg(FirstColumn(0)) == 0.5  # now user 1's best is 20, user 0's is 11


def test_the_epoch_is_chosen_on_the_selection_score_when_given():
    train_set, selection_set = random_samples(600, seed=1), random_samples(200, seed=2)
    figures = iter([0.1, 0.4, 0.2, 0.3, 0.25, 0.0, 0.0, 0.0, 0.0])
    weights_at = []

    def score(model: nn.Module) -> float:
        weights_at.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(figures)

    model = nn.Sequential(nn.Linear(len(SPEC.names), 1), nn.Flatten(0))
    result = train(model, lambda m, x: m(x), train_set, selection_set,
                   TrainingConfig(max_epochs=9, patience=3, batch_size=128), selection_score=score)
    assert result.best_epoch == 2 and result.best_selection_score == 0.4
    assert len(result.history) == 5  # stopped three epochs after the best
    assert all("selection_auc" in entry and "selection_score" in entry for entry in result.history)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, weights_at[1][name])
    assert all_labels(selection_set).shape == (200,)


def test_the_training_lookup_has_the_embeddings_values_and_gradients():
    from models.layers import lookup

    table = nn.Embedding(50, 4)
    ids = torch.randint(0, 50, (64, 7))
    weights = torch.randn(64, 7, 4)
    (table(ids) * weights).sum().backward()
    expected = table.weight.grad.clone()
    table.weight.grad = None
    fast = lookup(table, ids)  # training mode: index_select
    torch.testing.assert_close(fast, table(ids))
    (fast * weights).sum().backward()
    torch.testing.assert_close(table.weight.grad, expected)
    assert lookup(table.eval(), ids).equal(table(ids))


def test_an_empty_validation_holdout_falls_back_to_the_rule(tmp_path):
    train_set = random_samples(300, seed=5)
    empty = np.empty(0, dtype=np.int64)
    splits = DataSplits.carve(train_set, random_samples(20, seed=6), Selection(),
                              held_out=ValidationHoldout(empty, empty, empty))
    assert len(splits.selection) > 0 and splits.selection_rows == Selection().rule.to_dict()
