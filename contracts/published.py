"""Opening what the stages publish: the batch run that ``exports/current`` points to and the model versions
that ``models/<model>/current`` point to, each checked against this code's feature spec.

Every reader (the trainers, the evaluation, the loaders, the service) opens them here, so all of them
read the same versions the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import NotPublishedError
from contracts.feature_spec import SPEC, FeatureSpec, check_spec_version
from contracts.settings import LakeSettings
from contracts.tables import Export, ModelFiles


@dataclass(frozen=True)
class ModelFolder:
    """One published model version: weights, metadata (with the spec version) and its files."""

    path: Path

    @property
    def weights(self) -> Path:
        return self.path / ModelFiles.WEIGHTS

    @property
    def metadata_path(self) -> Path:
        return self.path / ModelFiles.METADATA

    def metadata(self) -> dict:
        return json.loads(self.metadata_path.read_text())

    @property
    def version(self) -> str:
        return self.metadata()["version"]


def open_model(path: Path, spec: FeatureSpec = SPEC) -> ModelFolder:
    """A model folder (or a model's root, meaning its current version), after the spec check."""
    if (path / ModelFiles.CURRENT).exists():
        path = (path / ModelFiles.CURRENT).resolve()
    folder = ModelFolder(path)
    check_spec_version(folder.metadata()["spec_version"], f"the model in {path}", spec)
    return folder


def open_models(models_dir: Path) -> tuple[ModelFolder | None, ModelFolder | None]:
    """(recall, ranking) current versions, None where a model was not trained."""
    found = []
    for name in (ModelFiles.RECALL, ModelFiles.RANKING):
        root = models_dir / name
        found.append(open_model(root) if (root / ModelFiles.CURRENT).exists() else None)
    return found[0], found[1]


def open_next_item(models_dir: Path) -> ModelFolder | None:
    """The sequence model's current version, None where none was trained (the final order does without it)."""
    root = models_dir / ModelFiles.NEXT_ITEM
    return open_model(root) if (root / ModelFiles.CURRENT).exists() else None


def open_fusion(models_dir: Path) -> dict | None:
    """The current fusion choice's metadata (its ``weights`` and the validation figures), None before one."""
    root = models_dir / ModelFiles.FUSION
    if not (root / ModelFiles.CURRENT).exists():
        return None
    return open_model(root).metadata()


@dataclass(frozen=True)
class Published:
    """The batch run and the models serving now, and their versions."""

    exports: Path  # the resolved export folder of the current batch run
    recall_model: ModelFolder
    ranking_model: ModelFolder
    versions: dict[str, str]  # data_run, feature_spec, recall_model, ranking_model, [next_item_model,] exports
    # The last event-log record the run read (its ratings include every posted one up to it); 0: none.
    events_through: int = 0
    next_item_model: ModelFolder | None = None  # None: none trained


def open_exports(exports: Path) -> dict:
    """The manifest of a published run's export folder, after the spec check."""
    manifest_path = exports / Export.MANIFEST_FILE
    if not manifest_path.exists():
        raise NotPublishedError(f"{exports} has no {Export.MANIFEST_FILE}: run the batch "
                                "(python -m spark_jobs.run_batch)")
    manifest = json.loads(manifest_path.read_text())
    check_spec_version(manifest["spec_version"], f"the batch output in {exports}")
    return manifest


def open_published(lake: LakeSettings, exports: Path | None = None) -> Published:
    """The current batch run (or ``exports``) and models, spec-checked: what the loaders and the service read."""
    folder = exports or lake.current_export_dir
    manifest = open_exports(folder)
    recall_model, ranking_model = open_models(lake.models_dir)
    if recall_model is None or ranking_model is None:
        raise NotPublishedError(f"no trained models under {lake.models_dir}: run python -m models.train")
    resolved = folder.resolve()
    next_item_model = open_next_item(lake.models_dir)
    versions = {"data_run": manifest["run_id"], "feature_spec": SPEC.version, "recall_model": recall_model.version,
                "ranking_model": ranking_model.version,
                **({"next_item_model": next_item_model.version} if next_item_model is not None else {}),
                "exports": resolved.name}
    return Published(resolved, recall_model, ranking_model, versions, int(manifest.get("events_through", 0)),
                     next_item_model)
