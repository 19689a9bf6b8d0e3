from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from chispa import assert_df_equality
from conftest import write_lines
from pyspark.sql import functions as F

from contracts.settings import BatchSettings
from contracts.tables import Table
from spark_jobs.formats import ML_1M, ML_10M, ML_100K, ML_CSV, DatasetFormatError, detect_format
from spark_jobs.ingest import (
    DataValidationError,
    age_years_to_bucket,
    duplicate_ratings,
    file_encoding,
    genre_ids_from_names,
    load_clean,
    read_numbered_lines,
    run,
)
from spark_jobs.lake import read_arrow_table

ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072", "3::X::30::25::55117"]
ML1M_MOVIES = [
    "1::Toy Story (1995)::Animation|Children's|Comedy",
    "2::Jumanji (1995)::Adventure|Children's|Fantasy",
    "3::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi",
]
ML1M_RATINGS = ["1::1::5::978300760", "1::2::3::978302109", "2::3::4::978301968", "3::1::1::978300275"]


def ml1m_dir(root: Path, ratings=ML1M_RATINGS, users=ML1M_USERS, movies=ML1M_MOVIES) -> Path:
    write_lines(root / "users.dat", users, "iso-8859-1")
    write_lines(root / "movies.dat", movies, "iso-8859-1")
    write_lines(root / "ratings.dat", ratings, "iso-8859-1")
    return root


def test_format_detection(tmp_path):
    cases = {
        ML_100K: ["u.data", "u.user", "u.item"],
        ML_1M: ["ratings.dat", "users.dat", "movies.dat"],
        ML_10M: ["ratings.dat", "movies.dat", "tags.dat"],
        ML_CSV: ["ratings.csv", "movies.csv", "links.csv"],
    }
    for fmt, files in cases.items():
        folder = tmp_path / fmt.name
        for name in files:
            write_lines(folder / name, ["x"])
        assert detect_format(folder) == fmt
    assert ML_CSV.users_file is None and not ML_CSV.has_demographics


def test_format_detection_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        detect_format(tmp_path / "absent")
    write_lines(tmp_path / "notes.txt", ["x"])
    with pytest.raises(DatasetFormatError, match=r"no MovieLens ratings file.*notes\.txt"):
        detect_format(tmp_path)
    write_lines(tmp_path / "u.data", ["1\t1\t5\t1"])
    write_lines(tmp_path / "u.user", ["1|20|M|writer|0"])
    with pytest.raises(DatasetFormatError, match="ml-100k but u.item is missing"):
        detect_format(tmp_path)


def test_line_numbers_are_exact_across_partitions(spark, tmp_path):
    lines = [f"{i}::{i % 7}::3::{1000 + i}" for i in range(1, 5001)]
    path = write_lines(tmp_path / "ratings.dat", lines)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "4096")
    try:
        numbered = read_numbered_lines(spark, path, "UTF-8")
        assert numbered.rdd.getNumPartitions() > 5
        rows = numbered.orderBy("line").collect()
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
    assert [(r.line, r.text) for r in rows] == list(enumerate(lines, 1))


def test_ml1m_parses_with_latin1_and_unknown_categories(spark, tmp_path):
    clean = load_clean(spark, ml1m_dir(tmp_path), "error")
    users = spark.createDataFrame(
        [(1, 2, 1, 11), (2, 1, 7, 17), (3, 0, 0, 0)],  # user 3: gender X, age 30 and occupation 25 unknown
        "userid int, gender int, age int, occupation int",
    )
    assert_df_equality(clean.users, users, ignore_row_order=True, ignore_nullable=True)
    titles = {r.itemid: (r.title, r.genre_ids) for r in clean.items.collect()}
    assert titles[3] == ("Cité des enfants perdus, La (1995)", [2, 15])
    assert titles[1] == ("Toy Story (1995)", [3, 4, 5])
    ratings = spark.createDataFrame(
        [(1, 1, 5.0, 978300760), (1, 2, 3.0, 978302109), (2, 3, 4.0, 978301968), (3, 1, 1.0, 978300275)],
        "userid int, itemid int, rating double, timestamp long",
    )
    assert_df_equality(clean.ratings, ratings, ignore_row_order=True, ignore_nullable=True)


def test_ml100k_layout(spark, tmp_path):
    write_lines(tmp_path / "u.data", ["1\t1\t5\t881250949", "2\t2\t1\t881250950"])
    write_lines(tmp_path / "u.user", ["1|17|M|writer|85711", "2|56|F|astronaut|94043"])
    flags_1 = "|".join(["0", "1", "1"] + ["0"] * 16)
    flags_2 = "|".join(["1"] + ["0"] * 18)  # only "unknown"
    write_lines(tmp_path / "u.item", [f"1|GoldenEye (1995)|01-Jan-1995||http://x|{flags_1}",
                                      f"2|unknown|||http://y|{flags_2}"])
    clean = load_clean(spark, tmp_path, "error")
    # writer is the 21st occupation; astronaut is not an ML-100K occupation -> 0
    assert sorted(map(tuple, clean.users.collect())) == [(1, 1, 1, 21), (2, 2, 7, 0)]
    assert sorted((r.itemid, r.genre_ids) for r in clean.items.collect()) == [(1, [1, 2]), (2, [])]


def test_csv_family_without_demographics(spark, tmp_path):
    write_lines(tmp_path / "ratings.csv", ["userId,movieId,rating,timestamp", "7,1,3.5,1112486027",
                                           "7,2,0.5,1112484676"])
    write_lines(tmp_path / "movies.csv", [
        "movieId,title,genres",
        '1,"American President, The (1995)",Comedy|Drama|Romance',
        '2,"Toy ""Quoted"" Story",Adventure|Children|IMAX',
    ])
    clean = load_clean(spark, tmp_path, "error")
    assert clean.fmt == ML_CSV
    assert sorted((r.itemid, r.title, r.genre_ids) for r in clean.items.collect()) == [
        (1, "American President, The (1995)", [5, 8, 14]),
        (2, 'Toy "Quoted" Story', [2, 4]),  # Children -> Children's, IMAX -> unknown (dropped)
    ]
    assert [tuple(r) for r in clean.users.collect()] == [(7, 0, 0, 0)]
    assert sorted(r.rating for r in clean.ratings.collect()) == [0.5, 3.5]


def test_genre_names_map_to_ids(spark):
    df = spark.createDataFrame([("Western|Action|Action",), ("(no genres listed)",), ("Film-Noir",)], "g string")
    result = [r.ids for r in df.select(genre_ids_from_names(F.col("g")).alias("ids")).collect()]
    assert result == [[1, 18], [], [10]]


def test_age_years_to_bucket(spark):
    df = spark.createDataFrame([(a,) for a in (None, 0, 7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 90)],
                               "age int")
    result = df.select("age", age_years_to_bucket(F.col("age")).alias("bucket"))
    expected = spark.createDataFrame(
        list(zip((None, 0, 7, 17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 90),
                 (0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7), strict=True)),
        "age int, bucket int",
    )
    assert_df_equality(result, expected, ignore_nullable=True)


@pytest.mark.parametrize(
    ("ratings", "message"),
    [
        (["1::1::5::978300760", "1::2::3"], r"ratings\.dat:2: field 'line' = '3': expected 4 fields"),
        (["1::1::5::978300760", "", "1::2::6::978300761"],
         r"ratings\.dat:3: field 'rating' = '6': outside the rating scale 1\.\.5"),
        (["1::1::4.5::978300760"], r"ratings\.dat:1: field 'rating' = '4\.5': outside the rating scale"),
        (["x::1::5::978300760"], r"ratings\.dat:1: field 'userid' = 'x': not an integer"),
        (["1::1::5::yesterday"], r"ratings\.dat:1: field 'timestamp' = 'yesterday'"),
        (["1::1::5::978300760", "9::1::5::978300760"], r"ratings\.dat:2: field 'userid' = '9': unknown user"),
        (["1::1::5::978300760", "1::99::5::978300760"], r"ratings\.dat:2: field 'itemid' = '99': unknown item"),
    ],
)
def test_bad_input_names_file_line_and_field(spark, tmp_path, ratings, message):
    with pytest.raises(DataValidationError, match=message):
        load_clean(spark, ml1m_dir(tmp_path, ratings=ratings), "error")


def test_bad_side_file_lines_are_reported(spark, tmp_path):
    with pytest.raises(DataValidationError, match=r"users\.dat:2: field 'age' = 'old'"):
        load_clean(spark, ml1m_dir(tmp_path, users=["1::F::1::10::1", "2::M::old::16::2"]), "error")
    with pytest.raises(DataValidationError, match=r"ratings\.csv:1: header 'user,item,rating,time' is not the"):
        write_lines(tmp_path / "csv" / "ratings.csv", ["user,item,rating,time", "1,1,4,1"])
        write_lines(tmp_path / "csv" / "movies.csv", ["movieId,title,genres", "1,A,Drama"])
        load_clean(spark, tmp_path / "csv", "error")


def test_skip_mode_drops_and_counts_bad_lines(spark, tmp_path):
    ratings = ["1::1::5::978300760", "1::2::9::978300761", "oops", "1::99::4::978300762", "2::3::4::978300763"]
    clean = load_clean(spark, ml1m_dir(tmp_path, ratings=ratings), "skip")
    assert clean.skipped_lines == 3
    assert sorted((r.userid, r.itemid) for r in clean.ratings.collect()) == [(1, 1), (2, 3)]


def spreadsheet_csv_dir(root: Path, rating_lines: list[str]) -> Path:
    write_lines(root / "ratings.csv", ["userId,movieId,rating,timestamp,,,,", *rating_lines])
    write_lines(root / "movies.csv", ["movieId,title,genres,,", '1,"Heat, The (1995)",Action|Crime,,', "2,B,Drama,,"])
    return root


def test_spreadsheet_padding_is_ignored(spark, tmp_path, caplog):
    folder = spreadsheet_csv_dir(tmp_path, ["1,1,2.5,1260759144,,,,", "1,2,4.0,1260759145,,,,", "2,1,3,1260759146"])
    with caplog.at_level("INFO", logger="spark_jobs.ingest"):
        clean = load_clean(spark, folder, "error")
    assert sorted(tuple(r) for r in clean.ratings.collect()) == [
        (1, 1, 2.5, 1260759144), (1, 2, 4.0, 1260759145), (2, 1, 3.0, 1260759146)]
    assert sorted((r.itemid, r.title, r.genre_ids) for r in clean.items.collect()) == [
        (1, "Heat, The (1995)", [1, 6]), (2, "B", [8])]
    assert clean.skipped_lines == 0
    assert "trailing empty fields ignored on 2 line(s)" in caplog.text


def test_extra_non_empty_fields_stay_bad_lines(spark, tmp_path):
    folder = spreadsheet_csv_dir(tmp_path, ["1,1,2.5,1260759144,,,,", "1,2,4.0,1260759145,,x,,"])
    with pytest.raises(DataValidationError, match=r"ratings\.csv:3: field 'line' = '8': expected 4 fields"):
        load_clean(spark, folder, "error")
    assert sorted(r.itemid for r in load_clean(spark, folder, "skip").ratings.collect()) == [1]


def test_wrong_header_is_one_error_even_when_skipping(spark, tmp_path):
    write_lines(tmp_path / "ratings.csv", ["userId,itemId,rating,timestamp", *[f"1,{i},4,{i}" for i in range(1, 50)]])
    write_lines(tmp_path / "movies.csv", ["movieId,title,genres", "1,A,Drama"])
    with pytest.raises(DataValidationError) as failure:
        load_clean(spark, tmp_path, "skip")
    assert str(failure.value).startswith(
        "ratings.csv:1: header 'userId,itemId,rating,timestamp' is not the expected 'userId,movieId,rating,timestamp'")


@pytest.mark.parametrize("empty_file", ["ratings.dat", "users.dat", "movies.dat"])
def test_empty_input_is_an_error(spark, tmp_path, empty_file):
    folder = ml1m_dir(tmp_path)
    (folder / empty_file).write_bytes(b"")
    with pytest.raises(DataValidationError, match=rf"^{empty_file}: empty \(no lines\)"):
        load_clean(spark, folder, "error")


def test_all_lines_skipped_is_an_error(spark, tmp_path):
    with pytest.raises(DataValidationError, match=r"ratings\.dat: no usable lines \(2 line\(s\), all bad\)"):
        load_clean(spark, ml1m_dir(tmp_path, ratings=["oops", "1::1::9::1"]), "skip")


def test_utf8_copy_of_a_latin1_release_reads_as_utf8(spark, tmp_path):
    folder = ml1m_dir(tmp_path)
    write_lines(folder / "movies.dat", ML1M_MOVIES, "utf-8")  # re-saved by an editor
    titles = {r.itemid: r.title for r in load_clean(spark, folder, "error").items.collect()}
    assert titles[3] == "Cité des enfants perdus, La (1995)"
    assert file_encoding(folder / "users.dat", "ISO-8859-1") == "ISO-8859-1"  # plain ASCII: as declared
    write_lines(folder / "movies.dat", ML1M_MOVIES, "iso-8859-1")
    assert file_encoding(folder / "movies.dat", "ISO-8859-1") == "ISO-8859-1"


def test_duplicate_ratings_are_kept_and_counted(spark, tmp_path, caplog):
    ratings = [*ML1M_RATINGS, "1::1::2::978300999", "1::1::4::978301000"]
    settings = BatchSettings(data_dir=ml1m_dir(tmp_path / "data", ratings=ratings), output_dir=tmp_path / "output",
                             shuffle_partitions=2)
    with caplog.at_level("WARNING", logger="spark_jobs.ingest"):
        run(spark, settings, "duplicates")
    written = read_arrow_table(settings, Table.RATINGS, ["userid", "itemid"])
    assert written.filter(pc.and_(pc.equal(written["userid"], 1), pc.equal(written["itemid"], 1))).num_rows == 3
    assert duplicate_ratings(written) == 2
    assert "2 rating(s) repeat an earlier (user, item) pair" in caplog.text


def test_duplicate_ratings_count_repeats_beyond_the_first_of_each_pair():
    ratings = pa.table({"userid": [1, 1, 1, 2, 2, 3], "itemid": [5, 5, 5, 5, 6, 5]})
    assert duplicate_ratings(ratings) == 2
    assert duplicate_ratings(ratings.slice(3)) == 0
