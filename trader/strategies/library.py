"""The built-in strategies. Each returns a target weight per bar (1 long, -1 short, 0 flat), decided at the
bar's close from rows <= t; ``allow_short=False`` (the default everywhere) means flat instead of short.

==================== ============== ===================================================================
name                 style          rule
==================== ============== ===================================================================
sma_cross            trend          long while SMA(fast) > SMA(slow)
ema_cross            trend          long while EMA(fast) > EMA(slow)
donchian_breakout    trend          long on a close above the prior ``lookback``-bar high, out on a close
                                    below the prior ``exit_lookback``-bar low
ts_momentum          trend          long while the trailing ``lookback``-bar return exceeds ``threshold``
vol_breakout         trend          long for ``hold`` bars after a bar whose range exceeds k x ATR and that
                                    closes above its open
rsi_reversion        mean_reversion long when RSI < lower, out when RSI > upper (or > 50)
bollinger_reversion  mean_reversion long on a close below the lower band, out at the middle (or upper) band
==================== ============== ===================================================================

Periods and lookbacks are in bars; RSI thresholds in RSI points (0..100); ``k`` multipliers are
dimensionless; ``threshold`` is a fraction (0.01 = 1 %).

>>> from trader.data.synth import synth_bars
>>> from trader.strategies import get_strategy
>>> bars = synth_bars("SYN000", "1d", "2020-01-01", "2021-12-31", seed=1)
>>> w = get_strategy("donchian_breakout").run(bars, lookback=20, allow_short=True)
>>> sorted(set(w.tolist()))
[-1.0, 0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from trader.features import indicators as ind
from trader.strategies.base import BarArrays, Param, latch_positions, register_strategy

__all__: list[str] = []

_ALLOW_SHORT = Param(
    "allow_short", "categorical", False, choices=(False, True), tunable=False, doc="short instead of flat"
)


def _prior(x: np.ndarray) -> np.ndarray:
    """``x`` one bar later: row t holds x[t-1] (row 0 NaN), so a channel excludes the current bar."""
    out = np.empty_like(x)
    out[0] = np.nan
    out[1:] = x[:-1]
    return out


def _cross(fast: np.ndarray, slow: np.ndarray, allow_short: bool) -> np.ndarray:
    # NaN compares False, so warm-up bars come out flat.
    short = -1.0 if allow_short else 0.0
    return np.where(fast > slow, 1.0, np.where(fast < slow, short, 0.0))


# -- trend ------------------------------------------------------------------------------------------------


def _cross_params(fast: int, slow: int) -> list[Param]:
    return [
        Param("fast", "int", fast, 2, 100, doc="bars"),
        Param("slow", "int", slow, 5, 400, above="fast", doc="bars"),
        _ALLOW_SHORT,
    ]


def _slow_warmup(p: Mapping[str, Any]) -> int:
    return int(p["slow"]) - 1


@register_strategy(
    "sma_cross", params=_cross_params(10, 50), style="trend", inputs=("close",), warmup=_slow_warmup
)
def sma_cross(bars: BarArrays, *, fast: int, slow: int, allow_short: bool) -> np.ndarray:
    """Moving-average crossover: long while SMA(fast) > SMA(slow), else flat (short with allow_short)."""
    return _cross(ind.sma(bars.close, fast), ind.sma(bars.close, slow), allow_short)


@register_strategy(
    "ema_cross", params=_cross_params(12, 26), style="trend", inputs=("close",), warmup=_slow_warmup
)
def ema_cross(bars: BarArrays, *, fast: int, slow: int, allow_short: bool) -> np.ndarray:
    """EMA crossover: long while EMA(fast) > EMA(slow), else flat (short with allow_short)."""
    return _cross(ind.ema(bars.close, fast), ind.ema(bars.close, slow), allow_short)


@register_strategy(
    "donchian_breakout",
    params=[
        Param("lookback", "int", 20, 5, 250, doc="bars (entry channel)"),
        Param("exit_lookback", "int", 10, 2, 250, doc="bars (exit channel)"),
        _ALLOW_SHORT,
    ],
    style="trend",
    inputs=("high", "low", "close"),
    warmup=lambda p: int(p["lookback"]),
)
def donchian_breakout(bars: BarArrays, *, lookback: int, exit_lookback: int, allow_short: bool) -> np.ndarray:
    """Channel breakout: long on a close above the prior ``lookback``-bar high; exit on a close below the
    prior ``exit_lookback``-bar low. With allow_short the mirror image (short below the prior low, cover
    above the prior exit-channel high)."""
    high, low, close = bars.column("high"), bars.column("low"), bars.close
    enter_long = close > _prior(ind.donchian_band(high, low, lookback, "upper"))
    exit_long = close < _prior(ind.donchian_band(high, low, exit_lookback, "lower"))
    if not allow_short:  # never short, so the short side's channels are never read: skip them
        never = np.zeros(close.shape[0], dtype=np.bool_)
        return latch_positions(enter_long, exit_long, never, never)
    enter_short = close < _prior(ind.donchian_band(high, low, lookback, "lower"))
    exit_short = close > _prior(ind.donchian_band(high, low, exit_lookback, "upper"))
    return latch_positions(enter_long, exit_long, enter_short, exit_short)


@register_strategy(
    "ts_momentum",
    params=[
        Param("lookback", "int", 60, 5, 300, doc="bars"),
        Param("threshold", "float", 0.0, 0.0, 0.2, doc="fraction of price"),
        _ALLOW_SHORT,
    ],
    style="trend",
    inputs=("close",),
    warmup=lambda p: int(p["lookback"]),
)
def ts_momentum(bars: BarArrays, *, lookback: int, threshold: float, allow_short: bool) -> np.ndarray:
    """Time-series momentum: long while close[t] / close[t - lookback] - 1 > threshold; short (with
    allow_short) while it is below -threshold; else flat."""
    trailing = ind.roc(bars.close, lookback) / 100.0  # roc is in percent
    short = -1.0 if allow_short else 0.0
    return np.where(trailing > threshold, 1.0, np.where(trailing < -threshold, short, 0.0))


@njit(cache=True)
def _timed_positions(up: np.ndarray, down: np.ndarray, hold: int, allow_short: bool) -> np.ndarray:
    # A signal opens (or renews) a position for `hold` bars; an opposite signal closes or reverses it.
    n = up.shape[0]
    out = np.zeros(n, dtype=np.float64)
    pos = 0.0
    left = 0
    for t in range(n):
        if up[t]:
            pos, left = 1.0, hold
        elif down[t]:
            if allow_short:
                pos, left = -1.0, hold
            elif pos > 0.0:
                pos, left = 0.0, 0
        if left <= 0:
            pos = 0.0
        out[t] = pos
        left -= 1
    return out


@register_strategy(
    "vol_breakout",
    params=[
        Param("atr_period", "int", 14, 2, 100, doc="bars"),
        Param("k", "float", 1.5, 0.5, 5.0, doc="x prior ATR"),
        Param("hold", "int", 5, 1, 50, doc="bars"),
        _ALLOW_SHORT,
    ],
    style="trend",
    inputs=("open", "high", "low", "close"),
    warmup=lambda p: int(p["atr_period"]) + 1,
)
def vol_breakout(bars: BarArrays, *, atr_period: int, k: float, hold: int, allow_short: bool) -> np.ndarray:
    """Range expansion: a bar whose high - low exceeds k x the prior bar's ATR(atr_period) is a breakout in
    the direction of its close (close > open: up, close < open: down). Up goes long for ``hold`` bars
    (renewed by another up bar); down exits a long, or goes short for ``hold`` bars with allow_short."""
    high, low, close, open_ = bars.column("high"), bars.column("low"), bars.close, bars.column("open")
    # The prior bar's ATR, so the breakout bar's own range does not inflate its yardstick.
    big = (high - low) > k * _prior(ind.atr(high, low, close, atr_period))
    return _timed_positions(big & (close > open_), big & (close < open_), int(hold), bool(allow_short))


# -- mean reversion ---------------------------------------------------------------------------------------

_EXIT_AT = Param("exit_at", "categorical", "opposite", choices=("opposite", "middle"), doc="exit level")


@register_strategy(
    "rsi_reversion",
    params=[
        Param("period", "int", 14, 2, 100, doc="bars"),
        Param("lower", "float", 30.0, 5.0, 49.0, step=1.0, doc="RSI points"),
        Param("upper", "float", 70.0, 51.0, 95.0, step=1.0, doc="RSI points"),
        _EXIT_AT,
        _ALLOW_SHORT,
    ],
    style="mean_reversion",
    inputs=("close",),
    warmup=lambda p: int(p["period"]),
)
def rsi_reversion(
    bars: BarArrays, *, period: int, lower: float, upper: float, exit_at: str, allow_short: bool
) -> np.ndarray:
    """RSI mean reversion: long when RSI(period) < lower; exit when RSI > upper (exit_at="opposite") or > 50
    (exit_at="middle"). With allow_short: short when RSI > upper, cover when RSI < lower (or < 50)."""
    x = ind.rsi(bars.close, period)
    exit_long_at, exit_short_at = (upper, lower) if exit_at == "opposite" else (50.0, 50.0)
    return latch_positions(x < lower, x > exit_long_at, (x > upper) & allow_short, x < exit_short_at)


@register_strategy(
    "bollinger_reversion",
    params=[
        Param("period", "int", 20, 5, 200, doc="bars"),
        Param("k", "float", 2.0, 0.5, 4.0, step=0.25, doc="standard deviations"),
        Param("exit_at", "categorical", "middle", choices=("middle", "opposite"), doc="exit band"),
        _ALLOW_SHORT,
    ],
    style="mean_reversion",
    inputs=("close",),
    warmup=lambda p: int(p["period"]) - 1,
)
def bollinger_reversion(
    bars: BarArrays, *, period: int, k: float, exit_at: str, allow_short: bool
) -> np.ndarray:
    """Bollinger mean reversion: long on a close below the lower band (SMA - k stdev); exit on a close at or
    above the middle band (exit_at="middle") or above the upper band ("opposite"). With allow_short the
    mirror image."""
    close = bars.close
    upper, middle, lower = ind.bollinger(close, period, k)
    if exit_at == "middle":
        exit_long, exit_short = close >= middle, close <= middle
    else:
        exit_long, exit_short = close > upper, close < lower
    return latch_positions(close < lower, exit_long, (close > upper) & allow_short, exit_short)
