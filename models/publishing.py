"""Publishing trained models as versioned folders (``models/artifacts.py``), with their serving files: the
recall model's user and item vectors (Parquet, and as Delta tables beside the batch's), the ranking model's
ONNX graph after its parity check against PyTorch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from contracts.published import ModelFolder
from contracts.settings import SparkSettings
from contracts.tables import ModelFiles, Table
from models.artifacts import publish_model
from models.matrix_factorization import MatrixFactorization
from models.onnx_export import INPUT_NAME, OUTPUT_NAME, check_parity, export_onnx
from models.ranking_model import GroupedFactorizationMachine


def publish_recall(models_dir: Path, model: MatrixFactorization, training_metadata: dict) -> ModelFolder:
    users, items = model.export_vectors()

    def write_vectors(folder: Path) -> dict:
        # Row 0 of each table is "unknown"; the item rows are vocabulary indices, written as movie ids.
        pd.DataFrame({"userid": range(1, len(users)), "vector": list(users.numpy()[1:])}).to_parquet(
            folder / ModelFiles.USER_VECTORS, index=False)
        pd.DataFrame({"itemid": model.vocabulary.itemids, "vector": list(items.numpy()[1:])}).to_parquet(
            folder / ModelFiles.ITEM_VECTORS, index=False)
        model.vocabulary.write(folder / ModelFiles.ITEM_VOCABULARY)
        return {}

    return publish_model(models_dir, ModelFiles.RECALL, model, {
        "model": ModelFiles.RECALL, "embedding_dim": model.user_vectors.embedding_dim, "vector_dim": users.shape[1],
        **training_metadata}, write_vectors)


def publish_ranking(models_dir: Path, model: GroupedFactorizationMachine, training_metadata: dict,
                    parity_rows: torch.Tensor) -> ModelFolder:
    model.eval()

    def write_onnx(folder: Path) -> dict:
        model.vocabulary.write(folder / ModelFiles.ITEM_VOCABULARY)
        difference = check_parity(model, export_onnx(model, folder / ModelFiles.ONNX), parity_rows)
        return {"onnx_parity_max_abs_diff": difference}

    return publish_model(models_dir, ModelFiles.RANKING, model, {
        "model": ModelFiles.RANKING, "config": model.config.to_dict(), "onnx": ModelFiles.ONNX,
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, **training_metadata}, write_onnx)


def vectors_to_delta(settings: SparkSettings, folder: ModelFolder, run_id: str) -> None:
    """The recall vectors as Delta tables, written like every other table of the platform."""
    from pyspark.sql import SparkSession

    from spark_jobs.lake import write_table
    from spark_jobs.session import spark_session, stop_session

    active = SparkSession.getActiveSession()
    spark = active or spark_session(settings, "movielens-vectors")
    try:
        for table, file in ((Table.USER_VECTORS, ModelFiles.USER_VECTORS),
                            (Table.ITEM_VECTORS, ModelFiles.ITEM_VECTORS)):
            write_table(spark.read.parquet(str(folder.path / file)), settings, table, run_id)
    finally:
        if active is None:
            stop_session(spark)
