"""Does Feast serve what the batch computed? Two checks over the current batch output.

    python -m feature_repo.parity [--output DIR] [--online-store sqlite|redis] [--sample-users 200]

1. Online = batch: ``get_online_features`` for every item and a sample of users equals the batch's
   ``user_features`` / ``item_features`` rows (mapped through the response's feature names).
2. Feast's point-in-time join = the batch's rule: ``get_historical_features`` over ``user_history_fv``
   with the entity rows (userid, impression timestamp - 1 s) of every sample (train and test) gives the
   36 dense features of the user's history row of the latest second strictly before the impression
   (found here by ``pandas.merge_asof``; the trainer assembles its rows by the same rule). An impression
   with no earlier one has no history row: Feast's file offline store drops such entity rows, so they are
   joined back here and take the standardised counters of an empty past (-mean/std).

Run after ``python -m feature_repo.publish``. Exits non-zero on any difference.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from contracts.feature_spec import SPEC, Feature
from contracts.settings import FeastSettings
from contracts.tables import Export
from feature_repo.names import HISTORY_SERVICE, ITEM_SERVICE, USER_SERVICE
from feature_repo.publish import open_published_store

log = logging.getLogger(__name__)


def online_frame(store: FeatureStore, service: str, key: str, keys: Sequence[int]) -> pd.DataFrame:
    response = store.get_online_features(features=store.get_feature_service(service),
                                         entity_rows=[{key: int(k)} for k in keys]).to_dict()
    return pd.DataFrame(response).set_index(key)


def _differences(served: pd.DataFrame, batch: pd.DataFrame, features: Sequence[Feature]) -> int:
    columns = [f.name for f in features]
    ours = served.loc[batch.index, columns].to_numpy(np.float64)
    theirs = batch[columns].to_numpy(np.float64)
    return int((~np.isclose(ours, theirs, rtol=0, atol=0, equal_nan=False)).sum())


def online_parity(store: FeatureStore, exports: Path, sample_users: int, seed: int = 0) -> dict:
    users = pd.read_parquet(exports / Export.USER_FEATURES).set_index("userid")
    items = pd.read_parquet(exports / Export.ITEM_FEATURES).set_index("itemid")
    chosen = users.sample(n=min(sample_users, len(users)), random_state=seed)
    return {
        "users_checked": len(chosen),
        "user_cells_different": _differences(online_frame(store, USER_SERVICE, "userid", chosen.index), chosen,
                                             SPEC.online_user_features),
        "items_checked": len(items),
        "item_cells_different": _differences(online_frame(store, ITEM_SERVICE, "itemid", items.index), items,
                                             SPEC.online_item_features),
    }


def empty_past(exports: Path) -> dict[str, float]:
    """The standardised value of a zero counter, per dense feature: (0 - mean) / std."""
    metadata = json.loads((exports / Export.METADATA_FILE).read_text())
    return {f["name"]: np.float32((0.0 - f["mean"]) / f["std"]) for f in metadata["features"] if "mean" in f}


def as_of_history(samples: pd.DataFrame, exports: Path, dense: Sequence[str]) -> pd.DataFrame:
    """(userid, timestamp) rows plus the dense features of the user's history row of the latest second
    strictly before the timestamp, or of an empty past."""
    history = pd.read_parquet(exports / Export.USER_FEATURE_HISTORY, columns=["userid", "event_timestamp", *dense])
    history["timestamp"] = (history["event_timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    history = history.astype({"userid": "int64", "timestamp": "int64"}).drop(columns="event_timestamp")
    joined = pd.merge_asof(samples.sort_values("timestamp"), history.sort_values("timestamp"), on="timestamp",
                           by="userid", allow_exact_matches=False)
    return joined.fillna(empty_past(exports)).astype({name: "float32" for name in dense})


def historical_parity(store: FeatureStore, exports: Path) -> dict:
    dense = [f.name for f in SPEC.dense]
    samples = pd.concat([pd.read_parquet(exports / name, columns=["userid", "timestamp"])
                         for name in (Export.SAMPLES_TRAIN, Export.SAMPLES_TEST)], ignore_index=True)
    samples = as_of_history(samples.astype({"userid": "int64", "timestamp": "int64"}), exports, dense)
    # Microseconds: the Spark offline store rejects nanosecond timestamps.
    samples["event_timestamp"] = pd.to_datetime(samples["timestamp"] - 1, unit="s", utc=True).astype(
        "datetime64[us, UTC]")
    entity_rows = samples[["userid", "event_timestamp"]].drop_duplicates().reset_index(drop=True)
    joined = store.get_historical_features(entity_df=entity_rows,
                                           features=store.get_feature_service(HISTORY_SERVICE)).to_df()
    returned = int(joined[dense[0]].notna().sum())  # the file store drops rows, Spark's returns nulls
    joined["event_timestamp"] = pd.to_datetime(joined["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    joined = entity_rows.merge(joined[["userid", "event_timestamp", *dense]], on=["userid", "event_timestamp"],
                               how="left")
    without_history = joined[dense[0]].isna()
    joined = joined.fillna(empty_past(exports))
    by_key = samples.merge(joined, on=["userid", "event_timestamp"], how="left", suffixes=("", "_feast"))
    different = sum(int((by_key[name].to_numpy(np.float32) != by_key[f"{name}_feast"].to_numpy(np.float32)).sum())
                    for name in dense)
    return {"sample_rows": len(samples), "entity_rows": len(entity_rows), "rows_feast_returned": returned,
            "rows_without_earlier_history": int(without_history.sum()), "cells_different": different}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    FeastSettings.add_arguments(parser)
    parser.add_argument("--sample-users", type=int, default=200)
    args = parser.parse_args(argv)
    settings = FeastSettings.from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = open_published_store(settings)
    exports = settings.current_export_dir
    report = {"online": online_parity(store, exports, args.sample_users),
              "historical": historical_parity(store, exports)}
    print(json.dumps(report, indent=2))
    failed = report["online"]["user_cells_different"] + report["online"]["item_cells_different"] \
        + report["historical"]["cells_different"]
    if failed:
        raise SystemExit(f"Feast and the batch disagree on {failed} value(s)")
    return report


if __name__ == "__main__":
    main()
