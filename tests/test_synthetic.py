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
