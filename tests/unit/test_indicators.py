"""Indicators: TA-Lib parity, Python oracles, warm-up, NaN rules, no look-ahead, the polars layer."""

from __future__ import annotations

import doctest
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import talib

import trader.features.indicators as ind
from trader.data.ingest import read_source
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.features import FEATURES, add_features

Arrays = dict[str, np.ndarray]


# -- data -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spy(shared_data: Path) -> Arrays:
    """SPY daily bars 1999-2020 (pandas_ta/SPY_D.csv, 5,241 clean rows), oldest first."""
    frame = read_source(shared_data / "pandas_ta" / "SPY_D.csv", fmt="yahoo", interval="1d").frame.sort("ts")
    assert frame.height == 5241
    return {c: frame.get_column(c).to_numpy() for c in ("high", "low", "close", "volume")}


def random_bars(seed: int, n: int = 2000, scale: float = 100.0) -> Arrays:
    """A geometric random walk with highs above and lows below the close, and random volumes."""
    rng = np.random.default_rng(seed)
    close = scale * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    high = close * np.exp(np.abs(rng.normal(0.0, 0.01, n)))
    low = close * np.exp(-np.abs(rng.normal(0.0, 0.01, n)))
    volume = rng.integers(0, 100_000, n).astype(np.float64)
    return {"high": high, "low": low, "close": close, "volume": volume}


@pytest.fixture(scope="module", params=["spy", "random_1", "random_2", "ticks_and_flats"])
def bars(request: pytest.FixtureRequest) -> Arrays:
    if request.param == "spy":
        return request.getfixturevalue("spy")
    if request.param == "ticks_and_flats":
        # Cent ticks (many zero changes, equal highs) and flat stretches exercise TA-Lib's zero tests.
        data = random_bars(7, scale=10.0)
        for name in ("high", "low", "close"):
            data[name] = np.round(data[name], 2)
        data["high"] = np.maximum(data["high"], data["close"])
        data["low"] = np.minimum(data["low"], data["close"])
        for start in range(100, 1900, 400):
            for name in ("high", "low", "close"):
                data[name][start : start + 40] = data["close"][start]
        return data
    return random_bars(int(request.param.split("_")[1]))


# -- TA-Lib parity ----------------------------------------------------------------------------------------

# name -> (ours, TA-Lib), both called with the bars dict; outputs compared as tuples.
Pair = tuple[Callable[[Arrays], Any], Callable[[Arrays], Any]]
TALIB_CASES: dict[str, Pair] = {
    "sma": (lambda b: ind.sma(b["close"], 20), lambda b: talib.SMA(b["close"], 20)),
    "sma_2": (lambda b: ind.sma(b["close"], 2), lambda b: talib.SMA(b["close"], 2)),
    "ema": (lambda b: ind.ema(b["close"], 20), lambda b: talib.EMA(b["close"], 20)),
    "ema_5": (lambda b: ind.ema(b["close"], 5), lambda b: talib.EMA(b["close"], 5)),
    "wma": (lambda b: ind.wma(b["close"], 20), lambda b: talib.WMA(b["close"], 20)),
    "wma_3": (lambda b: ind.wma(b["close"], 3), lambda b: talib.WMA(b["close"], 3)),
    "rsi": (lambda b: ind.rsi(b["close"]), lambda b: talib.RSI(b["close"], 14)),
    "rsi_2": (lambda b: ind.rsi(b["close"], 2), lambda b: talib.RSI(b["close"], 2)),
    "macd": (lambda b: ind.macd(b["close"]), lambda b: talib.MACD(b["close"], 12, 26, 9)),
    "macd_3_7_1": (lambda b: ind.macd(b["close"], 3, 7, 1), lambda b: talib.MACD(b["close"], 3, 7, 1)),
    "bbands": (lambda b: ind.bollinger(b["close"]), lambda b: talib.BBANDS(b["close"], 20, 2.0, 2.0, 0)),
    "bbands_5_1.5": (
        lambda b: ind.bollinger(b["close"], 5, 1.5),
        lambda b: talib.BBANDS(b["close"], 5, 1.5, 1.5, 0),
    ),
    "atr": (
        lambda b: ind.atr(b["high"], b["low"], b["close"]),
        lambda b: talib.ATR(b["high"], b["low"], b["close"]),
    ),
    "atr_1": (
        lambda b: ind.atr(b["high"], b["low"], b["close"], 1),
        lambda b: talib.ATR(b["high"], b["low"], b["close"], 1),
    ),
    "adx": (
        lambda b: ind.adx(b["high"], b["low"], b["close"]),
        lambda b: (
            talib.ADX(b["high"], b["low"], b["close"], 14),
            talib.PLUS_DI(b["high"], b["low"], b["close"], 14),
            talib.MINUS_DI(b["high"], b["low"], b["close"], 14),
        ),
    ),
    "adx_5": (
        lambda b: ind.adx(b["high"], b["low"], b["close"], 5),
        lambda b: (
            talib.ADX(b["high"], b["low"], b["close"], 5),
            talib.PLUS_DI(b["high"], b["low"], b["close"], 5),
            talib.MINUS_DI(b["high"], b["low"], b["close"], 5),
        ),
    ),
    "stoch": (
        lambda b: ind.stoch(b["high"], b["low"], b["close"]),
        lambda b: talib.STOCH(b["high"], b["low"], b["close"], 14, 3, 0, 3, 0),
    ),
    "stoch_5_1_4": (
        lambda b: ind.stoch(b["high"], b["low"], b["close"], 5, 1, 4),
        lambda b: talib.STOCH(b["high"], b["low"], b["close"], 5, 1, 0, 4, 0),
    ),
    "cci": (
        lambda b: ind.cci(b["high"], b["low"], b["close"]),
        lambda b: talib.CCI(b["high"], b["low"], b["close"], 20),
    ),
    "roc": (lambda b: ind.roc(b["close"]), lambda b: talib.ROC(b["close"], 10)),
    "mom": (lambda b: ind.momentum(b["close"]), lambda b: talib.MOM(b["close"], 10)),
    "mom_1": (lambda b: ind.momentum(b["close"], 1), lambda b: talib.MOM(b["close"], 1)),
    "willr": (
        lambda b: ind.williams_r(b["high"], b["low"], b["close"]),
        lambda b: talib.WILLR(b["high"], b["low"], b["close"], 14),
    ),
    "obv": (lambda b: ind.obv(b["close"], b["volume"]), lambda b: talib.OBV(b["close"], b["volume"])),
    "mfi": (
        lambda b: ind.mfi(b["high"], b["low"], b["close"], b["volume"]),
        lambda b: talib.MFI(b["high"], b["low"], b["close"], b["volume"], 14),
    ),
}


def _as_tuple(result: Any) -> tuple[np.ndarray, ...]:
    return (result,) if isinstance(result, np.ndarray) else tuple(result)


def assert_matches_talib(ours: Any, theirs: Any) -> None:
    for got, want in zip(_as_tuple(ours), _as_tuple(theirs), strict=True):
        assert got.dtype == np.float64 and got.shape == want.shape
        # Warm-up rows: NaN exactly where TA-Lib has no value.
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        valid = ~np.isnan(want)
        assert valid.any()
        # 1e-9 relative; outputs that cross zero (MACD histogram, momentum) also get an absolute floor of
        # 1e-12 of the series' own scale, below which "relative" stops meaning anything.
        scale = float(np.max(np.abs(want[valid])))
        np.testing.assert_allclose(got[valid], want[valid], rtol=1e-9, atol=1e-12 * scale)


@pytest.mark.parametrize("case", list(TALIB_CASES))
def test_matches_talib(case: str, bars: Arrays) -> None:
    ours, theirs = TALIB_CASES[case]
    assert_matches_talib(ours(bars), theirs(bars))


@pytest.mark.parametrize("case", ["sma", "ema", "rsi", "macd", "atr", "adx", "stoch", "cci", "mfi"])
def test_leading_nan_only_delays_the_start_like_talib(case: str) -> None:
    """TA-Lib's wrapper starts at the first row where every input is finite; so do we."""
    data = random_bars(3, n=400)
    for name in data:
        data[name][:7] = np.nan
    ours, theirs = TALIB_CASES[case]
    assert_matches_talib(ours(data), theirs(data))


def test_long_series_stays_on_talib() -> None:
    """200k bars: running sums (SMA, WMA's re-anchored one, MFI's ring) do not drift away from TA-Lib."""
    data = random_bars(11, n=200_000)
    for case in ("sma", "wma", "ema", "rsi", "atr", "mfi", "bbands"):
        ours, theirs = TALIB_CASES[case]
        assert_matches_talib(ours(data), theirs(data))


# -- independent plain-Python oracles for the rest ---------------------------------------------------------


def py_ema(x: list[float], n: int) -> list[float]:
    out = [math.nan] * len(x)
    if len(x) >= n:
        value = math.fsum(x[:n]) / n
        out[n - 1] = value
        for i in range(n, len(x)):
            value += 2.0 / (n + 1) * (x[i] - value)
            out[i] = value
    return out


def py_atr(h: list[float], lo: list[float], c: list[float], n: int) -> list[float]:
    tr = [math.nan] + [
        max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(c))
    ]
    out = [math.nan] * len(c)
    value = math.fsum(tr[1 : n + 1]) / n
    out[n] = value
    for i in range(n + 1, len(c)):
        value = (value * (n - 1) + tr[i]) / n
        out[i] = value
    return out


def assert_close(got: np.ndarray, want: list[float], rtol: float = 1e-9, atol: float = 0.0) -> None:
    want_array = np.array(want, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want_array))
    valid = ~np.isnan(want_array)
    np.testing.assert_allclose(got[valid], want_array[valid], rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def small(spy: Arrays) -> Arrays:
    """The last 600 SPY bars (keeps the O(n * window) Python oracles quick)."""
    return {name: values[-600:].copy() for name, values in spy.items()}


def test_donchian_is_rolling_high_low(small: Arrays) -> None:
    h, lo, n = small["high"].tolist(), small["low"].tolist(), 20
    upper, lower, middle = ind.donchian(small["high"], small["low"], n)
    want_upper = [math.nan] * (n - 1) + [max(h[i - n + 1 : i + 1]) for i in range(n - 1, len(h))]
    want_lower = [math.nan] * (n - 1) + [min(lo[i - n + 1 : i + 1]) for i in range(n - 1, len(lo))]
    assert_close(upper, want_upper, rtol=0.0)
    assert_close(lower, want_lower, rtol=0.0)
    assert_close(middle, [(a + b) / 2 for a, b in zip(want_upper, want_lower, strict=True)])


def test_donchian_band_equals_the_channel_it_comes_from(small: Arrays) -> None:
    high, low = small["high"].copy(), small["low"].copy()
    high[100] = np.nan  # a gap in either input restarts both bands
    low[300] = np.nan
    upper, lower, _ = ind.donchian(high, low, 15)
    np.testing.assert_array_equal(ind.donchian_band(high, low, 15, "upper"), upper)
    np.testing.assert_array_equal(ind.donchian_band(high, low, 15, "lower"), lower)
    with pytest.raises(ValueError, match="side"):
        ind.donchian_band(high, low, 15, "middle")


def test_keltner_is_ema_plus_minus_atr(small: Arrays) -> None:
    h, lo, c = (small[k].tolist() for k in ("high", "low", "close"))
    upper, middle, lower = ind.keltner(small["high"], small["low"], small["close"], n=20, mult=1.5, atr_n=10)
    mid, width = py_ema(c, 20), [1.5 * a for a in py_atr(h, lo, c, 10)]
    warm = max(19, 10)
    want_mid = [math.nan if i < warm else m for i, m in enumerate(mid)]
    assert_close(middle, want_mid)
    assert_close(upper, [m + w for m, w in zip(want_mid, width, strict=True)])
    assert_close(lower, [m - w for m, w in zip(want_mid, width, strict=True)])


def test_realized_vol_is_annualised_sample_stdev_of_log_returns(small: Arrays) -> None:
    c, n = small["close"].tolist(), 20
    returns = [math.log(c[i] / c[i - 1]) for i in range(1, len(c))]
    want = [math.nan] * n + [
        statistics.stdev(returns[i - n : i]) * math.sqrt(252.0) for i in range(n, len(c))
    ]
    assert_close(ind.realized_vol(small["close"], n), want)
    # Minute bars: only the annualisation changes.
    assert_close(ind.realized_vol(small["close"], n, 252 * 390), [w * math.sqrt(390) for w in want])


def test_zscore_uses_population_stdev(small: Arrays) -> None:
    c, n = small["close"].tolist(), 30
    want = [math.nan] * (n - 1)
    for i in range(n - 1, len(c)):
        window = c[i - n + 1 : i + 1]
        want.append((c[i] - statistics.fmean(window)) / statistics.pstdev(window))
    # z is dimensionless and O(1); 1e-9 absolute is the meaningful bound where it crosses 0.
    assert_close(ind.zscore(small["close"], n), want, atol=1e-9)


def test_bollinger_and_percent_b_against_python(small: Arrays) -> None:
    c, n, k = small["close"].tolist(), 20, 2.0
    want_upper, want_lower, want_b = [math.nan] * (n - 1), [math.nan] * (n - 1), [math.nan] * (n - 1)
    for i in range(n - 1, len(c)):
        window = c[i - n + 1 : i + 1]
        mean, std = statistics.fmean(window), statistics.pstdev(window)
        want_upper.append(mean + k * std)
        want_lower.append(mean - k * std)
        want_b.append((c[i] - (mean - k * std)) / (2 * k * std))
    upper, _, lower = ind.bollinger(small["close"], n, k)
    assert_close(upper, want_upper)
    assert_close(lower, want_lower)
    assert_close(ind.percent_b(small["close"], n, k), want_b, atol=1e-9)  # a fraction of the band width


def test_efficiency_ratio_against_python(small: Arrays) -> None:
    c, n = small["close"].tolist(), 10
    want = [math.nan] * n
    for i in range(n, len(c)):
        path = math.fsum(abs(c[j] - c[j - 1]) for j in range(i - n + 1, i + 1))
        want.append(abs(c[i] - c[i - n]) / path)
    got = ind.efficiency_ratio(small["close"], n)
    assert_close(got, want)
    assert np.nanmin(got) >= 0.0 and np.nanmax(got) <= 1.0


def test_log_returns_against_python(small: Arrays) -> None:
    c = small["close"].tolist()
    assert_close(
        ind.log_returns(small["close"]), [math.nan] + [math.log(c[i] / c[i - 1]) for i in range(1, len(c))]
    )


def test_flat_windows_give_documented_values() -> None:
    flat = np.full(30, 7.25)
    assert np.all(ind.zscore(flat, 5)[4:] == 0.0)
    assert np.all(ind.percent_b(flat, 5)[4:] == 0.5)
    assert np.all(ind.efficiency_ratio(flat, 5)[5:] == 0.0)
    assert np.all(ind.realized_vol(flat, 5)[5:] == 0.0)
    upper, _, lower = ind.bollinger(flat, 5)
    np.testing.assert_array_equal(upper[4:], lower[4:])


def test_non_positive_prices_give_nan_returns() -> None:
    got = ind.log_returns([1.0, 2.0, 0.0, 3.0, -1.0, 4.0])
    np.testing.assert_array_equal(np.isnan(got), [True, False, True, True, True, True])


# -- warm-up ----------------------------------------------------------------------------------------------

# Feature -> the documented number of NaN rows before its first value, with its default parameters.
WARMUP = {
    "sma": 19,
    "ema": 19,
    "wma": 19,
    "rsi": 14,
    "macd": 33,
    "bollinger": 19,
    "percent_b": 19,
    "atr": 14,
    "adx": 27,  # the DI lines start at 14
    "stoch": 17,
    "cci": 19,
    "roc": 10,
    "momentum": 10,
    "williams_r": 13,
    "obv": 0,
    "mfi": 14,
    "donchian": 19,
    "keltner": 19,
    "realized_vol": 20,
    "zscore": 19,
    "efficiency_ratio": 10,
    "log_returns": 1,
    "regime": 271,
}


@pytest.fixture(scope="module")
def synth_daily() -> pl.DataFrame:
    return synth_bars("SYN001", "1d", "2016-01-04", "2018-06-29", seed=5)


def test_every_feature_has_a_documented_warmup() -> None:
    assert set(WARMUP) == set(FEATURES)


@pytest.mark.parametrize("name", sorted(WARMUP))
def test_warmup_rows_are_nan_and_never_backfilled(name: str, synth_daily: pl.DataFrame) -> None:
    out = FEATURES[name](synth_daily)
    first = out.columns[0]
    values = out.get_column(first).to_numpy()
    missing = values == -1 if values.dtype.kind == "i" else np.isnan(values)
    warm = WARMUP[name]
    assert missing[:warm].all(), f"{first} has values inside its warm-up"
    assert not missing[warm:].any(), f"{first} is missing values after its warm-up"


# -- missing data -----------------------------------------------------------------------------------------


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))


@pytest.mark.parametrize("name", sorted(WARMUP))
def test_a_gap_restarts_the_indicator(name: str, synth_daily: pl.DataFrame) -> None:
    """A NaN bar: rows before it are untouched, it is NaN, and rows after it equal a fresh computation on
    the bars after it (for window indicators: NaN exactly while the gap is inside the window)."""
    gap = 300
    numeric = ["open", "high", "low", "close", "volume"]
    holed = synth_daily.with_columns(
        [
            pl.when(pl.int_range(pl.len()) == gap).then(float("nan")).otherwise(pl.col(c)).alias(c)
            for c in numeric
        ]
    )
    clean_out = FEATURES[name](synth_daily)
    holed_out = FEATURES[name](holed)
    tail_out = FEATURES[name](synth_daily[gap + 1 :])
    for column in clean_out.columns:
        clean, holed_values, tail = (
            f.get_column(column).to_numpy() for f in (clean_out, holed_out, tail_out)
        )
        assert _same(holed_values[:gap], clean[:gap])
        assert holed_values[gap] == -1 if holed_values.dtype.kind == "i" else np.isnan(holed_values[gap])
        assert _same(holed_values[gap + 1 :], tail)


def test_window_indicator_is_nan_exactly_while_gap_in_window() -> None:
    x = np.arange(1.0, 41.0)
    x[15] = np.nan
    got = ind.sma(x, 5)
    assert np.isnan(got[:4]).all() and not np.isnan(got[4:15]).any()
    assert np.isnan(got[15:20]).all() and not np.isnan(got[20:]).any()
    assert got[20] == np.mean(x[16:21])


# -- no look-ahead ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FEATURES))
@pytest.mark.parametrize("t", [5, 150, 400, 560])
def test_no_lookahead(name: str, t: int, synth_daily: pl.DataFrame) -> None:
    """Replacing every row after t with random bars changes no output at rows <= t."""
    rng = np.random.default_rng(t)
    future = synth_daily.height - t - 1
    close = rng.uniform(50.0, 150.0, future)
    scrambled = synth_daily.with_columns(
        [
            pl.concat([synth_daily.get_column(c)[: t + 1], pl.Series(c, values)])
            for c, values in {
                "open": rng.uniform(50.0, 150.0, future),
                "high": close * rng.uniform(1.0, 1.2, future),
                "low": close * rng.uniform(0.8, 1.0, future),
                "close": close,
                "volume": rng.uniform(0.0, 1e7, future),
            }.items()
        ]
    )
    before, after = FEATURES[name](synth_daily), FEATURES[name](scrambled)
    for column in before.columns:
        a = before.get_column(column).to_numpy()[: t + 1]
        b = after.get_column(column).to_numpy()[: t + 1]
        assert _same(a, b), f"{column} at rows <= {t} depends on later rows"
    # The scramble must reach the outputs, or this test could not see look-ahead at all.
    assert not before.equals(after)


# -- polars layer -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_symbols() -> pl.DataFrame:
    """Two symbols in one long frame, interleaved by time as a store read returns them."""
    frames = [
        synth_bars(symbol, "1d", "2017-01-03", "2018-12-31", seed=9).with_columns(
            pl.lit(symbol).alias("symbol")
        )
        for symbol in ("SYN000", "SYN002")
    ]
    return pl.concat(frames).sort("ts", "symbol")


def test_add_features_computes_each_symbol_on_its_own_rows(two_symbols: pl.DataFrame) -> None:
    together = add_features(two_symbols)
    assert together.select(two_symbols.columns).equals(two_symbols)  # row order and inputs kept
    for symbol in ("SYN000", "SYN002"):
        alone = add_features(two_symbols.filter(pl.col("symbol") == symbol))
        assert together.filter(pl.col("symbol") == symbol).equals(alone)


def test_add_features_does_not_leak_across_symbols(two_symbols: pl.DataFrame) -> None:
    """Scrambling one symbol's bars leaves every feature of the other symbol unchanged."""
    rng = np.random.default_rng(0)
    is_b = pl.col("symbol") == "SYN002"
    noise = pl.Series(rng.uniform(0.5, 1.5, two_symbols.height))
    scrambled = two_symbols.with_columns(
        [
            pl.when(is_b).then(pl.col(c) * noise).otherwise(pl.col(c))
            for c in ("open", "high", "low", "close", "volume")
        ]
    )
    a_before = add_features(two_symbols).filter(~is_b)
    a_after = add_features(scrambled).filter(~is_b)
    assert a_before.equals(a_after)
    assert not add_features(two_symbols).filter(is_b).equals(add_features(scrambled).filter(is_b))


def test_add_features_orders_each_symbol_by_ts(two_symbols: pl.DataFrame) -> None:
    shuffled = two_symbols.sample(fraction=1.0, shuffle=True, seed=3)
    out = add_features(shuffled, ["rsi", "regime"])
    assert out.select(shuffled.columns).equals(shuffled)
    expected = add_features(two_symbols, ["rsi", "regime"])
    assert out.sort("ts", "symbol").equals(expected)


def test_add_features_passes_parameters(synth_daily: pl.DataFrame) -> None:
    out = add_features(synth_daily, ["rsi", "macd"], rsi={"n": 5}, macd={"fast": 3, "slow": 10, "signal": 4})
    close = synth_daily.get_column("close").to_numpy()
    assert _same(out.get_column("rsi").to_numpy(), ind.rsi(close, 5))
    assert _same(out.get_column("macd_hist").to_numpy(), ind.macd(close, 3, 10, 4)[2])
    assert out.get_column("rsi").dtype == pl.Float64


def test_add_features_rejects_bad_requests(synth_daily: pl.DataFrame, two_symbols: pl.DataFrame) -> None:
    with pytest.raises(ConfigError, match="did you mean 'rsi'"):
        add_features(synth_daily, ["rsj"])
    with pytest.raises(ConfigError, match="no parameter 'm'"):
        add_features(synth_daily, ["rsi"], rsi={"m": 3})
    with pytest.raises(ConfigError, match="not among"):
        add_features(synth_daily, ["rsi"], atr={"n": 3})
    with pytest.raises(DataError, match="repeat ts"):
        add_features(pl.concat([synth_daily, synth_daily[:1]]), ["rsi"])
    with pytest.raises(DataError, match="needs column"):
        add_features(synth_daily.drop("volume"), ["obv"])
    with pytest.raises(DataError, match="several symbols"):
        FEATURES["rsi"](two_symbols)
    with pytest.raises(DataError, match="float64"):
        add_features(synth_daily.with_columns(pl.lit("n/a").alias("close")), ["rsi"])


def test_add_features_on_empty_frame_adds_empty_columns(synth_daily: pl.DataFrame) -> None:
    out = add_features(synth_daily.clear(), ["macd", "regime"])
    assert out.height == 0
    assert {"macd", "macd_signal", "macd_hist", "regime"} <= set(out.columns)


# -- arguments --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "14", None])
def test_bad_periods_raise_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="parameter n must be"):
        ind.rsi(np.arange(50.0), bad)


def test_bad_inputs_raise_data_error() -> None:
    with pytest.raises(DataError, match="differ in length"):
        ind.atr(np.ones(10), np.ones(9), np.ones(10))
    with pytest.raises(DataError, match="one-dimensional"):
        ind.sma(np.ones((3, 3)), 2)
    with pytest.raises(DataError, match="float64"):
        ind.sma(["a", "b"], 2)


def test_macd_requires_fast_below_slow() -> None:
    with pytest.raises(ConfigError, match="fast < slow"):
        ind.macd(np.arange(100.0), fast=26, slow=12)


def test_docstring_examples_hold() -> None:
    result = doctest.testmod(ind, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20 and result.failed == 0
