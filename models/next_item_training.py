"""The sequence model's training from a batch run's exports, its epochs chosen on validation, and its publication.

The model learns each user's offline impressions in the batch's order (``samples_train`` and ``samples_test``)
without their validation ones (``validation_holdout``): the fusion choice then weighs it on exactly those held-out
impressions (``models/fusion_choice.py``), as it weighs the ranker, which was trained without them too. Its epochs
are chosen by NDCG@50 of its own top 50 (the history excluded) against each validation user's liked validation
items, over the validation replay's users (``models/validation_replay.py``: the same fixed sample beyond
``VALIDATION_USERS``). The model so chosen is the one published and served: retraining it on the validation
impressions as well would double the training time, and at request time it reads every user's latest items,
those included.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from contracts.published import ModelFolder
from contracts.tables import Export, ModelFiles
from models.artifacts import publish_model
from models.evaluate import metrics_at
from models.export_readers import liked_holdout
from models.item_vocabulary import ItemVocabulary
from models.next_item_export import check_next_item_parity, export_next_item
from models.sequence_model import CausalSequenceModel
from models.sequence_training import SequenceSettings, fit, left_padded, top_unseen, user_sequences
from models.validation_replay import sampled_users

log = logging.getLogger(__name__)

CHOICE_K = 50
PARITY_USERS = 64


def offline_impressions(exports: Path, vocabulary: ItemVocabulary) -> pd.DataFrame:
    """(userid, itemid, timestamp, item_index) of every offline impression (``samples_train`` and ``samples_test``)."""
    impressions = pd.concat([pd.read_parquet(exports / name, columns=["userid", "itemid", "timestamp"])
                             for name in (Export.SAMPLES_TRAIN, Export.SAMPLES_TEST)], ignore_index=True)
    return impressions.assign(item_index=vocabulary.index_of(impressions["itemid"].to_numpy()))


def sequences_before_validation(exports: Path, vocabulary: ItemVocabulary) -> dict[int, np.ndarray]:
    """Per user the vocabulary indices of their offline impressions in the batch's order, the validation hold-out
    left out."""
    held = pd.read_parquet(exports / Export.VALIDATION_HOLDOUT, columns=["userid", "itemid", "timestamp"])
    marked = offline_impressions(exports, vocabulary).merge(held.assign(held=True),
                                                            on=["userid", "itemid", "timestamp"], how="left")
    return user_sequences(marked[marked["held"].isna()])


def validation_targets(exports: Path, users: dict[int, np.ndarray]) -> dict[int, set[int]]:
    """The liked validation items of the users with a history, as movie ids, for the validation replay's users
    (``sampled_users``)."""
    return {u: items for u, items in sampled_users(liked_holdout(exports, Export.VALIDATION_HOLDOUT)).items()
            if u in users}


def own_list_ndcg(model: CausalSequenceModel, histories: dict[int, np.ndarray], targets: dict[int, set[int]],
                  vocabulary: ItemVocabulary, k: int = CHOICE_K) -> float:
    """Mean NDCG@k of the model's own top k (history excluded) over the users of ``targets``."""
    lists = top_unseen(model, {u: histories[u] for u in targets}, k)
    ndcgs = [metrics_at(vocabulary.itemid_of(lists[u][0]), targets[u], k).ndcg for u in targets]
    return float(np.mean(ndcgs)) if ndcgs else 0.0


def train_next_item(exports: Path, models_dir: Path, settings: SequenceSettings,
                    run_id: str) -> tuple[ModelFolder, dict]:
    """Fit on the offline impressions before validation, epochs chosen there; publish the ONNX graph with the
    vocabulary and the spec version (``models/artifacts.py``)."""
    started = time.monotonic()
    vocabulary = ItemVocabulary.read(exports / Export.ITEM_VOCABULARY)
    sequences = sequences_before_validation(exports, vocabulary)
    targets = validation_targets(exports, sequences)
    log.info("next-item model: %d users' sequences, %d validation users, vocabulary %d", len(sequences),
             len(targets), vocabulary.size)
    model, report = fit(sequences, vocabulary.size, settings,
                        validate=(lambda m: own_list_ndcg(m, sequences, targets, vocabulary)) if targets else None)
    report["seconds"] = round(time.monotonic() - started, 1)

    def write_files(folder: Path) -> dict:
        files = export_next_item(model, vocabulary, folder)
        users = sorted(sequences)[:PARITY_USERS]
        windows = np.stack([left_padded(sequences[u], model.max_length) for u in users])
        histories = np.where(windows > 0, vocabulary.itemid_of(np.maximum(windows, 1)), 0)
        candidates = np.resize(vocabulary.itemids, (len(users), min(200, len(vocabulary.itemids))))
        candidates[:, -1] = vocabulary.max_itemid + 1  # a movie outside the vocabulary
        difference = check_next_item_parity(model, vocabulary, folder, histories, candidates)
        return {**files, "onnx_parity_max_abs_diff": difference}

    metadata = {"model": ModelFiles.NEXT_ITEM, "data_run_id": run_id, "settings": asdict(settings),
                "vocabulary_size": vocabulary.size, "trained_on": "offline impressions without the validation hold-out",
                f"validation_ndcg@{CHOICE_K}_own_list": report["best_score"], **report}
    folder = publish_model(models_dir, ModelFiles.NEXT_ITEM, model, metadata, write_files)
    log.info("next-item model: epoch %s of %d, validation NDCG@%d of its own list %s, %.0f s -> %s",
             report["best_epoch"], settings.max_epochs, CHOICE_K, report["best_score"], report["seconds"], folder.path)
    return folder, metadata


def load_next_item(folder: ModelFolder) -> tuple[CausalSequenceModel, ItemVocabulary]:
    """A published sequence model in PyTorch, with the vocabulary its item rows are indexed by."""
    metadata = folder.metadata()
    known = {f.name for f in fields(SequenceSettings)}
    settings = SequenceSettings(**{k: v for k, v in metadata["settings"].items() if k in known})
    model = CausalSequenceModel(int(metadata["vocabulary_size"]), settings.dim, settings.blocks, settings.heads,
                                settings.max_length, settings.dropout)
    model.load_state_dict(torch.load(folder.weights, weights_only=True))
    return model.eval(), ItemVocabulary.read(folder.path / ModelFiles.ITEM_VOCABULARY)
