"""Synthetic MovieLens-1M-format data of any size, for tests and benchmarks.

    python -m spark_jobs.synthetic --ratings 1000000 --out data/synthetic-1m [--seed 0]

The data has MovieLens's shape: long-tailed item popularity (Zipf) and user activity (log-normal,
at least 20 ratings per user as in ML-1M), 1-3 genres per movie, and ratings that follow each
user's genre taste, so labels carry a learnable signal. Timestamps advance per user with some
same-second bursts, which exercises the point-in-time rules. Movie ids are sparse as in the real
releases, which number movies as they are added and skip ids: dense at first, with ever wider gaps
later (ML-25M: 62,423 movies, ids up to 209,171; ``--id-spread`` is max id / movies, default
ML-25M's 3.35; 1 gives ids 1..N). User ids are 1..N, as in every release.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from contracts.feature_spec import AGE_BUCKETS, GENRES, OCCUPATION_COUNT

log = logging.getLogger(__name__)

MIN_RATINGS_PER_USER = 20
FIRST_TIMESTAMP = 956_703_932  # ML-1M's first rating (April 2000)
WRITE_CHUNK = 1_000_000
ML25M_ID_SPREAD = 209_171 / 62_423  # max movie id / movies in ML-25M


@dataclass(frozen=True)
class SyntheticData:
    ratings: pd.DataFrame  # userid, itemid, rating, timestamp
    users: pd.DataFrame  # userid, gender, age, occupation, zip
    items: pd.DataFrame  # itemid, title, genres ("A|B")


def default_sizes(n_ratings: int) -> tuple[int, int]:
    """(users, items) in about ML-1M's proportions (6040 users, 3706 movies for 1M ratings)."""
    n_users = max(MIN_RATINGS_PER_USER, n_ratings // 165)
    n_items = int(np.clip(4 * np.sqrt(n_ratings), 50, 40_000))
    return n_users, n_items


def sparse_movie_ids(n_items: int, spread: float, rng: np.random.Generator) -> np.ndarray:
    """n increasing ids from 1 on whose largest is about ``spread`` * n: gaps drawn geometrically with a mean
    rising linearly from 1 (the first movies numbered densely) to 2 * spread - 1 (the latest)."""
    if spread <= 1.0:
        return np.arange(1, n_items + 1)
    mean_gap = 1.0 + 2.0 * (spread - 1.0) * np.linspace(0.0, 1.0, n_items)
    return np.cumsum(rng.geometric(1.0 / mean_gap))


def generate(n_ratings: int, n_users: int | None = None, n_items: int | None = None, seed: int = 0,
             id_spread: float = ML25M_ID_SPREAD) -> SyntheticData:
    rng = np.random.default_rng(seed)
    default_users, default_items = default_sizes(n_ratings)
    n_users = n_users or default_users
    n_items = n_items or default_items
    n_genres = len(GENRES)

    # Items: popularity ~ Zipf over a random ranking, 1-3 genres each.
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    genre_weights = rng.dirichlet(np.full(n_genres, 2.0))
    item_genres = np.zeros((n_items, n_genres), dtype=bool)
    genre_counts = rng.choice([1, 2, 3], size=n_items, p=[0.5, 0.35, 0.15])
    for count in (1, 2, 3):
        rows = np.flatnonzero(genre_counts == count)
        for row in rows:
            item_genres[row, rng.choice(n_genres, size=count, replace=False, p=genre_weights)] = True

    # Users: activity ~ log-normal, at least MIN_RATINGS_PER_USER, summing to about n_ratings.
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    # Nobody rates more than 90% of the catalogue; what the cap cuts goes to the other users.
    cap = int(n_items * 0.9)
    share = activity / activity.sum()
    quota = np.full(n_users, float(MIN_RATINGS_PER_USER))
    for _ in range(10):
        spare = n_ratings - quota.sum()
        open_users = quota < cap
        if spare < 1 or not open_users.any():
            break
        quota[open_users] += spare * share[open_users] / share[open_users].sum()
        quota = np.minimum(quota, cap)
    quota = np.round(quota).astype(np.int64)

    # Draw (user, item) pairs by popularity, keeping each user's first distinct ones; heavy users
    # meet many duplicates, so users short of their quota draw again (a few rounds at most).
    kept = pd.DataFrame({"u": np.empty(0, np.int64), "i": np.empty(0, np.int64)})
    missing = quota.copy()
    for _ in range(6):
        if missing.sum() == 0:
            break
        users = np.repeat(np.arange(n_users), np.ceil(missing * 1.5).astype(np.int64))
        drawn = pd.DataFrame({"u": users, "i": rng.choice(n_items, size=users.size, p=popularity)})
        kept = pd.concat([kept, drawn]).drop_duplicates()
        kept = kept[kept.groupby("u").cumcount().to_numpy() < quota[kept["u"].to_numpy()]]
        missing = quota - np.bincount(kept["u"].to_numpy(), minlength=n_users)
    u = kept["u"].to_numpy()
    i = kept["i"].to_numpy()

    # Ratings follow the user's genre taste plus user and item biases.
    taste = rng.normal(0.0, 1.0, size=(n_users, n_genres))
    item_genre_share = item_genres / item_genres.sum(axis=1, keepdims=True)
    affinity = np.einsum("ng,ng->n", taste[u], item_genre_share[i])
    score = 3.6 + 0.9 * affinity + rng.normal(0, 0.4, n_users)[u] + rng.normal(0, 0.4, n_items)[i]
    rating = np.clip(np.round(score + rng.normal(0, 0.8, u.size)), 1, 5).astype(np.int64)

    # Timestamps: per user a start, then gaps; a fifth of the gaps are 0 (same-second bursts).
    start = FIRST_TIMESTAMP + rng.integers(0, 3 * 365 * 86_400, size=n_users)
    gaps = rng.exponential(3_600, size=u.size).astype(np.int64) * (rng.random(u.size) > 0.2)
    order = np.lexsort((rng.random(u.size), u))
    u, i, rating, gaps = u[order], i[order], rating[order], gaps[order]
    elapsed = pd.Series(gaps).groupby(u).cumsum().to_numpy()
    timestamp = start[u] + elapsed

    movie_ids = sparse_movie_ids(n_items, id_spread, rng)
    ratings = pd.DataFrame({"userid": u + 1, "itemid": movie_ids[i], "rating": rating, "timestamp": timestamp})
    users_df = pd.DataFrame({
        "userid": np.arange(1, n_users + 1),
        "gender": rng.choice(["M", "F"], size=n_users, p=[0.7, 0.3]),
        "age": rng.choice(AGE_BUCKETS, size=n_users),
        "occupation": rng.integers(0, OCCUPATION_COUNT, size=n_users),
        "zip": "00000",
    })
    genre_names = np.array(GENRES)
    items_df = pd.DataFrame({
        "itemid": movie_ids,
        "title": [f"Synthetic Movie {k} ({1950 + k % 50})" for k in movie_ids],
        "genres": ["|".join(genre_names[row]) for row in item_genres],
    })
    return SyntheticData(ratings, users_df, items_df)


def _write_lines(path: Path, frame: pd.DataFrame, separator: str, encoding: str = "ISO-8859-1") -> None:
    with path.open("w", encoding=encoding, newline="\n") as out:
        chunks = range(0, len(frame), WRITE_CHUNK)
        for start in tqdm(chunks, desc=path.name, unit="chunk", disable=len(chunks) < 2):
            part = frame.iloc[start : start + WRITE_CHUNK].astype(str)
            lines = part.iloc[:, 0].str.cat(part.iloc[:, 1:], sep=separator)
            out.write("\n".join(lines))
            out.write("\n")


def write_ml1m(data: SyntheticData, out_dir: Path) -> None:
    """ratings.dat, users.dat, movies.dat in ML-1M's ``::`` syntax."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_lines(out_dir / "movies.dat", data.items, "::")
    _write_lines(out_dir / "users.dat", data.users, "::")
    _write_lines(out_dir / "ratings.dat", data.ratings, "::")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratings", type=int, required=True, help="about how many ratings")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--items", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--id-spread", type=float, default=ML25M_ID_SPREAD,
                        help="largest movie id / number of movies (default ML-25M's 3.35; 1: ids 1..N)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the ML-1M files to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = generate(args.ratings, args.users, args.items, args.seed, args.id_spread)
    write_ml1m(data, args.out)
    log.info("wrote %d ratings, %d users, %d movies to %s", len(data.ratings), len(data.users),
             len(data.items), args.out)


if __name__ == "__main__":
    main()
