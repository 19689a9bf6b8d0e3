"""Item list tables the driver computed, as Spark DataFrames for ``chispa`` comparisons."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F


def fits_frame(spark: SparkSession, tables: dict[int, pa.Table]) -> DataFrame:
    """(fit, owner, neighbours) from each fit's list table."""
    return spark.createDataFrame(pa.concat_tables(
        [table.add_column(0, "fit", pa.array(np.full(table.num_rows, fit, dtype=np.int32)))
         for fit, table in tables.items()]))


def fit_of(lists: DataFrame, fit: int) -> DataFrame:
    """One fit's rows of a (fit, owner, neighbours) frame, shaped as its list table."""
    return lists.filter(F.col("fit") == fit).drop("fit")
