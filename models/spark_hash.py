"""Spark's ``xxhash64`` of int and long columns, in NumPy: the same 64-bit value for the same inputs.

XXH64 over each value in turn, the hash so far as the next value's seed (42 first), as Spark's ``xxhash64``
chains its columns: a 4-byte input for an int column, 8 bytes for a long one. Whole arrays at once, in unsigned
64-bit arithmetic that wraps as Java's long does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

SPARK_SEED = 42
_PRIME_1, _PRIME_2, _PRIME_3, _PRIME_4, _PRIME_5 = (np.uint64(p) for p in (
    0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5))

Column = tuple[np.ndarray | int, Literal["int", "long"]]  # values, and the Spark type they are hashed as


def _rotate_left(value: np.ndarray, bits: int) -> np.ndarray:
    return (value << np.uint64(bits)) | (value >> np.uint64(64 - bits))


def _avalanche(value: np.ndarray) -> np.ndarray:
    value = (value ^ (value >> np.uint64(33))) * _PRIME_2
    value = (value ^ (value >> np.uint64(29))) * _PRIME_3
    return value ^ (value >> np.uint64(32))


def _as_unsigned(values: np.ndarray | int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).astype(np.uint64)


def _hash_int(values: np.ndarray | int, seed: np.ndarray) -> np.ndarray:
    low_bits = _as_unsigned(values) & np.uint64(0xFFFFFFFF)  # Spark's int as its unsigned 4 bytes
    mixed = (seed + _PRIME_5 + np.uint64(4)) ^ (low_bits * _PRIME_1)
    return _avalanche(_rotate_left(mixed, 23) * _PRIME_2 + _PRIME_3)


def _hash_long(values: np.ndarray | int, seed: np.ndarray) -> np.ndarray:
    lane = _rotate_left(_as_unsigned(values) * _PRIME_2, 31) * _PRIME_1
    mixed = (seed + _PRIME_5 + np.uint64(8)) ^ lane
    return _avalanche(_rotate_left(mixed, 27) * _PRIME_1 + _PRIME_4)


def xxhash64(columns: Sequence[Column]) -> np.ndarray:
    """int64 per row: Spark's ``xxhash64(columns...)`` (a plain int is a literal, the same in every row)."""
    hashed = np.asarray(np.uint64(SPARK_SEED))
    with np.errstate(over="ignore"):
        for values, spark_type in columns:
            hashed = (_hash_int if spark_type == "int" else _hash_long)(values, hashed)
    return np.atleast_1d(hashed).view(np.int64)
