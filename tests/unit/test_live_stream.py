"""The streaming decider equals the vectorised backtest bit for bit at every bar: each built-in strategy and
the composer (demo config and variations, regimes included), on synthetic minute bars and real SPY daily bars
with missing bars injected, for random parameters, gaps and first bars; each component kernel equals its
vectorised indicator on continuous values; warm-up equals stepping; components the stream does not know are
refused."""

from __future__ import annotations

import pickle
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.composer import Composer
from trader.config import load_settings
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.features.regimes import regime_labels
from trader.live import stream_kernels as sk
from trader.live.stream import StreamDecider, supports
from trader.strategies import get_strategy, register_strategy, unregister_strategy

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("open", "high", "low", "close", "volume")

# Several parameter sets per built-in strategy: both allow_short values, both exit_at values, short and long
# windows (a window longer than some finite runs, so warm-up restarts after a gap are exercised).
PARAM_SETS: dict[str, list[dict[str, Any]]] = {
    "sma_cross": [
        {"fast": 10, "slow": 50},
        {"fast": 3, "slow": 7, "allow_short": True},
        {"fast": 20, "slow": 200, "allow_short": True},
    ],
    "ema_cross": [{"fast": 12, "slow": 26}, {"fast": 2, "slow": 5, "allow_short": True}],
    "donchian_breakout": [
        {"lookback": 20, "exit_lookback": 10},
        {"lookback": 5, "exit_lookback": 30, "allow_short": True},
        {"lookback": 55, "exit_lookback": 20, "allow_short": True},
    ],
    "ts_momentum": [
        {"lookback": 60, "threshold": 0.0},
        {"lookback": 5, "threshold": 0.002, "allow_short": True},
        {"lookback": 20, "threshold": 0.01, "allow_short": True},
    ],
    "vol_breakout": [
        {"atr_period": 14, "k": 1.5, "hold": 5},
        {"atr_period": 3, "k": 0.5, "hold": 1, "allow_short": True},
        {"atr_period": 30, "k": 1.0, "hold": 20, "allow_short": True},
    ],
    "rsi_reversion": [
        {"period": 14, "lower": 30.0, "upper": 70.0, "exit_at": "opposite"},
        {"period": 14, "lower": 30.0, "upper": 70.0, "exit_at": "middle"},
        {"period": 5, "lower": 40.0, "upper": 60.0, "exit_at": "middle", "allow_short": True},
        {"period": 2, "lower": 10.0, "upper": 90.0, "exit_at": "opposite", "allow_short": True},
    ],
    "bollinger_reversion": [
        {"period": 20, "k": 2.0, "exit_at": "middle"},
        {"period": 20, "k": 2.0, "exit_at": "opposite"},
        {"period": 5, "k": 1.0, "exit_at": "opposite", "allow_short": True},
        {"period": 50, "k": 0.5, "exit_at": "middle", "allow_short": True},
    ],
}
CASES = [(name, params) for name, sets in PARAM_SETS.items() for params in sets]


def _settings(*extra: str) -> Any:
    return load_settings([ROOT / "configs/base.yaml", ROOT / "configs/demo.yaml"], list(extra), env={})


def _inject_gaps(bars: pl.DataFrame, gaps: dict[str, list[int]]) -> pl.DataFrame:
    """``bars`` with NaN in column ``c`` at the given rows (a missing close, a missing high, ...)."""
    out = {c: bars[c].to_numpy().copy() for c in COLUMNS}
    for column, rows in gaps.items():
        out[column][rows] = np.nan
    return bars.with_columns([pl.Series(c, out[c]) for c in COLUMNS])


def _mid_gaps(n: int) -> dict[str, list[int]]:
    # one lone missing close, a run of three, a missing high, a missing low, a missing open, two in a row
    return {
        "close": [n // 4, n // 2, n // 2 + 1, n // 2 + 2],
        "high": [n // 3, (2 * n) // 3],
        "low": [(3 * n) // 4],
        "open": [(5 * n) // 8],
    }


@cache
def _minute_bars() -> pl.DataFrame:
    bars = synth_bars("SYN011", "1m", "2021-03-01", "2021-03-09", seed=11)  # 6 sessions, 2,340 bars
    return _inject_gaps(bars, _mid_gaps(bars.height))


@cache
def _spy_daily(folder: str) -> pl.DataFrame:
    from trader.data.ingest import read_source
    from trader.data.sanity import validate_bars

    path = Path(folder) / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv"
    raw = read_source(path, fmt="yahoo", interval="1d").frame.sort("ts")
    bars = validate_bars(raw, symbol="SPY", interval="1d", mode="repair")[0]
    return _inject_gaps(bars, _mid_gaps(bars.height))


def _rows(bars: pl.DataFrame) -> list[tuple[Any, ...]]:
    ts = bars["ts"].dt.epoch("ns").to_numpy()
    cols = [bars[c].to_numpy() for c in COLUMNS]
    return [(int(ts[k]), *(float(c[k]) for c in cols)) for k in range(bars.height)]


def _replay(stream: StreamDecider, bars: pl.DataFrame) -> np.ndarray:
    return np.array([stream.step(*row) for row in _rows(bars)])


def _assert_bits(live: np.ndarray, whole: np.ndarray) -> None:
    assert live.shape == whole.shape
    assert not np.isnan(whole).any()
    bad = np.flatnonzero(live.view(np.int64) != whole.view(np.int64))
    assert bad.size == 0, f"{bad.size} bars differ, first at {bad[0]}: {live[bad[0]]!r} != {whole[bad[0]]!r}"


# -- strategies -------------------------------------------------------------------------------------------


def _check_strategy(bars: pl.DataFrame, name: str, params: dict[str, Any]) -> np.ndarray:
    stream = StreamDecider("SYM", _settings(), strategy=name, params=params)
    whole = get_strategy(name).run(bars, params)
    _assert_bits(_replay(stream, bars), whole)
    return whole


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_each_strategy_equals_the_backtest_on_minute_bars_with_gaps(
    name: str, params: dict[str, Any]
) -> None:
    whole = _check_strategy(_minute_bars(), name, params)
    assert np.any(whole > 0)  # the comparison covers positions, not only flat bars
    if params.get("allow_short"):
        assert np.any(whole < 0)


@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_each_strategy_equals_the_backtest_on_real_daily_bars_with_gaps(
    shared_data: Path, name: str, params: dict[str, Any]
) -> None:
    whole = _check_strategy(_spy_daily(str(shared_data)), name, params)
    assert np.any(whole != 0)


# -- each component kernel against its vectorised indicator, on continuous values -------------------------
# Targets are discrete (-1, 0, 1), so an indicator one ulp off rarely shows in them; these compare the
# indicators themselves bit for bit, through the same gaps (runs restart) and flat stretches (zero spread).


@cache
def _series(kind: str = "minute") -> dict[str, np.ndarray]:
    """Bars with gaps and a flat stretch: synthetic minute bars, or a wild walk across many binades (there the
    order of a sum changes its rounding, so a kernel adding in another order shows)."""
    if kind == "minute":
        bars = synth_bars("SYN015", "1m", "2021-03-01", "2021-03-05", seed=15)  # 1,560 bars
        cols = {c: bars[c].to_numpy().copy() for c in ("open", "high", "low", "close")}
    else:
        rng = np.random.default_rng(16)
        close = 5.0 * np.exp(np.cumsum(rng.normal(0.0, 0.08, 1500)))
        spread = close * rng.uniform(0.0, 0.1, (2, close.size))
        cols = {"open": close * 1.01, "high": close + spread[0], "low": close - spread[1], "close": close}
    for c in cols.values():  # a flat stretch: no change, no range
        c[400:460] = cols["close"][399]
    cols["close"][[100, 101, 700, 1200]] = np.nan
    cols["high"][[300, 900]] = np.nan
    cols["low"][[1000]] = np.inf
    return cols


def _assert_same(live: np.ndarray, whole: np.ndarray) -> None:
    """Equal bits where defined, and NaN on the same bars."""
    np.testing.assert_array_equal(np.isnan(live), np.isnan(whole))
    defined = ~np.isnan(whole)
    assert defined.sum() > len(whole) // 2
    bad = np.flatnonzero(live[defined].view(np.int64) != whole[defined].view(np.int64))
    assert bad.size == 0, f"{bad.size} values differ: {live[defined][bad[:3]]} vs {whole[defined][bad[:3]]}"


def _drive(step: Any, n_float: int, n_int: int, *columns: np.ndarray) -> np.ndarray:
    """A component kernel stepped bar by bar from fresh state: step(fs, st, *values) -> value."""
    fs, st = np.zeros(n_float), np.zeros(n_int, dtype=np.int64)
    return np.array([step(fs, st, *values) for values in zip(*columns, strict=True)])


@pytest.mark.parametrize("kind", ["minute", "wild"])
@pytest.mark.parametrize("n", [1, 2, 14, 50])
def test_moving_average_rsi_and_atr_kernels_equal_the_indicators(n: int, kind: str) -> None:
    from trader.features import indicators as ind

    s = _series(kind)
    close, high, low = s["close"], s["high"], s["low"]
    sma = _drive(lambda fs, st, x: sk.sma_step(fs, 0, st, 0, n, x, np.isfinite(x)), n + 1, 1, close)
    _assert_same(sma, ind.sma(close, n))
    ema = _drive(lambda fs, st, x: sk.ema_step(fs, 0, st, 0, n, x, np.isfinite(x)), 2, 1, close)
    _assert_same(ema, ind.ema(close, n))
    atr = _drive(
        lambda fs, st, h, lo, c: sk.atr_step(fs, 0, st, 0, n, h, lo, c, bool(np.isfinite([h, lo, c]).all())),
        3, 1, high, low, close,
    )  # fmt: skip
    _assert_same(atr, ind.atr(high, low, close, n))
    if n >= 2:
        rsi = _drive(lambda fs, st, x: sk.rsi_step(fs, 0, st, 0, n, x, np.isfinite(x)), 3, 1, close)
        _assert_same(rsi, ind.rsi(close, n))
        adx = _drive(lambda fs, st, h, lo, c: sk.adx_step(fs, 0, st, 0, n, h, lo, c), 8, 1, high, low, close)
        _assert_same(adx, ind.adx(high, low, close, n)[0])


@pytest.mark.parametrize("kind", ["minute", "wild"])
@pytest.mark.parametrize("n", [1, 5, 20])
def test_window_kernels_equal_donchian_bollinger_and_efficiency_ratio(n: int, kind: str) -> None:
    from trader.features import indicators as ind

    s = _series(kind)
    close, high, low = s["close"], s["high"], s["low"]

    def channel(fs: np.ndarray, st: np.ndarray, h: float, lo: float) -> tuple[float, float]:
        if not (np.isfinite(h) and np.isfinite(lo)):
            st[0] = 0
            return np.nan, np.nan
        p = st[0]
        st[0] = p + 1
        fs[p % n], fs[n + p % n] = h, lo
        if p < n - 1:
            return np.nan, np.nan
        return sk.ring_extreme(fs, 0, n, p, n, True), sk.ring_extreme(fs, n, n, p, n, False)

    upper, lower = _drive(channel, 2 * n, 1, high, low).T
    expected_upper, expected_lower, _ = ind.donchian(high, low, n)
    _assert_same(upper, expected_upper)
    _assert_same(lower, expected_lower)

    def bands(fs: np.ndarray, st: np.ndarray, x: float) -> float:
        p = st[0]
        middle = sk.sma_step(fs, 0, st, 0, n, x, np.isfinite(x))
        if np.isnan(middle):
            return np.nan
        return middle + 1.5 * sk.moments_std(fs, 1, n, p, 0)[1]

    _assert_same(_drive(bands, n + 1, 1, close), ind.bollinger(close, n, 1.5)[0])
    er = _drive(lambda fs, st, x: sk.er_step(fs, 0, st, 0, n, x), n + 1, 1, close)
    _assert_same(er, ind.efficiency_ratio(close, n))


@pytest.mark.parametrize("kind", ["minute", "wild"])
@pytest.mark.parametrize(("n", "window", "quantile"), [(2, 2, 0.5), (10, 60, 0.8), (20, 252, 0.33)])
def test_volatility_kernels_equal_realized_vol_and_numpys_quantile(
    n: int, window: int, quantile: float, kind: str
) -> None:
    from trader.features import indicators as ind

    close = _series(kind)["close"]
    returns = ind.log_returns(close)
    sqrt_ppy = float(np.sqrt(252.0))
    vol = _drive(lambda fs, st, r: sk.realized_vol_step(fs, 0, st, 0, n, sqrt_ppy, r), n, 1, returns)
    _assert_same(vol, ind.realized_vol(close, n))
    above = _drive(
        lambda fs, st, v: sk.above_quantile_step(fs, 0, st, 0, window, quantile, v), 2 * window + 2, 2, vol
    )
    # the oracle: numpy.quantile of each full window of finite values, in a plain loop
    expected = np.full(vol.size, np.nan)
    for t in range(window - 1, vol.size):
        values = vol[t - window + 1 : t + 1]
        if np.isfinite(values).all():
            expected[t] = 1.0 if vol[t] > np.quantile(values, quantile) else 0.0
    np.testing.assert_array_equal(above, expected)
    assert 0.0 < np.nanmean(above) < 1.0


@pytest.mark.parametrize("lookback", [1, 2, 7, 50, 300])
def test_score_kernel_equals_the_rolling_tstat(lookback: int) -> None:
    from trader.features.tstat import fixed_point_bits, rolling_tstat

    rng = np.random.default_rng(lookback)
    x = rng.normal(0.0002, 0.003, 2000)
    x[rng.integers(0, x.size, 40)] = np.nan
    x[rng.integers(0, x.size, 5)] = 0.0
    x[700:720] = 0.001  # no spread
    x[[300, 1500]] = [400.0, -1e6]  # beyond the fixed-point range: the two-pass fallback
    frac = fixed_point_bits(lookback)
    fs, st, us = np.zeros(lookback), np.zeros(2, dtype=np.int64), np.zeros(3, dtype=np.uint64)
    live = np.array([sk.tstat_step(fs, st, us, 0, 0, 0, lookback, frac, t, v) for t, v in enumerate(x)])
    whole = rolling_tstat(x[None, :], lookback)[0]
    np.testing.assert_array_equal(live.view(np.int64), whole.view(np.int64))
    if lookback > 2:
        assert np.count_nonzero(whole) > x.size // 2


def test_regime_kernel_equals_regime_labels() -> None:
    s = _series()
    params = {"er_n": 8, "adx_n": 5, "vol_n": 6, "vol_window": 40, "vol_pct": 0.75, "er_trend": 0.35}
    composer = _composer(ALL_SIX[:1], trend_bias=1.0, regime_params=params)
    stream = StreamDecider("SYN015", _settings(), composer=composer)
    from trader.features.indicators import log_returns

    returns = log_returns(s["close"])
    fs, st = np.zeros_like(stream._fs), np.zeros_like(stream._st)
    ci, cf = stream._ci, stream._cf
    live = [
        sk.regime_step(ci, cf, fs, st, h, lo, c, r)
        for h, lo, c, r in zip(s["high"], s["low"], s["close"], returns, strict=True)
    ]
    expected = regime_labels(s["high"], s["low"], s["close"], **params)
    np.testing.assert_array_equal(np.array(live), expected)
    assert set(np.unique(expected).tolist()) == {-1, 0, 1, 2}


# -- the composer -----------------------------------------------------------------------------------------


def _composer(strategies: list[tuple[str, dict[str, Any]]], **fields: Any) -> Composer:
    specs = tuple((get_strategy(n), get_strategy(n).validate(p)) for n, p in strategies)
    return Composer(strategies=specs, **fields)


ALL_SIX = [
    ("ema_cross", {"fast": 5, "slow": 20, "allow_short": True}),
    ("ts_momentum", {"lookback": 10, "threshold": 0.001, "allow_short": True}),
    ("vol_breakout", {"atr_period": 10, "k": 1.0, "hold": 3, "allow_short": True}),
    ("bollinger_reversion", {"period": 15, "k": 1.5, "exit_at": "opposite", "allow_short": True}),
    ("rsi_reversion", {"period": 7, "lower": 35.0, "upper": 65.0, "exit_at": "middle"}),
    ("donchian_breakout", {"lookback": 10, "exit_lookback": 5}),
]
# Short regime windows so that every regime occurs in a few thousand bars.
FAST_REGIMES = {"er_n": 10, "adx_n": 7, "vol_n": 10, "vol_window": 60, "vol_pct": 0.7}

SETTINGS_VARIANTS = {
    "demo": (),
    "biases": ("composer.trend_bias=0.8", "composer.chop_bias=1.2", "composer.volatile_bias=-0.7"),
    "hold_on_nan": ("composer.hold_on_nan=true", "composer.min_confidence=0.25"),
    "sharp": ("composer.temperature=0.15", "composer.lookback=20", "engine.min_history_bars=5"),
}
COMPOSER_VARIANTS = {
    "six_no_flat": {"include_flat": False, "lookback": 30, "min_confidence": 0.0, "min_history_bars": 0},
    "six_regimes": {
        "trend_bias": 0.5,
        "chop_bias": -0.4,
        "volatile_bias": 1.5,
        "hold_on_nan": True,
        "temperature": 0.4,
        "regime_params": FAST_REGIMES,
    },
    "six_confident": {"min_confidence": 0.5, "temperature": 2.0, "lookback": 7, "hold_on_nan": True},
}


def _composer_variant(key: str) -> tuple[Any, Composer | None]:
    if key in SETTINGS_VARIANTS:
        return _settings(*SETTINGS_VARIANTS[key]), None
    return _settings(), _composer(ALL_SIX, **COMPOSER_VARIANTS[key])


@pytest.mark.parametrize("key", [*SETTINGS_VARIANTS, *COMPOSER_VARIANTS])
def test_composer_equals_the_backtest_on_minute_bars_with_gaps(key: str) -> None:
    bars = _minute_bars()
    settings_, composer = _composer_variant(key)
    reference = composer or Composer.from_settings(settings_)
    whole = reference.target_weights(bars)
    _assert_bits(_replay(StreamDecider("SYN011", settings_, composer=composer), bars), whole)
    assert np.count_nonzero(whole) > 100
    if reference._needs_regimes():  # the biases are exercised: every regime occurs
        codes = reference.regimes(bars)
        assert set(np.unique(codes).tolist()) >= {0, 1, 2}


@pytest.mark.parametrize("key", ["demo", "biases", "six_regimes", "six_no_flat"])
def test_composer_equals_the_backtest_on_real_daily_bars_with_gaps(shared_data: Path, key: str) -> None:
    bars = _spy_daily(str(shared_data))
    settings_, composer = _composer_variant(key)
    whole = (composer or Composer.from_settings(settings_)).target_weights(bars)
    _assert_bits(_replay(StreamDecider("SPY", settings_, composer=composer), bars), whole)
    assert np.count_nonzero(whole) > 100


def test_composer_with_default_regime_windows_on_real_daily_bars(shared_data: Path) -> None:
    # The default regime windows (a year of warm-up) and a large quantile window, on ten years of SPY.
    bars = _spy_daily(str(shared_data))
    settings_ = _settings("composer.trend_bias=1.0", "composer.volatile_bias=-1.0", "composer.chop_bias=0.5")
    codes = regime_labels(bars["high"], bars["low"], bars["close"])
    assert set(np.unique(codes).tolist()) == {-1, 0, 1, 2}
    stream = StreamDecider("SPY", settings_)
    _assert_bits(_replay(stream, bars), Composer.from_settings(settings_).target_weights(bars))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the backtest's 0 * inf
def test_composer_through_extreme_bars() -> None:
    # A 1000x spike (strategy returns beyond the t-stat's fixed-point range: its two-pass fallback), a zero
    # close (infinite and undefined returns), a negative close and an infinite high.
    bars = synth_bars("SYN012", "1m", "2021-03-01", "2021-03-03", seed=12)
    close = bars["close"].to_numpy().copy()
    high = bars["high"].to_numpy().copy()
    close[300] *= 1000.0
    close[500] = 0.0
    close[650] = -close[650]
    high[700] = np.inf
    bars = bars.with_columns(pl.Series("close", close), pl.Series("high", high))
    composer = _composer(ALL_SIX, lookback=40, hold_on_nan=True, trend_bias=0.3, regime_params=FAST_REGIMES)
    whole = composer.target_weights(bars)
    _assert_bits(_replay(StreamDecider("SYN012", _settings(), composer=composer), bars), whole)
    scores = composer.blend(bars).scores
    assert np.any(scores[300:340] != 0.0)  # the spike's window scores something, through the fallback


# -- random parameters, gaps and first bars ---------------------------------------------------------------


@cache
def _hypothesis_bars() -> pl.DataFrame:
    return synth_bars("SYN013", "1m", "2021-03-01", "2021-03-04", seed=13)  # 3 sessions, 1,170 bars


@st.composite
def _params(draw: st.DrawFn, name: str) -> dict[str, Any]:
    spec = get_strategy(name)
    values: dict[str, Any] = {}
    for p in spec.params:
        if p.kind == "categorical":
            values[p.name] = draw(st.sampled_from(p.choices))
        elif p.kind == "int":
            low = int(p.low) if p.above is None else max(int(p.low), values[p.above] + 1)
            values[p.name] = draw(st.integers(low, min(int(p.high), low + 80)))
        else:
            values[p.name] = draw(st.floats(float(p.low), float(p.high), allow_nan=False))
    return values


@st.composite
def _gappy_bars(draw: st.DrawFn) -> pl.DataFrame:
    bars = _hypothesis_bars()
    first = draw(st.integers(0, 400))
    length = draw(st.integers(1, bars.height - first))
    part = bars.slice(first, length)
    n = part.height
    gaps = {c: draw(st.lists(st.integers(0, n - 1), max_size=6)) for c in ("open", "high", "low", "close")}
    return _inject_gaps(part, gaps)


def _warm_then_step(stream: StreamDecider, bars: pl.DataFrame, cut: int) -> np.ndarray:
    cut = min(cut, bars.height)
    head = stream.warm(bars.head(cut))
    return np.concatenate([head, _replay(stream, bars.slice(cut))])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(PARAM_SETS)), bars=_gappy_bars())
def test_random_strategy_params_gaps_and_first_bar(
    data: st.DataObject, name: str, bars: pl.DataFrame
) -> None:
    params = data.draw(_params(name))
    cut = data.draw(st.integers(0, bars.height))
    stream = StreamDecider("SYN013", _settings(), strategy=name, params=params)
    _assert_bits(_warm_then_step(stream, bars, cut), get_strategy(name).run(bars, params))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), bars=_gappy_bars())
def test_random_composer_params_gaps_and_first_bar(data: st.DataObject, bars: pl.DataFrame) -> None:
    names = data.draw(st.lists(st.sampled_from(sorted(PARAM_SETS)), min_size=1, max_size=4, unique=True))
    strategies = [(n, data.draw(_params(n))) for n in names]
    bias = st.sampled_from([0.0, 0.0, -1.0, 0.5, 2.0])
    regime_params = {
        "er_n": data.draw(st.integers(2, 30)),
        "adx_n": data.draw(st.integers(2, 20)),
        "vol_n": data.draw(st.integers(2, 30)),
        "vol_window": data.draw(st.integers(2, 120)),
        "vol_pct": data.draw(st.floats(0.0, 1.0)),
        "er_trend": data.draw(st.floats(0.0, 1.0)),
        "adx_trend": data.draw(st.floats(0.0, 100.0)),
    }
    composer = _composer(
        strategies,
        lookback=data.draw(st.integers(1, 120)),
        temperature=data.draw(st.floats(0.05, 5.0)),
        trend_bias=data.draw(bias),
        chop_bias=data.draw(bias),
        volatile_bias=data.draw(bias),
        min_confidence=data.draw(st.floats(0.0, 1.0)),
        min_history_bars=data.draw(st.integers(0, 300)),
        hold_on_nan=data.draw(st.booleans()),
        include_flat=data.draw(st.booleans()),
        regime_params=regime_params,
    )
    cut = data.draw(st.integers(0, bars.height))
    stream = StreamDecider("SYN013", _settings(), composer=composer)
    _assert_bits(_warm_then_step(stream, bars, cut), composer.target_weights(bars))


# -- warm-up, order, support ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["demo", "six_regimes"])
def test_warm_then_step_equals_stepping_from_scratch(key: str) -> None:
    bars = _minute_bars()
    settings_, composer = _composer_variant(key)
    scratch = _replay(StreamDecider("SYN011", settings_, composer=composer), bars)
    warmed = StreamDecider("SYN011", settings_, composer=composer)
    history = warmed.warm(bars.head(1000))
    _assert_bits(history, scratch[:1000])
    second = warmed.warm({c: bars[c].to_numpy()[1000:1500] for c in COLUMNS})  # a mapping, no ts
    _assert_bits(second, scratch[1000:1500])
    _assert_bits(_replay(warmed, bars.slice(1500)), scratch[1500:])
    assert warmed.seen == bars.height and warmed.last_target == scratch[-1]
    # reset() forgets everything: a rebuild from the same bars gives the same decisions again
    warmed.reset()
    _assert_bits(warmed.warm(bars), scratch)


def test_a_pickled_stream_continues_identically() -> None:
    bars = _minute_bars()
    settings_, composer = _composer_variant("six_regimes")
    stream = StreamDecider("SYN011", settings_, composer=composer)
    stream.warm(bars.head(900))
    copy = pickle.loads(pickle.dumps(stream))
    _assert_bits(_replay(copy, bars.slice(900)), _replay(stream, bars.slice(900)))


def test_bars_out_of_order_are_refused() -> None:
    bars = synth_bars("SYN014", "1m", "2021-03-01", "2021-03-02", seed=14)
    stream = StreamDecider("SYN014", _settings())
    stream.warm(bars.head(100))
    with pytest.raises(DataError, match="not after the last bar"):
        stream.step(stream.last_ts, 1.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(DataError, match="not after the last bar"):
        stream.warm(bars.slice(50, 60))
    with pytest.raises(DataError, match="strictly ascending"):
        StreamDecider("SYN014", _settings()).warm(bars.head(10).reverse())


def test_supports_the_built_ins_and_refuses_anything_else() -> None:
    settings_ = _settings()
    assert supports(settings_)
    for name in PARAM_SETS:
        assert supports(settings_, name)
        assert supports(settings_, name, PARAM_SETS[name][-1])

    def flat(bars: Any) -> np.ndarray:
        return np.zeros(len(bars))

    register_strategy("stream_test_flat", flat, [], style="other")
    original = get_strategy("sma_cross")
    try:
        assert not supports(settings_, "stream_test_flat")
        custom = Composer(strategies=((get_strategy("stream_test_flat"), {}),))
        assert not supports(settings_, composer=custom)
        with pytest.raises(ConfigError, match="not a built-in"):
            StreamDecider("SPY", settings_, strategy="stream_test_flat")
        # a built-in name registered again with another function is not the built-in any more
        register_strategy("sma_cross", flat, original.params, style="trend", replace=True)
        assert not supports(settings_)
        assert not supports(settings_, "sma_cross")
    finally:
        unregister_strategy("stream_test_flat")
        register_strategy(
            "sma_cross",
            original.func,
            original.params,
            style=original.style,
            inputs=original.inputs,
            warmup=original.warmup,
            replace=True,
        )
    assert supports(settings_, "sma_cross")
    # regime parameters the stream does not know, a configuration the backtest rejects
    assert not supports(settings_, composer=_composer(ALL_SIX, trend_bias=1.0, regime_params={"bogus": 1}))
    assert not supports(settings_, "sma_cross", {"fast": 50, "slow": 10})
    assert not supports(_settings("composer.strategies=[]"))
