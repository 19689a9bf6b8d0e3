"""Train the recall and ranking models from the batch's exports, then publish their artifacts.

    python -m models.train [--output DIR] [--exports DIR] [--only recall|ranking|next_item]
                           [--variant fm|fm_dense|deepfm] [--select-on validation|test] [--refit] [--seed N]
                           [--no-next-item] [--next-item-epochs N] [--next-item-seconds S]

Reads ``<exports>/samples_train`` and ``samples_test`` (default: the batch's ``exports/current``),
checks their feature-spec version, trains (``models/fitting.py``), and writes versioned folders under
``<output>/models/`` (``models/publishing.py``): the epoch is chosen on a validation slice of the train
split (``models/data_splits.py``) and the test AUC of that epoch is computed once afterwards.
``--select-on test`` is the reference design's protocol (stop on the test AUC and report it), kept for
comparison. ``--refit`` retrains on train + validation for the chosen number of epochs before the test AUC
is taken. ``recall/`` (weights, user and item vectors as Parquet), ``ranking/`` (weights, ONNX,
metadata) and, where the batch wrote a validation hold-out, ``next_item/``: the sequence model
(``models/next_item_training.py``), one of the final order's inputs, whose weights (``fusion/``) are
chosen last, once every model is published. The vectors also become the Delta tables ``user_vectors``
and ``item_vectors`` (unless ``--no-delta``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace

from contracts.published import open_models
from contracts.settings import RecallSettings, TrainingSettings
from contracts.tables import Export, ModelFiles
from models.candidate_selection import CandidateSelection
from models.data_splits import ON_VALIDATION, DataSplits, Selection, ValidationHoldout
from models.export_readers import load_item_features
from models.feature_rows import FeatureAssembler
from models.fitting import (
    RANKING,
    RANKING_TRAINING,
    RECALL,
    RECALL_BPR,
    RECALL_TRAINING,
    VARIANTS,
    train_ranking,
    train_recall,
    train_recall_bpr,
    training_metadata,
)
from models.fusion_choice import choose_and_publish
from models.item_vocabulary import ItemVocabulary
from models.negative_draws import draw_negatives, rated_in_run
from models.next_item_training import train_next_item
from models.popular_negatives import popular_negatives
from models.process_memory import resident_gib
from models.publishing import publish_ranking, publish_recall, vectors_to_delta
from models.recall_sources import RecallConfig
from models.samples import FeatureMetadata, Samples, load_samples
from models.sequence_training import SequenceSettings
from models.validation import ValidationRule
from models.validation_replay import ValidationData
from spark_jobs.driver_memory import return_freed_memory, use_returning_allocators

log = logging.getLogger(__name__)

NEXT_ITEM_PATIENCE = 2  # checks (of 5 epochs) without a better validation score before the sequence model stops


def train_and_publish(settings: TrainingSettings) -> dict:
    use_returning_allocators()
    exports = settings.training_exports
    metadata = FeatureMetadata.read(exports)
    vocabulary = ItemVocabulary.read(exports / Export.ITEM_VOCABULARY)
    overrides = {k: v for k, v in (("max_epochs", settings.max_epochs), ("seed", settings.seed)) if v is not None}
    plan = Selection(settings.select_on, ValidationRule(percent=settings.validation_percent), settings.refit)
    summary: dict = {"exports": str(exports), "selected_on": plan.select_on, "refit": plan.refit}
    trained, replay = train_on_samples(settings, metadata, vocabulary, plan, overrides)
    summary |= trained
    # The samples and negatives (~10 GiB at ML-25M's size) went with that call: the sequence model reads its own
    # data, and would otherwise add its peak to theirs.
    return_freed_memory()
    has_validation = (exports / Export.VALIDATION_HOLDOUT).exists()
    if settings.next_item_model and settings.train_only in (None, ModelFiles.NEXT_ITEM) and has_validation:
        log.info("samples released; resident %s GiB (now, peak)", resident_gib())
        sequence = SequenceSettings(**{"max_epochs": settings.next_item_epochs, **overrides},
                                    max_seconds=settings.next_item_seconds, patience=NEXT_ITEM_PATIENCE)
        folder, next_item_metadata = train_next_item(exports, settings.models_dir, sequence, metadata.run_id)
        summary[ModelFiles.NEXT_ITEM] = {k: next_item_metadata[k] for k in (
            "best_epoch", "epochs_run", "stopped", "best_score", "seconds")} | {"path": str(folder.path)}
        log.info("next-item model trained; resident %s GiB (now, peak)", resident_gib())
    if has_validation:
        # The final order's weights depend on both models: chosen on validation once they are published.
        choice = choose_and_publish(exports, settings.models_dir, RecallSettings().recall_size, replay,
                                    settings.quota_choice)
        summary[ModelFiles.FUSION] = {k: v for k, v in choice.items() if k.startswith(("weights", "validation"))}
    return summary


def train_on_samples(settings: TrainingSettings, metadata: FeatureMetadata, vocabulary: ItemVocabulary,
                     plan: Selection, overrides: dict) -> tuple[dict, ValidationData | None]:
    """The recall and ranking models, both trained from the samples this call holds: their summaries, and the
    validation replay's data where the ranker's selection loaded it (the fusion choice reuses it)."""
    exports = settings.training_exports
    train_set, test_set = load_samples(exports, Export.SAMPLES_TRAIN), load_samples(exports, Export.SAMPLES_TEST)
    log.info("samples from %s: %d train, %d test (batch run %s); resident %s GiB (now, peak)", exports,
             len(train_set), len(test_set), metadata.run_id, resident_gib())
    # Both models' steps and epochs at scale; the selection sample is the ranker's (BPR samples users).
    scale = {k: v for k, v in (("batch_size", settings.batch_size), ("epoch_rows", settings.epoch_rows))
             if v is not None}
    summary: dict = {}
    if settings.train_only in (None, RECALL):
        summary[RECALL] = train_recall_model(settings, metadata, vocabulary, train_set, test_set, plan,
                                             overrides, scale)
    replay = None
    if settings.train_only in (None, RANKING):
        summary[RANKING], replay = train_ranking_model(settings, metadata, vocabulary, train_set, test_set, plan,
                                                       overrides, scale)
    return summary, replay


def train_recall_model(settings: TrainingSettings, metadata: FeatureMetadata, vocabulary: ItemVocabulary,
                       train_set: Samples, test_set: Samples, plan: Selection, overrides: dict, scale: dict) -> dict:
    if settings.recall_objective == "bpr":
        model, recall_metadata = train_recall_bpr(metadata, vocabulary, train_set, test_set, plan.rule,
                                                  replace(RECALL_BPR, **overrides, **scale))
    else:
        config = replace(RECALL_TRAINING, **overrides)
        splits = DataSplits.carve(train_set, test_set, plan)
        model, report = train_recall(metadata, vocabulary, splits, config=config)
        recall_metadata = {"objective": "pointwise", **training_metadata(metadata, report, config)}
    folder = publish_recall(settings.models_dir, model, recall_metadata)
    if settings.vectors_to_delta:
        vectors_to_delta(settings, folder, metadata.run_id)
    log.info("recall trained; resident %s GiB (now, peak)", resident_gib())
    return {k: v for k, v in recall_metadata.items() if "history" not in k} | {"path": str(folder.path)}


def train_ranking_model(settings: TrainingSettings, metadata: FeatureMetadata, vocabulary: ItemVocabulary,
                        train_set: Samples, test_set: Samples, plan: Selection, overrides: dict,
                        scale: dict) -> tuple[dict, ValidationData | None]:
    exports = settings.training_exports
    # The ranker learns nothing the validation replay holds out, so the choices made there are fair to it.
    held_out = ValidationHoldout.read(exports) if plan.select_on == ON_VALIDATION else None
    negatives = None
    if settings.ranking_negatives and settings.negatives_per_impression:
        assembler = FeatureAssembler.from_item_features(load_item_features(exports))
        negatives = draw_negatives(train_set, rated_in_run(exports, (train_set, test_set), vocabulary), vocabulary,
                                   settings.negatives_per_impression, assembler)
        if settings.popular_negatives:
            fit_rows = ~DataSplits.selection_mask(train_set, plan, negatives, held_out)[0]
            negatives = negatives.joined(popular_negatives(
                negatives, fit_rows, settings.popular_negatives, overrides.get("seed", RANKING_TRAINING.seed),
                settings.popular_exponent))
        log.info("%d negatives; resident %s GiB (now, peak)", len(negatives), resident_gib())
    ranking_splits = DataSplits.carve(train_set, test_set, plan, negatives, held_out)
    del negatives  # the splits hold their own parts of it
    candidates, replay = None, None
    if held_out is not None and settings.ranker_selection == "candidates" and open_models(settings.models_dir)[0]:
        replay = ValidationData.load(exports, settings.models_dir)
        candidates = CandidateSelection.recall(replay, RecallConfig(recall_size=RecallSettings().recall_size))
    selection = {"selection_rows": settings.selection_rows} if settings.selection_rows is not None else {}
    config = replace(RANKING_TRAINING, **overrides, **scale, **selection)
    model, report = train_ranking(metadata, vocabulary, ranking_splits, VARIANTS[settings.ranking_variant], config,
                                  candidates)
    ranking_metadata = {**training_metadata(metadata, report, config),
                        "negatives": {"uniform_per_impression": settings.negatives_per_impression,
                                      "popular_per_impression": settings.popular_negatives,
                                      "popular_exponent": settings.popular_exponent}}
    folder = publish_ranking(settings.models_dir, model, ranking_metadata, test_set.features)
    log.info("ranking trained; resident %s GiB (now, peak)", resident_gib())
    return {"variant": settings.ranking_variant, **report.to_metadata(), "seconds": round(report.result.seconds, 1),
            "path": str(folder.path)}, replay


def main(argv: Sequence[str] | None = None) -> dict:
    settings = TrainingSettings.parse(argv, __doc__ or "")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = train_and_publish(settings)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
