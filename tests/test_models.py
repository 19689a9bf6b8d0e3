"""Model layers, training on planted signal, ONNX parity and the spec-version guard (all small)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from contracts.errors import ArtifactError, SpecMismatchError
from contracts.feature_spec import SPEC
from contracts.published import open_model
from contracts.tables import Export
from models.data_splits import DataSplits, Selection
from models.fitting import VARIANTS, train_ranking, train_recall, training_metadata
from models.item_vocabulary import ItemVocabulary
from models.layers import ColumnSelect, GroupEmbedding, IdToIndex
from models.matrix_factorization import MatrixFactorization
from models.onnx_export import ParityError, check_parity, export_onnx, onnx_scores
from models.publishing import publish_ranking, publish_recall
from models.ranking_model import GroupedFactorizationMachine, RankingConfig, load_ranking
from models.samples import FeatureMetadata, Samples, load_samples
from models.training_loop import TrainingConfig, auc
from models.training_rows import all_labels
from models.validation import ValidationRule, validation_mask

CARDINALITIES = {f.name: f.cardinality or 30 for f in SPEC.sparse}
VOCABULARY = ItemVocabulary(np.arange(1, CARDINALITIES["itemid"]))  # ids 1..29 are indices 1..29


def random_samples(rows: int, seed: int = 0, signal: bool = True) -> Samples:
    """Spec-shaped rows; the label depends on user-item parity, a genre flag and a dense feature."""
    rng = np.random.default_rng(seed)
    features = np.zeros((rows, len(SPEC.names)), dtype=np.float32)
    for f in SPEC.sparse:
        features[:, SPEC.index_of(f.name)] = rng.integers(1, CARDINALITIES[f.name], size=rows)
    dense = [SPEC.index_of(f.name) for f in SPEC.dense]
    features[:, dense] = rng.normal(size=(rows, len(dense)))
    user, item = features[:, SPEC.index_of("userid")], features[:, SPEC.index_of("itemid")]
    score = 1.5 * ((user + item) % 2 == 0) + 1.0 * features[:, SPEC.index_of("item_g3")] \
        + 0.8 * features[:, SPEC.index_of("user_g3_clk")] - 1.2
    if not signal:
        score = np.zeros(rows)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-score))).astype(np.float32)
    timestamps = rng.integers(0, 10_000, size=rows).astype(np.int64)
    return Samples(torch.from_numpy(features), torch.from_numpy(labels), timestamps)


def every_row(rows) -> torch.Tensor:
    return rows.features_at(np.arange(len(rows)))


def on_test(train_set: Samples, test_set: Samples) -> DataSplits:
    return DataSplits.carve(train_set, test_set, Selection(select_on="test"))


def metadata() -> FeatureMetadata:
    return FeatureMetadata(SPEC.version, SPEC.names, dict(CARDINALITIES), "test-run")


def test_column_select_clamps_unknown_ids():
    x = torch.tensor([[3.0, 7.0, 0.5], [12.0, -1.0, 0.25]])
    ids = ColumnSelect([0, 1], [10, 10])(x)
    assert ids.dtype == torch.long
    assert ids.tolist() == [[3, 7], [0, 0]]  # 12 is beyond the table, -1 is invalid: both unknown (0)
    assert ColumnSelect([2])(x).tolist() == [[0.5], [0.25]]
    # Adjacent columns are sliced, others gathered: the same values either way.
    assert ColumnSelect([0, 2])(x).tolist() == [[3.0, 0.5], [12.0, 0.25]]
    assert ColumnSelect([1, 2])(x).tolist() == [[7.0, 0.5], [-1.0, 0.25]]


def test_group_embedding_shape_and_gradient():
    layer = GroupEmbedding([5, 3], dim=4)
    out = layer(torch.tensor([[1, 2], [4, 0]]))
    assert out.shape == (2, 2, 4)
    out.sum().backward()
    grad = layer.embedding.embedding.weight.grad
    assert grad[[1, 4, 5 + 2, 5 + 0]].abs().sum() > 0 and grad[[0, 2, 3]].abs().sum() == 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ranking_model_shapes_and_gradients(variant):
    model = GroupedFactorizationMachine(CARDINALITIES, VOCABULARY, VARIANTS[variant])
    batch = random_samples(8)
    logits = model(batch.features)
    assert logits.shape == (8,)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels).backward()
    embeddings = model.embeddings
    assert embeddings["sparse_id"].embedding.embedding.weight.shape[1] == 16
    assert embeddings["sparse_side"].embedding.embedding.weight.shape[1] == 2
    assert embeddings["sparse_side"].fields == 21
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert (model.dense_mlp is not None) == (variant != "fm")
    assert (model.deep_mlp is not None) == (variant == "deepfm")


def test_matrix_factorization_vectors_reproduce_the_ranking():
    model = MatrixFactorization(users=6, vocabulary=ItemVocabulary(np.arange(1, 9)), dim=4)
    torch.nn.init.normal_(model.user_bias.weight)
    torch.nn.init.normal_(model.item_bias.weight)
    users, items = model.export_vectors()
    assert users.shape == (6, 6) and items.shape == (9, 6)
    with torch.no_grad():
        logits = model(torch.full((9,), 2), torch.arange(9))
    assert torch.allclose(users[2] @ items.T + model.bias, logits, atol=1e-6)


def test_training_finds_a_planted_signal():
    train_set, test_set = random_samples(6000, seed=1), random_samples(2000, seed=2)
    config = TrainingConfig(max_epochs=8, batch_size=256, learning_rate=1e-2)
    model, report = train_ranking(metadata(), VOCABULARY, on_test(train_set, test_set), RankingConfig(), config)
    assert report.result.best_selection_score > 0.7
    # the best weights are kept
    assert report.result.best_selection_score == pytest.approx(auc(model, lambda m, x: m(x), test_set))
    assert report.test_auc == pytest.approx(report.result.best_selection_score)  # the reference protocol: one figure
    assert len(report.result.history) <= 8
    _, recall = train_recall(metadata(), VOCABULARY, on_test(train_set, test_set), config=config)
    assert recall.test_auc > 0.6


def test_training_is_reproducible():
    train_set, test_set = random_samples(2000, seed=3), random_samples(500, seed=4)
    config = TrainingConfig(max_epochs=2, batch_size=256)
    first = train_ranking(metadata(), VOCABULARY, DataSplits.carve(train_set, test_set), RankingConfig(), config)[1]
    second = train_ranking(metadata(), VOCABULARY, DataSplits.carve(train_set, test_set), RankingConfig(), config)[1]
    assert first.result.history[-1]["selection_auc"] == second.result.history[-1]["selection_auc"]
    assert first.test_auc == second.test_auc


def test_early_stopping_without_signal():
    train_set, test_set = random_samples(2000, seed=5, signal=False), random_samples(500, seed=6, signal=False)
    config = TrainingConfig(max_epochs=50, batch_size=256, patience=2)
    result = train_ranking(metadata(), VOCABULARY, on_test(train_set, test_set), RankingConfig(), config)[1].result
    assert len(result.history) == result.best_epoch + 2 < 50


def test_onnx_export_parity_and_dynamic_batch(tmp_path):
    model = GroupedFactorizationMachine(CARDINALITIES, VOCABULARY, RankingConfig()).eval()
    path = export_onnx(model, tmp_path / "model.onnx")
    rows = random_samples(300, seed=7).features
    assert check_parity(model, path, rows) <= 1e-5
    assert onnx_scores(path, rows[:1].numpy()).shape == (1,)
    # The spec's sparse and dense fields are runs of adjacent columns: slices, not column Gathers (~5x slower
    # in onnxruntime); the only Gathers left are the embedding look-ups.
    import onnx

    gathers = [node for node in onnx.load(str(path)).graph.node if node.op_type == "Gather"]
    # the item vocabulary's lookup table, the linear term's table and one table per group
    assert len(gathers) == 1 + 1 + len(model.embeddings)
    with torch.no_grad():
        model.linear.bias += 1.0  # the exported file no longer matches the model
    with pytest.raises(ParityError):
        check_parity(model, path, rows)


def test_sparse_movie_ids_are_rows_of_a_catalogue_sized_table(tmp_path):
    vocabulary = ItemVocabulary(np.array([5, 900, 209_171]))  # ML-25M's largest id, three movies
    assert IdToIndex(vocabulary)(torch.tensor([5, 900, 209_171, 6, 0, -3, 300_000])).tolist() == [1, 2, 3, 0, 0, 0, 0]
    cardinalities = {**CARDINALITIES, "itemid": vocabulary.size}
    model = GroupedFactorizationMachine(cardinalities, vocabulary, RankingConfig()).eval()
    assert model.linear.fc.weight.shape[0] == sum(cardinalities[f.name] for f in SPEC.sparse)  # not 209,172 rows
    rows = random_samples(60, seed=30).features
    item = SPEC.index_of("itemid")
    rows[:, item] = torch.from_numpy(np.resize([5, 900, 209_171, 77, 0], 60).astype(np.float32))
    with torch.no_grad():
        scores = model(rows)
        unknown = rows.clone()
        unknown[:, item] = 0
        # 77 is no catalogue movie: scored as the unknown item; a catalogue movie has its own row
        assert torch.equal(scores[3::5], model(unknown)[3::5]) and not torch.equal(scores[0::5], model(unknown)[0::5])
    assert check_parity(model, export_onnx(model, tmp_path / "sparse.onnx"), rows) <= 1e-5

    mf = MatrixFactorization(10, vocabulary, dim=4)
    assert mf.item_vectors.weight.shape[0] == 4
    with torch.no_grad():
        assert torch.equal(mf(torch.tensor([1, 1]), torch.tensor([900, 901])),
                           mf.score(torch.tensor([1, 1]), torch.tensor([2, 0])))
    folder = publish_recall(tmp_path, mf, {})
    vectors = pd.read_parquet(folder.path / "item_vectors.parquet")
    assert vectors["itemid"].tolist() == [5, 900, 209_171]
    assert np.allclose(np.stack(vectors["vector"]), mf.export_vectors()[1][1:].numpy())
    assert ItemVocabulary.read(folder.path / "item_vocabulary.parquet").itemids.tolist() == [5, 900, 209_171]


def test_item_vocabulary_reads_only_a_dense_numbering():
    frame = pd.DataFrame({"itemid": [900, 5, 209_171], "item_index": [2, 1, 3]})
    vocabulary = ItemVocabulary.from_frame(frame, "t")
    assert vocabulary.index_of(np.array([209_171, 5, 6])).tolist() == [3, 1, 0]
    assert vocabulary.itemid_of(np.array([1, 3])).tolist() == [5, 209_171] and vocabulary.size == 4
    with pytest.raises(ArtifactError, match="1..N"):
        ItemVocabulary.from_frame(frame.assign(item_index=[2, 1, 4]), "t")


def test_artifacts_round_trip_and_spec_guard(tmp_path):
    train_set, test_set = random_samples(1500, seed=8), random_samples(500, seed=9)
    config = TrainingConfig(max_epochs=1, batch_size=256)
    splits = DataSplits.carve(train_set, test_set)
    model, report = train_ranking(metadata(), VOCABULARY, splits, RankingConfig(), config)
    folder = publish_ranking(tmp_path, model, training_metadata(metadata(), report, config), test_set.features)
    opened = open_model(tmp_path / "ranking")
    assert opened.path == folder.path
    saved = opened.metadata()
    assert saved["spec_version"] == SPEC.version and saved["columns"] == list(SPEC.names)
    assert (saved["input_name"], saved["output_name"]) == ("features", "probability")
    assert len(saved["auc_history"]) == 1
    assert saved["selected_on"] == "validation" and saved["validation_rule"]["percent"] == 10
    assert saved["rows"]["fit"] + saved["rows"]["selection"] == 1500 and saved["test_auc"] == report.test_auc
    reloaded = load_ranking(opened)
    with torch.no_grad():
        assert torch.equal(reloaded(test_set.features), model.eval()(test_set.features))

    recall_model, recall_report = train_recall(metadata(), VOCABULARY, on_test(train_set, test_set), config=config)
    recall_folder = publish_recall(tmp_path, recall_model, recall_report.to_metadata())
    vectors = pd.read_parquet(recall_folder.path / "item_vectors.parquet")
    assert vectors["itemid"].min() == 1 and len(vectors["vector"].iloc[0]) == 18

    stale = json.loads(folder.metadata_path.read_text()) | {"spec_version": "v1-000000000000"}
    folder.metadata_path.write_text(json.dumps(stale))
    with pytest.raises(SpecMismatchError, match="v1-000000000000"):
        open_model(tmp_path / "ranking")


def tiny_exports(folder, samples: list[tuple[int, int, int, int]]) -> dict:
    """Exports of 2 users and 4 movies: the narrow samples given, user 1's counters as of t = 100 and 200."""
    dense = [f.name for f in SPEC.dense]
    folder.joinpath(Export.SAMPLES_TRAIN).mkdir(parents=True)
    pd.DataFrame(samples, columns=["userid", "itemid", "timestamp", "label"]).astype("int32").astype(
        {"timestamp": "int64"}).to_parquet(folder / Export.SAMPLES_TRAIN / "part-0.parquet")
    users = pd.DataFrame({"userid": [1, 2], "gender": [2, 1], "age": [3, 1], "occupation": [4, 7]})
    for name in dense:
        users[name] = np.float32(0.5)
    users.astype({"userid": "int32"}).to_parquet(folder / Export.USER_FEATURES)
    items = pd.DataFrame({"itemid": [10, 11, 12, 13]})
    for k, feature in enumerate(SPEC.online_item_features):
        items[feature.name] = [(k + i) % 2 for i in range(4)]
    items.astype("int32").to_parquet(folder / Export.ITEM_FEATURES)
    as_of = {100: np.arange(36, dtype=np.float32), 200: -np.arange(36, dtype=np.float32)}
    history = pd.DataFrame([as_of[100], as_of[200]], columns=dense)
    history.insert(0, "userid", np.int32(1))
    history["event_timestamp"] = pd.to_datetime([100, 200], unit="s", utc=True).astype("datetime64[us, UTC]")
    history.to_parquet(folder / Export.USER_FEATURE_HISTORY)
    stats = [{"name": name, "mean": 2.0, "std": 4.0} for name in dense]
    (folder / Export.METADATA_FILE).write_text(json.dumps(
        {"spec_version": SPEC.version, "columns": list(SPEC.names), "features": stats, "run_id": "r"}))
    return as_of | {"empty": np.float32(-0.5)}


def test_samples_assemble_from_the_exports_as_of_the_second_before_in_one_order(tmp_path):
    rows = [(2, 10, 300, 1), (1, 13, 250, 0), (1, 12, 200, 1), (1, 11, 150, 0), (1, 10, 100, 1), (9, 12, 50, 0)]
    counters = tiny_exports(tmp_path, rows)
    loaded = load_samples(tmp_path, Export.SAMPLES_TRAIN)
    # in one order whatever the file's: by user, timestamp, item, label
    assert loaded.column("userid").tolist() == [1, 1, 1, 1, 2, 9]
    assert loaded.column("itemid").tolist() == [10, 11, 12, 13, 10, 12]
    assert loaded.timestamps.tolist() == [100, 150, 200, 250, 300, 50] and loaded.labels.tolist() == [1, 0, 1, 0, 1, 0]
    dense = [SPEC.index_of(f.name) for f in SPEC.dense]
    # t = 100: nothing strictly before; 150 and 200: the row of second 100; 250: of second 200
    expected = [np.full(36, counters["empty"]), counters[100], counters[100], counters[200],
                np.full(36, counters["empty"]), np.full(36, counters["empty"])]
    np.testing.assert_array_equal(loaded.features[:, dense].numpy(), np.stack(expected))
    demographics = loaded.features[:, [SPEC.index_of(n) for n in ("gender", "age", "occupation")]]
    assert demographics.tolist() == [[2, 3, 4]] * 4 + [[1, 1, 7], [0, 0, 0]]  # user 9 is unknown: 0
    flags = [SPEC.index_of(f.name) for f in SPEC.online_item_features]
    items = pd.read_parquet(tmp_path / Export.ITEM_FEATURES).set_index("itemid")
    np.testing.assert_array_equal(loaded.features[:, flags].numpy(),
                                  items.loc[[10, 11, 12, 13, 10, 12]].to_numpy(np.float32))
    reversed_rows = pd.read_parquet(tmp_path / Export.SAMPLES_TRAIN).iloc[::-1]
    reversed_rows.to_parquet(tmp_path / Export.SAMPLES_TRAIN / "part-0.parquet")
    assert torch.equal(load_samples(tmp_path, Export.SAMPLES_TRAIN).features, loaded.features)
    (tmp_path / "feature_metadata.json").write_text(json.dumps(
        {"spec_version": "v0-old", "columns": [], "features": [], "run_id": "r"}))
    with pytest.raises(SpecMismatchError, match="rebuild"):
        FeatureMetadata.read(tmp_path)


def test_validation_slice_is_each_users_latest_train_rows():
    # user 1: 20 rows -> 2 validation; user 2: 5 rows -> 1; user 3: 4 rows (< 5) -> none; user 4: 39 -> 3.
    rng = np.random.default_rng(12)
    sizes = {1: 20, 2: 5, 3: 4, 4: 39}
    users = np.concatenate([np.full(n, u) for u, n in sizes.items()])
    items = np.concatenate([rng.permutation(n) + 1 for n in sizes.values()])
    times = rng.integers(0, 6, size=len(users))  # many same-second rows: itemid breaks the ties
    shuffle = rng.permutation(len(users))
    users, items, times = users[shuffle], items[shuffle], times[shuffle]
    mask = validation_mask(users, items, times, ValidationRule(percent=10, min_train_rows=5))
    for user, n in sizes.items():
        own = users == user
        expected = {1: 2, 2: 1, 3: 0, 4: 3}[user]
        assert mask[own].sum() == expected
        order = sorted(zip(times[own], items[own], mask[own], strict=True))
        # every validation row comes after every remaining train row of the same user
        assert [m for _, _, m in order] == [False] * (n - expected) + [True] * expected


def test_validation_never_takes_test_rows_and_picks_the_epoch():
    train_set, test_set = random_samples(3000, seed=13), random_samples(800, seed=14)
    splits = DataSplits.carve(train_set, test_set)
    assert len(splits.fit) + len(splits.selection) == len(train_set)
    assert splits.test is test_set and 0 < len(splits.selection) < len(train_set) // 5
    fit_rows = {tuple(r) for r in every_row(splits.fit).numpy()}
    assert not any(tuple(r) in fit_rows for r in every_row(splits.selection).numpy())
    config = TrainingConfig(max_epochs=4, batch_size=256, learning_rate=1e-2)
    model, report = train_ranking(metadata(), VOCABULARY, splits, RankingConfig(), config)
    assert report.result.best_selection_score == pytest.approx(auc(model, lambda m, x: m(x), splits.selection))
    assert report.test_auc == pytest.approx(auc(model, lambda m, x: m(x), test_set))
    assert report.test_auc != report.result.best_selection_score


def test_an_epoch_can_be_a_fresh_sample_of_the_fit_rows_and_selection_a_fixed_one():
    from models.training_loop import train

    train_set, test_set = random_samples(3000, seed=40), random_samples(500, seed=41)
    splits = DataSplits.carve(train_set, test_set)
    batches: list[torch.Tensor] = []

    def forward(model, x):
        batches.append(x)
        return model(x)

    config = TrainingConfig(max_epochs=2, batch_size=100, epoch_rows=500, selection_rows=200, patience=5)
    train(GroupedFactorizationMachine(CARDINALITIES, VOCABULARY), forward, splits.fit, splits.selection, config)
    # per epoch 5 steps of 100 rows, then one selection pass over the same 200 of the ~285 validation rows
    assert len(splits.selection) > 200 and [len(x) for x in batches] == ([100] * 5 + [200]) * 2
    assert torch.equal(batches[5], batches[11])
    first, second = (torch.cat(batches[start:start + 5]) for start in (0, 6))
    assert not torch.equal(first, second)  # each epoch draws its own rows
    every_fit_row = {tuple(r) for r in every_row(splits.fit).numpy()}
    assert all(tuple(r) in every_fit_row for r in first.numpy())


def test_refit_trains_the_chosen_epoch_count_on_train_and_validation():
    train_set, test_set = random_samples(2000, seed=15), random_samples(500, seed=16)
    splits = DataSplits.carve(train_set, test_set, Selection(refit=True))
    config = TrainingConfig(max_epochs=3, batch_size=256, learning_rate=1e-2)
    model, report = train_ranking(metadata(), VOCABULARY, splits, RankingConfig(), config)
    assert report.to_metadata()["refit_on_train_and_validation"] is True
    assert report.test_auc == pytest.approx(auc(model, lambda m, x: m(x), test_set))
    with pytest.raises(ValueError, match="refit"):
        Selection(select_on="test", refit=True)


def test_bpr_recall_learns_planted_co_preferences():
    from models.bpr_training import BprConfig, Interactions, recall_at_k, train_bpr

    # two groups of users, each picking from its own half of the catalogue
    rng = np.random.default_rng(21)
    users, items = [], []
    for user in range(1, 61):
        half = np.arange(1, 21) if user % 2 else np.arange(21, 41)
        for item in rng.choice(half, size=8, replace=False):
            users.append(user)
            items.append(item)
    history = Interactions(np.array(users), np.array(items), np.ones(len(users), dtype=np.float32))
    held_out = np.zeros(len(users), dtype=bool)
    held_out[7::8] = True  # each user's last pick
    model = MatrixFactorization(61, ItemVocabulary(np.arange(1, 41)), dim=8)
    config = BprConfig(dim=8, batch_size=64, max_epochs=15, learning_rate=0.05, recall_at=10, patience=15)
    result = train_bpr(model, history.subset(~held_out), history.subset(held_out), config)
    user_vectors, item_vectors = (v.numpy() for v in model.export_vectors())
    found = recall_at_k(user_vectors, item_vectors, history.subset(~held_out), history.subset(held_out), 10, 100, 0)
    assert found == pytest.approx(result.best_selection_score)
    # Scored a few users at a time (the memory bound at scale), the figure is the same.
    assert recall_at_k(user_vectors, item_vectors, history.subset(~held_out), history.subset(held_out), 10, 100, 0,
                       users_per_block=7) == found
    assert found > 0.6  # random top 10 of the ~33 unseen items would find ~0.3


def test_negatives_follow_their_source_row_into_validation():
    from models.feature_rows import FeatureAssembler
    from models.negative_rows import ImpressionIndex, NegativeRows

    train_set = random_samples(400, seed=22)
    source_rows = np.flatnonzero(np.arange(400) % 4 == 0)  # one negative per fourth train row
    sampled = train_set.column("itemid")[source_rows].astype(np.int64) + 1000  # differs from the source item
    assembler = FeatureAssembler.from_item_features(
        pd.DataFrame({"itemid": np.arange(1, 30), **{f.name: 1 for f in SPEC.online_item_features}}))
    negatives = NegativeRows(train_set, source_rows, sampled, assembler, ImpressionIndex.of(train_set))
    splits = DataSplits.carve(train_set, random_samples(50, seed=23), Selection(), negatives)
    assert len(splits.fit) + len(splits.selection) == 400 + len(source_rows)
    in_validation = validation_mask(train_set.column("userid"), train_set.column("itemid"), train_set.timestamps,
                                    ValidationRule())
    drawn_for_selection = negatives.drawn_for(in_validation)
    assert drawn_for_selection.sum() > 0
    # every negative drawn for a validation row is in the selection set, and no other one is
    item = SPEC.index_of("itemid")
    assert (every_row(splits.selection)[:, item] > 1000).sum() == drawn_for_selection.sum()
    assert (every_row(splits.fit)[:, item] > 1000).sum() == len(source_rows) - drawn_for_selection.sum()
    assert float(every_row(splits.fit)[every_row(splits.fit)[:, item] > 1000][:, SPEC.index_of("item_g1")].sum()) == 0
    assert float(all_labels(splits.selection)[every_row(splits.selection)[:, item].numpy() > 1000].sum()) == 0


def test_negatives_are_assembled_from_their_source_rows_and_the_sampled_items():
    from models.feature_rows import FeatureAssembler
    from models.negative_rows import ImpressionIndex, NegativeRows

    train_set = random_samples(60, seed=31)
    picked = np.array([0, 7, 7, 59])  # row 7 twice: two negatives drawn for one impression
    sampled = np.array([3, 11, 12, 5])
    flags = {f.name: (np.arange(1, 40) % (k + 2) == 0).astype(np.int32)
             for k, f in enumerate(SPEC.online_item_features)}
    assembler = FeatureAssembler.from_item_features(pd.DataFrame({"itemid": np.arange(1, 40), **flags}))
    negatives = NegativeRows(train_set, picked.astype(np.int32), sampled.astype(np.int32), assembler,
                             ImpressionIndex.of(train_set))
    assembled = negatives.assembled()
    rows = assembled.features.numpy()
    assert len(assembled) == 4 and float(assembled.labels.sum()) == 0
    assert assembled.column("itemid").astype(int).tolist() == sampled.tolist()
    np.testing.assert_array_equal(assembled.timestamps, train_set.timestamps[picked])
    for position, feature in enumerate(SPEC.features):
        if feature.name == "itemid":
            continue
        expected = (flags[feature.name][sampled - 1] if feature.name in flags
                    else train_set.features.numpy()[picked, position])
        np.testing.assert_array_equal(rows[:, position], expected, err_msg=feature.name)
    assert negatives.drawn_for(np.isin(np.arange(60), [7])).tolist() == (picked == 7).tolist()


def test_impression_index_matches_a_hash_join_on_user_timestamp_item():
    from models.negative_rows import ImpressionIndex

    rng = np.random.default_rng(50)
    samples = random_samples(3000, seed=51)  # unsorted, with repeated (user, item, timestamp) impressions
    samples.features[:, SPEC.index_of("userid")] = torch.from_numpy(rng.integers(1, 8, 3000).astype(np.float32))
    samples.features[:, SPEC.index_of("itemid")] = torch.from_numpy(rng.integers(1, 6, 3000).astype(np.float32))
    samples.timestamps[:] = rng.integers(1_000_000_000, 1_000_000_040, 3000)
    index = ImpressionIndex.of(samples)
    users, items = samples.column("userid").astype(np.int64), samples.column("itemid").astype(np.int64)
    keys = pd.MultiIndex.from_arrays([users, samples.timestamps, items])
    assert index.count == keys.nunique()
    first = np.flatnonzero(~keys.duplicated())
    assert sorted(index.first_rows.tolist()) == first.tolist()
    assert (index.first_rows[index.of_row] == first[keys[first].get_indexer(keys)]).all()
    asked_users, asked_items = rng.integers(0, 10, 500), rng.integers(0, 8, 500)
    asked_times = rng.integers(999_999_990, 1_000_000_050, 500)
    found = index.find(asked_users, asked_times, asked_items)
    expected = keys[first].get_indexer(pd.MultiIndex.from_arrays([asked_users, asked_times, asked_items]))
    assert ((found >= 0) == (expected >= 0)).all() and (found >= 0).sum() > 20
    assert (index.first_rows[found[found >= 0]] == first[expected[expected >= 0]]).all()
