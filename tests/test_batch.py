"""The whole batch end to end: every table, the exports switch, and what a failed run leaves."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from delta.tables import DeltaTable

from contracts.feature_spec import HOLDOUT_SIZE, SPEC
from contracts.published import open_model
from contracts.settings import BatchSettings
from contracts.tables import Export, Table
from models import evaluate
from models import train as train_models
from models.export_readers import load_item_features
from models.feature_rows import FeatureAssembler
from models.item_vocabulary import ItemVocabulary
from models.negative_draws import draw_negatives, rated_in_run
from models.samples import load_samples
from spark_jobs import run_batch
from spark_jobs.export import ShrinkingRunError
from spark_jobs.ingest import DataValidationError
from spark_jobs.lake import read_table
from spark_jobs.synthetic import generate, write_ml1m

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ml-1m-tiny")
    write_ml1m(generate(3_000, n_users=25, n_items=120, seed=5), folder)
    return folder


def history(spark, settings, table):
    return DeltaTable.forPath(spark, str(settings.table_path(table))).history().collect()


def check_batch_output(spark, settings, run_id):
    for table in Table.ALL:
        assert history(spark, settings, table)[0]["userMetadata"] == run_id, table
    samples = read_table(spark, settings, Table.SAMPLES)
    assert samples.columns == ["userid", "itemid", "timestamp", "label", "split"]  # narrow: features assembled
    current = settings.current_export_dir
    assert current.resolve() == (settings.exports_dir / "runs" / run_id).resolve()
    metadata = json.loads((current / Export.METADATA_FILE).read_text())
    assert metadata["spec_version"] == SPEC.version
    assert metadata["columns"] == list(SPEC.names)
    train = load_samples(current, Export.SAMPLES_TRAIN)
    assert train.features.shape == (len(pd.read_parquet(current / Export.SAMPLES_TRAIN)), len(SPEC.names))
    dense = [SPEC.index_of(f.name) for f in SPEC.dense]
    assert train.features[:, dense].mean(dim=0).abs().max() < 1e-3  # standardised with the train statistics
    cardinality = {f["name"]: f["cardinality"] for f in metadata["features"]}
    assert cardinality["userid"] > train.column("userid").max() and cardinality["gender"] == 3
    vocabulary = pd.read_parquet(current / Export.ITEM_VOCABULARY).sort_values("itemid")
    catalogue = pd.read_parquet(current / Export.ITEM_FEATURES)
    assert vocabulary["itemid"].tolist() == sorted(catalogue["itemid"])  # every catalogue movie, once
    assert vocabulary["item_index"].tolist() == list(range(1, len(vocabulary) + 1))
    assert cardinality["itemid"] == len(vocabulary) + 1
    return metadata, train


def test_batch_end_to_end_and_failed_run_keeps_last_good_output(spark, tiny_dataset, tmp_path):
    settings = BatchSettings(data_dir=tiny_dataset, output_dir=tmp_path / "out", shuffle_partitions=2,
                             keep_export_runs=1)
    run_batch.run(spark, settings, "run-1")
    metadata, train = check_batch_output(spark, settings, "run-1")
    ratings = read_table(spark, settings, Table.RATINGS, version=0)
    heavy_users = ratings.groupBy("userid").count().filter("count >= 12").count()
    assert read_table(spark, settings, Table.ONLINE_HOLDOUT).count() == HOLDOUT_SIZE * heavy_users
    assert metadata["counts"]["samples_train"] == len(train)
    user_features = pd.read_parquet(settings.current_export_dir / Export.USER_FEATURES)
    assert list(user_features.columns) == [
        "userid", *(f.name for f in SPEC.online_user_features), "event_timestamp", "created_timestamp"]
    assert len(user_features) == 25

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dataset, broken)
    with (broken / "ratings.dat").open("a") as handle:
        handle.write("1::1::7::978300760\n")
    with pytest.raises(DataValidationError, match=r"ratings\.dat:\d+: field 'rating' = '7'"):
        run_batch.run(spark, settings.model_copy(update={"data_dir": broken}), "run-2")
    assert len(history(spark, settings, Table.RATINGS)) == 1  # nothing written
    assert settings.current_export_dir.resolve().name == "run-1"

    run_batch.run(spark, settings, "run-3")
    check_batch_output(spark, settings, "run-3")

    # A third of the ratings (a truncated file, say) is a valid input, but must not replace what serves.
    shrunk = tmp_path / "shrunk"
    shutil.copytree(tiny_dataset, shrunk)
    lines = (shrunk / "ratings.dat").read_text(encoding="iso-8859-1").splitlines(keepends=True)
    (shrunk / "ratings.dat").write_text("".join(lines[: len(lines) // 3]), encoding="iso-8859-1")
    with pytest.raises(ShrinkingRunError, match=r"ratings [\d,]+ < half of [\d,]+"):
        run_batch.run(spark, settings.model_copy(update={"data_dir": shrunk}), "run-shrunk")
    assert settings.current_export_dir.resolve().name == "run-3"
    # Delta keeps every version (the refused run's too); the exports keep the serving run only
    assert [h["version"] for h in history(spark, settings, Table.RATINGS)] == [2, 1, 0]
    assert read_table(spark, settings, Table.RATINGS, version=1).count() == ratings.count()  # run-3: same input
    assert sorted(p.name for p in (settings.exports_dir / "runs").iterdir()) == ["run-3", "run-shrunk"]

    # The exports are hard links to the Delta files of run-3's versions, not copies; vacuuming every file
    # the latest (refused) versions do not name leaves the run that serves readable all the same.
    manifest = json.loads((settings.current_export_dir / Export.MANIFEST_FILE).read_text())
    linked = manifest["exports"][Export.SAMPLES_TRAIN]
    assert linked["how"] == "linked" and linked["table"] == Table.SAMPLES and linked["files"]
    assert all(f.startswith("samples/split=train/") for f in linked["files"])
    exported_file = next((settings.current_export_dir / Export.SAMPLES_TRAIN).iterdir())
    assert exported_file.stat().st_nlink >= 2  # the same bytes as the table's file: nothing was copied
    before_vacuum = len(pd.read_parquet(settings.current_export_dir / Export.SAMPLES_TRAIN))
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    try:
        for table in (Table.SAMPLES, Table.USER_FEATURES):
            spark.sql(f"VACUUM delta.`{settings.table_path(table)}` RETAIN 0 HOURS")
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")
    assert not (settings.delta_dir / linked["files"][0]).exists()  # vacuumed from the table...
    assert len(pd.read_parquet(settings.current_export_dir / Export.SAMPLES_TRAIN)) == before_vacuum == len(train)
    assert len(pd.read_parquet(settings.current_export_dir / Export.USER_FEATURES)) == 25  # ...still served

    # The trainers read what the batch exported, and publish vectors back as Delta tables.
    summary = train_models.main(["--output", str(settings.output_dir), "--max-epochs", "2"])
    ranking = open_model(settings.models_dir / "ranking").metadata()
    assert ranking["data_run_id"] == "run-3" and ranking["onnx_parity_max_abs_diff"] <= 1e-5
    assert 0 < summary["recall"]["validation_recall@200"] <= 1 and 0 < summary["ranking"]["test_auc"] < 1
    exports = settings.current_export_dir
    train_set, test_set = load_samples(exports, Export.SAMPLES_TRAIN), load_samples(exports, Export.SAMPLES_TEST)
    vocabulary = ItemVocabulary.read(exports / Export.ITEM_VOCABULARY)
    negatives = draw_negatives(train_set, rated_in_run(exports, (train_set, test_set), vocabulary), vocabulary, 4,
                               FeatureAssembler.from_item_features(load_item_features(exports)))
    assert ranking["rows"]["fit"] + ranking["rows"]["selection"] == len(train) + len(negatives)

    # The top-K evaluation runs the serving path over the hold-out of the same output.
    report = evaluate.main(["--output", str(settings.output_dir)])
    assert report["users_evaluated"] > 0
    served = report["lists"][evaluate.SERVED]
    assert 0 <= served["hitrate@10"] <= served["hitrate@50"] <= 1
    sampled = evaluate.main(["--output", str(settings.output_dir), "--users", "3", "--no-ease",
                             "--report", str(settings.output_dir / "sampled.json")])
    assert sampled["users_evaluated"] == 3
    assert sampled["users_with_a_liked_holdout_item"] == report["users_evaluated"] > 3
    item_vectors = read_table(spark, settings, "item_vectors")
    assert item_vectors.count() == metadata["features"][1]["cardinality"] - 1  # every item id but 0


def test_batch_on_movielens_100k(spark, ml100k_batch):
    settings = ml100k_batch
    metadata, train = check_batch_output(spark, settings, "ml-100k")
    counts = metadata["counts"]
    # 943 users, all with >= 20 ratings: 9430 held out, the remaining 90570 split 80/20 per user
    # exactly as the reference design's cumcount < 0.8 n does
    assert read_table(spark, settings, Table.ONLINE_HOLDOUT).count() == 9430
    assert (counts["samples_train"], counts["samples_test"]) == (72_823, 17_747)
    assert counts["user_features"] == 943 and counts["item_features"] == 1682
    assert metadata["absent_features"] == []
    assert {f["name"]: f["cardinality"] for f in metadata["features"]}["itemid"] == 1683
    assert len(SPEC.names) == 59 == train.features.shape[1]
    # the impressions of each user's first second have no past: every raw counter is 0, i.e. -mean/std
    users = pd.Series(train.column("userid"))
    first_second = train.timestamps == pd.Series(train.timestamps).groupby(users).transform("min").to_numpy()
    assert first_second.sum() >= 943
    stats = {f["name"]: (f["mean"], f["std"]) for f in metadata["features"] if "mean" in f}
    for name, (mean, std) in stats.items():
        assert (train.column(name)[first_second] == np.float32((0.0 - mean) / std)).all(), name


def test_no_assembled_row_carries_a_user_feature_from_after_its_impression(tiny_batch):
    """Every sample (train and test) and every negative the trainer assembles has, as its 36 counters, the
    user's point-in-time row of the latest second strictly before its timestamp (user_feature_history, or an
    empty past), found here independently by pandas' as-of join; and its user's demographics and its movie's
    features from the batch's user_features / item_features rows."""
    exports = tiny_batch.current_export_dir
    train = load_samples(exports, Export.SAMPLES_TRAIN)
    vocabulary = ItemVocabulary.read(exports / Export.ITEM_VOCABULARY)
    negatives = draw_negatives(train, rated_in_run(exports, (train,), vocabulary), vocabulary, 4,
                               FeatureAssembler.from_item_features(load_item_features(exports))).assembled()
    assert len(negatives) > len(train) / 2  # up to 4 per train impression, fewer where most are rated
    history = pd.read_parquet(exports / Export.USER_FEATURE_HISTORY)
    history["timestamp"] = (history["event_timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    dense = [f.name for f in SPEC.dense]
    history = history.astype({"userid": "int64"})[["userid", "timestamp", *dense]]
    metadata = json.loads((exports / Export.METADATA_FILE).read_text())
    empty_past = {f["name"]: np.float32(-f["mean"] / f["std"]) for f in metadata["features"] if "mean" in f}
    users = pd.read_parquet(exports / Export.USER_FEATURES).set_index("userid")
    items = pd.read_parquet(exports / Export.ITEM_FEATURES).set_index("itemid")
    test = load_samples(exports, Export.SAMPLES_TEST)
    assert len(test) == len(pd.read_parquet(exports / Export.SAMPLES_TEST)) > 0
    for rows_of, assembled in (("train", train), ("test", test), ("negatives", negatives)):
        rows = pd.DataFrame(assembled.features.numpy(), columns=list(SPEC.names))
        rows["userid"] = rows["userid"].astype("int64")
        rows["timestamp"] = assembled.timestamps
        as_of = pd.merge_asof(rows.sort_values("timestamp"), history.sort_values("timestamp"), on="timestamp",
                              by="userid", allow_exact_matches=False, suffixes=("", "_as_of"))
        for name in dense:
            expected = as_of[f"{name}_as_of"].fillna(empty_past[name]).to_numpy(np.float32)
            np.testing.assert_array_equal(as_of[name].to_numpy(np.float32), expected, err_msg=f"{rows_of} {name}")
        for name in ("gender", "age", "occupation"):
            expected = users.loc[rows["userid"], name].to_numpy(np.float32)
            np.testing.assert_array_equal(rows[name].to_numpy(np.float32), expected, err_msg=f"{rows_of} {name}")
        for feature in SPEC.online_item_features:
            expected = items.loc[rows["itemid"].astype("int64"), feature.name].to_numpy(np.float32)
            np.testing.assert_array_equal(rows[feature.name].to_numpy(np.float32), expected,
                                          err_msg=f"{rows_of} {feature.name}")
