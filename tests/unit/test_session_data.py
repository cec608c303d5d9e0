"""SessionData: streams built from base bars, indicators, quality, on synthetic and real minute bars."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trader.calendar import get_calendar
from trader.data.ingest import read_source
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.session import Bar, SessionData

MIN = 60_000_000_000
CAL = get_calendar()
OHLCV = ("open", "high", "low", "close", "volume")


def _bars(frame: pl.DataFrame, interval: str = "1m") -> list[Bar]:
    cols = frame.select(pl.col("ts").dt.epoch("ns"), *OHLCV)
    return [Bar(*row, interval) for row in cols.iter_rows()]


def _agg(frame: pl.DataFrame, every: str, offset: str = "0m") -> pl.DataFrame:
    """The independent oracle: polars' own time bucketing of the same base bars."""
    return (
        frame.sort("ts")
        .group_by_dynamic("ts", every=every, offset=offset, closed="left", label="left")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
    )


def _daily_oracle(frame: pl.DataFrame) -> pl.DataFrame:
    day = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()
    return (
        frame.sort("ts")
        .group_by(day.alias("day"), maintain_order=True)
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .select(pl.col("day").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts"), *OHLCV)
    )


def _kept(data: SessionData, interval: str) -> list[dict]:
    return data.frame(interval).select("ts", *OHLCV).to_dicts()


def _drop_minutes(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Random minutes, a whole 5m bucket, the last minute of a bucket and the last minute of the session."""
    n = frame.height
    rng = np.random.default_rng(seed)
    drop = set(rng.choice(n, size=n // 12, replace=False).tolist())
    drop |= {25, 26, 27, 28, 29, 44, n - 1}
    return frame.filter(~pl.int_range(pl.len()).is_in(sorted(drop)))


def _session_close(day: str) -> int:
    return int(CAL.open_close(day)[1].value)


@pytest.mark.parametrize("day", ["2019-11-26", "2019-11-29"])
@pytest.mark.parametrize("holes", [False, True])
def test_built_streams_equal_polars_bucketing(day: str, holes: bool) -> None:
    full = synth_bars("SYN002", "1m", day, day, seed=3)
    base = _drop_minutes(full, seed=11) if holes else full
    data = SessionData("SYN002", ("1m", "5m", "1h", "1d"), 1_000, CAL)
    data.feed(base)
    # A missing final minute leaves buckets open until the clock reaches the close.
    data.advance_to(_session_close(day) + 1)
    assert _kept(data, "1m") == base.select("ts", *OHLCV).to_dicts()
    assert _kept(data, "5m") == _agg(base, "5m").to_dicts()
    # Hour bars start at the 09:30 New York open (14:30 UTC), and the last is cut at the close.
    assert _kept(data, "1h") == _agg(base, "1h", offset="30m").to_dicts()
    assert _kept(data, "1d") == _daily_oracle(base).to_dicts()
    n_minutes = full.height
    assert n_minutes == (210 if day == "2019-11-29" else 390)
    q1, q5, qh, qd = (data.quality(iv) for iv in ("1m", "5m", "1h", "1d"))
    assert (q1.expected, q5.expected, qh.expected, qd.expected) == (
        n_minutes,
        n_minutes // 5,
        -(-n_minutes // 60),
        1,
    )
    assert q1.present == base.height and q1.share == pytest.approx(base.height / n_minutes)
    buckets = _agg(base, "5m").height
    counts = base.group_by(pl.col("ts").dt.truncate("5m")).len()["len"]
    assert (q5.present, q5.complete) == (buckets, int((counts == 5).sum()))


def test_bars_close_when_their_last_minute_arrives_or_the_next_bucket_starts() -> None:
    day = "2019-11-26"
    bars = _bars(synth_bars("SYN003", "1m", day, day, seed=5))
    data = SessionData("SYN003", ("1m", "5m"), 500, CAL)
    for b in bars[:4]:
        assert data.on_bar(b) == [b]
    out = data.on_bar(bars[4])
    assert [x.interval for x in out] == ["1m", "5m"] and out[1].ts == bars[0].ts
    first5 = bars[:5]
    high, low = max(b.high for b in first5), min(b.low for b in first5)
    assert out[1] == Bar(
        bars[0].ts, bars[0].open, high, low, bars[4].close, sum(b.volume for b in first5), "5m"
    )
    # Minute 9 (last of the second bucket) never comes: the bucket closes when minute 10 arrives, before it.
    for b in bars[5:9]:
        data.on_bar(b)
    out = data.on_bar(bars[10])
    assert [(x.interval, x.ts) for x in out] == [("5m", bars[5].ts), ("1m", bars[10].ts)]
    # ... or when the clock passes the bucket's end.
    for b in bars[11:14]:
        data.on_bar(b)
    assert data.advance_to(bars[14].ts) == []  # minute 14 has not ended yet
    out = data.advance_to(bars[14].ts + MIN + 2_000_000_000)
    assert [(x.interval, x.ts, x.volume) for x in out] == [
        ("5m", bars[10].ts, sum(b.volume for b in bars[10:14]))
    ]
    assert data.missing() == [bars[9].ts, bars[14].ts]


def test_early_close_ends_the_session_with_its_last_minute() -> None:
    day = "2019-11-29"
    bars = _bars(synth_bars("SYN004", "1m", day, day, seed=2))
    assert bars[-1].ts + MIN == _session_close(day)  # 13:00 New York
    data = SessionData("SYN004", ("1m", "5m", "1d"), 500, CAL)
    for b in bars[:-1]:
        data.on_bar(b)
    out = data.on_bar(bars[-1])
    assert [x.interval for x in out] == ["1m", "5m", "1d"]
    assert out[2].ts == int(np.datetime64("2019-11-29", "ns").astype(np.int64))
    assert len(data.window("5m")) == 42
    assert data.history_quality("1d").complete == 1


def test_real_time_indicators_follow_the_session() -> None:
    frame = synth_bars("SYN005", "1m", "2019-11-25", "2019-11-26", seed=4)
    data = SessionData("SYN005", ("1m",), 2_000, CAL)
    data.feed(frame.head(400))  # all of 11-25 and 10 minutes of 11-26
    today = frame.slice(390, 10)
    pv = sum((r["high"] + r["low"] + r["close"]) / 3 * r["volume"] for r in today.iter_rows(named=True))
    assert data.session == dt.date(2019, 11, 26)
    assert data.session_vwap == pytest.approx(pv / today["volume"].sum(), rel=1e-12)
    assert data.session_volume == today["volume"].sum()
    assert (data.session_open, data.session_high, data.session_low) == (
        today["open"][0],
        today["high"].max(),
        today["low"].min(),
    )
    closes = frame["close"].to_list()
    assert data.last_close == closes[399]
    assert data.last_return == pytest.approx(closes[399] / closes[398] - 1, rel=1e-12)


def test_warm_up_history_indicators_and_quality() -> None:
    daily = synth_bars("SYN006", "1d", "2018-10-01", "2019-11-22", seed=9)
    minutes = synth_bars("SYN006", "1m", "2019-11-18", "2019-11-22", seed=9)
    # 11-20 has no bar at all, 11-21 loses its first hour.
    day = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()
    gone = (
        (day == dt.date(2019, 11, 20))
        | ((day == dt.date(2019, 11, 21)) & (pl.col("ts").dt.hour() == 14) & (pl.col("ts").dt.minute() >= 30))
        | ((day == dt.date(2019, 11, 21)) & (pl.col("ts").dt.hour() == 15) & (pl.col("ts").dt.minute() < 30))
    )
    history = minutes.filter(~gone)
    data = SessionData("SYN006", ("1m", "5m", "1d"), {"1m": 3_000, "5m": 500, "1d": 400}, CAL)
    quality = data.warm_up(history, daily=daily)
    assert quality["1m"].expected == 5 * 390 and quality["1m"].present == history.height
    assert quality["5m"].expected == 5 * 78 and quality["5m"].present == 4 * 78 - 12
    assert quality["1d"].expected == 5 and quality["1d"].present == 4 and quality["1d"].complete == 3
    assert data.warmup_quality == quality

    # Oracle: daily bars before the minute history, then sessions built from the minutes, last 252.
    built = _daily_oracle(history)
    before = daily.filter(pl.col("ts") < pl.datetime(2019, 11, 18, time_zone="UTC"))
    rows = pl.concat([before.select("ts", *OHLCV), built]).tail(252)
    assert data.high_52w == rows["high"].max() and data.low_52w == rows["low"].min()
    assert data.avg_volume_20d == pytest.approx(rows["volume"].tail(20).mean(), rel=1e-12)
    assert _kept(data, "1d")[-4:] == built.to_dicts()
    assert len(data.window("1d")) == before.height + 4

    with_live = data.feed(synth_bars("SYN006", "1m", "2019-11-25", "2019-11-25", seed=9).head(3))
    assert len(with_live) == 3
    with pytest.raises(DataError, match="warm_up after live"):
        data.warm_up(history)


def test_without_a_year_of_sessions_52_week_values_are_nan() -> None:
    data = SessionData("SYN007", ("1m",), 3_000, CAL)
    minutes = synth_bars("SYN007", "1m", "2019-11-18", "2019-11-19", seed=1)
    data.warm_up(minutes)
    assert np.isnan(data.high_52w) and np.isnan(data.low_52w)
    assert data.avg_volume_20d == pytest.approx(_daily_oracle(minutes)["volume"].mean(), rel=1e-12)


def test_bad_bars_and_streams_are_refused() -> None:
    data = SessionData("SYN008", ("1m", "5m"), 100, CAL)
    opened = int(CAL.open_close("2019-11-26")[0].value)
    with pytest.raises(DataError, match="outside every XNYS session"):
        data.on_bar(Bar(opened - MIN, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="outside every XNYS session"):
        data.on_bar(Bar(int(CAL.open_close("2019-11-27")[0].value) + 24 * 60 * MIN, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="not an expected bar start"):
        data.on_bar(Bar(opened + 30_000_000_000, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="on_bar takes 1m"):
        data.on_bar(Bar(opened, 1.0, 1.0, 1.0, 1.0, 1.0, "5m"))
    data.on_bar(Bar(opened + MIN, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="give late bars to fill"):
        data.on_bar(Bar(opened, 1.0, 1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="intraday"):
        SessionData("X", ("1d",), 10, CAL)
    with pytest.raises(ConfigError, match="duplicate"):
        SessionData("X", ("1m", "1m"), 10, CAL)
    with pytest.raises(ConfigError, match="capacity_bars"):
        SessionData("X", ("1m", "5m"), {"1m": 10}, CAL)


# -- real minute bars ---------------------------------------------------------------------------------------


def _nt_spy(shared_data: Path) -> pl.DataFrame:
    path = shared_data / "pyalgotrade" / "testcases" / "data" / "nt-spy-minute-2011-03.csv.gz"
    raw = read_source(path, fmt="ninjatrader", interval="1m").frame
    return raw.with_columns(pl.col("ts").dt.replace_time_zone("UTC")).sort("ts")


def _regular_hours(frame: pl.DataFrame, days: list[dt.date]) -> pl.DataFrame:
    parts = []
    for d in days:
        o, c = CAL.open_close(d)
        parts.append(frame.filter((pl.col("ts") >= o) & (pl.col("ts") < c)))
    return pl.concat(parts)


def test_real_spy_minutes_across_the_dst_switch(shared_data: Path) -> None:
    spy = _nt_spy(shared_data)
    warm_days = CAL.sessions("2011-03-01", "2011-03-09")
    live_days = CAL.sessions("2011-03-10", "2011-03-15")  # New York moves to EDT on 2011-03-13
    warm = _regular_hours(spy, warm_days)
    live = _regular_hours(spy, live_days)
    assert warm.height == 390 * len(warm_days) and live.height == 390 * len(live_days)  # full sessions
    data = SessionData("SPY", ("1m", "5m", "1h", "1d"), 5_000, CAL)
    quality = data.warm_up(warm)
    assert all(q.share == 1.0 and q.complete_share == 1.0 for q in quality.values())
    closed = data.feed(live)
    both = pl.concat([warm, live])
    assert _kept(data, "5m") == _agg(both, "5m").to_dicts()
    assert _kept(data, "1h") == _agg(both, "1h", offset="30m").to_dicts()
    assert _kept(data, "1d") == _daily_oracle(both).to_dicts()
    assert sum(1 for b in closed if b.interval == "5m") == 78 * len(live_days)
    history = data.history_quality("1m")
    assert (history.expected, history.present) == (390 * 11, 390 * 11)


def test_real_spy_day_with_holes(shared_data: Path) -> None:
    day = dt.date(2011, 3, 15)
    bars = _regular_hours(_nt_spy(shared_data), [day])
    # Drop the quietest tenth of the day's real minutes (ties kept deterministic by ts).
    quiet = bars.sort("volume", "ts").head(39)["ts"]
    kept = bars.filter(~pl.col("ts").is_in(quiet.implode()))
    data = SessionData("SPY", ("1m", "5m"), 1_000, CAL)
    data.feed(kept)
    data.advance_to(int(CAL.open_close(day)[1].value))
    assert data.quality("1m").share == pytest.approx(351 / 390)
    assert data.missing() == sorted(quiet.dt.epoch("ns").to_list())
    assert _kept(data, "5m") == _agg(kept, "5m").to_dicts()
    revised = data.fill(_bars(bars.filter(pl.col("ts").is_in(quiet.implode()))))
    assert revised and all(b.revised for b in revised)
    assert data.quality("1m").share == 1.0
    assert _kept(data, "5m") == _agg(bars, "5m").to_dicts()


def test_real_index_minutes_with_a_bar_after_the_close_are_refused(shared_data: Path) -> None:
    path = shared_data / "mplfinance" / "SP500_NOV2019_IDayRVol.csv"
    frame = read_source(path, fmt="generic", interval="1m", source_tz="America/New_York").frame
    frame = frame.with_columns(
        pl.col("ts").dt.replace_time_zone("America/New_York").dt.convert_time_zone("UTC")
    )
    frame = frame.sort("ts")
    data = SessionData("SPX", ("1m", "5m"), 2_000, CAL)
    with pytest.raises(DataError, match=r"21:00:00.*outside every XNYS session"):
        data.feed(frame)
    days = CAL.sessions("2019-11-05", "2019-11-08")
    regular = _regular_hours(frame, days)
    data = SessionData("SPX", ("1m", "5m"), 2_000, CAL)
    data.warm_up(regular)
    assert data.history_quality("1m").share == pytest.approx(regular.height / (390 * len(days)))
    assert _kept(data, "5m") == _agg(regular, "5m").to_dicts()
