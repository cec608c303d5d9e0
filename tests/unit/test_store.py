"""The Parquet bar store on a local folder, plus local preflight and sync, on real bars from the corpus."""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle
import threading
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

import trader.data.store as store_module
from trader.data.objectstore import is_temp_name, preflight, sync
from trader.data.schema import BAR_SCHEMA, conform_bars
from trader.data.store import SHARD_NAME, BarStore
from trader.errors import DataError, SchemaError, StorageAccessError, StoreError

UTC = dt.UTC


# -- real bars ---------------------------------------------------------------------------------------------
def _yahoo_daily(path: Path) -> pl.DataFrame:
    """Yahoo daily bars (Date,Open,High,Low,Close,Adj Close,Volume), labelled at 00:00 UTC of the session."""
    raw = pl.read_csv(path)
    return conform_bars(
        raw.select(
            pl.col("Date").str.to_date().cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts"),
            pl.col("Open").alias("open"),
            pl.col("High").alias("high"),
            pl.col("Low").alias("low"),
            pl.col("Close").alias("close"),
            pl.col("Volume").alias("volume"),
            # Optional columns with real nulls, so the round trip covers them too.
            ((pl.col("High") + pl.col("Low") + pl.col("Close")) / 3).alias("vwap"),
            pl.when(pl.col("Volume") % 7 == 0).then(None).otherwise(pl.col("Volume") // 100).alias("trades"),
        )
    )


def _nt_minutes(path: Path) -> pl.DataFrame:
    """NinjaTrader SPY minute bars: UTC, labelled at bar end, so the start is one minute earlier."""
    raw = pl.read_csv(
        path, separator=";", has_header=False, new_columns=["end", "open", "high", "low", "close", "volume"]
    )
    ts = pl.col("end").str.strptime(pl.Datetime("ns"), "%Y%m%d %H%M%S").dt.replace_time_zone("UTC")
    return conform_bars(raw.with_columns((ts - pl.duration(minutes=1)).alias("ts")))


@pytest.fixture(scope="module")
def aapl(shared_data: Path) -> pl.DataFrame:
    return _yahoo_daily(shared_data / "mplfinance" / "yahoofinance-AAPL-20040819-20180120.csv")


@pytest.fixture(scope="module")
def spy_daily(shared_data: Path) -> pl.DataFrame:
    return _yahoo_daily(shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv")


@pytest.fixture(scope="module")
def spy_minutes(shared_data: Path) -> pl.DataFrame:
    folder = shared_data / "pyalgotrade" / "testcases" / "data"
    frames = [
        _nt_minutes(folder / name) for name in ("nt-spy-minute-2011.csv.gz", "nt-spy-minute-2011-03.csv.gz")
    ]
    return pl.concat(frames).sort("ts")


def _shard_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with_symbol(symbol: str, bars: pl.DataFrame) -> pl.DataFrame:
    return bars.select(pl.lit(symbol).alias("symbol"), pl.all())


# -- round trip and layout -------------------------------------------------------------------------------
def test_round_trip_is_exact(tmp_path: Path, aapl: pl.DataFrame, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl.reverse())  # unsorted input is stored sorted
    store.write_bars("SPY", "1m", spy_minutes)

    daily = store.read_bars(["AAPL"], "1d")
    assert daily.schema["symbol"] == pl.String
    assert daily.schema["ts"] == pl.Datetime("ns", "UTC")
    assert_frame_equal(daily, _with_symbol("AAPL", aapl))
    assert_frame_equal(store.read_bars("SPY", "1m"), _with_symbol("SPY", spy_minutes))


def test_partition_layout_on_disk(tmp_path: Path, aapl: pl.DataFrame, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl)
    store.write_bars("SPY", "1m", spy_minutes)

    expected = {f"bars/interval=1d/symbol=AAPL/year={y}/{SHARD_NAME}" for y in range(2004, 2019)}
    expected.add(f"bars/interval=1m/symbol=SPY/year=2011/{SHARD_NAME}")
    files = _shard_files(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in files} == expected

    for path in files:
        year = int(path.parent.name.removeprefix("year="))
        meta = pq.read_metadata(path)
        assert meta.schema.to_arrow_schema().remove_metadata().equals(BAR_SCHEMA)
        assert meta.row_group(0).column(0).compression == "ZSTD"
        ts = pq.read_table(path, columns=["ts"])["ts"].to_pylist()
        assert ts == sorted(ts) and len(set(ts)) == len(ts)
        assert {t.year for t in ts} == {year}


def test_minute_row_groups_cover_one_week_each(tmp_path: Path, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("SPY", "1m", spy_minutes)
    (shard,) = _shard_files(tmp_path)
    meta = pq.read_metadata(shard)
    weeks = spy_minutes["ts"].dt.truncate("1w").unique().sort().to_list()
    assert meta.num_row_groups == len(weeks)
    for i, monday in enumerate(weeks):
        stats = meta.row_group(i).column(0).statistics
        assert stats is not None and stats.has_min_max
        # Every group lies within the Monday-to-Monday week it belongs to, so a window read skips the rest.
        assert monday <= stats.min and stats.max < monday + dt.timedelta(days=7)


def test_read_is_sorted_by_symbol_then_ts(
    tmp_path: Path, aapl: pl.DataFrame, spy_daily: pl.DataFrame
) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("SPY", "1d", spy_daily)
    store.write_bars("AAPL", "1d", aapl)
    frame = store.read_bars(["SPY", "AAPL"], "1d", start="2009-01-01", end="2011-01-01")
    assert frame["symbol"].unique(maintain_order=True).to_list() == ["AAPL", "SPY"]
    assert frame.equals(frame.sort("symbol", "ts"))
    for symbol, bars in (("AAPL", aapl), ("SPY", spy_daily)):
        window = bars.filter(pl.col("ts").dt.year().is_between(2009, 2010))
        assert_frame_equal(frame.filter(pl.col("symbol") == symbol), _with_symbol(symbol, window))
    everything = store.read_bars(None, "1d")
    assert everything.height == aapl.height + spy_daily.height
    assert store.symbols("1d") == ["AAPL", "SPY"]


# -- windows and columns ---------------------------------------------------------------------------------
def test_window_start_inclusive_end_exclusive(tmp_path: Path, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("SPY", "1m", spy_minutes)
    start, end = spy_minutes["ts"][1000], spy_minutes["ts"][9000]
    frame = store.read_bars(["SPY"], "1m", start=start, end=end)
    assert frame["ts"][0] == start
    assert frame["ts"].max() < end
    assert_frame_equal(frame.drop("symbol"), spy_minutes.slice(1000, 8000))


def test_window_accepts_dates_strings_and_zoned_datetimes(tmp_path: Path, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("SPY", "1m", spy_minutes)
    expected = spy_minutes.filter(
        pl.col("ts").is_between(
            dt.datetime(2011, 3, 14, tzinfo=UTC), dt.datetime(2011, 3, 16, tzinfo=UTC), closed="left"
        )
    )
    assert expected.height > 0
    new_york = dt.timezone(dt.timedelta(hours=-4))  # EDT on 2011-03-14
    forms = [
        ("2011-03-14", "2011-03-16"),
        (dt.date(2011, 3, 14), dt.date(2011, 3, 16)),
        (dt.datetime(2011, 3, 14), dt.datetime(2011, 3, 16)),  # naive means UTC
        (dt.datetime(2011, 3, 13, 20, tzinfo=new_york), "2011-03-16T00:00:00Z"),
    ]
    for start, end in forms:
        assert_frame_equal(store.read_bars(["SPY"], "1m", start, end).drop("symbol"), expected)


def test_column_projection_keeps_requested_order(tmp_path: Path, aapl: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl)
    frame = store.read_bars(["AAPL"], "1d", start="2015-01-01", columns=["close", "volume", "ts"])
    assert frame.columns == ["symbol", "ts", "close", "volume"]
    expected = aapl.filter(pl.col("ts") >= dt.datetime(2015, 1, 1, tzinfo=UTC)).select(
        "ts", "close", "volume"
    )
    assert_frame_equal(frame.drop("symbol"), expected)


def test_empty_window_gives_typed_empty_frame(tmp_path: Path, aapl: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl)
    for start, end in (
        ("1990-01-01", "1991-01-01"),
        ("2010-01-01", "2010-01-01"),
        ("2010-01-02", "2010-01-04"),
    ):
        frame = store.read_bars(["AAPL"], "1d", start=start, end=end, columns=["close"])
        assert frame.height == 0
        assert frame.schema == pl.Schema(
            {"symbol": pl.String, "ts": pl.Datetime("ns", "UTC"), "close": pl.Float64}
        )


# -- rewrites --------------------------------------------------------------------------------------------
def test_overlapping_rewrite_replaces_range_and_keeps_the_rest(tmp_path: Path, aapl: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl)
    lo, hi = dt.datetime(2010, 6, 1, tzinfo=UTC), dt.datetime(2011, 6, 30, tzinfo=UTC)
    in_range = pl.col("ts").is_between(lo, hi)
    # Re-ingest the range with every other bar missing and different prices: the range is replaced.
    fresh = aapl.filter(in_range).gather_every(2).with_columns(pl.col("close") * 10)
    # What is replaced is the new bars' own span, from their first to their last timestamp.
    in_range = pl.col("ts").is_between(fresh["ts"].min(), fresh["ts"].max())
    stats = store.write_bars("AAPL", "1d", fresh)
    assert stats.rows_written == fresh.height
    assert stats.rows_replaced == aapl.filter(in_range).height
    assert stats.shards_written == 2  # 2010 and 2011

    stored = store.read_bars(["AAPL"], "1d").drop("symbol")
    assert stored["ts"].is_unique().all()
    assert_frame_equal(stored.filter(~in_range), aapl.filter(~in_range))
    assert_frame_equal(stored.filter(in_range), fresh)
    assert stored.height == aapl.filter(~in_range).height + fresh.height

    again = store.write_bars("AAPL", "1d", fresh)  # the same re-ingest twice changes nothing
    assert again.rows_replaced == fresh.height
    assert_frame_equal(store.read_bars(["AAPL"], "1d").drop("symbol"), stored)


def test_rewrite_spanning_an_empty_year_removes_that_shard(tmp_path: Path, aapl: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl)
    ends = (
        aapl.filter(pl.col("ts").dt.year() == 2009)
        .tail(1)
        .vstack(aapl.filter(pl.col("ts").dt.year() == 2011).head(1))
    )
    stats = store.write_bars("AAPL", "1d", ends)
    assert stats.shards_deleted == 1
    assert not (tmp_path / "bars/interval=1d/symbol=AAPL/year=2010").exists()
    stored = store.read_bars(["AAPL"], "1d")
    assert stored.filter(pl.col("ts").dt.year() == 2010).height == 0
    assert stored.height == aapl.filter(pl.col("ts").dt.year() != 2010).height


# -- atomicity -------------------------------------------------------------------------------------------
def _writer_failing_on_second_group(folder: Path, partial_sizes: list[int]) -> type[pq.ParquetWriter]:
    """A ParquetWriter that writes one row group to the temp file in ``folder``, then fails (disk full)."""

    class FailingWriter(pq.ParquetWriter):
        groups_written = 0

        def write_table(self, table, row_group_size=None):  # type: ignore[no-untyped-def]
            if self.groups_written == 1:
                partial_sizes.extend(p.stat().st_size for p in folder.iterdir() if is_temp_name(p.name))
                raise OSError(28, "No space left on device")
            super().write_table(table, row_group_size=row_group_size)
            self.groups_written += 1

    return FailingWriter


def test_failed_write_leaves_old_shard_and_no_temp_file(
    tmp_path: Path, spy_minutes: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BarStore(str(tmp_path))
    january = spy_minutes.filter(pl.col("ts").dt.month() == 1)
    store.write_bars("SPY", "1m", january)
    (shard,) = _shard_files(tmp_path)
    before = _sha(shard)

    partial: list[int] = []
    monkeypatch.setattr(
        store_module.pq, "ParquetWriter", _writer_failing_on_second_group(shard.parent, partial)
    )
    with pytest.raises(StoreError, match="No space left"):
        store.write_bars("SPY", "1m", january.with_columns(pl.col("close") + 1))

    assert len(partial) == 1 and partial[0] > 0  # a partial temp file existed when the write failed
    assert _shard_files(tmp_path) == [shard]  # the temp file is gone
    assert _sha(shard) == before
    monkeypatch.undo()
    assert_frame_equal(store.read_bars(["SPY"], "1m").drop("symbol"), january)


def test_failed_first_write_leaves_nothing(
    tmp_path: Path, spy_minutes: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BarStore(str(tmp_path))
    folder = tmp_path / "bars/interval=1m/symbol=SPY/year=2011"
    partial: list[int] = []
    monkeypatch.setattr(store_module.pq, "ParquetWriter", _writer_failing_on_second_group(folder, partial))
    with pytest.raises(StoreError):
        store.write_bars("SPY", "1m", spy_minutes)
    assert len(partial) == 1
    assert _shard_files(tmp_path) == []
    monkeypatch.undo()
    with pytest.raises(StoreError, match="SPY"):
        store.read_bars(["SPY"], "1m")


def test_reader_never_sees_a_partial_shard_during_rewrites(tmp_path: Path, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    versions = [spy_minutes, spy_minutes.with_columns(pl.col("close") * 2, pl.col("volume") + 1)]
    store.write_bars("SPY", "1m", versions[0])
    expected = [_with_symbol("SPY", v) for v in versions]
    errors: list[BaseException] = []

    def rewrite() -> None:
        try:
            for i in range(12):
                store.write_bars("SPY", "1m", versions[(i + 1) % 2])
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = 0
    while writer.is_alive() or reads == 0:
        frame = BarStore(str(tmp_path)).read_bars(["SPY"], "1m")
        assert any(frame.equals(e) for e in expected), "read a shard that is neither the old nor the new one"
        reads += 1
    writer.join()
    assert not errors
    assert not [p for p in _shard_files(tmp_path) if is_temp_name(p.name)]


# -- listing, deleting -----------------------------------------------------------------------------------
def test_list_bars_figures_come_from_the_shards(
    tmp_path: Path, aapl: pl.DataFrame, spy_minutes: pl.DataFrame
) -> None:
    store = BarStore(str(tmp_path))
    assert store.list_bars().height == 0
    store.write_bars("AAPL", "1d", aapl)
    store.write_bars("SPY", "1m", spy_minutes)
    listing = store.list_bars()
    assert listing.columns == ["symbol", "interval", "first_ts", "last_ts", "rows", "shards", "bytes"]
    rows = {(r["symbol"], r["interval"]): r for r in listing.iter_rows(named=True)}
    assert set(rows) == {("AAPL", "1d"), ("SPY", "1m")}
    for (symbol, interval), bars in ((("AAPL", "1d"), aapl), (("SPY", "1m"), spy_minutes)):
        row = rows[(symbol, interval)]
        folder = tmp_path / f"bars/interval={interval}/symbol={symbol}"
        assert row["rows"] == bars.height
        assert row["first_ts"] == bars["ts"].min() and row["last_ts"] == bars["ts"].max()
        assert row["shards"] == len(list(folder.rglob(SHARD_NAME)))
        assert row["bytes"] == sum(p.stat().st_size for p in folder.rglob(SHARD_NAME))
    assert rows[("AAPL", "1d")]["shards"] == 15


def test_delete_bars(tmp_path: Path, aapl: pl.DataFrame, spy_daily: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl)
    store.write_bars("SPY", "1d", spy_daily)
    assert store.delete_bars("AAPL", "1d") == aapl.height
    assert store.symbols("1d") == ["SPY"]
    assert not (tmp_path / "bars/interval=1d/symbol=AAPL").exists()
    assert store.delete_bars("AAPL", "1d") == 0
    assert store.read_bars(None, "1d").height == spy_daily.height


# -- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "symbol", ["", "..", "../etc", "a/b", "a\\b", "A=B", ".hidden", "SP Y", "SPY\n", "X" * 65, "nul\x00"]
)
def test_bad_symbol_names_are_refused(tmp_path: Path, aapl: pl.DataFrame, symbol: str) -> None:
    store = BarStore(str(tmp_path))
    with pytest.raises(StoreError, match="bad symbol name"):
        store.write_bars(symbol, "1d", aapl)
    with pytest.raises(StoreError, match="bad symbol name"):
        store.read_bars([symbol], "1d")
    with pytest.raises(StoreError, match="bad symbol name"):
        store.delete_bars(symbol, "1d")
    assert _shard_files(tmp_path) == []


def test_symbols_with_dots_dashes_underscores_are_fine(tmp_path: Path, aapl: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    for symbol in ("BRK.A", "BRK-B", "ES_F"):
        store.write_bars(symbol, "1d", aapl.head(3))
    assert store.symbols("1d") == ["BRK-B", "BRK.A", "ES_F"]


def test_unknown_symbol_names_symbol_interval_and_store(tmp_path: Path, spy_minutes: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("SPY", "1m", spy_minutes.head(10))
    with pytest.raises(StoreError) as info:
        store.read_bars(["SPY", "NOPE"], "1m")
    assert "'NOPE'" in str(info.value) and "1m" in str(info.value) and store.uri in str(info.value)
    with pytest.raises(StoreError, match=r"'SPY'.*1d"):  # stored at another interval only
        store.read_bars(["SPY"], "1d")


def test_bad_bars_are_refused_before_anything_is_written(tmp_path: Path, aapl: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    with pytest.raises(DataError, match="share a timestamp"):
        store.write_bars("AAPL", "1d", pl.concat([aapl, aapl.tail(1)]))
    with pytest.raises(DataError, match="null"):
        store.write_bars(
            "AAPL",
            "1d",
            aapl.with_columns(pl.when(pl.col("close") > 100).then(None).otherwise("close").alias("close")),
        )
    with pytest.raises(SchemaError, match="close"):
        store.write_bars("AAPL", "1d", aapl.drop("close"))
    with pytest.raises(DataError, match="MSFT"):  # a frame of another symbol, written under this one
        store.write_bars("AAPL", "1d", aapl.with_columns(symbol=pl.lit("MSFT")))
    with pytest.raises(SchemaError, match="interval"):
        store.write_bars("AAPL", "2m", aapl)
    assert _shard_files(tmp_path) == []
    assert store.write_bars("AAPL", "1d", aapl.clear()).rows_written == 0


def test_bad_read_arguments(tmp_path: Path, aapl: pl.DataFrame) -> None:
    store = BarStore(str(tmp_path))
    store.write_bars("AAPL", "1d", aapl.head(5))
    with pytest.raises(SchemaError, match="colse"):
        store.read_bars(["AAPL"], "1d", columns=["colse"])
    with pytest.raises(StoreError, match="start"):
        store.read_bars(["AAPL"], "1d", start="not a date")
    with pytest.raises(SchemaError):
        store.read_bars(["AAPL"], "3d")


def test_store_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert BarStore("rel/store").uri == str(tmp_path / "rel" / "store")
    assert BarStore(f"file://{tmp_path}/x") == BarStore(str(tmp_path / "x"))
    assert BarStore("s3://bucket/some/prefix/").uri == "s3://bucket/some/prefix"
    for bad in ("", "ftp://host/x", "s3:///prefix-without-bucket"):
        with pytest.raises(StoreError):
            BarStore(bad)


def test_pickle_carries_only_the_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aapl: pl.DataFrame
) -> None:
    monkeypatch.chdir(tmp_path)
    store = BarStore("stores/main")  # relative: pinned to an absolute path at construction
    store.write_bars("AAPL", "1d", aapl)  # the filesystem now exists on the instance
    assert store.__reduce__() == (BarStore, (str(tmp_path / "stores" / "main"),))
    payload = pickle.dumps(store)
    assert b"FileSystem" not in payload and b"pyarrow" not in payload
    monkeypatch.chdir("/")
    clone = pickle.loads(payload)
    assert clone == store
    assert_frame_equal(clone.read_bars(["AAPL"], "1d"), store.read_bars(["AAPL"], "1d"))


# -- local preflight and sync ----------------------------------------------------------------------------
def test_local_preflight(tmp_path: Path) -> None:
    preflight(str(tmp_path / "new" / "store"))  # creatable
    assert (tmp_path / "new" / "store").is_dir()
    assert list((tmp_path / "new" / "store").iterdir()) == []  # the probe is gone
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StorageAccessError, match="a-file") as info:
        preflight(str(blocker / "store"))
    assert "\n" not in str(info.value)


def test_local_sync_copies_skips_and_resumes(tmp_path: Path, aapl: pl.DataFrame) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    BarStore(str(src)).write_bars("AAPL", "1d", aapl)
    files = [p.relative_to(src) for p in _shard_files(src)]

    first = sync(str(src), str(dst))
    assert (first.files_copied, first.files_skipped) == (len(files), 0)
    assert first.bytes_copied == sum((src / f).stat().st_size for f in files)
    assert all((src / f).read_bytes() == (dst / f).read_bytes() for f in files)
    second = sync(str(src), str(dst))
    assert (second.files_copied, second.files_skipped, second.bytes_copied) == (0, len(files), 0)

    # Same size, different bytes: only the checksum can tell, and only that file is copied again.
    victim = dst / files[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    (dst / files[5]).unlink()
    third = sync(str(src), str(dst))
    assert (third.files_copied, third.files_skipped) == (2, len(files) - 2)
    assert all((src / f).read_bytes() == (dst / f).read_bytes() for f in files)


def test_local_sync_resumes_after_an_interruption(tmp_path: Path, aapl: pl.DataFrame) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    BarStore(str(src)).write_bars("AAPL", "1d", aapl)
    total = len(_shard_files(src))

    def stop_midway(done: int, of: int) -> None:
        if done == of // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync(str(src), str(dst), progress=stop_midway, max_workers=2)
    present = _shard_files(dst)
    assert 0 < len(present) < total
    assert not [p for p in present if is_temp_name(p.name)]
    resumed = sync(str(src), str(dst))
    assert (resumed.files_copied, resumed.files_skipped) == (total - len(present), len(present))


def test_sync_refuses_empty_source_and_same_location(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="nothing to sync"):
        sync(str(tmp_path / "missing"), str(tmp_path / "dst"))
    with pytest.raises(StoreError, match="same location"):
        sync(str(tmp_path), f"file://{tmp_path}")
