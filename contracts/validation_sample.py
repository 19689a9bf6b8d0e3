"""Who the validation choices are made on: the users with a liked validation impression (``validation_holdout``,
label 1), beyond ``VALIDATION_USERS`` of them a fixed random sample.

Both sides of the batch's contract read this rule: the trainers replay these users (``models/validation_replay.py``,
``models/next_item_training.py``), and the batch fits the validation EASE lists (``validation_user_ease``) for these
users only (``spark_jobs/item_models.py``): scoring every user against the validation fit, when at most
``VALIDATION_USERS`` of them are ever read, was ~12x the work needed at 10M ratings (60,606 users).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

VALIDATION_USERS = 5_000
SAMPLE_SEED = 0


def validation_sample(userids: Iterable[int]) -> list[int]:
    """Of these distinct user ids (the users with a liked validation impression): all of them, ascending, up to
    ``VALIDATION_USERS``; beyond, a fixed random sample of that many, in the order drawn."""
    ordered = np.array(sorted(int(u) for u in userids), dtype=np.int64)
    if len(ordered) <= VALIDATION_USERS:
        return ordered.tolist()
    return np.random.default_rng(SAMPLE_SEED).choice(ordered, VALIDATION_USERS, replace=False).tolist()
