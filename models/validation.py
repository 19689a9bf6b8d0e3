"""The validation slice: what model selection (early stopping, best epoch) looks at instead of the test rows.

Per user, the last part of their *train* impressions in time order, so validation always lies after
that user's remaining train rows and before their test rows, as a future the model has not seen:

- a user with ``min_train_rows`` or more train rows gives the last ``percent``% of them (rounded
  down, at least one) to validation;
- a user with fewer keeps them all in train.

Test rows never enter it: the test AUC of the chosen epoch is computed once, after selection.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ValidationRule:
    percent: int = 10
    min_train_rows: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.percent < 100 or self.min_train_rows < 2:
            raise ValueError(f"a validation slice needs 0 < percent < 100 and min_train_rows >= 2, got {self}")

    def to_dict(self) -> dict:
        return {**asdict(self), "order": "per user by (timestamp, itemid); the last rows are validation"}


def validation_mask(userids: np.ndarray, itemids: np.ndarray, timestamps: np.ndarray,
                    rule: ValidationRule) -> np.ndarray:
    """True for the rows of the train split that form the validation slice."""
    # One sort by (user, timestamp, itemid), then each row's rank from the end of its user's run.
    order = np.lexsort((itemids, timestamps, userids))
    sorted_users = userids[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    slice_sizes = np.where(sizes >= rule.min_train_rows, np.maximum(1, sizes * rule.percent // 100), 0)
    rank_from_end = np.repeat(starts + sizes, sizes) - np.arange(len(order))  # 1 for a user's last row
    mask = np.zeros(len(order), dtype=bool)
    mask[order] = rank_from_end <= np.repeat(slice_sizes, sizes)
    return mask
