"""Row sets a training loop reads by index, none of them materialised whole: the loaded samples
(``models/samples.py``), a view of some of them, the negatives assembled batch by batch from their source
rows (``models/negative_rows.py``), and a union of those."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
import torch

from contracts.feature_spec import SPEC


class TrainingRows(Protocol):
    def __len__(self) -> int: ...

    def features_at(self, index: np.ndarray) -> torch.Tensor:
        """float32 (len(index), len(spec)) rows in spec order."""
        ...

    def labels_at(self, index: np.ndarray) -> torch.Tensor: ...


def all_labels(rows: TrainingRows) -> np.ndarray:
    return rows.labels_at(np.arange(len(rows))).numpy()


def at_most(rows: TrainingRows, count: int | None, seed: int) -> TrainingRows:
    """``rows`` whole, or a fixed random ``count`` of them (in their order) where there are more."""
    if count is None or len(rows) <= count:
        return rows
    return RowView(rows, np.sort(np.random.default_rng(seed).choice(len(rows), count, replace=False)))


@dataclass(frozen=True)
class RowView:
    """Some rows of another row set (the loaded samples, a union), by position, without copying them."""

    base: TrainingRows
    rows: np.ndarray  # int64 positions in ``base``

    def __len__(self) -> int:
        return len(self.rows)

    def features_at(self, index: np.ndarray) -> torch.Tensor:
        return self.base.features_at(self.rows[index])

    def labels_at(self, index: np.ndarray) -> torch.Tensor:
        return self.base.labels_at(self.rows[index])


@dataclass(frozen=True)
class RowUnion:
    """Row sets one after another: positions 0..len(first)-1 are the first's, and so on."""

    parts: tuple[TrainingRows, ...]

    @cached_property
    def _ends(self) -> np.ndarray:
        return np.cumsum([len(part) for part in self.parts])

    @cached_property
    def _starts(self) -> np.ndarray:
        return self._ends - np.array([len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self.parts) else 0

    def _pieces(self, index: np.ndarray) -> list[tuple[np.ndarray, TrainingRows, np.ndarray]]:
        part_of = np.searchsorted(self._ends, index, side="right")
        pieces = []
        for number, part in enumerate(self.parts):
            where = np.flatnonzero(part_of == number)
            if len(where):
                pieces.append((where, part, index[where] - self._starts[number]))
        return pieces

    def features_at(self, index: np.ndarray) -> torch.Tensor:
        pieces = self._pieces(index)
        if not pieces:
            return torch.empty((0, len(SPEC.names)), dtype=torch.float32)
        if len(pieces) == 1:
            return pieces[0][1].features_at(pieces[0][2])
        blocks = [(where, part.features_at(local)) for where, part, local in pieces]
        out = torch.empty((len(index), blocks[0][1].shape[1]), dtype=torch.float32)
        for where, block in blocks:
            out[torch.from_numpy(where)] = block
        return out

    def labels_at(self, index: np.ndarray) -> torch.Tensor:
        out = torch.empty(len(index), dtype=torch.float32)
        for where, part, local in self._pieces(index):
            out[torch.from_numpy(where)] = part.labels_at(local)
        return out
