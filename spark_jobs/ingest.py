"""Ingest: raw MovieLens files -> validated clean ``ratings``, ``users`` and ``items`` tables.

    spark-submit --properties-file spark_jobs/delta.conf spark_jobs/ingest.py --data DIR --output DIR

Every line keeps its 1-based line number, so a bad value is reported as ``file:line: field``.
Validation runs before anything is written: with ``--on-bad-lines error`` (the default) the first
bad line stops the job and the previous tables stay as they were.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file by spark-submit
    import _project_root  # noqa: F401

import codecs
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from contracts.errors import InputDataError
from contracts.feature_spec import AGE_BUCKETS, GENDERS, GENRE_ALIASES, GENRES, OCCUPATION_COUNT
from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.formats import (
    ML_100K_ITEM_FIXED_FIELDS,
    ML_100K_OCCUPATIONS,
    DatasetFormat,
    ItemsLayout,
    UsersLayout,
    detect_format,
)
from spark_jobs.lake import Written, read_arrow_table, write_arrow_table, write_tables
from spark_jobs.runtime import job_main

log = logging.getLogger(__name__)

PROBLEM = StructType(
    [StructField("field", StringType()), StructField("reason", StringType()), StructField("value", StringType())]
)
# Bits of monotonically_increasing_id() that hold the row's index within its partition.
_ROW_INDEX_BITS = 33


class DataValidationError(InputDataError):
    """A bad input value, named by file, line and field."""


@dataclass(frozen=True)
class Check:
    field: str
    failed: Column
    reason: str
    value: Column


def first_problem(checks: Sequence[Check]) -> Column:
    """The first failing check as struct(field, reason, value), or null when the line is good."""
    problem: Column = F.lit(None).cast(PROBLEM)
    for check in reversed(checks):
        found = F.struct(
            F.lit(check.field).alias("field"),
            F.lit(check.reason).alias("reason"),
            check.value.cast("string").alias("value"),
        )
        problem = F.when(F.coalesce(check.failed, F.lit(True)), found).otherwise(problem)
    return problem


# --- reading ---------------------------------------------------------------------------------


def read_numbered_lines(spark: SparkSession, path: Path, encoding: str) -> DataFrame:
    """(line, text) for every line of one file, line numbers 1-based and exact.

    Spark reads a file in byte-range partitions kept in file order; a row's line number is the
    number of rows in earlier partitions plus its index within its own partition.
    """
    raw = spark.read.text(str(path)).select(
        F.spark_partition_id().alias("partition"),
        F.monotonically_increasing_id().alias("row_id"),
        # The text source hands over the file's bytes undecoded; decode them with the file's charset.
        F.decode(F.col("value").cast("binary"), encoding).alias("text"),
    )
    if raw.rdd.getNumPartitions() <= 1:
        # One partition (a file smaller than Spark's split size): row_id is the line index, no count needed.
        return raw.select((F.col("row_id") + 1).alias("line"), "text")
    sizes = sorted((row["partition"], row["count"]) for row in raw.groupBy("partition").count().collect())
    offsets, rows_before = [], 0
    for partition, size in sizes:
        offsets += [F.lit(partition), F.lit(rows_before)]
        rows_before += size
    offset = F.create_map(*offsets)[F.col("partition")] if offsets else F.lit(0)
    index_in_partition = F.col("row_id") - F.shiftleft(F.col("partition").cast("long"), _ROW_INDEX_BITS)
    return raw.select((offset + index_in_partition + 1).alias("line"), "text")


def drop_blank_lines(lines: DataFrame) -> DataFrame:
    return lines.filter(F.trim("text") != "")


def drop_header(has_header: bool) -> Callable[[DataFrame], DataFrame]:
    """Start every line without a problem; drop line 1 when it is the (already checked) header."""

    def transform(lines: DataFrame) -> DataFrame:
        lines = lines.withColumn("problem", F.lit(None).cast(PROBLEM))
        return lines.filter(F.col("line") != 1) if has_header else lines

    return transform


def without_trailing_empty_fields(text: str, separator: str) -> str:
    fields = text.rstrip("\r\n").split(separator)
    while len(fields) > 1 and not fields[-1].strip():
        fields.pop()
    return separator.join(fields)


def check_header(path: Path, encoding: str, header: str, separator: str) -> bool:
    """Check a file's header line in one step (a wrong header is one error, not one per line).

    Returns whether it carries trailing empty fields (``a,b,c,,,``), as files re-saved by a
    spreadsheet do; those are ignored on every line of the file.
    """
    with path.open("rb") as handle:
        first = handle.readline().decode(encoding, errors="replace").rstrip("\r\n")
    cleaned = without_trailing_empty_fields(first, separator)
    if cleaned.strip() != header:
        raise DataValidationError(
            f"{path.name}:1: header {first!r} is not the expected {header!r} (nothing was written)"
        )
    return cleaned != first.rstrip()


def _field(index: int) -> Column:
    return F.get(F.col("fields"), index)


def _split(separator: str) -> Column:
    # split() takes a regex; -1 keeps trailing empty fields so they are counted.
    escaped = "".join("\\" + c if c in r".^$|?*+()[]{}\\" else c for c in separator)
    return F.split(F.col("text"), escaped, -1)


def split_fields(separator: str, expected: int) -> Callable[[DataFrame], DataFrame]:
    """Adds ``fields``; empty fields past the expected ones are dropped and the line marked ``padded``.

    Spreadsheet exports pad every line with empty fields (``1,31,2.5,1260759144,,,,``); a line with
    extra *non-empty* fields keeps them all, so the field count check still reports it.
    """

    def transform(lines: DataFrame) -> DataFrame:
        # The split as a column of its own, read by the next projection: inlined in each use, Spark split every line
        # five times (a regular expression each time, for a separator of two characters).
        raw = F.col("raw_fields")
        extra = F.slice(raw, expected + 1, F.greatest(F.size(raw) - expected, F.lit(1)))
        # Blank extra fields joined are blank: no lambda, which Spark would interpret line by line.
        padded = (F.size(raw) > expected) & (F.trim(F.array_join(extra, "")) == "")
        return (lines.withColumn("raw_fields", _split(separator)).withColumn("padded", padded)
                .withColumn("fields", F.when(F.col("padded"), F.slice(raw, 1, expected)).otherwise(raw))
                .drop("raw_fields"))

    return transform


def _count_check(expected: int) -> Check:
    return Check("line", F.size("fields") != expected, f"expected {expected} fields", F.size("fields"))


def _int_check(name: str, index: int, minimum: int = 1) -> tuple[Column, Check]:
    text = F.trim(_field(index))
    value = text.try_cast("int")
    failed = ~text.rlike(r"^[0-9]+$") | value.isNull() | (value < minimum)
    return value, Check(name, failed, f"not an integer >= {minimum}", _field(index))


def _with_problem(df: DataFrame, checks: Sequence[Check]) -> DataFrame:
    """Keep a problem found earlier (the header check), else the first failing check."""
    return df.withColumn("problem", F.coalesce(F.col("problem"), first_problem(checks)))


# --- parsing ---------------------------------------------------------------------------------


def parse_ratings(fmt: DatasetFormat) -> Callable[[DataFrame], DataFrame]:
    """(line, text) -> (line, userid, itemid, rating, timestamp, problem)."""

    def transform(lines: DataFrame) -> DataFrame:
        df = lines.transform(split_fields(fmt.ratings_separator, 4))
        userid, user_check = _int_check("userid", 0)
        itemid, item_check = _int_check("itemid", 1)
        rating_text = F.trim(_field(2))
        rating = rating_text.try_cast("double")
        steps = (rating - F.lit(fmt.rating_min)) / F.lit(fmt.rating_step)
        off_scale = (rating < fmt.rating_min) | (rating > fmt.rating_max) | (F.abs(steps - F.round(steps)) > 1e-6)
        timestamp_text = F.trim(_field(3))
        timestamp = timestamp_text.try_cast("long")
        checks = [
            _count_check(4),
            user_check,
            item_check,
            Check("rating", ~rating_text.rlike(r"^[0-9]+(\.[0-9]+)?$") | rating.isNull(), "not a number",
                  _field(2)),
            Check("rating", off_scale,
                  f"outside the rating scale {fmt.rating_min:g}..{fmt.rating_max:g} step {fmt.rating_step:g}",
                  _field(2)),
            Check("timestamp", ~timestamp_text.rlike(r"^[0-9]+$") | timestamp.isNull(),
                  "not a unix timestamp in seconds", _field(3)),
        ]
        return _with_problem(df, checks).select(
            "line",
            userid.alias("userid"),
            itemid.alias("itemid"),
            rating.alias("rating"),
            timestamp.alias("timestamp"),
            "problem",
            "padded",
        )

    return transform


def _index_in(values: Sequence[str | int], column: Column) -> Column:
    """1-based position of the value in ``values``, 0 when it is not there (unknown category)."""
    mapping = F.create_map(*chain.from_iterable((F.lit(v), F.lit(i)) for i, v in enumerate(values, 1)))
    return F.coalesce(F.try_element_at(mapping, column), F.lit(0))


def age_years_to_bucket(age: Column) -> Column:
    """Age in years -> index of the ML-1M bucket it falls in (1 = under 18 ... 7 = 56+), 0 if unknown."""
    index: Column = F.lit(len(AGE_BUCKETS))
    for position in range(len(AGE_BUCKETS) - 1, 0, -1):
        index = F.when(age < AGE_BUCKETS[position], F.lit(position)).otherwise(index)
    return F.when(age.isNull() | (age < 1), F.lit(0)).otherwise(index)


def parse_users(fmt: DatasetFormat) -> Callable[[DataFrame], DataFrame]:
    """(line, text) -> (line, userid, gender, age, occupation, problem) with categorical indices."""

    def transform(lines: DataFrame) -> DataFrame:
        df = lines.transform(split_fields(fmt.side_separator, 5))
        userid, user_check = _int_check("userid", 0)
        if fmt.users_layout is UsersLayout.ML_1M:
            gender_text, age_position, occupation_position = _field(1), 2, 3
        else:
            gender_text, age_position, occupation_position = _field(2), 1, 3
        age_value, age_check = _int_check("age", age_position, minimum=0)
        checks = [_count_check(5), user_check, age_check]
        if fmt.users_layout is UsersLayout.ML_1M:
            occupation_value, occupation_check = _int_check("occupation", occupation_position, minimum=0)
            checks.append(occupation_check)
            age = _index_in(AGE_BUCKETS, age_value)
            # ML-1M codes occupations 0..20; unknown codes map to 0 like every unknown category.
            occupation = F.when(
                occupation_value.between(0, OCCUPATION_COUNT - 1), occupation_value + 1
            ).otherwise(F.lit(0))
        else:
            age = age_years_to_bucket(age_value)
            occupation = _index_in(ML_100K_OCCUPATIONS, F.lower(F.trim(_field(occupation_position))))
        return _with_problem(df, checks).select(
            "line",
            userid.alias("userid"),
            _index_in(GENDERS, F.upper(F.trim(gender_text))).cast("int").alias("gender"),
            age.cast("int").alias("age"),
            occupation.cast("int").alias("occupation"),
            "problem",
            "padded",
        )

    return transform


def genre_ids_from_names(names: Column) -> Column:
    """'Action|Children' -> sorted distinct genre ids; names outside the vocabulary are dropped."""
    vocabulary = {name: i for i, name in enumerate(GENRES, 1)}
    vocabulary.update({alias: vocabulary[target] for alias, target in GENRE_ALIASES.items()})
    mapping = F.create_map(*chain.from_iterable((F.lit(n), F.lit(i)) for n, i in vocabulary.items()))
    ids = F.transform(F.split(names, r"\|"), lambda name: F.try_element_at(mapping, F.trim(name)))
    return F.array_sort(F.array_distinct(F.filter(ids, lambda genre: genre.isNotNull())))


def parse_items(fmt: DatasetFormat) -> Callable[[DataFrame], DataFrame]:
    """(line, text) -> (line, itemid, title, genre_ids, problem)."""

    def transform(lines: DataFrame) -> DataFrame:
        if fmt.items_layout is ItemsLayout.CSV:
            # The title may hold commas (then it is quoted); id and genres never do, and genres are
            # never empty, so trailing commas are spreadsheet padding.
            pattern = r"^([^,]*),(.*),([^,]*)$"
            padding = r"(,\s*)+$"
            text = F.regexp_replace("text", padding, "")
            df = lines.withColumn("padded", F.col("text").rlike(padding)).withColumn(
                "fields",
                F.when(
                    text.rlike(pattern), F.array(*(F.regexp_extract(text, pattern, group) for group in (1, 2, 3)))
                ).otherwise(F.array(text)),
            )
            title = F.regexp_replace(F.regexp_replace(_field(1), r'^"(.*)"$', "$1"), '""', '"')
            expected_fields = 3
        else:
            expected_fields = 3 if fmt.items_layout is ItemsLayout.GENRE_NAMES else ML_100K_ITEM_FIXED_FIELDS + 19
            df = lines.transform(split_fields(fmt.side_separator, expected_fields))
            title = _field(1)
        itemid, item_check = _int_check("itemid", 0)
        checks = [_count_check(expected_fields), item_check]
        if fmt.items_layout is ItemsLayout.GENRE_FLAGS:
            flags = [_field(ML_100K_ITEM_FIXED_FIELDS + k) for k in range(len(GENRES) + 1)]
            for k, flag in enumerate(flags):
                checks.append(Check(f"genre_flag_{k}", ~F.trim(flag).isin("0", "1"), "not 0 or 1", flag))
            genre_ids = F.filter(
                F.array(*(F.when(F.trim(flags[k]) == "1", F.lit(k)) for k in range(1, len(GENRES) + 1))),
                lambda genre: genre.isNotNull(),
            )
        else:
            genre_ids = genre_ids_from_names(_field(2))
        return _with_problem(df, checks).select(
            "line", itemid.alias("itemid"), title.alias("title"), genre_ids.alias("genre_ids"), "problem", "padded"
        )

    return transform


def users_without_demographics(ratings: DataFrame) -> DataFrame:
    """For releases without a users file: every rating user, demographics unknown (0)."""
    return ratings.select("userid").distinct().select(
        "userid", *(F.lit(0).alias(name) for name in ("gender", "age", "occupation"))
    )


def unknown_references(ratings: DataFrame, users: DataFrame | None, items: DataFrame) -> DataFrame:
    """Ratings whose user or item is not in the users/items files, as (line, problem)."""

    def missing(keys: DataFrame, column: str, reason: str) -> DataFrame:
        return ratings.join(keys.select(column), column, "left_anti").select(
            "line",
            F.struct(F.lit(column).alias("field"), F.lit(reason).alias("reason"),
                     F.col(column).cast("string").alias("value")).alias("problem"),
        )

    found = missing(items, "itemid", "unknown item (not in the items file)")
    if users is not None:
        found = missing(users, "userid", "unknown user (not in the users file)").unionByName(found)
    return found


# --- validation and the job ------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedFile:
    name: str
    rows: DataFrame  # parsed rows with a "problem" column
    # Bad lines of lower rank are reported first: a broken users line explains the ratings
    # that then refer to an unknown user.
    rank: int

    @property
    def problems(self) -> DataFrame:
        return self.rows.filter(F.col("problem").isNotNull()).select(
            F.lit(self.rank).alias("rank"), F.lit(self.name).alias("file"), "line", "problem.*"
        )

    @property
    def good(self) -> DataFrame:
        return self.rows.filter(F.col("problem").isNull()).drop("problem", "padded")


def raise_or_report(problems: DataFrame, on_bad_lines: str) -> int:
    """Raise on the first bad line, or return how many there are when skipping them."""
    problems = problems.cache()
    try:
        return _raise_or_count(problems, on_bad_lines)
    finally:
        problems.unpersist()


def _raise_or_count(problems: DataFrame, on_bad_lines: str) -> int:
    total = problems.count()
    if total == 0:
        return 0
    if on_bad_lines == "error":
        first = problems.orderBy("rank", "file", "line").first()
        raise DataValidationError(
            f"{first['file']}:{first['line']}: field '{first['field']}' = {first['value']!r}: "
            f"{first['reason']} ({total} bad line(s) in all; nothing was written; "
            f"--on-bad-lines skip skips them)"
        )
    for row in problems.groupBy("file", "field", "reason").count().orderBy("file", "field").collect():
        log.warning("skipped %d line(s) of %s: field '%s' %s", row["count"], row["file"], row["field"],
                    row["reason"])
    return total


@dataclass(frozen=True)
class CleanData:
    fmt: DatasetFormat
    ratings: DataFrame
    users: DataFrame
    items: DataFrame
    skipped_lines: int
    cached: tuple[DataFrame, ...]  # the parsed files, kept in memory until the clean tables are written

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def file_encoding(path: Path, declared: str) -> str:
    """The release's declared charset, unless the file is valid UTF-8 with non-ASCII text in it.

    The ML-100K/1M releases are ISO-8859-1, but copies re-saved by editors are often UTF-8; reading
    those as Latin-1 would turn every accented title into mojibake. Any Latin-1 accent byte on its
    own is invalid UTF-8, so a valid UTF-8 file with non-ASCII bytes is safely told apart.
    """
    if declared.upper().replace("_", "-") == "UTF-8":
        return declared
    decoder = codecs.getincrementaldecoder("utf-8")()
    non_ascii = False
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                decoder.decode(chunk)
                non_ascii = non_ascii or not chunk.isascii()
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return declared
    if non_ascii:
        log.info("%s is valid UTF-8 (the release's charset is %s): reading it as UTF-8", path.name, declared)
        return "UTF-8"
    return declared


@dataclass(frozen=True)
class FileCounts:
    lines: int  # non-blank lines after the header
    good: int
    padded: int  # lines that carried trailing empty fields


def file_counts(parsed_files: Sequence[ParsedFile]) -> dict[str, FileCounts]:
    """Lines, good lines and padded lines of every file, in one Spark job (it also fills their caches)."""
    per_file = [
        parsed_file.rows.agg(
            F.lit(parsed_file.name).alias("file"),
            F.count(F.lit(1)).alias("lines"),
            F.count_if(F.col("problem").isNull()).alias("good"),
            F.count_if(F.col("padded")).alias("padded"),
        )
        for parsed_file in parsed_files
    ]
    rows = {row["file"]: row for row in reduce(DataFrame.unionByName, per_file).collect()}
    return {
        f.name: FileCounts(int(rows[f.name]["lines"]), int(rows[f.name]["good"] or 0),
                           int(rows[f.name]["padded"] or 0))
        for f in parsed_files
    }


def duplicate_ratings(ratings: pa.Table) -> int:
    """Ratings beyond the first of each (user, item) pair of a (userid, itemid) table.

    On the driver, from the written table's two id columns: one sort of 64-bit keys (10M ratings: ~1 s), where
    Spark's aggregate shuffled every rating (~9 s of the ingest step's ~45 s)."""
    keys = (ratings["userid"].to_numpy().astype(np.int64) << 32) | ratings["itemid"].to_numpy().astype(np.int64)
    return len(keys) - len(np.unique(keys))


def load_clean(spark: SparkSession, data_dir: Path, on_bad_lines: str) -> CleanData:
    """Read, parse and validate a dataset directory; raises DataValidationError on bad input."""
    fmt = detect_format(data_dir)
    log.info("reading %s as %s", data_dir, fmt.name)

    def parsed(
        file_name: str, parse: Callable[[DataFrame], DataFrame], rank: int, header: str | None = None,
        separator: str = "", numeric: bool = False,
    ) -> ParsedFile:
        path = data_dir / file_name
        # Ratings are numbers: ASCII in every charset the releases use, so no need to sniff them.
        encoding = fmt.encoding if numeric else file_encoding(path, fmt.encoding)
        if header is not None and check_header(path, encoding, header, separator):
            log.info("%s: the header has trailing empty fields (a spreadsheet export): "
                     "trailing empty fields are ignored on every line", file_name)
        lines = read_numbered_lines(spark, path, encoding)
        rows = lines.transform(drop_blank_lines).transform(drop_header(header is not None)).transform(parse)
        return ParsedFile(file_name, rows.cache(), rank)

    ratings = parsed(fmt.ratings_file, parse_ratings(fmt), 1, fmt.ratings_header, fmt.ratings_separator,
                     numeric=True)
    items = parsed(fmt.items_file, parse_items(fmt), 0, fmt.items_header, fmt.side_separator)
    users = parsed(fmt.users_file, parse_users(fmt), 0) if fmt.users_file else None
    files = [f for f in (ratings, items, users) if f is not None]
    references = unknown_references(
        ratings.good, users.good if users else None, items.good
    ).select(F.lit(ratings.rank).alias("rank"), F.lit(fmt.ratings_file).alias("file"), "line", "problem.*")
    problems = ratings.problems.unionByName(items.problems).unionByName(references)
    if users:
        problems = problems.unionByName(users.problems)
    try:
        # An empty file first: it is the cause of everything else that would fail (unknown users...).
        counts = file_counts(files)
        for name, count in counts.items():
            log.info("read %s: %d lines, %d good", data_dir / name, count.lines, count.good)
            if count.lines == 0:
                raise DataValidationError(f"{name}: empty (no lines): an empty input would publish empty "
                                          "tables; nothing was written")
        skipped = raise_or_report(problems, on_bad_lines)
        for name, count in counts.items():
            if count.padded:
                log.info("%s: trailing empty fields ignored on %d line(s)", name, count.padded)
            if count.good == 0:
                raise DataValidationError(f"{name}: no usable lines ({count.lines} line(s), all bad); "
                                          "nothing was written")
    except DataValidationError:
        for parsed_file in files:
            parsed_file.rows.unpersist()
        raise

    clean_ratings = ratings.good
    if skipped:  # a rating of an unknown user or movie is a bad line: none, no join (a shuffle of every rating)
        clean_ratings = clean_ratings.join(references.select("line"), "line", "left_anti")
    clean_ratings = clean_ratings.drop("line")
    clean_users = users.good.drop("line") if users else users_without_demographics(clean_ratings)
    return CleanData(fmt, clean_ratings, clean_users, items.good.drop("line"), skipped,
                     tuple(f.rows for f in files))


def run(spark: SparkSession, settings: BatchSettings, run_id: str) -> list[Written]:
    clean = load_clean(spark, settings.data_dir, settings.on_bad_lines)
    # One row, committed by the driver: a Spark job and commit beside the others otherwise.
    dataset = pa.table({"format": [clean.fmt.name], "source": [str(settings.data_dir)],
                        "has_demographics": [clean.fmt.has_demographics],
                        "skipped_lines": pa.array([clean.skipped_lines], pa.int64())})
    try:
        written = [write_arrow_table(dataset, settings, Table.DATASET, run_id), *write_tables(
            [(Table.RATINGS, clean.ratings), (Table.USERS, clean.users), (Table.ITEMS, clean.items)], settings, run_id)]
    finally:
        clean.release()
    duplicates = duplicate_ratings(read_arrow_table(settings, Table.RATINGS, ["userid", "itemid"]))
    if duplicates:
        log.warning("%s: %d rating(s) repeat an earlier (user, item) pair; kept as separate impressions, "
                    "as the reference design does", clean.fmt.ratings_file, duplicates)
    log.info("ingest: %s from %s, %d bad line(s) skipped", clean.fmt.name, settings.data_dir,
             clean.skipped_lines)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    job_main("ingest", run, argv, __doc__)


if __name__ == "__main__":
    main()
