"""Technical indicators over whole columns, and a polars layer that adds them to bar frames.

Conventions every function here keeps:

* Input: 1-D arrays of float64 (anything ``numpy.asarray`` turns into one: lists, numpy arrays, polars
  Series), one row per bar, oldest first. Several inputs must have the same length.
* Output: float64 arrays of the input's length (a tuple of them for multi-line indicators). Rows inside the
  warm-up are NaN; nothing is ever back-filled.
* Causality: the value at row ``t`` is computed from rows ``<= t`` only, so a decision at bar ``t``'s close
  may use it.
* TA-Lib parity: where TA-Lib defines the indicator (SMA, EMA, WMA, RSI, MACD, BBANDS, ATR, ADX, PLUS_DI,
  MINUS_DI, STOCH, CCI, ROC, MOM, WILLR, OBV, MFI) the values equal TA-Lib's (the ``talib`` package) to
  1e-9 relative and the warm-up rows are exactly TA-Lib's lookback, with TA-Lib's seeding: EMA seeded with
  the SMA of its first ``n`` inputs; Wilder smoothing for RSI, ATR and ADX; STOCH's slow %K and %D as SMAs;
  MACD's fast EMA seeded on the same bar as the slow one. The kernels follow TA-Lib's loops operation by
  operation, so on clean data the numbers agree to the last bit or close to it. Differences are listed on
  each function (``bollinger`` computes its deviation in two passes, for instance).
* Missing data: a row where any input is NaN or +-inf is a gap. Each run of finite rows is computed as a
  series of its own, so the gap row is NaN and the warm-up starts again after it. For window indicators
  (SMA, Bollinger, Donchian, CCI, ...) this is exactly "a NaN spoils every window that contains it"; the
  recursive ones (EMA, RSI, ATR, ADX, MACD, OBV) re-seed after the gap instead of carrying NaN forever.
  Leading NaN (say, another indicator's warm-up fed in as input) only delays the start, as TA-Lib's Python
  wrapper does. After the start TA-Lib treats NaN differently from one function to the next (SMA and EMA
  stay NaN for good, WMA and CCI recover); here the one rule above holds everywhere.
* Parameters: periods are whole numbers of bars; a bad one raises :class:`~trader.errors.ConfigError`.
  Arrays of the wrong shape or unequal lengths raise :class:`~trader.errors.DataError`.

Kernels are numba ``@njit(cache=True)`` loops; plain numpy is used where a vectorised form is exact.

Example::

    import numpy as np
    from trader.features.indicators import add_features, macd, rsi

    from trader.data.synth import synth_bars

    close = np.cumprod(1 + np.random.default_rng(0).normal(0, 0.01, 500)) * 100
    rsi(close)[-1]                    # 0..100
    line, signal, hist = macd(close)
    bars = synth_bars("SYN000", "1d", "2020-01-01", "2021-12-31", seed=1)
    bars = add_features(bars, ["rsi", "macd"], rsi={"n": 21})   # per symbol when bars has `symbol`
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import polars as pl
from numba import njit

from trader.errors import ConfigError, DataError

__all__ = [
    "FEATURES",
    "Feature",
    "add_features",
    "adx",
    "atr",
    "bollinger",
    "cci",
    "donchian",
    "donchian_band",
    "efficiency_ratio",
    "ema",
    "keltner",
    "log_returns",
    "macd",
    "mfi",
    "momentum",
    "obv",
    "percent_b",
    "realized_vol",
    "register_feature",
    "roc",
    "rsi",
    "sma",
    "stoch",
    "williams_r",
    "wma",
    "zscore",
]

# TA-Lib's TA_EPSILON: its "is this difference zero" tests are |v| <= 1e-14 * (scale of the operands).
_TA_EPSILON: Final = 1e-14

# -- argument checks -------------------------------------------------------------------------------------


def _period(value: Any, name: str, minimum: int = 1) -> int:
    """A whole number of bars >= ``minimum``, else ConfigError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"indicator parameter {name} must be a whole number of bars, got {value!r}")
    if value < minimum:
        raise ConfigError(f"indicator parameter {name} must be >= {minimum} bars, got {value}")
    return int(value)


def _number(value: Any, name: str, *, low: float | None = None, high: float | None = None) -> float:
    """A finite real number inside [low, high] (either bound optional), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"indicator parameter {name} must be a number, got {value!r}")
    number = float(value)
    if (
        not math.isfinite(number)
        or (low is not None and number < low)
        or (high is not None and number > high)
    ):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ConfigError(f"indicator parameter {name} must be a finite number in {bounds}, got {value!r}")
    return number


def _column(values: Any, name: str) -> np.ndarray:
    """``values`` as a contiguous 1-D float64 array (a copy only when needed)."""
    try:
        array = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"indicator input {name} cannot be read as float64 numbers: {exc}") from None
    if array.ndim != 1:
        raise DataError(f"indicator input {name} must be one-dimensional, got shape {array.shape}")
    return array


def _columns(**named: Any) -> list[np.ndarray]:
    """Several inputs of one indicator, checked to be 1-D float64 of the same length."""
    arrays = [_column(values, name) for name, values in named.items()]
    lengths = {name: len(a) for name, a in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        raise DataError(f"indicator inputs differ in length: {lengths}; pass columns of the same bars")
    return arrays


def _finite_runs_of(*arrays: np.ndarray) -> np.ndarray:
    """[start, stop) row ranges where every input is finite; each is computed as a series of its own."""
    valid = np.isfinite(arrays[0])
    for array in arrays[1:]:
        valid &= np.isfinite(array)
    return _finite_runs(valid)


# -- shared kernels ---------------------------------------------------------------------------------------


@njit(cache=True)
def _finite_runs(valid: np.ndarray) -> np.ndarray:
    size = valid.size
    runs = np.empty(((size + 1) // 2, 2), dtype=np.int64)
    count = 0
    i = 0
    while i < size:
        if valid[i]:
            start = i
            while i < size and valid[i]:
                i += 1
            runs[count, 0] = start
            runs[count, 1] = i
            count += 1
        else:
            i += 1
    return runs[:count]


@njit(cache=True)
def _is_zero_scaled(value: float, scale: float) -> bool:
    """TA-Lib's TA_IS_ZERO_SCALED: zero within ~90 ulp of the operands' magnitude."""
    return abs(value) <= _TA_EPSILON * scale


@njit(cache=True)
def _true_range(high: float, low: float, prev_close: float) -> float:
    """Wilder's true range, compared in TA-Lib's order (each candidate is one exact subtraction)."""
    out = high - low
    candidate = abs(high - prev_close)
    if candidate > out:
        out = candidate
    candidate = abs(low - prev_close)
    if candidate > out:
        out = candidate
    return out


@njit(cache=True)
def _sma_run(x: np.ndarray, lo: int, hi: int, n: int, out: np.ndarray) -> None:
    """TA-Lib's running-sum SMA of x[lo:hi] into out (first value at lo + n - 1)."""
    if hi - lo < n:
        return
    total = 0.0
    i = lo
    while i < lo + n - 1:
        total += x[i]
        i += 1
    trailing = lo
    while i < hi:
        total += x[i]
        out[i] = total / n
        total -= x[trailing]
        trailing += 1
        i += 1


@njit(cache=True)
def _ema_run(x: np.ndarray, seed_lo: int, hi: int, n: int, k: float, out: np.ndarray) -> None:
    """EMA seeded with the SMA of x[seed_lo:seed_lo+n] (written at seed_lo + n - 1), then
    prev + k * (x - prev) in TA-Lib's operation order."""
    if hi - seed_lo < n:
        return
    total = 0.0
    for i in range(seed_lo, seed_lo + n):
        total += x[i]
    prev = total / n
    out[seed_lo + n - 1] = prev
    for i in range(seed_lo + n, hi):
        prev = ((x[i] - prev) * k) + prev
        out[i] = prev


@njit(cache=True)
def _rolling_extreme_run(x: np.ndarray, lo: int, hi: int, n: int, want_max: bool, out: np.ndarray) -> None:
    """Rolling max (or min) over n rows of x[lo:hi] (van Herk / Gil-Werman): per block of n rows, the running
    extreme from the block's start and the one to its end; a window spans at most two blocks, so its extreme
    is the larger (smaller) of the two. Three comparisons a row, none data-dependent branches of a deque; the
    values are exact (an extreme is one of the inputs), equal to any other correct method."""
    m = hi - lo
    if m < n:
        return
    ahead = np.empty(m)  # extreme from the block's start to the row
    behind = np.empty(m)  # extreme from the row to the block's end
    for b in range(0, m, n):
        e = min(b + n, m)
        acc = x[lo + b]
        ahead[b] = acc
        for j in range(b + 1, e):
            v = x[lo + j]
            if (v > acc) if want_max else (v < acc):
                acc = v
            ahead[j] = acc
        acc = x[lo + e - 1]
        behind[e - 1] = acc
        for j in range(e - 2, b - 1, -1):
            v = x[lo + j]
            if (v > acc) if want_max else (v < acc):
                acc = v
            behind[j] = acc
    for j in range(n - 1, m):
        a = behind[j - n + 1]
        c = ahead[j]
        out[lo + j] = (a if a > c else c) if want_max else (a if a < c else c)


@njit(cache=True)
def _rolling_moments_run(
    x: np.ndarray, lo: int, hi: int, n: int, ddof: int, mean_out: np.ndarray, std_out: np.ndarray
) -> None:
    """Mean and standard deviation (divisor n - ddof) of each n-row window, two passes per window.

    Two passes cost O(n) per row but never lose digits the way a running sum of squares does on quiet
    windows of a high-priced series. A window of identical values gets exactly its value and 0.
    """
    for i in range(lo + n - 1, hi):
        total = 0.0
        smallest = x[i]
        largest = x[i]
        for j in range(i - n + 1, i + 1):
            value = x[j]
            total += value
            smallest = min(smallest, value)
            largest = max(largest, value)
        if smallest == largest:
            mean_out[i] = largest
            std_out[i] = 0.0
            continue
        mean = total / n
        squares = 0.0
        for j in range(i - n + 1, i + 1):
            deviation = x[j] - mean
            squares += deviation * deviation
        mean_out[i] = mean
        std_out[i] = math.sqrt(squares / (n - ddof))


# -- moving averages --------------------------------------------------------------------------------------


@njit(cache=True)
def _sma_kernel(x: np.ndarray, runs: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.size, np.nan)
    for r in range(runs.shape[0]):
        _sma_run(x, runs[r, 0], runs[r, 1], n, out)
    return out


def sma(x: Any, n: int) -> np.ndarray:
    """Simple moving average of the last ``n`` rows (TA-Lib SMA); warm-up ``n - 1`` rows.

    >>> sma([1.0, 2.0, 3.0, 4.0], 2).tolist()
    [nan, 1.5, 2.5, 3.5]
    """
    values = _column(x, "x")
    return _sma_kernel(values, _finite_runs_of(values), _period(n, "n"))


@njit(cache=True)
def _ema_kernel(x: np.ndarray, runs: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.size, np.nan)
    k = 2.0 / (n + 1)
    for r in range(runs.shape[0]):
        _ema_run(x, runs[r, 0], runs[r, 1], n, k, out)
    return out


def ema(x: Any, n: int) -> np.ndarray:
    """Exponential moving average, smoothing ``2 / (n + 1)``, seeded with the SMA of the first ``n`` rows
    (TA-Lib EMA); warm-up ``n - 1`` rows.

    >>> ema([1.0, 2.0, 3.0, 4.0], 2).tolist()   # seed 1.5, then prev + 2/3 * (x - prev)
    [nan, 1.5, 2.5, 3.5]
    """
    values = _column(x, "x")
    return _ema_kernel(values, _finite_runs_of(values), _period(n, "n"))


@njit(cache=True)
def _wma_kernel(x: np.ndarray, runs: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.size, np.nan)
    divider = float(n) * (n + 1) / 2.0
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if hi - lo < n:
            continue
        # TA-Lib's O(1) update (the weighted sum sheds the window's plain sum each step), re-anchored from
        # the window itself every 8n bars as TA-Lib does (its fix #255), so rounding cannot pile up.
        period_sub = 0.0
        period_sum = 0.0
        i = lo
        weight = 1
        while i < lo + n - 1:
            value = x[i]
            period_sub += value
            period_sum += value * weight
            weight += 1
            i += 1
        bars_since_reseed = 8 * n
        trailing_value = 0.0
        trailing = lo
        while i < hi:
            value = x[i]
            period_sub += value
            period_sub -= trailing_value
            period_sum += value * n
            bars_since_reseed -= 1
            if bars_since_reseed <= 0:
                bars_since_reseed = 8 * n
                period_sub = 0.0
                period_sum = 0.0
                weight = 1
                for j in range(i - n + 1, i + 1):
                    period_sub += x[j]
                    period_sum += x[j] * weight
                    weight += 1
            trailing_value = x[trailing]
            trailing += 1
            out[i] = period_sum / divider
            period_sum -= period_sub
            i += 1
    return out


def wma(x: Any, n: int) -> np.ndarray:
    """Linearly weighted moving average, weights 1..n with the newest row weighted n (TA-Lib WMA);
    warm-up ``n - 1`` rows.

    >>> wma([1.0, 2.0, 3.0], 2).tolist()   # (1*1 + 2*2) / 3, (2*1 + 3*2) / 3
    [nan, 1.6666666666666667, 2.6666666666666665]
    """
    values = _column(x, "x")
    return _wma_kernel(values, _finite_runs_of(values), _period(n, "n"))


# -- momentum ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _rsi_kernel(x: np.ndarray, runs: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if hi - lo < n + 1:
            continue
        previous = x[lo]
        gain = 0.0
        loss = 0.0
        for i in range(lo + 1, lo + n + 1):
            change = x[i] - previous
            previous = x[i]
            if change < 0.0:
                loss -= change
            else:
                gain += change
        loss /= n
        gain /= n
        total = gain + loss
        # Both averages are sums of non-negative terms: the total is zero only when nothing moved.
        out[lo + n] = 100.0 * (gain / total) if total > 0.0 else 0.0
        for i in range(lo + n + 1, hi):
            change = x[i] - previous
            previous = x[i]
            loss *= n - 1
            gain *= n - 1
            if change < 0.0:
                loss -= change
            else:
                gain += change
            loss /= n
            gain /= n
            total = gain + loss
            out[i] = 100.0 * (gain / total) if total > 0.0 else 0.0
    return out


def rsi(close: Any, n: int = 14) -> np.ndarray:
    """Wilder's relative strength index, 0..100 (TA-Lib RSI); warm-up ``n`` rows, ``n >= 2``.

    The first value averages the first ``n`` changes; later ones use Wilder's smoothing
    ``avg = (avg * (n - 1) + change) / n``. A window without any change gives 0, as in TA-Lib.

    >>> float(rsi([1.0, 2.0, 3.0, 2.0], 2)[-1])   # gains avg 0.5, losses avg 0.5
    50.0
    """
    values = _column(close, "close")
    return _rsi_kernel(values, _finite_runs_of(values), _period(n, "n", 2))


@njit(cache=True)
def _macd_kernel(
    x: np.ndarray, runs: np.ndarray, fast: int, slow: int, signal: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = x.size
    line_out = np.full(size, np.nan)
    signal_out = np.full(size, np.nan)
    hist_out = np.full(size, np.nan)
    fast_ema = np.full(size, np.nan)
    slow_ema = np.full(size, np.nan)
    line = np.full(size, np.nan)
    signal_line = np.full(size, np.nan)
    k_fast = 2.0 / (fast + 1)
    k_slow = 2.0 / (slow + 1)
    k_signal = 2.0 / (signal + 1)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if hi - lo < slow + signal - 1:
            continue
        first = lo + slow - 1  # first bar with both EMAs
        # TA-Lib seeds the fast EMA on the `fast` bars ending at `first`, not at the start of the data.
        _ema_run(x, lo, hi, slow, k_slow, slow_ema)
        _ema_run(x, first - fast + 1, hi, fast, k_fast, fast_ema)
        for i in range(first, hi):
            line[i] = fast_ema[i] - slow_ema[i]
        _ema_run(line, first, hi, signal, k_signal, signal_line)
        for i in range(first + signal - 1, hi):
            line_out[i] = line[i]
            signal_out[i] = signal_line[i]
            hist_out[i] = line[i] - signal_line[i]
    return line_out, signal_out, hist_out


def macd(
    close: Any, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MACD line (fast EMA - slow EMA), its signal line (EMA of the line) and histogram (line - signal),
    in price units (TA-Lib MACD).

    As in TA-Lib, the fast EMA is seeded with the SMA of the ``fast`` bars ending where the slow EMA starts,
    so both begin on bar ``slow - 1``; the signal EMA is seeded with the SMA of the first ``signal`` line
    values. All three outputs share TA-Lib's warm-up of ``slow + signal - 2`` rows. ``fast < slow`` is
    required (TA-Lib silently swaps them; we refuse).

    >>> line, sig, hist = macd(100.0 + np.sin(np.arange(60) / 5.0))
    >>> bool(np.isnan(line[32])), bool(np.isnan(line[33]))
    (True, False)
    """
    values = _column(close, "close")
    fast_n = _period(fast, "fast", 2)
    slow_n = _period(slow, "slow", 2)
    signal_n = _period(signal, "signal", 1)
    if fast_n >= slow_n:
        raise ConfigError(f"macd needs fast < slow, got fast={fast_n}, slow={slow_n}")
    return _macd_kernel(values, _finite_runs_of(values), fast_n, slow_n, signal_n)


@njit(cache=True)
def _lag_kernel(x: np.ndarray, runs: np.ndarray, n: int, as_percent: bool) -> np.ndarray:
    out = np.full(x.size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        for i in range(lo + n, hi):
            previous = x[i - n]
            if as_percent:
                # TA-Lib ROC: a zero base gives 0 rather than an infinite change.
                out[i] = ((x[i] / previous) - 1.0) * 100.0 if previous != 0.0 else 0.0
            else:
                out[i] = x[i] - previous
    return out


def roc(x: Any, n: int = 10) -> np.ndarray:
    """Rate of change over ``n`` bars in percent, ``(x / x[t-n] - 1) * 100`` (TA-Lib ROC); warm-up ``n``
    rows. A zero base gives 0, as in TA-Lib.

    >>> roc([100.0, 101.0, 110.0], 2).tolist()
    [nan, nan, 10.000000000000009]
    """
    values = _column(x, "x")
    return _lag_kernel(values, _finite_runs_of(values), _period(n, "n"), True)


def momentum(x: Any, n: int = 10) -> np.ndarray:
    """Change over ``n`` bars, ``x - x[t-n]``, in the input's units (TA-Lib MOM); warm-up ``n`` rows.

    >>> momentum([100.0, 101.0, 110.0], 2).tolist()
    [nan, nan, 10.0]
    """
    values = _column(x, "x")
    return _lag_kernel(values, _finite_runs_of(values), _period(n, "n"), False)


@njit(cache=True)
def _stoch_kernel(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, runs: np.ndarray, k: int, smooth_k: int, d: int
) -> tuple[np.ndarray, np.ndarray]:
    size = close.size
    highest = np.full(size, np.nan)
    lowest = np.full(size, np.nan)
    fast_k = np.full(size, np.nan)
    slow_k = np.full(size, np.nan)
    slow_d = np.full(size, np.nan)
    k_out = np.full(size, np.nan)
    d_out = np.full(size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if hi - lo < k + smooth_k + d - 2:
            continue
        _rolling_extreme_run(high, lo, hi, k, True, highest)
        _rolling_extreme_run(low, lo, hi, k, False, lowest)
        for i in range(lo + k - 1, hi):
            spread = highest[i] - lowest[i]
            # A flat window reads 0, TA-Lib's answer; the zero test is relative to the price level.
            if _is_zero_scaled(spread, abs(highest[i]) + abs(lowest[i])):
                fast_k[i] = 0.0
            else:
                fast_k[i] = ((close[i] - lowest[i]) / spread) * 100.0
        _sma_run(fast_k, lo + k - 1, hi, smooth_k, slow_k)
        _sma_run(slow_k, lo + k + smooth_k - 2, hi, d, slow_d)
        for i in range(lo + k + smooth_k + d - 3, hi):
            k_out[i] = slow_k[i]
            d_out[i] = slow_d[i]
    return k_out, d_out


def stoch(
    high: Any, low: Any, close: Any, k: int = 14, smooth_k: int = 3, d: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Slow stochastic %K and %D, 0..100 (TA-Lib STOCH with SMA smoothing).

    Fast %K is ``100 * (close - lowest low) / (highest high - lowest low)`` over ``k`` bars (0 on a flat
    window); slow %K is its ``smooth_k``-bar SMA and %D the ``d``-bar SMA of slow %K. Both outputs share
    TA-Lib's warm-up of ``k + smooth_k + d - 3`` rows.

    >>> high, low = [10.0, 11.0, 12.0, 11.5, 12.5], [9.0, 9.5, 10.5, 10.0, 11.0]
    >>> close = [9.5, 10.5, 11.5, 11.0, 12.0]
    >>> slow_k, slow_d = stoch(high, low, close, k=3, smooth_k=2, d=1)
    >>> slow_k.round(2).tolist()
    [nan, nan, nan, 71.67, 70.0]
    """
    h, lo, c = _columns(high=high, low=low, close=close)
    return _stoch_kernel(
        h, lo, c, _finite_runs_of(h, lo, c), _period(k, "k"), _period(smooth_k, "smooth_k"), _period(d, "d")
    )


@njit(cache=True)
def _cci_kernel(high: np.ndarray, low: np.ndarray, close: np.ndarray, runs: np.ndarray, n: int) -> np.ndarray:
    out = np.full(close.size, np.nan)
    ring = np.empty(n)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if hi - lo < n:
            continue
        # TA-Lib keeps typical prices in a ring buffer and sums it in slot order; doing the same keeps
        # tp - mean (a difference of close numbers) bit for bit equal to TA-Lib's.
        slot = 0
        for i in range(lo, lo + n - 1):
            ring[slot] = (high[i] + low[i] + close[i]) / 3
            slot += 1
        for i in range(lo + n - 1, hi):
            typical = (high[i] + low[i] + close[i]) / 3
            ring[slot] = typical
            mean = 0.0
            for j in range(n):
                mean += ring[j]
            mean /= n
            deviation = 0.0
            for j in range(n):
                deviation += abs(ring[j] - mean)
            deviation /= n
            distance = typical - mean
            scale = abs(mean)
            if _is_zero_scaled(distance, scale) or _is_zero_scaled(deviation, scale):
                out[i] = 0.0
            else:
                out[i] = distance / (0.015 * deviation)
            slot += 1
            if slot == n:
                slot = 0
    return out


def cci(high: Any, low: Any, close: Any, n: int = 20) -> np.ndarray:
    """Commodity channel index (TA-Lib CCI): ``(tp - mean(tp)) / (0.015 * mean |tp - mean(tp)|)`` with the
    typical price ``tp = (high + low + close) / 3`` over ``n`` bars; warm-up ``n - 1`` rows, ``n >= 2``.
    A flat window gives 0.

    >>> cci([10.0, 11.0, 12.0, 11.5], [9.0, 9.5, 10.5, 10.0], [9.5, 10.5, 11.5, 11.0], n=3).round(2).tolist()
    [nan, nan, 100.0, 0.0]
    """
    h, lo, c = _columns(high=high, low=low, close=close)
    return _cci_kernel(h, lo, c, _finite_runs_of(h, lo, c), _period(n, "n", 2))


@njit(cache=True)
def _willr_kernel(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, runs: np.ndarray, n: int
) -> np.ndarray:
    size = close.size
    out = np.full(size, np.nan)
    highest = np.full(size, np.nan)
    lowest = np.full(size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        _rolling_extreme_run(high, lo, hi, n, True, highest)
        _rolling_extreme_run(low, lo, hi, n, False, lowest)
        for i in range(lo + n - 1, hi):
            spread = highest[i] - lowest[i]
            if _is_zero_scaled(spread, abs(highest[i]) + abs(lowest[i])):
                out[i] = 0.0
            else:
                value = ((highest[i] - close[i]) / spread) * (-100.0)
                # Only a close outside its own bar's range can leave [-100, 0]; TA-Lib clamps it.
                out[i] = min(0.0, max(-100.0, value))
    return out


def williams_r(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
    """Williams %R, -100..0: ``-100 * (highest high - close) / (highest high - lowest low)`` over ``n``
    bars (TA-Lib WILLR); warm-up ``n - 1`` rows, ``n >= 2``. A flat window gives 0.

    >>> williams_r([2.0, 3.0], [1.0, 1.0], [2.0, 2.0], 2).tolist()
    [nan, -50.0]
    """
    h, lo, c = _columns(high=high, low=low, close=close)
    return _willr_kernel(h, lo, c, _finite_runs_of(h, lo, c), _period(n, "n", 2))


@njit(cache=True)
def _er_kernel(x: np.ndarray, runs: np.ndarray, n: int) -> np.ndarray:
    out = np.full(x.size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        for i in range(lo + n, hi):
            path = 0.0
            for j in range(i - n + 1, i + 1):
                path += abs(x[j] - x[j - 1])
            if path > 0.0:
                # |net| <= path exactly; min() only guards the last bit of rounding.
                out[i] = min(1.0, abs(x[i] - x[i - n]) / path)
            else:
                out[i] = 0.0
    return out


def efficiency_ratio(close: Any, n: int = 10) -> np.ndarray:
    """Kaufman's efficiency ratio in [0, 1]: ``|close - close[t-n]| / sum of |bar-to-bar changes|`` over the
    last ``n`` changes; warm-up ``n`` rows. 1 is a straight line, near 0 is noise. A window without any
    change gives 0 (KAMA in TA-Lib uses 1 there; for regime detection a flat market is not a trend).

    >>> efficiency_ratio([1.0, 2.0, 1.0, 2.0, 3.0], 2).tolist()
    [nan, nan, 0.0, 0.0, 1.0]
    """
    values = _column(close, "close")
    return _er_kernel(values, _finite_runs_of(values), _period(n, "n"))


# -- volatility and bands ---------------------------------------------------------------------------------


@njit(cache=True)
def _bollinger_kernel(
    x: np.ndarray, runs: np.ndarray, n: int, k: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = x.size
    middle = np.full(size, np.nan)
    mean = np.full(size, np.nan)
    std = np.full(size, np.nan)
    upper = np.full(size, np.nan)
    lower = np.full(size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        _sma_run(x, lo, hi, n, middle)
        _rolling_moments_run(x, lo, hi, n, 0, mean, std)
        for i in range(lo + n - 1, hi):
            width = k * std[i]
            upper[i] = middle[i] + width
            lower[i] = middle[i] - width
    return upper, middle, lower


def bollinger(close: Any, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bollinger bands ``(upper, middle, lower)``: the ``n``-bar SMA plus and minus ``k`` population
    standard deviations (divisor ``n``), in price units (TA-Lib BBANDS with SMA, nbdevup = nbdevdn = k);
    warm-up ``n - 1`` rows.

    Differs from TA-Lib in how the deviation is computed: two passes per window instead of a running sum of
    squares, which loses digits on quiet windows of high-priced series; TA-Lib also zeroes a variance below
    1e-14. The bands agree to 1e-9 relative on ordinary prices.

    >>> upper, middle, lower = bollinger([1.0, 2.0, 3.0, 5.0], n=3, k=2.0)
    >>> middle.tolist(), (upper - middle).round(4).tolist()
    ([nan, nan, 2.0, 3.3333333333333335], [nan, nan, 1.633, 2.4944])
    """
    values = _column(close, "close")
    return _bollinger_kernel(values, _finite_runs_of(values), _period(n, "n"), _number(k, "k", low=0.0))


def percent_b(close: Any, n: int = 20, k: float = 2.0) -> np.ndarray:
    """Where the close sits inside its Bollinger bands, as a fraction: 0 on the lower band, 1 on the upper,
    0.5 on the middle (and 0.5 when the window is flat and the bands coincide); warm-up ``n - 1`` rows.

    >>> percent_b([1.0, 2.0, 3.0], 3).tolist()[-1]   # mean 2, std 0.816..., close 3
    0.8061862178478972
    """
    values = _column(close, "close")
    upper, _, lower = bollinger(values, n, k)
    width = upper - lower
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (values - lower) / width
    out[width == 0.0] = 0.5
    return out


@njit(cache=True)
def _atr_kernel(high: np.ndarray, low: np.ndarray, close: np.ndarray, runs: np.ndarray, n: int) -> np.ndarray:
    out = np.full(close.size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if n == 1:
            for i in range(lo + 1, hi):
                out[i] = _true_range(high[i], low[i], close[i - 1])
            continue
        if hi - lo < n + 1:
            continue
        total = 0.0
        for i in range(lo + 1, lo + n + 1):
            total += _true_range(high[i], low[i], close[i - 1])
        previous = total / n
        out[lo + n] = previous
        for i in range(lo + n + 1, hi):
            previous *= n - 1
            previous += _true_range(high[i], low[i], close[i - 1])
            previous /= n
            out[i] = previous
    return out


def atr(high: Any, low: Any, close: Any, n: int = 14) -> np.ndarray:
    """Average true range in price units (TA-Lib ATR): the mean of the first ``n`` true ranges, then
    Wilder's smoothing ``(atr * (n - 1) + tr) / n``; warm-up ``n`` rows (the first bar has no true range).

    >>> atr([11.0, 12.0, 13.0], [9.0, 10.0, 11.0], [10.0, 11.0, 12.0], 2).tolist()
    [nan, nan, 2.0]
    """
    h, lo, c = _columns(high=high, low=low, close=close)
    return _atr_kernel(h, lo, c, _finite_runs_of(h, lo, c), _period(n, "n"))


@njit(cache=True)
def _directional_move(high: float, low: float, prev_high: float, prev_low: float) -> tuple[float, float]:
    """Wilder's +DM and -DM of one bar: the larger outside move wins, ties and inside bars give 0."""
    up = high - prev_high
    down = prev_low - low
    if down > 0.0 and up < down:
        return 0.0, down
    if up > 0.0 and up > down:
        return up, 0.0
    return 0.0, 0.0


@njit(cache=True)
def _adx_kernel(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, runs: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = close.size
    adx_out = np.full(size, np.nan)
    plus_out = np.full(size, np.nan)
    minus_out = np.full(size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if hi - lo < n + 1:
            continue
        # TA-Lib: the smoothed DM and TR start as the plain sum of the first n - 1 bars' values and switch
        # to Wilder's "x - x/n + today" on bar n, where the first DI is written.
        plus_dm = 0.0
        minus_dm = 0.0
        true_range = 0.0
        for i in range(lo + 1, lo + n):
            up, down = _directional_move(high[i], low[i], high[i - 1], low[i - 1])
            plus_dm += up
            minus_dm += down
            true_range += _true_range(high[i], low[i], close[i - 1])
        sum_dx = 0.0
        adx = 0.0
        for i in range(lo + n, hi):
            up, down = _directional_move(high[i], low[i], high[i - 1], low[i - 1])
            plus_dm = plus_dm - plus_dm / n + up
            minus_dm = minus_dm - minus_dm / n + down
            true_range = true_range - (true_range / n) + _true_range(high[i], low[i], close[i - 1])
            dx = -1.0  # no DX this bar (TA-Lib leaves the ADX unchanged then)
            if true_range != 0.0:
                plus_di = 100.0 * (plus_dm / true_range)
                minus_di = 100.0 * (minus_dm / true_range)
                plus_out[i] = plus_di
                minus_out[i] = minus_di
                di_sum = minus_di + plus_di
                if di_sum != 0.0:
                    dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
            else:
                plus_out[i] = 0.0
                minus_out[i] = 0.0
            last_seed_bar = lo + 2 * n - 1
            if i < last_seed_bar:
                if dx >= 0.0:
                    sum_dx += dx
            elif i == last_seed_bar:
                if dx >= 0.0:
                    sum_dx += dx
                adx = sum_dx / n
                adx_out[i] = adx
            else:
                if dx >= 0.0:
                    adx = ((adx * (n - 1)) + dx) / n
                adx_out[i] = adx
    return adx_out, plus_out, minus_out


def adx(high: Any, low: Any, close: Any, n: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wilder's directional movement: ``(adx, plus_di, minus_di)``, each 0..100 (TA-Lib ADX, PLUS_DI and
    MINUS_DI); ``n >= 2``.

    +DI and -DI are the Wilder-smoothed directional moves over the smoothed true range, warm-up ``n`` rows;
    DX = ``100 * |+DI - -DI| / (+DI + -DI)``; ADX starts as the mean of the first ``n`` DX values and is then
    Wilder-smoothed, warm-up ``2n - 1`` rows. Bars without any range give DI 0 and leave ADX unchanged, as
    in TA-Lib.

    >>> high = [10.0, 11.0, 12.0, 11.5, 12.5, 13.0]
    >>> low = [9.0, 9.5, 10.5, 10.0, 11.0, 12.0]
    >>> close = [9.5, 10.5, 11.5, 11.0, 12.0, 12.5]
    >>> adx_line, plus_di, minus_di = adx(high, low, close, n=2)
    >>> adx_line.round(2).tolist()
    [nan, nan, nan, 60.0, 64.62, 72.78]
    """
    h, lo, c = _columns(high=high, low=low, close=close)
    return _adx_kernel(h, lo, c, _finite_runs_of(h, lo, c), _period(n, "n", 2))


def donchian(high: Any, low: Any, n: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Donchian channel ``(upper, lower, middle)``: highest high and lowest low of the last ``n`` bars
    *including the current one*, and their midpoint, in price units; warm-up ``n - 1`` rows.

    For a breakout rule compare today's close with yesterday's channel (shift by one row), since today's
    high is part of today's upper band.

    >>> donchian([3.0, 5.0, 4.0], [1.0, 2.0, 3.0], 2)[0].tolist()
    [nan, 5.0, 5.0]
    """
    h, lo = _columns(high=high, low=low)
    runs = _finite_runs_of(h, lo)
    period = _period(n, "n")
    upper = np.full(h.size, np.nan)
    lower = np.full(h.size, np.nan)
    _extremes(h, lo, runs, period, upper, lower)
    return upper, lower, (upper + lower) / 2.0


def donchian_band(high: Any, low: Any, n: int, side: str) -> np.ndarray:
    """One band of :func:`donchian` (``side`` ``"upper"`` or ``"lower"``), equal to it value for value, for
    rules that read a single band: computing one rolling extreme costs half of both.

    >>> donchian_band([3.0, 5.0, 4.0], [1.0, 2.0, 3.0], 2, "lower").tolist()
    [nan, 1.0, 2.0]
    """
    if side not in ("upper", "lower"):
        raise ValueError(f"donchian_band side must be 'upper' or 'lower', got {side!r}")
    h, lo = _columns(high=high, low=low)
    runs = _finite_runs_of(h, lo)  # both inputs finite, as in donchian, so the bands agree
    out = np.full(h.size, np.nan)
    _extreme(h if side == "upper" else lo, runs, _period(n, "n"), side == "upper", out)
    return out


@njit(cache=True)
def _extreme(x: np.ndarray, runs: np.ndarray, n: int, want_max: bool, out: np.ndarray) -> None:
    for r in range(runs.shape[0]):
        _rolling_extreme_run(x, runs[r, 0], runs[r, 1], n, want_max, out)


@njit(cache=True)
def _extremes(
    high: np.ndarray, low: np.ndarray, runs: np.ndarray, n: int, upper: np.ndarray, lower: np.ndarray
) -> None:
    _extreme(high, runs, n, True, upper)
    _extreme(low, runs, n, False, lower)


def keltner(
    high: Any, low: Any, close: Any, n: int = 20, mult: float = 2.0, atr_n: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keltner channel ``(upper, middle, lower)``: the ``n``-bar EMA of the close plus and minus ``mult``
    times the ``atr_n``-bar ATR (both as in :func:`ema` and :func:`atr`), in price units. All three share the
    warm-up ``max(n - 1, atr_n)`` rows.

    >>> high, low, close = [11.0, 12.0, 13.0, 14.0], [9.0, 10.0, 11.0, 12.0], [10.0, 11.0, 12.0, 13.0]
    >>> upper, middle, lower = keltner(high, low, close, n=2, mult=2.0, atr_n=2)
    >>> upper.tolist(), middle.tolist()
    ([nan, nan, 15.5, 16.5], [nan, nan, 11.5, 12.5])
    """
    h, lo, c = _columns(high=high, low=low, close=close)
    factor = _number(mult, "mult", low=0.0)
    # A gap in high/low must break the EMA too, so both see the same runs.
    runs = _finite_runs_of(h, lo, c)
    middle = _ema_kernel(c, runs, _period(n, "n"))
    width = factor * _atr_kernel(h, lo, c, runs, _period(atr_n, "atr_n"))
    middle[np.isnan(width)] = np.nan
    return middle + width, middle, middle - width


def log_returns(close: Any) -> np.ndarray:
    """Bar-to-bar log returns ``ln(close / close[t-1])``, a fraction per bar; the first row is NaN, and so
    is any row whose close or previous close is missing or not positive.

    >>> log_returns([100.0, 110.0]).tolist()
    [nan, 0.09531017980432493]
    """
    values = _column(close, "close")
    out = np.full(values.size, np.nan)
    if values.size > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[1:] = np.log(values[1:] / values[:-1])
        out[~np.isfinite(out)] = np.nan
        positive = values > 0.0
        out[1:][~(positive[1:] & positive[:-1])] = np.nan
    return out


@njit(cache=True)
def _moments_kernel(x: np.ndarray, runs: np.ndarray, n: int, ddof: int) -> tuple[np.ndarray, np.ndarray]:
    mean = np.full(x.size, np.nan)
    std = np.full(x.size, np.nan)
    for r in range(runs.shape[0]):
        _rolling_moments_run(x, runs[r, 0], runs[r, 1], n, ddof, mean, std)
    return mean, std


def realized_vol(close: Any, n: int = 20, periods_per_year: float = 252.0) -> np.ndarray:
    """Annualised realised volatility, a fraction (0.2 = 20 %/yr): the sample standard deviation (divisor
    ``n - 1``) of the last ``n`` log returns times ``sqrt(periods_per_year)``; warm-up ``n`` rows, ``n >= 2``.

    ``periods_per_year`` is bars per year: 252 for daily bars, 252 * 390 for regular-hours minute bars.

    >>> close = 100.0 * np.exp(np.cumsum(np.tile([0.01, -0.01], 20)))   # +-1 % a bar
    >>> round(float(realized_vol(close, n=20)[-1]), 4)                  # daily bars: ~16 %/yr
    0.1629
    """
    returns = log_returns(close)
    ppy = _number(periods_per_year, "periods_per_year", low=0.0)
    if ppy == 0.0:
        raise ConfigError("indicator parameter periods_per_year must be > 0, got 0")
    _, std = _moments_kernel(returns, _finite_runs_of(returns), _period(n, "n", 2), 1)
    return std * math.sqrt(ppy)


def zscore(x: Any, n: int = 20) -> np.ndarray:
    """``(x - mean) / std`` over the last ``n`` rows including the current one, with the population
    standard deviation (divisor ``n``, as in :func:`bollinger`, so ``percent_b = 0.5 + zscore / (2k)``);
    warm-up ``n - 1`` rows, ``n >= 2``. A flat window gives 0.

    >>> zscore([1.0, 2.0, 3.0], 3).tolist()[-1]
    1.224744871391589
    """
    values = _column(x, "x")
    mean, std = _moments_kernel(values, _finite_runs_of(values), _period(n, "n", 2), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (values - mean) / std
    out[std == 0.0] = 0.0
    return out


# -- volume -----------------------------------------------------------------------------------------------


@njit(cache=True)
def _obv_kernel(close: np.ndarray, volume: np.ndarray, runs: np.ndarray) -> np.ndarray:
    out = np.full(close.size, np.nan)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        balance = volume[lo]
        previous = close[lo]
        for i in range(lo, hi):
            price = close[i]
            if price > previous:
                balance += volume[i]
            elif price < previous:
                balance -= volume[i]
            out[i] = balance
            previous = price
    return out


def obv(close: Any, volume: Any) -> np.ndarray:
    """On-balance volume in shares (TA-Lib OBV): starts at the first bar's volume, then adds the volume of
    each up-close bar and subtracts that of each down-close bar; no warm-up. After a gap it starts again
    from that bar's volume (the level of OBV carries no meaning, its changes do).

    >>> obv([10.0, 11.0, 10.5, 10.5], [100.0, 200.0, 50.0, 70.0]).tolist()
    [100.0, 300.0, 250.0, 250.0]
    """
    c, v = _columns(close=close, volume=volume)
    return _obv_kernel(c, v, _finite_runs_of(c, v))


@njit(cache=True)
def _mfi_kernel(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, runs: np.ndarray, n: int
) -> np.ndarray:
    out = np.full(close.size, np.nan)
    ring_pos = np.empty(n)
    ring_neg = np.empty(n)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        if hi - lo < n + 1:
            continue
        previous = (high[lo] + low[lo] + close[lo]) / 3.0
        pos_sum = 0.0
        neg_sum = 0.0
        quiet_run = 0  # bars in a row that added no money flow; a whole period of them empties the sums
        slot = 0
        for i in range(lo + 1, hi):
            if i > lo + n:
                pos_sum -= ring_pos[slot]
                neg_sum -= ring_neg[slot]
            typical = (high[i] + low[i] + close[i]) / 3.0
            change = typical - previous
            scale = abs(typical) + abs(previous)
            previous = typical
            flow = typical * volume[i]
            # TA-Lib (#107): a typical-price change within ~90 ulp of the price level counts as no move.
            if _is_zero_scaled(change, scale):
                flow = 0.0
            plus = 0.0 if change < 0.0 else flow
            minus = flow if change < 0.0 else 0.0
            ring_pos[slot] = plus
            ring_neg[slot] = minus
            pos_sum += plus
            neg_sum += minus
            quiet_run = quiet_run + 1 if flow == 0.0 else 0
            if quiet_run >= n:
                # Every slot holds 0: drop the add-then-subtract residue (TA-Lib #244).
                quiet_run = n
                pos_sum = 0.0
                neg_sum = 0.0
            if i >= lo + n:
                total = pos_sum + neg_sum
                clamped = 0.0 if pos_sum < 0.0 else (total if pos_sum > total else pos_sum)
                out[i] = 100.0 * (clamped / total) if total > 0.0 else 0.0
            slot += 1
            if slot == n:
                slot = 0
    return out


def mfi(high: Any, low: Any, close: Any, volume: Any, n: int = 14) -> np.ndarray:
    """Money flow index, 0..100 (TA-Lib MFI): ``100 * positive flow / total flow`` over ``n`` bars, where a
    bar's flow is typical price times volume, positive when the typical price rose; warm-up ``n`` rows,
    ``n >= 2``. A window without any flow gives 0.

    >>> high, low = [10.0, 11.0, 12.0, 11.5], [9.0, 9.5, 10.5, 10.0]
    >>> close, volume = [9.5, 10.5, 11.5, 11.0], [100.0, 200.0, 150.0, 300.0]
    >>> mfi(high, low, close, volume, n=2).round(2).tolist()
    [nan, nan, 100.0, 34.34]
    """
    h, lo, c, v = _columns(high=high, low=low, close=close, volume=volume)
    return _mfi_kernel(h, lo, c, v, _finite_runs_of(h, lo, c, v), _period(n, "n", 2))


# -- the polars layer -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    """A named indicator over bar columns: reads the columns ``inputs`` (passed positionally to
    ``compute``), writes the columns ``outputs`` (one per array ``compute`` returns).

    ``defaults`` fills parameters ``compute`` itself has no default for (``sma``'s ``n``). Calling a feature
    on a frame of one symbol in time order gives a frame of its output columns::

        FEATURES["rsi"](bars, n=21)            # one column "rsi"
        FEATURES["macd"](bars).columns         # ["macd", "macd_signal", "macd_hist"]
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    compute: Callable[..., Any]
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def params(self) -> dict[str, Any]:
        """Parameter name -> default value (after the input columns)."""
        signature = inspect.signature(self.compute)
        params = list(signature.parameters.values())[len(self.inputs) :]
        found = {p.name: (None if p.default is inspect.Parameter.empty else p.default) for p in params}
        return {**found, **self.defaults}

    def arrays(self, frame: pl.DataFrame, **params: Any) -> dict[str, np.ndarray]:
        """Output name -> array over the rows of ``frame`` (one symbol, oldest row first)."""
        self.check(frame.columns, params)
        return self.compute_arrays({c: _frame_column(frame, c) for c in self.inputs}, params)

    def check(self, columns: Sequence[str], params: Mapping[str, Any]) -> None:
        """ConfigError for a parameter ``compute`` does not take; DataError for a missing input column."""
        known = self.params
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(
                f"feature {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(known) or 'none'}"
            )
        missing = [c for c in self.inputs if c not in columns]
        if missing:
            raise DataError(
                f"feature {self.name!r} needs column(s) {', '.join(missing)}; have {', '.join(columns)}"
            )

    def compute_arrays(
        self, inputs: Mapping[str, np.ndarray], params: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """Output name -> array, from input column name -> float64 array (one symbol, oldest first)."""
        result = self.compute(*(inputs[c] for c in self.inputs), **{**self.defaults, **params})
        arrays = (result,) if isinstance(result, np.ndarray) else tuple(result)
        return dict(zip(self.outputs, arrays, strict=True))

    def __call__(self, frame: pl.DataFrame, **params: Any) -> pl.DataFrame:
        """The output columns over ``frame``, which must hold one symbol's bars, oldest first."""
        if "symbol" in frame.columns and frame.get_column("symbol").n_unique() > 1:
            raise DataError(
                f"feature {self.name!r} was given several symbols in one frame; use add_features, which "
                "computes each symbol on its own"
            )
        return pl.DataFrame(
            [pl.Series(name, values) for name, values in self.arrays(frame, **params).items()]
        )


_REGISTRY: dict[str, Feature] = {}
# Read-only view of every registered feature, name -> Feature. trader.features registers the regime label
# as "regime" when the package is imported (it lives in regimes.py, which builds on this module).
FEATURES: Final[Mapping[str, Feature]] = MappingProxyType(_REGISTRY)


def register_feature(feature: Feature) -> Feature:
    """Add ``feature`` to :data:`FEATURES` (ConfigError if the name is taken); returns it.

    Example::

        from types import MappingProxyType
        register_feature(Feature("sma_50", ("close",), ("sma_50",), sma, MappingProxyType({"n": 50})))
    """
    if feature.name in _REGISTRY:
        raise ConfigError(f"feature {feature.name!r} is already registered; pick another name")
    _REGISTRY[feature.name] = feature
    return feature


def _register(name: str, inputs: str, outputs: str, compute: Callable[..., Any], **defaults: Any) -> None:
    register_feature(
        Feature(name, tuple(inputs.split()), tuple(outputs.split()), compute, MappingProxyType(defaults))
    )


_register("sma", "close", "sma", sma, n=20)
_register("ema", "close", "ema", ema, n=20)
_register("wma", "close", "wma", wma, n=20)
_register("rsi", "close", "rsi", rsi)
_register("macd", "close", "macd macd_signal macd_hist", macd)
_register("bollinger", "close", "bb_upper bb_middle bb_lower", bollinger)
_register("percent_b", "close", "percent_b", percent_b)
_register("atr", "high low close", "atr", atr)
_register("adx", "high low close", "adx plus_di minus_di", adx)
_register("stoch", "high low close", "stoch_k stoch_d", stoch)
_register("cci", "high low close", "cci", cci)
_register("roc", "close", "roc", roc)
_register("momentum", "close", "momentum", momentum)
_register("williams_r", "high low close", "williams_r", williams_r)
_register("obv", "close volume", "obv", obv)
_register("mfi", "high low close volume", "mfi", mfi)
_register("donchian", "high low", "donchian_upper donchian_lower donchian_middle", donchian)
_register("keltner", "high low close", "keltner_upper keltner_middle keltner_lower", keltner)
_register("realized_vol", "close", "realized_vol", realized_vol)
_register("zscore", "close", "zscore", zscore)
_register("efficiency_ratio", "close", "efficiency_ratio", efficiency_ratio)
_register("log_returns", "close", "log_returns", log_returns)


def add_features(
    frame: pl.DataFrame, names: Sequence[str] | None = None, **params: Mapping[str, Any]
) -> pl.DataFrame:
    """``frame`` with the output columns of the features ``names`` (all of :data:`FEATURES` when None).

    ``params`` maps a feature name to its parameters, e.g. ``rsi={"n": 21}``. With a ``symbol`` column each
    symbol is computed on its own rows only, in ``ts`` order, so no history leaks from one symbol into
    another; the result keeps ``frame``'s row order (long frames interleaved by time are fine). Existing
    columns with an output's name are replaced. Float outputs hold NaN (not null) in warm-up rows.
    Raises ConfigError for an unknown feature or parameter, DataError for missing input columns, null
    symbols, or a ``ts`` repeated within a symbol.

    Example::

        from trader.data.synth import synth_bars
        bars = synth_bars("SYN000", "1d", "2020-01-01", "2020-12-31", seed=1)
        bars = add_features(bars, ["rsi", "macd", "atr"], rsi={"n": 21})
        bars.select("ts", "close", "rsi", "macd_hist", "atr").tail()
    """
    chosen = list(
        dict.fromkeys(FEATURES if names is None else ([names] if isinstance(names, str) else names))
    )
    for name in chosen:
        if name not in FEATURES:
            hint = difflib.get_close_matches(str(name), FEATURES, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"unknown feature {name!r}{suggestion} (known: {', '.join(FEATURES)})")
    for name, value in params.items():
        if name not in chosen:
            raise ConfigError(f"parameters given for feature {name!r}, which is not among {chosen}")
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"parameters of feature {name!r} must be a mapping like {{'n': 14}}, got {value!r}"
            )

    for name in chosen:
        FEATURES[name].check(frame.columns, params.get(name, {}))
    needed = dict.fromkeys(c for name in chosen for c in FEATURES[name].inputs)
    inputs = {c: _frame_column(frame, c) for c in needed}  # read once; groups index into these
    groups = _time_ordered_groups(frame)
    if not groups:  # an empty frame: still add the (empty) columns
        groups = [np.arange(0, dtype=np.int64)]
    columns: dict[str, np.ndarray] = {}
    for rows in groups:
        in_order = len(groups) == 1 and bool(np.all(np.diff(rows) == 1))
        part = inputs if in_order else {c: values[rows] for c, values in inputs.items()}
        for name in chosen:
            for column, values in FEATURES[name].compute_arrays(part, params.get(name, {})).items():
                if column not in columns:
                    fill = np.nan if values.dtype.kind == "f" else -1
                    columns[column] = np.full(frame.height, fill, dtype=values.dtype)
                columns[column][rows] = values
    return frame.with_columns([pl.Series(name, values) for name, values in columns.items()])


def _frame_column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """A bar column as float64 numpy (nulls become NaN, i.e. gaps)."""
    column = frame.get_column(name)
    try:
        return column.cast(pl.Float64).fill_null(np.nan).to_numpy()
    except pl.exceptions.PolarsError:
        raise DataError(f"column {name} ({column.dtype}) cannot be read as float64 numbers") from None


def _time_ordered_groups(frame: pl.DataFrame) -> list[np.ndarray]:
    """Row indices of each symbol (the whole frame without a ``symbol`` column), each in ``ts`` order."""
    if frame.height == 0:
        return []
    has_symbol = "symbol" in frame.columns
    has_ts = "ts" in frame.columns
    if has_symbol and frame.get_column("symbol").null_count():
        raise DataError("add_features: the symbol column has nulls; every bar needs its symbol")
    if has_ts and frame.get_column("ts").null_count():
        raise DataError("add_features: the ts column has nulls; every bar needs its time")
    keys = [k for k, present in (("symbol", has_symbol), ("ts", has_ts)) if present]
    if keys:
        order = (
            frame.select(pl.arg_sort_by(keys, maintain_order=True)).to_series().to_numpy().astype(np.int64)
        )
    else:
        order = np.arange(frame.height, dtype=np.int64)
    if has_symbol:
        symbols = frame.get_column("symbol").gather(order)
        starts = np.flatnonzero((symbols != symbols.shift(1)).fill_null(True).to_numpy())
    else:
        starts = np.array([0], dtype=np.int64)
    bounds = [*starts.tolist(), frame.height]
    if has_ts:
        ts = frame.get_column("ts").gather(order).to_physical().to_numpy()
        repeated = np.flatnonzero(np.diff(ts) == 0) + 1
        first_rows = set(starts.tolist())
        for i in repeated.tolist():
            if i not in first_rows:
                who = f" of {frame.get_column('symbol')[int(order[i])]!r}" if has_symbol else ""
                stamp = frame.get_column("ts")[int(order[i])]
                raise DataError(f"add_features: bars{who} repeat ts {stamp}; drop duplicates first")
    return [order[a:b] for a, b in itertools.pairwise(bounds)]
