"""Which rows a model learns from, which pick its epoch, and which test it: carved from the batch's splits.

The epoch is chosen on a validation slice of the train rows (``models/validation.py``) by default, and the
test AUC of the chosen epoch is computed once afterwards. ``select_on="test"`` is the reference design's
protocol (stop on the test AUC and report it), kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from contracts.tables import Export
from models.negative_rows import ImpressionIndex, NegativeRows
from models.samples import Samples
from models.training_rows import RowUnion, RowView, TrainingRows
from models.validation import ValidationRule, validation_mask

ON_VALIDATION, ON_TEST = "validation", "test"


@dataclass(frozen=True)
class Selection:
    """How the epoch is chosen: on the validation slice (default) or on the test rows (reference)."""

    select_on: str = ON_VALIDATION
    rule: ValidationRule = field(default_factory=ValidationRule)
    refit: bool = False

    def __post_init__(self) -> None:
        if self.select_on not in (ON_VALIDATION, ON_TEST):
            raise ValueError(f"select_on must be {ON_VALIDATION!r} or {ON_TEST!r}, not {self.select_on!r}")
        if self.refit and self.select_on == ON_TEST:
            raise ValueError("--refit folds the validation slice back in: there is none with --select-on test")


@dataclass(frozen=True)
class DataSplits:
    fit: TrainingRows  # what the weights learn from
    selection: TrainingRows  # what picks the epoch
    test: Samples  # touched once, after selection (unless selection is on test)
    selection_plan: Selection
    selection_rows: dict | None = None  # which train rows are the selection slice, said in the metadata

    @classmethod
    def carve(cls, train_set: Samples, test_set: Samples, plan: Selection | None = None,
              negatives: NegativeRows | None = None, held_out: ValidationHoldout | None = None) -> DataSplits:
        """Validation slice from the train rows; a sampled negative follows the row it was drawn for.

        The slice is the plan's rule over each user's train rows, or, given ``held_out``, exactly the batch's
        validation hold-out impressions (then the model learns nothing the validation replay holds out).
        The test rows stay rated rows only, so the test AUC remains the reference design's figure.
        """
        plan = plan or Selection()
        if plan.select_on == ON_TEST:
            fit = train_set if negatives is None else RowUnion((train_set, negatives))
            return cls(fit, test_set, test_set, plan)
        if train_set.timestamps is None:
            raise ValueError("carving a validation slice needs the samples' timestamps")
        mask, described = cls.selection_mask(train_set, plan, negatives, held_out)
        fit: TrainingRows = RowView(train_set, np.flatnonzero(~mask))
        selection: TrainingRows = RowView(train_set, np.flatnonzero(mask))
        if negatives is not None:
            for_selection = negatives.drawn_for(mask)
            fit = RowUnion((fit, negatives.subset(~for_selection)))
            selection = RowUnion((selection, negatives.subset(for_selection)))
        return cls(fit, selection, test_set, plan, described)

    @staticmethod
    def selection_mask(train_set: Samples, plan: Selection, negatives: NegativeRows | None = None,
                       held_out: ValidationHoldout | None = None) -> tuple[np.ndarray, dict]:
        """The train rows ``carve`` makes the selection slice, and what they are (for the metadata): the held-out
        impressions where they are train rows, else the plan's rule."""
        if held_out is not None:
            mask = held_out.mask(train_set, negatives.impressions if negatives is not None else None)
            if mask.any():  # else (data too small for a validation hold-out) the rule below
                return mask, {"rows": f"the batch's {Export.VALIDATION_HOLDOUT} impressions",
                              "impressions": len(held_out.userids), "train_rows": int(mask.sum())}
        mask = validation_mask(train_set.column("userid"), train_set.column("itemid"), train_set.timestamps,
                               plan.rule)
        return mask, plan.rule.to_dict()


@dataclass(frozen=True)
class ValidationHoldout:
    """The batch's validation hold-out impressions (``validation_holdout``) as (user, item, timestamp) keys."""

    userids: np.ndarray
    itemids: np.ndarray
    timestamps: np.ndarray

    @classmethod
    def read(cls, exports: Path) -> ValidationHoldout | None:
        """None where the batch wrote no validation hold-out (an older run)."""
        path = exports / Export.VALIDATION_HOLDOUT
        if not path.exists():
            return None
        table = pq.read_table(path, columns=["userid", "itemid", "timestamp"])
        return cls(*(table.column(name).to_numpy().astype(np.int64) for name in ("userid", "itemid", "timestamp")))

    def mask(self, train_set: Samples, impressions: ImpressionIndex | None = None) -> np.ndarray:
        """True for the train rows that are one of these impressions."""
        impressions = impressions or ImpressionIndex.of(train_set)
        numbers = impressions.find(self.userids, self.timestamps, self.itemids)
        chosen = np.zeros(impressions.count, dtype=bool)
        chosen[numbers[numbers >= 0]] = True
        return chosen[impressions.of_row]
