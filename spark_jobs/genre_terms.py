"""A user's genre terms: the genres of their last PIT_HISTORY impressions with how many impressions and positives
each had (raw counts, strongest first), what the term recall asks for (``user_terms``).

Made from the users' online counters, which the features step computes anyway (``features.py``): one timeline
pass over the users' impressions, not a second one.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from contracts.feature_spec import GENRE_IDS, genre_clicks_name, genre_impressions_name


def _strongest_first(a: Column, b: Column) -> Column:
    return (
        F.when(a["clicks"] != b["clicks"], b["clicks"] - a["clicks"])
        .when(a["impressions"] != b["impressions"], b["impressions"] - a["impressions"])
        .otherwise(a["genre_id"] - b["genre_id"])
        .cast("int")  # array_sort wants an int comparator
    )


def user_terms(online_counters: DataFrame) -> DataFrame:
    """Counter columns -> one array of (genre_id, impressions, clicks) for the genres seen."""
    per_genre = F.array(
        *(
            F.struct(
                F.lit(k).alias("genre_id"),
                F.col(genre_impressions_name(k)).alias("impressions"),
                F.col(genre_clicks_name(k)).alias("clicks"),
            )
            for k in GENRE_IDS
        )
    )
    seen = F.filter(per_genre, lambda term: term["impressions"] > 0)
    return online_counters.select("userid", F.array_sort(seen, _strongest_first).alias("terms"))
