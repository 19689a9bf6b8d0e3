import numpy as np

from spark_jobs.synthetic import MIN_RATINGS_PER_USER, generate, write_ml1m


def test_generator_shape_and_skew():
    data = generate(50_000, seed=3)
    ratings = data.ratings
    assert 0.95 * 50_000 <= len(ratings) <= 1.05 * 50_000
    assert not ratings.duplicated(["userid", "itemid"]).any()
    assert ratings.groupby("userid").size().min() >= MIN_RATINGS_PER_USER
    assert set(ratings["rating"].unique()) <= {1, 2, 3, 4, 5}
    popularity = ratings["itemid"].value_counts()
    assert popularity.head(len(data.items) // 10).sum() > 0.3 * len(ratings)  # long tail
    assert ratings.duplicated(["userid", "timestamp"]).mean() > 0.05  # same-second bursts exist
    positive_share = (ratings["rating"] > 3).mean()
    assert 0.3 < positive_share < 0.7


def test_movie_ids_are_sparse_like_the_real_releases():
    data = generate(50_000, seed=3)
    ids = data.items["itemid"].to_numpy()
    assert (np.diff(ids) > 0).all() and ids[0] >= 1
    assert 2.8 < ids[-1] / len(ids) < 3.9  # ML-25M: 209,171 / 62,423 = 3.35
    half = len(ids) // 2
    assert np.diff(ids[:half]).mean() < np.diff(ids[half:]).mean()  # dense first, gaps wider later
    assert set(data.ratings["itemid"]) <= set(ids)
    dense = generate(50_000, seed=3, id_spread=1.0)
    assert dense.items["itemid"].tolist() == list(range(1, len(dense.items) + 1))


def test_generator_is_deterministic(tmp_path):
    first, second = generate(2_000, seed=7), generate(2_000, seed=7)
    assert first.ratings.equals(second.ratings)
    assert not first.ratings.equals(generate(2_000, seed=8).ratings)
    write_ml1m(first, tmp_path)
    lines = (tmp_path / "ratings.dat").read_text().splitlines()
    assert len(lines) == len(first.ratings)
    user, item, rating, ts = lines[0].split("::")
    assert (int(user), int(item), int(rating), int(ts)) == tuple(first.ratings.iloc[0])
    assert np.all([len(line.split("::")) == 5 for line in (tmp_path / "users.dat").read_text().splitlines()])
