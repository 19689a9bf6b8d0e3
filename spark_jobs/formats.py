"""The MovieLens release layouts this platform reads, and how to tell them apart."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from contracts.errors import InputDataError


class UsersLayout(StrEnum):
    ML_1M = "ml-1m"  # UserID::Gender::Age::Occupation::Zip-code, age and occupation as codes
    ML_100K = "ml-100k"  # user id|age|gender|occupation|zip code, age in years, occupation by name


class ItemsLayout(StrEnum):
    GENRE_NAMES = "genre_names"  # MovieID::Title::Genre1|Genre2
    GENRE_FLAGS = "genre_flags"  # id|title|release|video release|url|unknown|Action|...|Western
    CSV = "csv"  # movieId,title,genres with the title quoted when it holds a comma


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    ratings_file: str
    items_file: str
    users_file: str | None  # None: the release has no user demographics
    ratings_separator: str
    side_separator: str  # of the users and items files
    encoding: str
    rating_min: float
    rating_max: float
    rating_step: float
    users_layout: UsersLayout | None
    items_layout: ItemsLayout
    ratings_header: str | None = None
    items_header: str | None = None

    @property
    def has_demographics(self) -> bool:
        return self.users_file is not None

    def on_scale(self, rating: float) -> bool:
        """Whether ``rating`` is one of the release's values (min..max by step), as ingest checks each line."""
        steps = (rating - self.rating_min) / self.rating_step
        return self.rating_min <= rating <= self.rating_max and abs(steps - round(steps)) <= 1e-6


ML_1M = DatasetFormat(
    name="ml-1m", ratings_file="ratings.dat", items_file="movies.dat", users_file="users.dat",
    ratings_separator="::", side_separator="::", encoding="ISO-8859-1", rating_min=1, rating_max=5, rating_step=1,
    users_layout=UsersLayout.ML_1M, items_layout=ItemsLayout.GENRE_NAMES,
)
# ML-10M keeps the ML-1M file syntax but has half-star ratings and no users.dat.
ML_10M = DatasetFormat(
    name="ml-10m", ratings_file="ratings.dat", items_file="movies.dat", users_file=None,
    ratings_separator="::", side_separator="::", encoding="UTF-8", rating_min=0.5, rating_max=5, rating_step=0.5,
    users_layout=None, items_layout=ItemsLayout.GENRE_NAMES,
)
ML_100K = DatasetFormat(
    name="ml-100k", ratings_file="u.data", items_file="u.item", users_file="u.user",
    ratings_separator="\t", side_separator="|", encoding="ISO-8859-1", rating_min=1, rating_max=5, rating_step=1,
    users_layout=UsersLayout.ML_100K, items_layout=ItemsLayout.GENRE_FLAGS,
)
# ML-latest(-small), ML-20M, ML-25M, ML-32M.
ML_CSV = DatasetFormat(
    name="csv", ratings_file="ratings.csv", items_file="movies.csv", users_file=None,
    ratings_separator=",", side_separator=",", encoding="UTF-8", rating_min=0.5, rating_max=5, rating_step=0.5,
    users_layout=None, items_layout=ItemsLayout.CSV, ratings_header="userId,movieId,rating,timestamp",
    items_header="movieId,title,genres",
)

FORMATS_BY_NAME: dict[str, DatasetFormat] = {fmt.name: fmt for fmt in (ML_100K, ML_1M, ML_10M, ML_CSV)}

# u.user names occupations; their order in u.occupation gives indices 1..21.
ML_100K_OCCUPATIONS: tuple[str, ...] = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)
# u.item's genre flag columns after the 5 descriptive ones: "unknown" then genre ids 1..18.
ML_100K_ITEM_FIXED_FIELDS = 5


class DatasetFormatError(InputDataError):
    pass


def detect_format(data_dir: Path) -> DatasetFormat:
    """Tell the release from the files present; fail naming what is missing."""
    if not data_dir.is_dir():
        raise DatasetFormatError(f"dataset directory {data_dir} does not exist (set --data or MOVIELENS_DIR)")
    present = {p.name for p in data_dir.iterdir()}
    if "u.data" in present:
        fmt = ML_100K
    elif "ratings.dat" in present:
        fmt = ML_1M if "users.dat" in present else ML_10M
    elif "ratings.csv" in present:
        fmt = ML_CSV
    else:
        raise DatasetFormatError(
            f"{data_dir}: no MovieLens ratings file (u.data, ratings.dat or ratings.csv); "
            f"found {sorted(present) or 'nothing'}"
        )
    missing = [name for name in (fmt.items_file, fmt.users_file) if name and name not in present]
    if missing:
        raise DatasetFormatError(f"{data_dir}: looks like {fmt.name} but {', '.join(missing)} is missing")
    return fmt
