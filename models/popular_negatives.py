"""Negatives like the candidates the ranker orders at serving time: unrated movies drawn in proportion to
their popularity, beside the batch's uniform draws.

Every recall source leans to popular movies (EASE, co-occurrence and successors count ratings; popularity is
one of them), so the candidates a user gets are mostly popular movies they have not rated. Uniform negatives
are mostly obscure movies: a ranker trained on them alone learns that popular means positive, which is
exactly the one thing that does not separate the candidates. A negative drawn in proportion to the movie's
share of the fit rows' impressions (raised to ``exponent``) teaches it the rest.

Drawn in the trainer from the fit rows alone (one seeded draw per run): the movies a user rated in the fit
rows are never their negatives; the ones they rate later (validation, test) may be, as at serving time, when
the future is not known.
"""

from __future__ import annotations

import logging

import numpy as np

from models.negative_rows import NegativeRows
from models.sorted_keys import find_sorted

log = logging.getLogger(__name__)


def popular_negatives(negatives: NegativeRows, fit_rows: np.ndarray, per_impression: int, seed: int,
                      exponent: float = 1.0) -> NegativeRows:
    """For each distinct impression among the ``fit_rows`` (a mask over ``negatives.sources``), up to
    ``per_impression`` movies drawn with probability proportional to (fit impressions of the movie) **
    ``exponent``, without those the user rated in the fit rows and without repeats per impression: label 0,
    the source impression's features (the batch's point-in-time rows), the drawn movie's item features."""
    sources, impressions = negatives.sources, negatives.impressions
    users = sources.column("userid").astype(np.int64)
    items = sources.column("itemid").astype(np.int64)
    span = impressions.item_span
    counts = np.bincount(items[fit_rows], minlength=span).astype(np.float64)
    if per_impression <= 0 or not counts.any():
        return negatives.subset(np.zeros(len(negatives), dtype=bool))
    weights = counts ** exponent
    first_rows = impressions.first_rows[fit_rows[impressions.first_rows]]
    source_rows = np.repeat(first_rows, per_impression)
    rng = np.random.default_rng(seed)
    drawn = np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(len(source_rows)), side="right")
    drawn = np.minimum(drawn, span - 1)  # a draw of exactly 1.0 after rounding
    rated = np.unique(users[fit_rows] * span + items[fit_rows])
    keys = users[source_rows] * span + drawn
    unrated = ~find_sorted(rated, keys)[1]
    source_rows, drawn = source_rows[unrated], drawn[unrated]
    # The same movie twice for one impression would be the same row twice.
    order = np.lexsort((drawn, source_rows))
    source_rows, drawn = source_rows[order], drawn[order]
    first = np.r_[True, (source_rows[1:] != source_rows[:-1]) | (drawn[1:] != drawn[:-1])]
    source_rows, drawn = source_rows[first], drawn[first]
    log.info("%d popularity-drawn negatives for %d fit impressions (of %d draws: %d rated by their user, %d repeats)",
             len(drawn), len(first_rows), len(keys), int((~unrated).sum()), int((~first).sum()))
    return NegativeRows(sources, source_rows.astype(np.int32), drawn.astype(np.int32), negatives.assembler,
                        impressions)
