"""Regime labels (rules, warm-up, no look-ahead, ground truth of synthetic bars) and asset classes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from trader.config import TickerSpec
from trader.data import synth
from trader.data.synth import synth_bars, synth_regimes, synth_symbol_names
from trader.errors import ConfigError
from trader.features import FEATURES, add_features
from trader.features.indicators import adx, efficiency_ratio, realized_vol
from trader.features.regimes import REGIMES, asset_class, regime_labels

SEED = 11


@pytest.fixture(scope="module")
def daily() -> pl.DataFrame:
    return synth_bars("SYN003", "1d", "2010-01-04", "2013-12-31", seed=SEED)


def hlc(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(frame.get_column(c).to_numpy() for c in ("high", "low", "close"))  # type: ignore[return-value]


def python_labels(high, low, close, *, er_n, adx_n, vol_n, vol_window, vol_pct, er_trend, adx_trend):
    """The documented rules, written out with numpy.quantile on each trailing window."""
    vol = realized_vol(close, vol_n)
    er = efficiency_ratio(close, er_n)
    adx_line = adx(high, low, close, adx_n)[0]
    labels = []
    for t in range(len(close)):
        window = vol[max(0, t - vol_window + 1) : t + 1]
        if t + 1 < vol_window or np.isnan(window).any() or np.isnan(er[t]) or np.isnan(adx_line[t]):
            labels.append(-1)
        elif vol[t] > np.quantile(window, vol_pct):
            labels.append(2)
        elif er[t] >= er_trend or adx_line[t] >= adx_trend:
            labels.append(0)
        else:
            labels.append(1)
    return np.array(labels, dtype=np.int8)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {
            "er_n": 10,
            "adx_n": 7,
            "vol_n": 10,
            "vol_window": 60,
            "vol_pct": 0.5,
            "er_trend": 0.4,
            "adx_trend": 30.0,
        },
        {"vol_window": 126, "vol_pct": 0.95},
    ],
)
def test_labels_follow_the_documented_rules(daily: pl.DataFrame, params: dict) -> None:
    defaults = {
        "er_n": 20,
        "adx_n": 14,
        "vol_n": 20,
        "vol_window": 252,
        "vol_pct": 0.8,
        "er_trend": 0.3,
        "adx_trend": 25.0,
    }
    merged = {**defaults, **params}
    got = regime_labels(*hlc(daily), **params)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, python_labels(*hlc(daily), **merged))


def test_warmup_is_undefined_then_every_bar_labelled(daily: pl.DataFrame) -> None:
    labels = regime_labels(*hlc(daily))
    warm = max(20 + 252 - 1, 20, 2 * 14 - 1)
    assert (labels[:warm] == -1).all()
    assert set(np.unique(labels[warm:]).tolist()) <= {0, 1, 2} and (labels[warm:] >= 0).all()


@pytest.mark.parametrize("t", [280, 400, 600, 900])
def test_no_lookahead(daily: pl.DataFrame, t: int) -> None:
    high, low, close = hlc(daily)
    rng = np.random.default_rng(t)
    future = len(close) - t - 1
    new_close = close.copy()
    new_close[t + 1 :] = close[t] * np.exp(np.cumsum(rng.normal(0.0, 0.08, future)))
    new_high, new_low = high.copy(), low.copy()
    new_high[t + 1 :] = new_close[t + 1 :] * rng.uniform(1.0, 1.1, future)
    new_low[t + 1 :] = new_close[t + 1 :] * rng.uniform(0.9, 1.0, future)
    before = regime_labels(high, low, close)
    after = regime_labels(new_high, new_low, new_close)
    np.testing.assert_array_equal(before[: t + 1], after[: t + 1])
    assert not np.array_equal(before, after)  # the scramble reaches the labels


def test_a_gap_leaves_labels_undefined_until_windows_refill(daily: pl.DataFrame) -> None:
    high, low, close = hlc(daily)
    holed = close.copy()
    holed[500] = np.nan
    labels = regime_labels(high, low, holed)
    np.testing.assert_array_equal(labels[:500], regime_labels(high, low, close)[:500])
    # After the gap the vol series restarts: vol_n returns, then a full vol_window of them.
    assert (labels[500 : 501 + 20 + 252 - 1] == -1).all()
    assert (labels[501 + 20 + 252 - 1 :] >= 0).all()


def test_volatile_sessions_are_labelled_volatile_more_often() -> None:
    """On synthetic bars with known regimes, the label tracks the true volatile regime."""
    assert tuple(synth.REGIMES) == REGIMES
    seen: set[int] = set()
    for symbol in synth_symbol_names(3):
        bars = synth_bars(symbol, "1d", "2000-01-03", "2012-12-31", seed=SEED)
        truth = synth_regimes(symbol, "2000-01-03", "2012-12-31", seed=SEED).get_column("regime").to_numpy()
        labels = regime_labels(*hlc(bars))
        defined = labels >= 0
        truly_volatile = truth == "volatile"
        hit_rate = np.mean(labels[defined & truly_volatile] == 2)
        false_rate = np.mean(labels[defined & ~truly_volatile] == 2)
        assert hit_rate > 2 * false_rate, (symbol, hit_rate, false_rate)
        seen |= set(np.unique(labels[defined]).tolist())
    assert seen == {0, 1, 2}


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("vol_pct", 1.5),
        ("vol_pct", -0.1),
        ("er_trend", 2.0),
        ("adx_trend", 101.0),
        ("vol_window", 1),
        ("er_n", 0),
    ],
)
def test_bad_parameters_raise_config_error(daily: pl.DataFrame, param: str, value: float) -> None:
    with pytest.raises(ConfigError, match=param):
        regime_labels(*hlc(daily), **{param: value})


def test_regime_feature_in_the_registry(daily: pl.DataFrame) -> None:
    assert "regime" in FEATURES
    out = add_features(daily, ["regime"], regime={"vol_window": 60})
    assert out.get_column("regime").dtype == pl.Int8
    np.testing.assert_array_equal(
        out.get_column("regime").to_numpy(), regime_labels(*hlc(daily), vol_window=60)
    )


# -- asset classes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("BTC-USD", "crypto"),
        ("ETH/USD", "crypto"),
        ("SOL-USDT", "crypto"),
        ("BTCUSDT", "crypto"),
        ("ethusd", "crypto"),
        ("SPY", "etf"),
        ("qqq", "etf"),
        ("XLK", "etf"),
        ("GDX", "etf"),
        ("AAPL", "equity"),
        ("BRK-B", "equity"),
        ("XLNX", "equity"),
        ("USDT", "equity"),
    ],
)
def test_asset_class_heuristic(symbol: str, expected: str) -> None:
    assert asset_class(symbol) == expected


def test_asset_class_settings_come_first() -> None:
    tickers = {
        "SPY": TickerSpec(
            asset_class="equity", exchange="ARCA", currency="USD"
        ),  # settings override the list
        "arkk": {"asset_class": "etf", "exchange": "ARCA", "currency": "USD"},
    }
    assert asset_class("SPY", tickers) == "equity"
    assert asset_class("ARKK", tickers) == "etf"  # case-insensitive lookup
    assert asset_class("BTC-USD", tickers) == "crypto"  # not listed: heuristic
    with pytest.raises(ConfigError, match="asset_class"):
        asset_class("X", {"X": {"asset_class": "bond"}})
    with pytest.raises(ConfigError, match="symbol"):
        asset_class("")
