"""A run's output folder (trader.rundir.RunDir) on a local path and on S3 (moto server on loopback).

What a user relies on: what is written reads back equal, JSON never holds NaN, a file appears whole or not at
all (no temporary leftovers, a failed write leaves no file and keeps an older one intact), listings skip
unfinished writes, a missing file is a one-line DataError naming it, and a RunDir pickles as its URI only.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pickle
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trader.data.objectstore import temp_path
from trader.errors import DataError, StoreError
from trader.rundir import RunDir, json_safe


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": pl.Series(
                [dt.datetime(2024, 1, 2, 14, 30), dt.datetime(2024, 1, 3, 14, 30)], dtype=pl.Datetime("ns")
            ).dt.replace_time_zone("UTC"),
            "symbol": ["AAA", "BBB"],
            "fold": pl.Series([0, 1], dtype=pl.Int64),
            "return": [0.01, float("nan")],
            "note": [None, "x"],
        }
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- json_safe ---------------------------------------------------------------------------------------------


def test_json_safe_makes_plain_json() -> None:
    value = {
        "nan": float("nan"),
        "inf": -math.inf,
        "np_nan": np.float64("nan"),
        "np_float": np.float32(0.5),
        "np_int": np.int64(7),
        "np_bool": np.bool_(True),
        "nested": ({"x": np.float64(1.5), 3: [math.inf, 2]},),
        "text": "nan",
    }
    out = json_safe(value)
    assert out == {
        "nan": None,
        "inf": None,
        "np_nan": None,
        "np_float": 0.5,
        "np_int": 7,
        "np_bool": True,
        "nested": [{"x": 1.5, "3": [None, 2]}],
        "text": "nan",
    }
    assert type(out["np_int"]) is int and type(out["np_float"]) is float
    json.dumps(out, allow_nan=False)  # strict JSON: would raise on NaN or inf


# -- local -------------------------------------------------------------------------------------------------


def test_local_round_trip(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    assert not run.is_s3
    frame = _frame()
    run.write_parquet("folds/0/returns.parquet", frame)
    run.write_json("summary.json", {"sharpe": 1.25, "dsr": float("nan"), "folds": [0, 1]})
    run.write_bytes("report.html", b"<html></html>", "text/html")
    assert_frame_equal(run.read_parquet("folds/0/returns.parquet"), frame)
    assert run.read_json("summary.json") == {"sharpe": 1.25, "dsr": None, "folds": [0, 1]}
    assert run.read_bytes("report.html") == b"<html></html>"
    # The file on disk is strict JSON: NaN was written as null.
    text = (tmp_path / "run" / "summary.json").read_text()
    assert "NaN" not in text and '"dsr": null' in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert run.exists("summary.json") and not run.exists("nope.json") and not run.exists("folds")
    assert _files(tmp_path / "run") == ["folds/0/returns.parquet", "report.html", "summary.json"]
    # pl.read_parquet takes the path the run gives.
    assert_frame_equal(pl.read_parquet(run.path("folds/0/returns.parquet")), frame)


def test_overwrite_replaces_the_whole_file(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path))
    run.write_json("a.json", {"long": "x" * 1000})
    run.write_json("a.json", {"short": 1})
    assert run.read_json("a.json") == {"short": 1}
    assert _files(tmp_path) == ["a.json"]


def test_a_write_whose_folder_cannot_exist_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    run = RunDir(str(tmp_path))
    with pytest.raises((StoreError, OSError)):  # which of the two: the next test
        run.write_json("blocker/summary.json", {"a": 1})
    assert _files(tmp_path) == ["blocker"]
    assert (tmp_path / "blocker").read_text() == "a file where a folder should be"


def test_a_write_whose_folder_cannot_exist_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(StoreError, match="blocker") as err:
        RunDir(str(tmp_path)).write_json("blocker/summary.json", {"a": 1})
    assert "\n" not in str(err.value)


def test_a_write_failing_midway_keeps_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(str(tmp_path))
    run.write_json("summary.json", {"version": 1})

    def broken_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_disk)
    with pytest.raises(StoreError, match=re.escape("summary.json")):
        run.write_json("summary.json", {"version": 2})
    with pytest.raises(StoreError):
        run.write_parquet("new.parquet", _frame())
    monkeypatch.undo()
    assert run.read_json("summary.json") == {"version": 1}
    assert _files(tmp_path) == ["summary.json"]  # neither a temporary file nor a half-written new one


def test_list_skips_unfinished_writes(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path))
    run.write_json("folds/1/outcome.json", {})
    run.write_parquet("folds/0/returns.parquet", _frame())
    run.write_json("summary.json", {})
    # What a crashed writer leaves behind: a hidden temporary sibling.
    Path(temp_path(str(tmp_path / "folds" / "0" / "trades.parquet"))).write_bytes(b"partial")
    assert run.list() == ["folds/0/returns.parquet", "folds/1/outcome.json", "summary.json"]
    assert run.list("folds") == ["folds/0/returns.parquet", "folds/1/outcome.json"]
    assert run.list("missing") == []
    assert RunDir(str(tmp_path / "not-yet")).list() == []


def test_missing_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path))
    for read in (run.read_json, run.read_parquet, run.read_bytes):
        with pytest.raises(DataError, match=re.escape("folds/7/params.parquet")) as err:
            read("folds/7/params.parquet")
        assert "\n" not in str(err.value)


def test_unreadable_contents_are_data_errors(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path))
    run.write_bytes("summary.json", b"{not json")
    run.write_bytes("returns.parquet", b"PAR1 nonsense")
    with pytest.raises(DataError, match=re.escape("summary.json")):
        run.read_json("summary.json")
    with pytest.raises(DataError, match=re.escape("returns.parquet")):
        run.read_parquet("returns.parquet")


def test_a_run_dir_pickles_as_its_uri(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    run.write_json("a.json", {"a": 1})  # opens its filesystem
    again = pickle.loads(pickle.dumps(run))
    assert again.uri == run.uri == str(tmp_path / "run")
    assert again.read_json("a.json") == {"a": 1}


# -- S3 ----------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_s3_round_trip(s3_bucket: str) -> None:
    import boto3

    run = RunDir(f"s3://{s3_bucket}/runs/r1/")
    assert run.is_s3 and run.uri == f"s3://{s3_bucket}/runs/r1"
    frame = _frame()
    run.write_parquet("folds/0/returns.parquet", frame)
    run.write_json("summary.json", {"sharpe": float("nan"), "n": np.int64(3)})
    assert_frame_equal(run.read_parquet("folds/0/returns.parquet"), frame)
    assert run.read_json("summary.json") == {"sharpe": None, "n": 3}
    assert_frame_equal(pl.read_parquet(run.path("folds/0/returns.parquet")), frame)
    assert run.exists("summary.json") and not run.exists("other.json")
    assert run.list() == ["folds/0/returns.parquet", "summary.json"]
    assert run.list("folds") == ["folds/0/returns.parquet"]
    listed = boto3.client("s3").list_objects_v2(Bucket=s3_bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "runs/r1/folds/0/returns.parquet",
        "runs/r1/summary.json",
    ]
    body = boto3.client("s3").get_object(Bucket=s3_bucket, Key="runs/r1/summary.json")["Body"].read()
    assert b"NaN" not in body and b"null" in body
    with pytest.raises(DataError, match=re.escape("missing.json")):
        run.read_json("missing.json")
    # Pickled, it is its URI only: no credentials or endpoint ride along.
    blob = pickle.dumps(run)
    assert b"testing" not in blob and b"127.0.0.1" not in blob
    assert pickle.loads(blob).read_json("summary.json") == {"sharpe": None, "n": 3}


@pytest.mark.integration
def test_s3_write_to_a_missing_bucket_is_a_store_error(s3_env: str) -> None:
    run = RunDir("s3://no-such-bucket-for-trader-tests/run")
    with pytest.raises(StoreError, match="no-such-bucket-for-trader-tests") as err:
        run.write_json("summary.json", {"a": 1})
    assert "\n" not in str(err.value)
