"""Rating-file readers: every format, and malformed files named by line."""

from __future__ import annotations

import polars as pl
import pytest

from factorflow.cli.readers import RatingsFileError, detect_format, read_ratings
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.unit


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def triples(df: pl.DataFrame) -> list[tuple]:
    return list(zip(df["user_id"].to_list(), df["item_id"].to_list(), df["rating"].to_list()))


# --- formats -----------------------------------------------------------------


def test_csv_without_header(tmp_path):
    df = read_ratings(write(tmp_path, "r.csv", "1,10,4.5\n2,20,3\n"))
    assert df.columns == ["user_id", "item_id", "rating"]
    assert df.schema["rating"] == pl.Float32 and df.schema["user_id"] == pl.Int64
    assert triples(df) == [(1, 10, 4.5), (2, 20, 3.0)]


def test_csv_header_names_in_any_order_with_string_ids(tmp_path):
    path = write(tmp_path, "r.csv", "item,score,user\nA,5,u1\nB,2.5,u2\n")
    df = read_ratings(path)
    assert triples(df) == [("u1", "A", 5.0), ("u2", "B", 2.5)]
    assert df.schema["user_id"] == pl.String


def test_movielens_latest_csv(tmp_path):
    path = write(tmp_path, "ratings.csv",
                 "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    assert detect_format(path) == "movielens-csv"
    df = read_ratings(path)
    assert df.columns == ["user_id", "item_id", "rating", "timestamp"]
    assert df["timestamp"].to_list() == [1260759144, 1260759179]


def test_tsv_with_and_without_header(tmp_path):
    bare = read_ratings(write(tmp_path, "a.tsv", "1\t2\t3\n4\t5\t1\n"))
    headed = read_ratings(write(tmp_path, "b.tsv", "user_id\titem_id\trating\n1\t2\t3\n4\t5\t1\n"))
    assert triples(bare) == triples(headed) == [(1, 2, 3.0), (4, 5, 1.0)]


def test_movielens_100k_by_name_and_content(tmp_path):
    path = write(tmp_path, "u1.base", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    assert detect_format(path) == "movielens-100k"
    df = read_ratings(path)
    assert triples(df) == [(196, 242, 3.0), (186, 302, 3.0)]
    assert df["timestamp"].to_list() == [881250949, 891717742]


def test_movielens_dat(tmp_path):
    path = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n")
    assert detect_format(path) == "movielens-dat"
    assert triples(read_ratings(path)) == [(1, 1193, 5.0), (1, 661, 3.0)]


def test_parquet_with_alias_columns(tmp_path):
    path = tmp_path / "r.parquet"
    pl.DataFrame({"userId": [1, 2], "movieId": [7, 8], "rating": [4, 5]}).write_parquet(path)
    df = read_ratings(path)
    assert triples(df) == [(1, 7, 4.0), (2, 8, 5.0)]
    assert df.schema["rating"] == pl.Float32


def test_explicit_format_overrides_detection(tmp_path):
    path = write(tmp_path, "data.txt", "1\t2\t3\t4\n")
    assert triples(read_ratings(path, format="movielens-100k")) == [(1, 2, 3.0)]


def test_blank_lines_crlf_and_spaces_are_tolerated(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"\n1, 2, 3\r\n\r\n  \n4,5,\"2.5\"\r\n")
    assert triples(read_ratings(path)) == [(1, 2, 3.0), (4, 5, 2.5)]


# --- malformed files ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("r.csv", "userId,movieId,rating\n1,2,3\n12,abc\n", "line 3: expected 3 fields, got 2: '12,abc'"),
        ("r.csv", "1,2,3\n4,5,6\n7,8,good\n", "line 3: rating 'good' is not a finite number"),
        ("r.csv", "1,2,3\n4,5,nan\n", "line 2: rating 'nan' is not a finite number"),
        ("r.csv", "1,2,3\n4,5,6,7,8\n", "line 2: expected 3 or 4 fields, got 5"),
        ("r.csv", "1,2,3\n,5,6\n", "line 2: empty user or item id: ',5,6'"),
        ("r.csv", "1,2,3,100\n4,5,6,noon\n", "line 2: timestamp 'noon' is not an integer"),
        ("r.dat", "1::2::3::4\n1::2::3\n", "line 2: expected 4 fields, got 3: '1::2::3'"),
        ("u.data", "1\t2\t3\t4\n\n5\t6\tx\t7\n", "line 3: rating 'x' is not a finite number"),
        ("r.csv", "1,2,abc\n", "line 1: rating 'abc' is not a number"),
    ],
)
def test_malformed_line_is_named(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(RatingsFileError) as info:
        read_ratings(path)
    assert f"{path} {expected}" in str(info.value)


def test_later_malformed_lines_are_counted(tmp_path):
    with pytest.raises(RatingsFileError, match=r"line 2: .*\(2 more malformed line\(s\) follow\)"):
        read_ratings(write(tmp_path, "r.csv", "1,2,3\n1\n2\n3\n"))


def test_empty_file_header_only_and_missing_file(tmp_path):
    with pytest.raises(RatingsFileError, match="file is empty"):
        read_ratings(write(tmp_path, "empty.csv", "\n \n"))
    with pytest.raises(RatingsFileError, match="no ratings after the header on line 1"):
        read_ratings(write(tmp_path, "h.csv", "user,item,rating\n"))
    with pytest.raises(FileNotFoundError, match="nope.csv: no such file"):
        read_ratings(tmp_path / "nope.csv")
    with pytest.raises(RatingsFileError, match="not a regular file"):
        read_ratings(tmp_path)
    with pytest.raises(ValueError, match="unknown format 'xls'"):
        read_ratings(tmp_path / "h.csv", format="xls")


def test_bad_parquet(tmp_path):
    path = tmp_path / "r.parquet"
    pl.DataFrame({"user": [1], "thing": [2], "rating": [3.0]}).write_parquet(path)
    with pytest.raises(RatingsFileError, match="no column for item_id"):
        read_ratings(path)
    pl.DataFrame({"user": [1, 2], "item": [2, 3], "rating": [3.0, None]}).write_parquet(path)
    with pytest.raises(RatingsFileError, match="row 2: missing or non-finite"):
        read_ratings(path)
    path.write_text("not parquet")
    with pytest.raises(RatingsFileError, match="not a readable Parquet file"):
        read_ratings(path)


# --- the real MovieLens files, when the shared data folder is there -----------


def shared(relative: str):
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_real_movielens_100k_u1_base():
    df = read_ratings(shared("ml-100k/u1.base"))
    assert df.height == 80_000
    assert df.columns == ["user_id", "item_id", "rating", "timestamp"]
    assert df["rating"].min() == 1 and df["rating"].max() == 5


def test_real_movielens_latest_small_ratings_csv():
    df = read_ratings(shared("ml-latest-small/ratings.csv"))
    assert df.height == 100_836
    assert df.schema["user_id"] == pl.Int64 and df.schema["rating"] == pl.Float32
    assert df["rating"].min() == 0.5 and df["rating"].max() == 5
