"""Synthetic bars: determinism, exact minute-to-daily aggregation, calendar fidelity, regimes, realism."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from trader.calendar import get_calendar
from trader.data.schema import POLARS_SCHEMA
from trader.data.synth import REGIMES, synth_bars, synth_regimes, synth_symbol_names
from trader.errors import CalendarError, ConfigError, SchemaError

SEED = 20240607
REPO = Path(__file__).resolve().parents[2]
OHLCV = ["ts", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def minutes_5y() -> pl.DataFrame:
    return synth_bars("SYN003", "1m", "2015-01-01", "2019-12-31", seed=SEED)


@pytest.fixture(scope="module")
def daily_5y() -> pl.DataFrame:
    return synth_bars("SYN003", "1d", "2015-01-01", "2019-12-31", seed=SEED)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(frame.to_arrow(), sink, compression="zstd", compression_level=3, write_statistics=True)
    return sink.getvalue()


def _sessions_from_minutes(minutes: pl.DataFrame) -> pl.DataFrame:
    """Daily bars rebuilt from minute bars (XNYS sessions fall inside one UTC date)."""
    return (
        minutes.group_by(pl.col("ts").dt.date().alias("session"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.len().alias("minutes"),
        )
        .with_columns(pl.col("session").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts"))
    )


def _log_returns(daily: pl.DataFrame) -> np.ndarray:
    return np.diff(np.log(daily["close"].to_numpy()))


# -- names ------------------------------------------------------------------------------------------------


def test_symbol_names_are_stable_prefixes_of_each_other() -> None:
    assert synth_symbol_names(3) == ["SYN000", "SYN001", "SYN002"]
    many = synth_symbol_names(1200, prefix="BENCH")
    assert many[:3] == synth_symbol_names(3, prefix="BENCH")
    assert len(set(many)) == 1200
    assert many[999:1001] == ["BENCH999", "BENCH1000"]
    assert synth_symbol_names(0) == []


@pytest.mark.parametrize(("n", "prefix"), [(-1, "SYN"), (2.0, "SYN"), (True, "SYN"), (3, ""), (3, "S/Y")])
def test_symbol_names_reject_bad_arguments(n: object, prefix: str) -> None:
    with pytest.raises(ConfigError):
        synth_symbol_names(n, prefix=prefix)  # type: ignore[arg-type]


# -- determinism ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "start", "end"), [("1m", "2019-11-25", "2019-12-03"), ("1d", "2015-01-01", "2019-12-31")]
)
def test_same_seed_gives_identical_frames_and_parquet_bytes(interval: str, start: str, end: str) -> None:
    first = synth_bars("SYN001", interval, start, end, seed=SEED)
    second = synth_bars(
        "SYN001", interval, dt.date.fromisoformat(start), dt.date.fromisoformat(end), seed=SEED
    )
    assert first.height > 0
    assert first.equals(second)
    assert _parquet_bytes(first) == _parquet_bytes(second)


def test_same_bytes_in_a_fresh_interpreter_with_another_hash_seed() -> None:
    """Guards against seeds derived from Python's per-process hash() or from any process-global state."""
    code = (
        "import hashlib, io, pyarrow.parquet as pq, polars as pl\n"
        "from trader.data.synth import synth_bars\n"
        f"frames = [synth_bars('SYN001', '1d', '2018-01-01', '2019-12-31', seed={SEED}),\n"
        f"          synth_bars('SYN001', '1m', '2019-11-29', '2019-12-02', seed={SEED})]\n"
        "sink = io.BytesIO()\n"
        "pq.write_table(pl.concat(frames).to_arrow(), sink, compression='zstd', compression_level=3,"
        " write_statistics=True)\n"
        "print(hashlib.sha256(sink.getvalue()).hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    child = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    frames = [
        synth_bars("SYN001", "1d", "2018-01-01", "2019-12-31", seed=SEED),
        synth_bars("SYN001", "1m", "2019-11-29", "2019-12-02", seed=SEED),
    ]
    here = hashlib.sha256(_parquet_bytes(pl.concat(frames))).hexdigest()
    assert child.stdout.strip() == here


def test_different_seed_or_symbol_gives_different_bars() -> None:
    base = synth_bars("SYN001", "1d", "2019-01-01", "2019-12-31", seed=SEED)
    other_seed = synth_bars("SYN001", "1d", "2019-01-01", "2019-12-31", seed=SEED + 1)
    other_symbol = synth_bars("SYN002", "1d", "2019-01-01", "2019-12-31", seed=SEED)
    for other in (other_seed, other_symbol):
        assert other["ts"].equals(base["ts"])
        # Not a shifted copy either: closes differ on (nearly) every session.
        assert (other["close"] != base["close"]).mean() > 0.99
    minute = synth_bars("SYN001", "1m", "2019-06-03", "2019-06-03", seed=SEED)
    minute_other = synth_bars("SYN001", "1m", "2019-06-03", "2019-06-03", seed=SEED + 1)
    assert (minute["volume"] != minute_other["volume"]).mean() > 0.9


# -- aggregation and calendar -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "closed", "early"),
    [
        ("2019-11-22", "2019-12-03", [dt.date(2019, 11, 28)], {dt.date(2019, 11, 29): 210}),
        ("2012-10-24", "2012-11-02", [dt.date(2012, 10, 29), dt.date(2012, 10, 30)], {}),
        ("2018-12-20", "2018-12-31", [dt.date(2018, 12, 25)], {dt.date(2018, 12, 24): 210}),
    ],
)
def test_minute_bars_aggregate_exactly_to_daily_bars(
    start: str, end: str, closed: list[dt.date], early: dict[dt.date, int]
) -> None:
    daily = synth_bars("SYN005", "1d", start, end, seed=SEED)
    rebuilt = _sessions_from_minutes(synth_bars("SYN005", "1m", start, end, seed=SEED))
    assert rebuilt.select(OHLCV).equals(daily.select(OHLCV))
    counts = dict(zip(rebuilt["session"].to_list(), rebuilt["minutes"].to_list(), strict=True))
    assert not set(closed) & set(counts)
    assert counts == {day: early.get(day, 390) for day in get_calendar().sessions(start, end)}


def test_five_years_of_minutes_aggregate_exactly(minutes_5y: pl.DataFrame, daily_5y: pl.DataFrame) -> None:
    rebuilt = _sessions_from_minutes(minutes_5y)
    assert rebuilt.select(OHLCV).equals(daily_5y.select(OHLCV))
    cal = get_calendar()
    early = set(cal.early_closes("2015-01-01", "2019-12-31"))
    assert len(early) >= 10
    short = set(rebuilt.filter(pl.col("minutes") < 390)["session"].to_list())
    assert short == early


@pytest.mark.parametrize("interval", ["1m", "1d"])
def test_sub_range_equals_slice_of_longer_range(
    interval: str, minutes_5y: pl.DataFrame, daily_5y: pl.DataFrame
) -> None:
    full = minutes_5y if interval == "1m" else daily_5y
    start, end = dt.date(2017, 11, 20), dt.date(2017, 12, 1)
    part = synth_bars("SYN003", interval, start, end, seed=SEED)
    in_range = pl.col("ts").dt.date().is_between(start, end)
    assert part.height > 0
    assert part.equals(full.filter(in_range))


def test_later_end_does_not_change_earlier_sessions(daily_5y: pl.DataFrame) -> None:
    longer = synth_bars("SYN003", "1d", "2015-01-01", "2026-06-30", seed=SEED)
    assert longer.head(daily_5y.height).equals(daily_5y)
    regimes = synth_regimes("SYN003", "2015-01-01", "2026-06-30", seed=SEED)
    shorter = synth_regimes("SYN003", "2017-06-01", "2017-06-30", seed=SEED)
    assert shorter.equals(
        regimes.filter(pl.col("session").is_between(dt.date(2017, 6, 1), dt.date(2017, 6, 30)))
    )


def test_daily_sessions_match_the_real_spy_history(shared_data: Path) -> None:
    real = pl.read_csv(
        shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv", try_parse_dates=True
    )
    real_days = real.filter(pl.col("Date") >= dt.date(2008, 1, 1))["Date"]
    synth = synth_bars("SYN000", "1d", "2008-01-01", "2017-12-31", seed=SEED)
    assert synth["ts"].dt.date().to_list() == real_days.to_list()
    # Daily bars are labelled with the session date at 00:00 UTC.
    assert (synth["ts"].dt.time() == dt.time(0, 0)).all()
    assert synth.schema == pl.Schema(POLARS_SCHEMA)


def test_minute_timestamps_match_real_sp500_minutes(shared_data: Path) -> None:
    real = pl.read_csv(shared_data / "mplfinance" / "SP500_NOV2019_IDayRVol.csv")
    real_ts = (
        real.select(pl.col("Date").str.to_datetime("%Y-%m-%d %H:%M:%S"))
        .filter(pl.col("Date").dt.time() < dt.time(16, 0))  # the file also has a 16:00 closing print
        .select(pl.col("Date").dt.replace_time_zone("America/New_York").dt.convert_time_zone("UTC"))
        .to_series()
        .dt.cast_time_unit("ns")
    )
    synth = synth_bars("SYN000", "1m", "2019-11-05", "2019-11-08", seed=SEED)
    assert synth["ts"].to_list() == real_ts.to_list()


# -- validity ---------------------------------------------------------------------------------------------


def _assert_valid_bars(bars: pl.DataFrame) -> None:
    assert bars.schema == pl.Schema(POLARS_SCHEMA)
    ts = bars["ts"]
    assert ts.is_sorted() and ts.n_unique() == bars.height
    o, h, lo, c, v = (bars[name].to_numpy() for name in ("open", "high", "low", "close", "volume"))
    assert np.isfinite(np.stack([o, h, lo, c, v])).all()
    assert (lo > 0).all()
    assert (lo <= np.minimum(o, c)).all() and (np.maximum(o, c) <= h).all()
    assert (v >= 1).all() and (v == np.round(v)).all()


def test_minute_bars_are_valid_and_inside_sessions(minutes_5y: pl.DataFrame) -> None:
    _assert_valid_bars(minutes_5y)
    opens, closes = get_calendar().session_bounds("2015-01-01", "2019-12-31")
    ts = minutes_5y["ts"].to_numpy().astype("datetime64[ns]")
    session = np.searchsorted(opens, ts, side="right") - 1
    assert (session >= 0).all()
    assert (ts >= opens[session]).all() and (ts < closes[session]).all()
    # Every session minute is present: nothing skipped, nothing extra.
    assert minutes_5y.height == int(((closes - opens) // np.timedelta64(1, "m")).sum())


def test_daily_bars_are_valid_over_the_whole_epoch() -> None:
    for symbol in synth_symbol_names(4):
        daily = synth_bars(symbol, "1d", "1990-01-01", "2025-12-31", seed=SEED)
        _assert_valid_bars(daily)
        close = daily["close"]
        # The slow pull to the base price keeps 35-year paths within a believable band.
        assert close.max() / close.min() < 1_000


def test_overnight_gaps_between_sessions(minutes_5y: pl.DataFrame, daily_5y: pl.DataFrame) -> None:
    opens, closes = daily_5y["open"].to_numpy(), daily_5y["close"].to_numpy()
    gaps = np.log(opens[1:] / closes[:-1])
    assert (gaps != 0).mean() > 0.99
    # Gaps are a real share of daily risk (real US stocks: roughly half the close-to-close volatility).
    assert 0.3 < gaps.std() / _log_returns(daily_5y).std() < 0.8
    # In minute bars the gap shows as a jump from one session's last close to the next session's first open.
    per_session = _sessions_from_minutes(minutes_5y)
    first_open = per_session["open"].to_numpy()[1:]
    last_close = per_session["close"].to_numpy()[:-1]
    assert np.array_equal(np.log(first_open / last_close), gaps)


# -- regimes and intraday shape ---------------------------------------------------------------------------


def test_all_regimes_occur_and_volatile_sessions_are_more_volatile() -> None:
    for symbol in synth_symbol_names(3):
        regimes = synth_regimes(symbol, "2019-01-01", "2023-12-31", seed=SEED)
        daily = synth_bars(symbol, "1d", "2019-01-01", "2023-12-31", seed=SEED)
        assert regimes.schema == pl.Schema({"session": pl.Date, "regime": pl.String})
        assert regimes["session"].to_list() == daily["ts"].dt.date().to_list()
        assert set(regimes["regime"]) == set(REGIMES)
        labels = regimes["regime"].to_numpy()[1:]
        returns = _log_returns(daily)
        vol = {name: returns[labels == name].std() for name in REGIMES}
        assert vol["volatile"] > 1.5 * max(vol["trend"], vol["chop"])


def test_trend_runs_drift_and_chop_mean_reverts() -> None:
    trend_moves, chop_lag = [], []
    for symbol in synth_symbol_names(6):
        regimes = synth_regimes(symbol, "2000-01-01", "2019-12-31", seed=SEED)["regime"].to_numpy()[1:]
        returns = _log_returns(synth_bars(symbol, "1d", "2000-01-01", "2019-12-31", seed=SEED))
        # Trend: the absolute mean return per trend session exceeds what noise alone would give.
        edges = np.diff(np.concatenate(([0], (regimes == "trend").astype(int), [0])))
        for begin, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            if end - begin >= 20:
                run = returns[begin:end]
                trend_moves.append(abs(run.mean()) / (run.std() / np.sqrt(len(run))))
        chop = np.flatnonzero(regimes[1:] == "chop") + 1
        chop = chop[regimes[chop - 1] == "chop"]
        chop_lag.append(np.corrcoef(returns[chop], returns[chop - 1])[0, 1])
    assert np.median(trend_moves) > 1.5  # pure noise would give ~0.67
    assert np.mean(chop_lag) < -0.15


def test_intraday_volume_is_u_shaped(minutes_5y: pl.DataFrame) -> None:
    regular = minutes_5y.with_columns(
        pl.int_range(pl.len()).over(pl.col("ts").dt.date()).alias("minute"),
        pl.len().over(pl.col("ts").dt.date()).alias("length"),
    ).filter(pl.col("length") == 390)
    volume = regular["volume"].to_numpy().reshape(-1, 390)
    first, midday, last = volume[:, :30].mean(), volume[:, 150:240].mean(), volume[:, -30:].mean()
    assert first > 1.5 * midday and last > 1.2 * midday
    # The shape holds session by session, not just on average.
    assert (volume[:, :30].mean(axis=1) > volume[:, 150:240].mean(axis=1)).mean() > 0.95


def test_daily_stylised_facts_are_close_to_real_stocks(shared_data: Path) -> None:
    def facts(frame: pl.DataFrame) -> tuple[float, float, float]:
        o, h, lo, c = (frame[name].to_numpy() for name in ("open", "high", "low", "close"))
        returns = np.diff(np.log(c))
        gap_share = np.log(o[1:] / c[:-1]).std() / returns.std()
        range_over_vol = np.median(np.log(h / lo)) / returns.std()
        kurtosis = ((returns - returns.mean()) ** 4).mean() / returns.var() ** 2
        return gap_share, range_over_vol, kurtosis

    real_files = [
        shared_data / "pandas_ta" / "SPY_D.csv",
        shared_data / "mplfinance" / "yahoofinance-AAPL-20040819-20180120.csv",
        shared_data / "mplfinance" / "yahoofinance-INTC-19950101-20040412.csv",
    ]
    real = np.array([facts(pl.read_csv(path).rename(str.lower)) for path in real_files])
    synth = np.array(
        [facts(synth_bars(s, "1d", "2000-01-01", "2019-12-31", seed=SEED)) for s in synth_symbol_names(5)]
    )
    real_median, synth_median = np.median(real, axis=0), np.median(synth, axis=0)
    assert 0.6 < synth_median[0] / real_median[0] < 1.5  # overnight gap share of daily volatility
    assert 0.75 < synth_median[1] / real_median[1] < 1.33  # daily range per unit of volatility
    assert real_median[2] > 4 and synth_median[2] > 4  # both fat-tailed


# -- arguments --------------------------------------------------------------------------------------------


def test_rejects_unknown_or_unsupported_intervals() -> None:
    with pytest.raises(SchemaError, match="unknown bar interval"):
        synth_bars("SYN000", "2m", "2019-01-02", "2019-01-03", seed=1)
    with pytest.raises(SchemaError, match="1m or 1d"):
        synth_bars("SYN000", "5m", "2019-01-02", "2019-01-03", seed=1)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"start": "2019-02-01", "end": "2019-01-01"}, ConfigError),
        ({"start": "1989-12-01", "end": "1990-01-31"}, CalendarError),
        ({"start": "2019-01-01", "end": "2199-01-01"}, CalendarError),
        ({"start": "01/02/2019", "end": "2019-01-31"}, ConfigError),
        ({"symbol": ""}, ConfigError),
        ({"seed": "7"}, ConfigError),
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    args: dict[str, Any] = {"symbol": "SYN000", "start": "2019-01-02", "end": "2019-01-31", "seed": 1}
    args.update(kwargs)
    with pytest.raises(error):
        synth_bars(args["symbol"], "1d", args["start"], args["end"], seed=args["seed"])


def test_range_without_sessions_is_empty() -> None:
    for interval in ("1m", "1d"):
        bars = synth_bars("SYN000", interval, "2019-11-28", "2019-11-28", seed=1)  # Thanksgiving
        assert bars.height == 0 and bars.schema == pl.Schema(POLARS_SCHEMA)
    assert synth_regimes("SYN000", "2019-12-28", "2019-12-29", seed=1).height == 0  # a weekend


def test_fill_synth_store_writes_the_missing_symbols_once(tmp_path) -> None:
    from trader.data.store import BarStore
    from trader.data.synth import fill_synth_store

    first = fill_synth_store(str(tmp_path), "1d", 3, "2021-01-01", "2021-03-31", seed=7)
    assert first["symbols"] == ["SYN000", "SYN001", "SYN002"] and first["bars_written"] > 0
    again = fill_synth_store(str(tmp_path), "1d", 4, "2021-01-01", "2021-03-31", seed=7)
    one = BarStore(str(tmp_path)).read_bars(["SYN003"], "1d")
    assert again["bars_written"] == one.height  # only the new symbol was written
