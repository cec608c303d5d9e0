"""The bar store, preflight and sync against a real S3 API server (moto) on loopback.

Endpoint and credentials reach every client through the environment only (the ``s3_env`` fixture); nothing
here passes them as arguments, which is the point of reading the shards back with pyarrow and polars
straight from s3:// URIs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import pickle
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

import trader.data.objectstore as objectstore
from trader.data.objectstore import preflight, sync
from trader.data.schema import conform_bars
from trader.data.store import SHARD_NAME, BarStore
from trader.errors import StorageAccessError, StoreError

pytestmark = pytest.mark.integration

UTC = dt.UTC


# -- real bars ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def aapl(shared_data: Path) -> pl.DataFrame:
    raw = pl.read_csv(shared_data / "mplfinance" / "yahoofinance-AAPL-20040819-20180120.csv")
    return conform_bars(
        raw.select(
            pl.col("Date").str.to_date().cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts"),
            pl.col("Open").alias("open"),
            pl.col("High").alias("high"),
            pl.col("Low").alias("low"),
            pl.col("Close").alias("close"),
            pl.col("Volume").alias("volume"),
        )
    )


@pytest.fixture(scope="module")
def spy_minutes(shared_data: Path) -> pl.DataFrame:
    path = shared_data / "pyalgotrade" / "testcases" / "data" / "nt-spy-minute-2011-03.csv.gz"
    raw = pl.read_csv(
        path, separator=";", has_header=False, new_columns=["end", "open", "high", "low", "close", "volume"]
    )
    ts = pl.col("end").str.strptime(pl.Datetime("ns"), "%Y%m%d %H%M%S").dt.replace_time_zone("UTC")
    return conform_bars(raw.with_columns((ts - pl.duration(minutes=1)).alias("ts"))).sort("ts")


def _keys(bucket: str, prefix: str = "") -> dict[str, int]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}


def _with_symbol(symbol: str, bars: pl.DataFrame) -> pl.DataFrame:
    return bars.select(pl.lit(symbol).alias("symbol"), pl.all())


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# -- the store on S3 -------------------------------------------------------------------------------------
def test_round_trip_and_layout_on_s3(s3_bucket: str, aapl: pl.DataFrame, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(f"s3://{s3_bucket}/research/v1")
    store.write_bars("AAPL", "1d", aapl)
    store.write_bars("SPY", "1m", spy_minutes)

    assert_frame_equal(store.read_bars(["AAPL"], "1d"), _with_symbol("AAPL", aapl))
    assert_frame_equal(store.read_bars(["SPY"], "1m"), _with_symbol("SPY", spy_minutes))

    # Independently, with boto3: exactly the shards, no folder markers, no temp objects.
    keys = _keys(s3_bucket)
    expected = {f"research/v1/bars/interval=1d/symbol=AAPL/year={y}/{SHARD_NAME}" for y in range(2004, 2019)}
    expected.add(f"research/v1/bars/interval=1m/symbol=SPY/year=2011/{SHARD_NAME}")
    assert set(keys) == expected
    client = boto3.client("s3")
    rows = 0
    for key in sorted(k for k in expected if "AAPL" in k):
        obj = client.get_object(Bucket=s3_bucket, Key=key)
        body = obj["Body"].read()
        assert obj["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
        table = pq.read_table(io.BytesIO(body))
        year = int(key.split("year=")[1][:4])
        assert {t.year for t in table["ts"].to_pylist()} == {year}
        rows += table.num_rows
    assert rows == aapl.height


def test_shards_read_directly_from_the_s3_uri(s3_bucket: str, aapl: pl.DataFrame) -> None:
    store = BarStore(f"s3://{s3_bucket}/research/v1")
    store.write_bars("AAPL", "1d", aapl)
    base = f"s3://{s3_bucket}/research/v1/bars/interval=1d"

    # pyarrow and polars find the loopback endpoint and the keys from the environment alone.
    table = ds.dataset(base, format="parquet", partitioning="hive").to_table()
    from_pyarrow = pl.from_arrow(table)
    assert isinstance(from_pyarrow, pl.DataFrame)
    assert_frame_equal(from_pyarrow.sort("ts").select(aapl.columns), aapl)

    from_polars = pl.scan_parquet(f"{base}/**/*.parquet", hive_partitioning=True).collect()
    assert from_polars["symbol"].unique().to_list() == ["AAPL"]
    assert_frame_equal(from_polars.sort("ts").select(aapl.columns), aapl)


def test_overlapping_rewrite_windows_listing_and_delete_on_s3(s3_bucket: str, aapl: pl.DataFrame) -> None:
    store = BarStore(f"s3://{s3_bucket}/research/v1")
    store.write_bars("AAPL", "1d", aapl)
    in_range = pl.col("ts").is_between(
        dt.datetime(2012, 11, 1, tzinfo=UTC), dt.datetime(2013, 2, 28, tzinfo=UTC)
    )
    fresh = aapl.filter(in_range).gather_every(3).with_columns(pl.col("close") + 1000)
    # What is replaced is the new bars' own span, from their first to their last timestamp.
    in_range = pl.col("ts").is_between(fresh["ts"].min(), fresh["ts"].max())
    stats = store.write_bars("AAPL", "1d", fresh)
    assert stats.rows_replaced == aapl.filter(in_range).height and stats.shards_written == 2

    stored = store.read_bars(["AAPL"], "1d").drop("symbol")
    assert stored["ts"].is_unique().all()
    assert_frame_equal(stored.filter(~in_range), aapl.filter(~in_range))
    assert_frame_equal(stored.filter(in_range), fresh)

    window = store.read_bars(["AAPL"], "1d", start="2013-01-01", end="2013-02-01", columns=["close"])
    assert window.columns == ["symbol", "ts", "close"]
    assert window["ts"].dt.month().unique().to_list() == [1] and (window["close"] > 1000).all()

    listing = store.list_bars().row(0, named=True)
    assert (listing["rows"], listing["shards"]) == (stored.height, 15)
    assert listing["bytes"] == sum(_keys(s3_bucket).values())

    with pytest.raises(StoreError, match=f"'MSFT'.*s3://{s3_bucket}/research/v1"):
        store.read_bars(["MSFT"], "1d")
    assert store.delete_bars("AAPL", "1d") == stored.height
    assert _keys(s3_bucket) == {}  # no "folder/" markers left behind
    assert store.symbols("1d") == []


def test_pickled_s3_store_carries_no_credentials(s3_bucket: str, aapl: pl.DataFrame) -> None:
    store = BarStore(f"s3://{s3_bucket}/research/v1")
    store.write_bars("AAPL", "1d", aapl.head(20))
    assert store.read_bars(["AAPL"], "1d").height == 20  # filesystem and client now exist on the instance
    payload = pickle.dumps(store)
    assert b"testing" not in payload  # the secret key in the environment
    assert store.__reduce__() == (BarStore, (f"s3://{s3_bucket}/research/v1",))
    assert pickle.loads(payload).read_bars(["AAPL"], "1d").height == 20


# -- preflight -------------------------------------------------------------------------------------------
def test_preflight_passes_and_leaves_nothing(s3_bucket: str) -> None:
    preflight(f"s3://{s3_bucket}/jobs/run-1")
    preflight(f"s3://{s3_bucket}")
    assert _keys(s3_bucket) == {}


def test_preflight_without_credentials(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # this host has no instance profile
    with pytest.raises(StorageAccessError) as info:
        preflight(f"s3://{s3_bucket}/jobs")
    text = _one_line(info)
    assert f"s3://{s3_bucket}/jobs" in text
    assert "AWS_ACCESS_KEY_ID" in text and "instance profile" in text


def test_preflight_missing_bucket(s3_env: str) -> None:
    with pytest.raises(StorageAccessError) as info:
        preflight("s3://no-such-bucket-for-trader/jobs")
    text = _one_line(info)
    assert "'no-such-bucket-for-trader'" in text and "does not exist" in text


@contextlib.contextmanager
def _iam_enforced(endpoint: str) -> Iterator[None]:
    """Make the moto server check IAM policies for every request, then restore its previous setting."""

    def reset_auth(value: str) -> str:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=value.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]

    previous = reset_auth("0")
    try:
        yield
    finally:
        reset_auth(previous)


def _user_keys(name: str, actions: list[str], bucket: str) -> dict[str, str]:
    """Access keys of a new IAM user allowed only ``actions`` on ``bucket`` (none when empty)."""
    iam = boto3.client("iam")
    iam.create_user(UserName=name)
    if actions:
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": actions,
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                }
            ],
        }
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_preflight_access_denied(s3_bucket: str, s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    suffix = s3_bucket.removeprefix("test-")
    read_only = _user_keys(f"reader-{suffix}", ["s3:ListBucket", "s3:GetObject"], s3_bucket)
    nobody = _user_keys(f"nobody-{suffix}", [], s3_bucket)
    with _iam_enforced(s3_env):
        for name, value in read_only.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StorageAccessError) as info:
            preflight(f"s3://{s3_bucket}/jobs")
        text = _one_line(info)
        assert f"s3://{s3_bucket}/jobs" in text and "write" in text and "s3:PutObject" in text

        for name, value in nobody.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StorageAccessError) as info:
            preflight(f"s3://{s3_bucket}/jobs")
        text = _one_line(info)
        assert f"'{s3_bucket}'" in text and "s3:ListBucket" in text


# -- sync ------------------------------------------------------------------------------------------------
def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sync_local_to_s3_to_local(
    s3_bucket: str, tmp_path: Path, aapl: pl.DataFrame, spy_minutes: pl.DataFrame
) -> None:
    src = tmp_path / "src"
    local = BarStore(str(src))
    local.write_bars("AAPL", "1d", aapl)
    local.write_bars("SPY", "1m", spy_minutes)
    files = _local_files(src)
    remote = f"s3://{s3_bucket}/mirror"

    up = sync(str(src), remote)
    assert (up.files_copied, up.files_skipped, up.bytes_copied) == (
        len(files),
        0,
        sum(map(len, files.values())),
    )
    client = boto3.client("s3")
    for rel, data in files.items():
        head = client.head_object(Bucket=s3_bucket, Key=f"mirror/{rel}")
        assert head["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()

    down = sync(remote, str(tmp_path / "back"))
    assert down.files_copied == len(files)
    assert _local_files(tmp_path / "back") == files  # byte-identical
    assert_frame_equal(BarStore(str(tmp_path / "back")).read_bars(None, "1d"), local.read_bars(None, "1d"))

    again_up, again_down = sync(str(src), remote), sync(remote, str(tmp_path / "back"))
    assert (again_up.files_copied, again_up.files_skipped) == (0, len(files))
    assert (again_down.files_copied, again_down.files_skipped, again_down.bytes_copied) == (0, len(files), 0)


def test_sync_resumes_after_interruption_and_repairs_differences(
    s3_bucket: str, tmp_path: Path, aapl: pl.DataFrame
) -> None:
    src = tmp_path / "src"
    BarStore(str(src)).write_bars("AAPL", "1d", aapl)
    files = _local_files(src)
    remote = f"s3://{s3_bucket}/mirror"

    def interrupt(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(str(src), remote, progress=interrupt, max_workers=2)
    uploaded = _keys(s3_bucket, "mirror/")
    assert 5 <= len(uploaded) < len(files)
    resumed = sync(str(src), remote)
    assert (resumed.files_copied, resumed.files_skipped) == (len(files) - len(uploaded), len(uploaded))

    # An object of the same size but other bytes (written by another tool, so no sha256 metadata) and a
    # missing local file: a rerun copies exactly those.
    client = boto3.client("s3")
    first = sorted(files)[0]
    damaged = bytearray(files[first])
    damaged[100] ^= 0xFF
    client.put_object(Bucket=s3_bucket, Key=f"mirror/{first}", Body=bytes(damaged))
    assert sync(str(src), remote).files_copied == 1
    back = tmp_path / "back"
    sync(remote, str(back))
    (back / sorted(files)[-1]).unlink()
    repaired = sync(remote, str(back))
    assert (repaired.files_copied, repaired.files_skipped) == (1, len(files) - 1)
    assert _local_files(back) == files


def test_sync_of_a_store_written_on_s3_skips_by_metadata(
    s3_bucket: str, tmp_path: Path, aapl: pl.DataFrame
) -> None:
    BarStore(f"s3://{s3_bucket}/research").write_bars("AAPL", "1d", aapl)
    first = sync(f"s3://{s3_bucket}/research", str(tmp_path / "copy"))
    second = sync(f"s3://{s3_bucket}/research", str(tmp_path / "copy"))
    assert (first.files_copied, second.files_copied, second.files_skipped) == (15, 0, 15)


def test_sync_uses_multipart_above_the_threshold(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objectstore, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(objectstore, "MULTIPART_CHUNKSIZE", 5 * 1024 * 1024)
    src = tmp_path / "src"
    src.mkdir()
    big = np.random.default_rng(11).bytes(11 * 1024 * 1024)
    (src / "big.bin").write_bytes(big)
    (src / "small.bin").write_bytes(b"bars")

    assert sync(str(src), f"s3://{s3_bucket}/blobs").files_copied == 2
    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key="blobs/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # three parts, completed as one object
    assert head["Metadata"]["sha256"] == hashlib.sha256(big).hexdigest()
    assert sync(str(src), f"s3://{s3_bucket}/blobs").files_skipped == 2
    sync(f"s3://{s3_bucket}/blobs", str(tmp_path / "back"))
    assert (tmp_path / "back" / "big.bin").read_bytes() == big
