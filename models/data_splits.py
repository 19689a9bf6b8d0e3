"""Which rows a model learns from, which pick its epoch, and which test it: carved from the batch's splits.

The epoch is chosen on a validation slice of the train rows (``models/validation.py``) by default, and the
test AUC of the chosen epoch is computed once afterwards. ``select_on="test"`` is the reference design's
protocol (stop on the test AUC and report it), kept for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.negative_rows import NegativeRows
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

    @classmethod
    def carve(cls, train_set: Samples, test_set: Samples, plan: Selection | None = None,
              negatives: NegativeRows | None = None) -> DataSplits:
        """Validation slice from the train rows; a sampled negative follows the row it was drawn for.

        The test rows stay rated rows only, so the test AUC remains the reference design's figure.
        """
        plan = plan or Selection()
        if plan.select_on == ON_TEST:
            fit = train_set if negatives is None else RowUnion((train_set, negatives))
            return cls(fit, test_set, test_set, plan)
        if train_set.timestamps is None:
            raise ValueError("carving a validation slice needs the samples' timestamps")
        mask = validation_mask(train_set.column("userid"), train_set.column("itemid"), train_set.timestamps,
                               plan.rule)
        fit: TrainingRows = RowView(train_set, np.flatnonzero(~mask))
        selection: TrainingRows = RowView(train_set, np.flatnonzero(mask))
        if negatives is not None:
            for_selection = negatives.drawn_for(mask)
            fit = RowUnion((fit, negatives.subset(~for_selection)))
            selection = RowUnion((selection, negatives.subset(for_selection)))
        return cls(fit, selection, test_set, plan)
