"""The causal sequence model (SASRec-style): what it may see, the training windows, and that it learns an order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.sequence_model import CausalSequenceModel
from models.sequence_training import (
    SequenceSettings,
    batch_loss,
    fit,
    sampled_items,
    top_unseen,
    train_epoch,
    training_windows,
    user_sequences,
)


def test_a_position_sees_only_itself_and_earlier_real_items():
    torch.manual_seed(0)
    model = CausalSequenceModel(12, dim=16, blocks=2, heads=2, max_length=6, dropout=0.0).eval()
    with torch.no_grad():
        base = model(torch.tensor([[0, 0, 3, 5, 7, 9]]))
        later_changed = model(torch.tensor([[0, 0, 3, 5, 7, 2]]))
        more_padding = model(torch.tensor([[0, 0, 0, 0, 7, 9]]))
        shorter = model(torch.tensor([[0, 7, 9]]))
    assert not torch.isnan(base).any()
    torch.testing.assert_close(base[0, :5], later_changed[0, :5])
    assert not torch.allclose(base[0, 5], later_changed[0, 5])
    # padding in front changes nothing for the real items: they keep their positions from the end
    torch.testing.assert_close(more_padding[0, 4:], shorter[0, 1:])


def test_windows_are_cut_from_each_sequence_end_with_next_item_targets():
    inputs, targets = training_windows({1: np.array([1, 2, 3, 4, 5, 6]), 2: np.array([7]), 3: np.array([8, 9])}, 3)
    # every step is a target once: 1->2 and 2->3 in the older window, 3->4, 4->5, 5->6 in the newer
    np.testing.assert_array_equal(inputs, [[3, 4, 5], [0, 1, 2], [0, 0, 8]])
    np.testing.assert_array_equal(targets, [[4, 5, 6], [0, 2, 3], [0, 0, 9]])


def test_sequences_follow_the_batch_order_timestamp_then_item():
    frame = pd.DataFrame({"userid": [2, 1, 1, 1, 2], "item_index": [5, 9, 4, 6, 3],
                          "timestamp": [10, 30, 20, 20, 10]})
    sequences = user_sequences(frame)
    np.testing.assert_array_equal(sequences[1], [4, 6, 9])
    np.testing.assert_array_equal(sequences[2], [3, 5])


def test_it_learns_what_comes_next_and_never_proposes_the_history():
    rng = np.random.default_rng(0)
    items = 20
    starts = rng.integers(0, items, 300)
    sequences = {user: (np.arange(start, start + 6) % items) + 1 for user, start in enumerate(starts)}
    settings = SequenceSettings(dim=32, blocks=1, heads=2, max_length=5, dropout=0.0, learning_rate=1e-2, seed=1)
    model, report = fit({u: s[:-1] for u, s in sequences.items()}, items + 1, settings, epochs=25)
    assert report["best_epoch"] == 25 and report["windows"] == 300
    lists = top_unseen(model, {u: s[:-1] for u, s in sequences.items()}, 3)
    hits = np.mean([lists[u][0][0] == s[-1] for u, s in sequences.items()])
    assert hits > 0.9
    assert all(not np.isin(lists[u][0], s[:-1]).any() and 0 not in lists[u][0] for u, s in sequences.items())


def test_the_published_graph_scores_movie_ids_as_the_model_scores_indices(tmp_path):
    from contracts.published import open_model
    from models.artifacts import publish_model
    from models.item_vocabulary import ItemVocabulary
    from models.next_item_export import export_next_item
    from models.onnx_next_item import OnnxNextItemScorer

    torch.manual_seed(0)
    vocabulary = ItemVocabulary(np.array([3, 7, 10, 15, 40, 41]))  # sparse ids: index 1..6
    model = CausalSequenceModel(vocabulary.size, dim=16, blocks=2, heads=2, max_length=4, dropout=0.3).eval()

    folder = publish_model(tmp_path, "next_item", model, {}, lambda path: export_next_item(model, vocabulary, path))
    scorer = OnnxNextItemScorer(open_model(folder.path), cache_users=2)
    recent = np.array([41, 10, 3, 7, 15])  # newest first, as the recall data holds it; one more than max_length
    candidates = np.array([40, 15, 999, 3, -1])  # 999 and -1 are no movie of the vocabulary
    chances = scorer.score(recent, candidates)
    with torch.no_grad():
        # the latest 4, oldest first: 7, 3, 10, 41 (15 is too old to count), as indices
        logits = model.next_item_scores(torch.from_numpy(vocabulary.index_of(np.array([[7, 3, 10, 41]]))))[0]
    expected = logits[[5, 4, 1]].numpy().astype(np.float64)
    np.testing.assert_allclose(chances[[0, 1, 3]], np.exp(expected - expected.max()), rtol=1e-5)
    assert chances.max() == 1.0 and chances[2] == 0.0 and chances[4] == 0.0  # unknown ids: no chance
    short = scorer.score(np.array([10]), np.array([40, 15]))  # a short history is left-padded
    with torch.no_grad():
        logits = model.next_item_scores(torch.tensor([[0, 0, 0, 3]]))[0][[5, 4]].numpy().astype(np.float64)
    np.testing.assert_allclose(short, np.exp(logits - logits.max()), rtol=1e-5)
    assert scorer.score(recent, np.array([], dtype=np.int64)).shape == (0,)
    # A history's state is kept: the same history again runs no transformer; a new rating is a new history.
    assert scorer.state_of.cache_info().misses == 2
    np.testing.assert_array_equal(scorer.score(recent, candidates), chances)
    assert scorer.state_of.cache_info().misses == 2
    assert not np.allclose(scorer.score(np.r_[40, recent], candidates[:2]), chances[:2] / chances[:2].max())
    assert scorer.state_of.cache_info().misses == 3


def test_training_stops_at_its_time_budget_within_the_epoch_after_one_last_check():
    rng = np.random.default_rng(0)
    sequences = {user: rng.integers(1, 30, 12) for user in range(50)}
    checks = []
    settings = SequenceSettings(dim=8, blocks=1, heads=1, max_length=6, check_every=100, max_seconds=0.0, seed=0,
                                batch_size=4)
    _, report = fit(sequences, 30, settings, validate=lambda model: checks.append(1) or 0.5)
    assert report["epochs_run"] == 1 and report["stopped"] == "time" and len(checks) == 1
    assert report["best_epoch"] == 1 and report["best_score"] == 0.5
    # the epoch itself is cut at the budget: one batch of its many, then the check
    model = CausalSequenceModel(30, 8, 1, 1, 6, 0.0)
    inputs, targets = (torch.from_numpy(a) for a in training_windows(sequences, 6))
    optimizer = torch.optim.Adam(model.parameters())
    generator = torch.Generator().manual_seed(0)
    assert train_epoch(model, inputs, targets, optimizer, 4, generator, deadline=0.0)[1] == 1
    assert train_epoch(model, inputs, targets, optimizer, 4, generator)[1] == -(-len(inputs) // 4) > 1
    # a large catalogue takes fewer windows per batch, so a batch's scores stay within max_logits
    assert SequenceSettings(batch_size=128, max_length=50, max_logits=50 * 1000 * 10).windows_per_batch(1000) == 10
    # ... counted over the movies a batch scores: a sampled softmax scores softmax_items of a larger vocabulary
    sampled = SequenceSettings(batch_size=128, max_length=50, max_logits=50 * 1000 * 10, softmax_items=500)
    assert sampled.windows_per_batch(1000) == 20 and sampled.windows_per_batch(400) == 25


def test_a_sampled_softmax_scores_every_target_once_and_uniform_others_never_padding():
    generator = torch.Generator().manual_seed(0)
    targets = torch.tensor([[0, 0, 5, 9, 5], [3, 9, 9, 12, 40]])
    draws = [sampled_items(targets, 50, 10, generator) for _ in range(200)]
    for items in draws:
        assert len(items) == 10 == len(set(items.tolist())) and 0 not in items.tolist()
        assert {3, 5, 9, 12, 40} <= set(items.tolist())
    others = torch.cat([items[5:] for items in draws])
    counts = torch.bincount(others, minlength=50)
    assert counts[[0, 3, 5, 9, 12, 40]].sum() == 0
    assert counts[counts > 0].numel() == 44 and counts.max() < 3 * counts[counts > 0].min()  # 1000 draws of 44
    # more distinct targets than the count: the targets alone
    assert sorted(sampled_items(targets, 50, 3, generator).tolist()) == [3, 5, 9, 12, 40]


def test_a_sampled_softmax_over_every_movie_is_the_full_softmax_without_the_padding_column():
    torch.manual_seed(0)
    model = CausalSequenceModel(30, dim=8, blocks=1, heads=1, max_length=6, dropout=0.0)
    inputs = torch.randint(1, 30, (4, 6))
    targets = torch.randint(1, 30, (4, 6))
    targets[0, :2] = 0  # padding positions have no target
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        logits = (model(inputs) @ model.items.weight.T)[..., 1:]
        kept = targets.reshape(-1) > 0
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 29)[kept], targets.reshape(-1)[kept] - 1)
        # 29 of 30 rows: sampled (every movie but in a drawn order), each target mapped to its column
        torch.testing.assert_close(batch_loss(model, inputs, targets, 29, generator), expected)
        # the full softmax also scores the padding row (its vector is zero), so it differs
        full = batch_loss(model, inputs, targets, 30, generator)
        assert not torch.isclose(full, expected)


def test_it_learns_what_comes_next_with_a_sampled_softmax():
    rng = np.random.default_rng(0)
    items = 40
    starts = rng.integers(0, items, 100)
    sequences = {user: (np.arange(start, start + 6) % items) + 1 for user, start in enumerate(starts)}
    settings = SequenceSettings(dim=32, blocks=1, heads=2, max_length=5, dropout=0.0, learning_rate=1e-2, seed=1,
                                softmax_items=12, batch_size=2)  # 10 targets at most: 2 or more drawn
    model, report = fit({u: s[:-1] for u, s in sequences.items()}, items + 1, settings, epochs=4)
    assert report["softmax_items"] == 12
    lists = top_unseen(model, {u: s[:-1] for u, s in sequences.items()}, 3)
    assert np.mean([lists[u][0][0] == s[-1] for u, s in sequences.items()]) > 0.9
