"""What the loaders publish from: the batch run and the models that ``current`` points to, with their
versions. Loaders read only these declared artifacts (through ``models.recall_data``, the same readers
the embedded service uses), so both profiles start from the same arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import ModelFolder
from models.recall_data import open_models
from spark_jobs.feature_spec import SPEC, check_spec_version
from spark_jobs.settings import Settings


class NothingToLoadError(RuntimeError):
    """The batch or a model the loader needs has not been produced yet."""


@dataclass(frozen=True)
class Published:
    exports: Path  # the resolved export folder of the current batch run
    recall_model: ModelFolder
    ranking_model: ModelFolder
    versions: dict[str, str]  # data_run, feature_spec, recall_model, ranking_model, exports


def open_published(settings: Settings) -> Published:
    current = settings.current_export_dir
    if not (current / "manifest.json").exists():
        raise NothingToLoadError(f"{current} has no manifest.json: run the batch (python -m spark_jobs.run_batch)")
    manifest = json.loads((current / "manifest.json").read_text())
    check_spec_version(manifest["spec_version"], f"the batch output in {current}")
    recall_model, ranking_model = open_models(settings.models_dir)
    if recall_model is None or ranking_model is None:
        raise NothingToLoadError(f"no trained models under {settings.models_dir}: run python -m models.train")
    exports = current.resolve()
    versions = {"data_run": manifest["run_id"], "feature_spec": SPEC.version,
                "recall_model": recall_model.metadata()["version"],
                "ranking_model": ranking_model.metadata()["version"], "exports": exports.name}
    return Published(exports, recall_model, ranking_model, versions)
