"""Writing a model version: weights, metadata (with the feature-spec version) and the model's own files.

    <models>/<name>/<version>/{weights.pt, metadata.json, model.onnx | user_vectors.parquet, ...}
    <models>/<name>/current -> <version>

A version folder is written under a temporary name and renamed when complete, then ``current`` is
switched; a failure on the way leaves nothing behind and ``current`` where it was. Reading a published
version is ``contracts.published.open_model``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from contracts.atomic import switch_link
from contracts.feature_spec import SPEC, FeatureSpec
from contracts.published import ModelFolder
from contracts.tables import ModelFiles

if TYPE_CHECKING:  # torch is needed to save weights, not to read a published model's files
    from torch import nn


def new_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class StagedModel:
    """A version folder being written, as a context manager: ``with StagedModel(root, name) as staged:``
    write into ``staged.staging`` and ``staged.save(...)``; a clean exit publishes it (``staged.published``),
    an exception discards it."""

    def __init__(self, models_dir: Path, name: str) -> None:
        self.root = models_dir / name
        self.version = new_version()
        self.staging = self.root / f".staging-{self.version}"
        self.folder = ModelFolder(self.staging)
        self.published: ModelFolder | None = None

    def __enter__(self) -> StagedModel:
        self.staging.mkdir(parents=True)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        final = self.root / self.version
        self.staging.rename(final)
        switch_link(self.root / ModelFiles.CURRENT, final)
        self.published = ModelFolder(final)

    def save(self, model: nn.Module, metadata: dict, spec: FeatureSpec = SPEC) -> None:
        import torch

        torch.save(model.state_dict(), self.folder.weights)
        self.save_metadata(metadata, spec)

    def save_metadata(self, metadata: dict, spec: FeatureSpec = SPEC) -> None:
        """The version's metadata (with the spec it belongs to): all a version without weights holds."""
        full = {"spec_version": spec.version, "columns": list(spec.names), "version": self.version, **metadata}
        self.folder.metadata_path.write_text(json.dumps(full, indent=2))


def publish_model(models_dir: Path, name: str, model: nn.Module, metadata: dict,
                  write_files: Callable[[Path], dict] | None = None) -> ModelFolder:
    """Stage ``name``'s new version (the files ``write_files`` writes into the folder, whose returned entries
    join the metadata; then weights and metadata) and publish it."""
    with StagedModel(models_dir, name) as staged:
        extra = write_files(staged.staging) if write_files is not None else {}
        staged.save(model, {**metadata, **extra})
    assert staged.published is not None  # a clean exit published it
    return staged.published
