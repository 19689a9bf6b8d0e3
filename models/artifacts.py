"""Versioned model folders: weights, ONNX, metadata (with the feature-spec version), AUC history.

    <models>/<name>/<version>/{weights.pt, metadata.json, model.onnx | user_vectors.parquet, ...}
    <models>/<name>/current -> <version>

A version folder is written under a temporary name and renamed when complete, then ``current`` is
switched; loading checks the spec version the model was trained with against the code's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.atomic import switch_link
from spark_jobs.feature_spec import SPEC, FeatureSpec, check_spec_version

if TYPE_CHECKING:  # torch is needed to save weights, not to read a published model's files
    from torch import nn

WEIGHTS_FILE = "weights.pt"
METADATA_FILE = "metadata.json"
CURRENT = "current"


def new_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


@dataclass(frozen=True)
class ModelFolder:
    path: Path

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def metadata_path(self) -> Path:
        return self.path / METADATA_FILE

    def metadata(self) -> dict:
        return json.loads(self.metadata_path.read_text())


class StagedModel:
    """A version folder being written; ``publish`` renames it into place and switches ``current``."""

    def __init__(self, models_dir: Path, name: str) -> None:
        self.root = models_dir / name
        self.version = new_version()
        self.staging = self.root / f".staging-{self.version}"
        self.staging.mkdir(parents=True)
        self.folder = ModelFolder(self.staging)

    def save(self, model: nn.Module, metadata: dict, spec: FeatureSpec = SPEC) -> None:
        import torch

        torch.save(model.state_dict(), self.folder.weights)
        full = {"spec_version": spec.version, "columns": list(spec.names), "version": self.version, **metadata}
        self.folder.metadata_path.write_text(json.dumps(full, indent=2))

    def publish(self) -> ModelFolder:
        final = self.root / self.version
        self.staging.rename(final)
        switch_link(self.root / CURRENT, final)
        return ModelFolder(final)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def open_model(path: Path, spec: FeatureSpec = SPEC) -> ModelFolder:
    """A model folder (or a model's root, meaning its current version), after the spec check."""
    if (path / CURRENT).exists():
        path = (path / CURRENT).resolve()
    folder = ModelFolder(path)
    check_spec_version(folder.metadata()["spec_version"], f"the model in {path}", spec)
    return folder
