"""numba kernels of :mod:`trader.live.stream`: one bar at a time, the same floating-point operations in the
same order as the vectorised kernels, so every streamed value is bit-for-bit the backtest's.

Each kernel here mirrors the loop body of one vectorised kernel (named in its docstring): same seeding, same
expression order, the same reset where a non-finite input ends a finite run (``_finite_runs`` in
:mod:`trader.features.indicators`: the next finite bar starts a fresh warm-up). Where the vectorised kernel
reads a window, a ring buffer keeps the last ``n`` values; a run index ``p`` (bars since the run started)
puts value ``p`` in slot ``p % size``.

All state lives in flat arrays so that one compiled call steps a whole decider:

* ``ci`` (int64) and ``cf`` (float64): the configuration, written once by :mod:`trader.live.stream`. A header
  (``H_*``/``C_*`` slots), then one row per strategy (``ROW_I`` ints, ``ROW_F`` floats);
* ``fs`` (float64), ``st`` (int64), ``us`` (uint64): the running state; each component owns a segment whose
  offset is in the configuration. ``st[0]`` is the bar index since the first bar.

Units: prices as given; targets are fractions of equity in [-1, 1]; periods in bars.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# The vectorised kernels' own helpers, so the arithmetic is the same code, not a copy of it.
from trader.features.indicators import _true_range as true_range
from trader.features.regimes import _insert_sorted, _remove_sorted
from trader.features.tstat import _mul, _sub

# -- configuration layout (shared with trader.live.stream) ------------------------------------------------

MODE_STRATEGY = 0
MODE_COMPOSER = 1

# ci header slots
H_MODE = 0
H_K = 1  # strategies
H_LOOKBACK = 2  # composer scoring window, bars
H_FRAC = 3  # fixed-point fraction bits of the t-stat (0: two passes)
H_FIRST = 4  # min_history_bars: the first deciding bar's index
H_HOLD = 5  # hold_on_nan
H_FLAT = 6  # include_flat
H_REGIMES = 7  # regime labels needed (some bias is non-zero)
H_ER_N = 8
H_ADX_N = 9
H_VOL_N = 10
H_VOL_WINDOW = 11
H_TS_F = 12  # t-stat rings (k x lookback floats)
H_TS_I = 13  # t-stat counts (k x 2 ints: finite values, huge values)
H_TS_U = 14  # t-stat fixed-point sums (k x 3 uint64: sum q, sum q^2 high and low words)
H_RG_F = 15  # regime float state
H_RG_I = 16  # regime int state
H_CMP_F = 17  # composer float state: prev close, prev blended target, scratch, previous targets
H_BAD = 18  # bit mask of inputs whose non-finite value makes a bar a NaN row: 1 open, 2 high, 4 low
HEADER_I = 24
ROW_I = 8  # kind, f offset, i offset, p1, p2, allow_short, warm-up bars, style

# cf header slots
C_TEMPERATURE = 0
C_MIN_CONFIDENCE = 1
C_TREND_BIAS = 2
C_CHOP_BIAS = 3
C_VOLATILE_BIAS = 4
C_VOL_PCT = 5
C_ER_TREND = 6
C_ADX_TREND = 7
C_SQRT_PPY = 8
HEADER_F = 16
ROW_F = 4

# strategy kinds
K_SMA_CROSS = 0
K_EMA_CROSS = 1
K_DONCHIAN = 2
K_TS_MOMENTUM = 3
K_VOL_BREAKOUT = 4
K_RSI_REVERSION = 5
K_BOLLINGER = 6

# styles (trader.strategies.STYLES order)
STYLE_TREND = 0
STYLE_MEAN_REVERSION = 1

_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_TWO64 = 18446744073709551616.0
VALUE_BITS = 8  # trader.features.tstat.VALUE_BITS (the caller checks they agree)

# error_model="numpy": a float division by zero gives inf/NaN as numpy does instead of raising.
_JIT = {"cache": True, "error_model": "numpy"}


# -- indicator steps ----------------------------------------------------------------------------------------


@njit(**_JIT)
def sma_step(fs: np.ndarray, fo: int, st: np.ndarray, io: int, n: int, x: float, finite: bool) -> float:
    """indicators._sma_run: TA-Lib's running total from the run start. fs[fo] total, fs[fo+1:fo+1+n] ring;
    st[io] run index."""
    if not finite:
        st[io] = 0
        fs[fo] = 0.0
        return np.nan
    p = st[io]
    st[io] = p + 1
    fs[fo + 1 + p % n] = x
    if p < n - 1:
        fs[fo] += x
        return np.nan
    total = fs[fo] + x
    out = total / n
    total -= fs[fo + 1 + (p + 1) % n]  # x[p - n + 1], the bar leaving the window
    fs[fo] = total
    return out


@njit(**_JIT)
def ema_step(fs: np.ndarray, fo: int, st: np.ndarray, io: int, n: int, x: float, finite: bool) -> float:
    """indicators._ema_run: seeded with the SMA of the run's first n values. fs[fo] seed total, fs[fo+1]
    the EMA; st[io] run index."""
    if not finite:
        st[io] = 0
        fs[fo] = 0.0
        return np.nan
    p = st[io]
    st[io] = p + 1
    if p < n:
        fs[fo] += x
        if p == n - 1:
            prev = fs[fo] / n
            fs[fo + 1] = prev
            return prev
        return np.nan
    k = 2.0 / (n + 1)
    prev = ((x - fs[fo + 1]) * k) + fs[fo + 1]
    fs[fo + 1] = prev
    return prev


@njit(**_JIT)
def rsi_step(fs: np.ndarray, fo: int, st: np.ndarray, io: int, n: int, x: float, finite: bool) -> float:
    """indicators._rsi_kernel: Wilder's smoothing. fs[fo] previous close, fs[fo+1] gain, fs[fo+2] loss."""
    if not finite:
        st[io] = 0
        return np.nan
    p = st[io]
    st[io] = p + 1
    if p == 0:
        fs[fo] = x
        fs[fo + 1] = 0.0
        fs[fo + 2] = 0.0
        return np.nan
    change = x - fs[fo]
    fs[fo] = x
    gain = fs[fo + 1]
    loss = fs[fo + 2]
    if p <= n:
        if change < 0.0:
            loss -= change
        else:
            gain += change
        if p < n:
            fs[fo + 1] = gain
            fs[fo + 2] = loss
            return np.nan
        loss /= n
        gain /= n
    else:
        loss *= n - 1
        gain *= n - 1
        if change < 0.0:
            loss -= change
        else:
            gain += change
        loss /= n
        gain /= n
    fs[fo + 1] = gain
    fs[fo + 2] = loss
    total = gain + loss
    return 100.0 * (gain / total) if total > 0.0 else 0.0


@njit(**_JIT)
def atr_step(
    fs: np.ndarray, fo: int, st: np.ndarray, io: int, n: int, h: float, lo: float, c: float, finite: bool
) -> float:
    """indicators._atr_kernel. fs[fo] previous close, fs[fo+1] seed total, fs[fo+2] the ATR."""
    if not finite:
        st[io] = 0
        return np.nan
    p = st[io]
    st[io] = p + 1
    if p == 0:
        fs[fo] = c
        fs[fo + 1] = 0.0
        return np.nan
    tr = true_range(h, lo, fs[fo])
    fs[fo] = c
    if n == 1:
        return tr
    if p < n:
        fs[fo + 1] += tr
        return np.nan
    if p == n:
        total = fs[fo + 1] + tr
        fs[fo + 1] = total
        previous = total / n
        fs[fo + 2] = previous
        return previous
    previous = fs[fo + 2]
    previous *= n - 1
    previous += tr
    previous /= n
    fs[fo + 2] = previous
    return previous


@njit(**_JIT)
def ring_extreme(ring: np.ndarray, ro: int, size: int, p: int, n: int, want_max: bool) -> float:
    """Max (or min) of run values p-n+1..p held in ring[ro:ro+size] (value q in slot q % size). Only used in
    comparisons, so any exact extreme equals the monotonic deque's."""
    out = ring[ro + p % size]
    for j in range(1, n):
        value = ring[ro + (p - j) % size]
        if want_max:
            if value > out:
                out = value
        elif value < out:
            out = value
    return out


@njit(**_JIT)
def moments_std(ring: np.ndarray, ro: int, n: int, p: int, ddof: int) -> tuple[float, float]:
    """indicators._rolling_moments_run for the window ending at run index p (ring of size n, time order):
    (mean, standard deviation with divisor n - ddof), two passes."""
    start = p - n + 1
    total = 0.0
    smallest = ring[ro + p % n]
    largest = smallest
    for j in range(n):
        value = ring[ro + (start + j) % n]
        total += value
        smallest = min(smallest, value)
        largest = max(largest, value)
    if smallest == largest:
        return largest, 0.0
    mean = total / n
    squares = 0.0
    for j in range(n):
        deviation = ring[ro + (start + j) % n] - mean
        squares += deviation * deviation
    return mean, math.sqrt(squares / (n - ddof))


@njit(**_JIT)
def latch(pos: float, enter_long: bool, exit_long: bool, enter_short: bool, exit_short: bool) -> float:
    """strategies.base.latch_positions, one bar."""
    if pos > 0.0:
        if exit_long or enter_short:
            pos = -1.0 if enter_short else 0.0
    elif pos < 0.0:
        if exit_short or enter_long:
            pos = 1.0 if enter_long else 0.0
    elif enter_long:
        pos = 1.0
    elif enter_short:
        pos = -1.0
    return pos


# -- strategies ---------------------------------------------------------------------------------------------


@njit(**_JIT)
def _cross(fast: float, slow: float, allow_short: bool) -> float:
    # library._cross: NaN compares False, so warm-up bars are flat.
    if fast > slow:
        return 1.0
    if fast < slow:
        return -1.0 if allow_short else 0.0
    return 0.0


@njit(**_JIT)
def strategy_step(
    ci: np.ndarray,
    cf: np.ndarray,
    j: int,
    fs: np.ndarray,
    st: np.ndarray,
    t: int,
    o: float,
    h: float,
    lo: float,
    c: float,
) -> float:
    """Strategy j's target at bar t (StrategyDef.run: 0 during its warm-up)."""
    r = HEADER_I + j * ROW_I
    rf = HEADER_F + j * ROW_F
    kind = ci[r]
    fo = ci[r + 1]
    io = ci[r + 2]
    p1 = ci[r + 3]
    p2 = ci[r + 4]
    allow_short = ci[r + 5] != 0
    c_ok = np.isfinite(c)
    raw = 0.0
    if kind == K_SMA_CROSS:
        fast = sma_step(fs, fo, st, io, p1, c, c_ok)
        slow = sma_step(fs, fo + 1 + p1, st, io + 1, p2, c, c_ok)
        raw = _cross(fast, slow, allow_short)
    elif kind == K_EMA_CROSS:
        fast = ema_step(fs, fo, st, io, p1, c, c_ok)
        slow = ema_step(fs, fo + 2, st, io + 1, p2, c, c_ok)
        raw = _cross(fast, slow, allow_short)
    elif kind == K_DONCHIAN:
        # fs: prior upper, lower, exit upper, exit lower (the channels at t-1), position, rings of high, low
        size = max(p1, p2)
        enter_long = c > fs[fo]
        exit_long = c < fs[fo + 3]
        enter_short = (c < fs[fo + 1]) and allow_short
        exit_short = c > fs[fo + 2]
        raw = latch(fs[fo + 4], enter_long, exit_long, enter_short, exit_short)
        fs[fo + 4] = raw
        ro = fo + 5
        if np.isfinite(h) and np.isfinite(lo):
            p = st[io]
            st[io] = p + 1
            fs[ro + p % size] = h
            fs[ro + size + p % size] = lo
            fs[fo] = ring_extreme(fs, ro, size, p, p1, True) if p >= p1 - 1 else np.nan
            fs[fo + 1] = ring_extreme(fs, ro + size, size, p, p1, False) if p >= p1 - 1 else np.nan
            fs[fo + 2] = ring_extreme(fs, ro, size, p, p2, True) if p >= p2 - 1 else np.nan
            fs[fo + 3] = ring_extreme(fs, ro + size, size, p, p2, False) if p >= p2 - 1 else np.nan
        else:
            st[io] = 0
            fs[fo] = np.nan
            fs[fo + 1] = np.nan
            fs[fo + 2] = np.nan
            fs[fo + 3] = np.nan
    elif kind == K_TS_MOMENTUM:
        # library.ts_momentum via indicators._lag_kernel (roc, percent) / 100; fs: ring of p1 + 1 closes
        trailing = np.nan
        if c_ok:
            p = st[io]
            st[io] = p + 1
            fs[fo + p % (p1 + 1)] = c
            if p >= p1:
                previous = fs[fo + (p - p1) % (p1 + 1)]
                change = ((c / previous) - 1.0) * 100.0 if previous != 0.0 else 0.0
                trailing = change / 100.0
        else:
            st[io] = 0
        threshold = cf[rf]
        if trailing > threshold:
            raw = 1.0
        elif trailing < -threshold:
            raw = -1.0 if allow_short else 0.0
    elif kind == K_VOL_BREAKOUT:
        # fs: ATR state (3), prior ATR, position; st: run index, bars left
        big = (h - lo) > cf[rf] * fs[fo + 3]
        up = big and (c > o)
        down = big and (c < o)
        pos = fs[fo + 4]
        left = st[io + 1]
        if up:
            pos, left = 1.0, p2
        elif down:
            if allow_short:
                pos, left = -1.0, p2
            elif pos > 0.0:
                pos, left = 0.0, 0
        if left <= 0:
            pos = 0.0
        raw = pos
        fs[fo + 4] = pos
        st[io + 1] = left - 1
        ok = np.isfinite(h) and np.isfinite(lo) and c_ok
        fs[fo + 3] = atr_step(fs, fo, st, io, p1, h, lo, c, ok)
    elif kind == K_RSI_REVERSION:
        x = rsi_step(fs, fo, st, io, p1, c, c_ok)
        lower = cf[rf]
        upper = cf[rf + 1]
        if p2 == 0:  # exit_at="opposite"
            exit_long_at, exit_short_at = upper, lower
        else:
            exit_long_at, exit_short_at = 50.0, 50.0
        raw = latch(fs[fo + 3], x < lower, x > exit_long_at, (x > upper) and allow_short, x < exit_short_at)
        fs[fo + 3] = raw
    elif kind == K_BOLLINGER:
        # indicators._bollinger_kernel: middle = running-sum SMA, deviation from two passes (ddof 0)
        # fs: position, SMA total, ring of p1 closes; p2 = 0 exit at middle, 1 at the opposite band
        upper = np.nan
        middle = np.nan
        lower = np.nan
        if c_ok:
            p = st[io]
            middle = sma_step(fs, fo + 1, st, io, p1, c, True)
            if p >= p1 - 1:
                _, std = moments_std(fs, fo + 2, p1, p, 0)
                width = cf[rf] * std
                upper = middle + width
                lower = middle - width
        else:
            sma_step(fs, fo + 1, st, io, p1, c, False)
        if p2 == 0:
            exit_long, exit_short = c >= middle, c <= middle
        else:
            exit_long, exit_short = c > upper, c < lower
        raw = latch(fs[fo], c < lower, exit_long, (c > upper) and allow_short, exit_short)
        fs[fo] = raw
    if not np.isfinite(raw):
        raw = 0.0
    raw = min(1.0, max(-1.0, raw))
    return 0.0 if t < ci[r + 6] else raw


# -- the composer's score: trader.features.tstat, one bar ---------------------------------------------------


@njit(**_JIT)
def _two_pass(ring: np.ndarray, ro: int, size: int, t: int) -> float:
    """tstat._two_pass over the window ending at bar t, oldest first."""
    width = min(t + 1, size)
    start = t - width + 1
    count = 0
    total = 0.0
    for u in range(width):
        v = ring[ro + (start + u) % size]
        if np.isfinite(v):
            count += 1
            total += v
    if count < 2:
        return 0.0
    mean = total / count
    ss = 0.0
    for u in range(width):
        v = ring[ro + (start + u) % size]
        if np.isfinite(v):
            ss += (v - mean) * (v - mean)
    sd = math.sqrt(ss / (count - 1))
    if sd > 1e-15 * max(1.0, abs(mean)):
        return mean / sd * math.sqrt(count)
    return 0.0


@njit(**_JIT)
def tstat_step(
    fs: np.ndarray,
    st: np.ndarray,
    us: np.ndarray,
    fo: int,
    io: int,
    uo: int,
    lookback: int,
    frac_bits: int,
    t: int,
    v: float,
) -> float:
    """tstat._rolling_tstat_kernel at bar t after v enters the window (ring fs[fo:fo+lookback]; st[io] finite
    count, st[io+1] huge count; us[uo..uo+2] sum q, sum q^2 high and low words)."""
    slot = fo + t % lookback
    gone = fs[slot] if t >= lookback else np.nan  # the bar leaving the window
    fs[slot] = v
    if frac_bits == 0:
        return _two_pass(fs, fo, lookback, t)
    scale = 2.0**frac_bits
    big = 2.0**VALUE_BITS
    m = st[io]
    huge = st[io + 1]
    total = us[uo]
    sq_h = us[uo + 1]
    sq_l = us[uo + 2]
    if np.isfinite(v):
        m += 1
        if abs(v) < big:
            q = np.int64(math.floor(v * scale + 0.5))
            total = total + np.uint64(q)
            a = np.uint64(q if q >= 0 else -q)
            ph, pl = _mul(a, a)
            nl = sq_l + pl
            sq_h = sq_h + ph + (_ONE if nl < sq_l else _ZERO)
            sq_l = nl
        else:
            huge += 1
    if np.isfinite(gone):
        m -= 1
        if abs(gone) < big:
            q = np.int64(math.floor(gone * scale + 0.5))
            total = total - np.uint64(q)
            a = np.uint64(q if q >= 0 else -q)
            ph, pl = _mul(a, a)
            sq_h, sq_l = _sub(sq_h, sq_l, ph, pl)
        else:
            huge -= 1
    st[io] = m
    st[io + 1] = huge
    us[uo] = total
    us[uo + 1] = sq_h
    us[uo + 2] = sq_l
    if m < 2:
        return 0.0
    if huge > 0:
        return _two_pass(fs, fo, lookback, t)
    s = np.int64(total)
    nh, nl = _mul(sq_l, np.uint64(m))
    nh = nh + sq_h * np.uint64(m)
    a = np.uint64(s if s >= 0 else -s)
    th, tl = _mul(a, a)
    dh, dl = _sub(nh, nl, th, tl)
    spread = float(dh) * _TWO64 + float(dl)
    if spread == 0.0:
        return 0.0
    mean = s / m / scale
    sd = math.sqrt(spread / (m * (m - 1.0))) / scale
    if sd > 1e-15 * max(1.0, abs(mean)):
        return mean / sd * math.sqrt(m)
    return 0.0


# -- regime labels: trader.features.regimes.regime_labels, one bar ------------------------------------------


@njit(**_JIT)
def _directional_move(high: float, low: float, prev_high: float, prev_low: float) -> tuple[float, float]:
    up = high - prev_high
    down = prev_low - low
    if down > 0.0 and up < down:
        return 0.0, down
    if up > 0.0 and up > down:
        return up, 0.0
    return 0.0, 0.0


@njit(**_JIT)
def adx_step(
    fs: np.ndarray, fo: int, st: np.ndarray, io: int, n: int, h: float, lo: float, c: float
) -> float:
    """indicators._adx_kernel's ADX line. fs: prev high, low, close, +DM, -DM, TR, sum DX, ADX."""
    if not (np.isfinite(h) and np.isfinite(lo) and np.isfinite(c)):
        st[io] = 0
        return np.nan
    p = st[io]
    st[io] = p + 1
    if p == 0:
        fs[fo] = h
        fs[fo + 1] = lo
        fs[fo + 2] = c
        fs[fo + 3] = 0.0
        fs[fo + 4] = 0.0
        fs[fo + 5] = 0.0
        fs[fo + 6] = 0.0
        fs[fo + 7] = 0.0
        return np.nan
    up, down = _directional_move(h, lo, fs[fo], fs[fo + 1])
    tr = true_range(h, lo, fs[fo + 2])
    fs[fo] = h
    fs[fo + 1] = lo
    fs[fo + 2] = c
    if p < n:
        fs[fo + 3] += up
        fs[fo + 4] += down
        fs[fo + 5] += tr
        return np.nan
    plus_dm = fs[fo + 3]
    minus_dm = fs[fo + 4]
    true_rng = fs[fo + 5]
    plus_dm = plus_dm - plus_dm / n + up
    minus_dm = minus_dm - minus_dm / n + down
    true_rng = true_rng - (true_rng / n) + tr
    fs[fo + 3] = plus_dm
    fs[fo + 4] = minus_dm
    fs[fo + 5] = true_rng
    dx = -1.0
    if true_rng != 0.0:
        plus_di = 100.0 * (plus_dm / true_rng)
        minus_di = 100.0 * (minus_dm / true_rng)
        di_sum = minus_di + plus_di
        if di_sum != 0.0:
            dx = 100.0 * (abs(minus_di - plus_di) / di_sum)
    last_seed_bar = 2 * n - 1
    if p < last_seed_bar:
        if dx >= 0.0:
            fs[fo + 6] += dx
        return np.nan
    if p == last_seed_bar:
        if dx >= 0.0:
            fs[fo + 6] += dx
        adx = fs[fo + 6] / n
        fs[fo + 7] = adx
        return adx
    adx = fs[fo + 7]
    if dx >= 0.0:
        adx = ((adx * (n - 1)) + dx) / n
    fs[fo + 7] = adx
    return adx


@njit(**_JIT)
def realized_vol_step(
    fs: np.ndarray, fo: int, st: np.ndarray, io: int, n: int, sqrt_ppy: float, lr: float
) -> float:
    """indicators.realized_vol from the bar's log return: the sample stdev (ddof 1, two passes) of the run's
    last n finite log returns times sqrt(periods per year). fs[fo:fo+n] ring; st[io] run index."""
    if not np.isfinite(lr):
        st[io] = 0
        return np.nan
    p = st[io]
    st[io] = p + 1
    fs[fo + p % n] = lr
    if p < n - 1:
        return np.nan
    _, std = moments_std(fs, fo, n, p, 1)
    return std * sqrt_ppy


@njit(**_JIT)
def above_quantile_step(
    fs: np.ndarray, fo: int, st: np.ndarray, io: int, window: int, quantile: float, value: float
) -> float:
    """regimes._above_trailing_quantile: 1.0 when value is strictly above the quantile of the run's last
    ``window`` values (numpy's linear method), 0.0 when not, NaN until the window is full. fs[fo:] ring of
    window + 1 values, then the sorted window (window + 1 slots); st[io] run index, st[io+1] sorted size."""
    if not np.isfinite(value):
        st[io] = 0
        st[io + 1] = 0
        return np.nan
    q = st[io]
    st[io] = q + 1
    sorted_o = fo + window + 1
    fs[fo + q % (window + 1)] = value
    ordered = fs[sorted_o : sorted_o + window + 1]  # a view: the regime kernel's own sorted-window helpers
    size = _insert_sorted(ordered, st[io + 1], value)
    if size > window:
        size = _remove_sorted(ordered, size, fs[fo + (q + 1) % (window + 1)])
    st[io + 1] = size
    if size != window:
        return np.nan
    virtual = window * quantile + (1.0 + quantile * (1.0 - 1.0 - 1.0)) - 1.0
    below = math.floor(virtual)
    gamma = virtual - below
    lower_index = min(max(int(below), 0), window - 1)
    upper_index = min(lower_index + 1, window - 1)
    a = fs[sorted_o + lower_index]
    b = fs[sorted_o + upper_index]
    # numpy's _lerp: interpolate from whichever end is nearer
    diff = b - a
    threshold = b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma
    return 1.0 if value > threshold else 0.0


@njit(**_JIT)
def er_step(fs: np.ndarray, fo: int, st: np.ndarray, io: int, n: int, c: float) -> float:
    """indicators._er_kernel (Kaufman's efficiency ratio over n changes). fs[fo:fo+n+1] ring of closes."""
    if not np.isfinite(c):
        st[io] = 0
        return np.nan
    p = st[io]
    st[io] = p + 1
    size = n + 1
    fs[fo + p % size] = c
    if p < n:
        return np.nan
    path = 0.0
    for j in range(p - n + 1, p + 1):
        path += abs(fs[fo + j % size] - fs[fo + (j - 1) % size])
    if path > 0.0:
        return min(1.0, abs(c - fs[fo + (p - n) % size]) / path)
    return 0.0


@njit(**_JIT)
def regime_step(
    ci: np.ndarray, cf: np.ndarray, fs: np.ndarray, st: np.ndarray, h: float, lo: float, c: float, lr: float
) -> int:
    """Regime code of this bar (0 trend, 1 chop, 2 volatile, -1 undefined) as regimes.regime_labels gives
    it. ``lr`` is the bar's log return as indicators.log_returns gives it (NaN where undefined).

    fs from ci[H_RG_F]: ADX (8), returns ring (vol_n), vol ring and sorted window (2 x (window + 1)),
    closes ring (er_n + 1). st from ci[H_RG_I]: ADX run, returns run, vol run, sorted size, close run."""
    fo = ci[H_RG_F]
    io = ci[H_RG_I]
    vol_n = ci[H_VOL_N]
    window = ci[H_VOL_WINDOW]
    ret_o = fo + 8
    vol_o = ret_o + vol_n
    close_o = vol_o + 2 * (window + 1)
    vol = realized_vol_step(fs, ret_o, st, io + 1, vol_n, cf[C_SQRT_PPY], lr)
    above = above_quantile_step(fs, vol_o, st, io + 2, window, cf[C_VOL_PCT], vol)
    er = er_step(fs, close_o, st, io + 4, ci[H_ER_N], c)
    adx = adx_step(fs, fo, st, io, ci[H_ADX_N], h, lo, c)
    if np.isnan(above) or np.isnan(er) or np.isnan(adx):
        return -1
    if above == 1.0:
        return 2
    if er >= cf[C_ER_TREND] or adx >= cf[C_ADX_TREND]:
        return 0
    return 1


# -- one bar of a decider -----------------------------------------------------------------------------------


@njit(**_JIT)
def decide_step(
    ci: np.ndarray,
    cf: np.ndarray,
    fs: np.ndarray,
    st: np.ndarray,
    us: np.ndarray,
    o: float,
    h: float,
    lo: float,
    c: float,
    lr: float,
) -> float:
    """The target at this bar's close: the one strategy's (strategy mode) or the composer's blend
    (trader.composer: strategy_targets, strategy_scores, regime_bias, _blend_kernel)."""
    t = st[0]
    st[0] = t + 1
    k = ci[H_K]
    if ci[H_MODE] == MODE_STRATEGY:
        return strategy_step(ci, cf, 0, fs, st, t, o, h, lo, c)
    co = ci[H_CMP_F]  # prev close, prev target, scratch e (k + 1), previous row's targets (k)
    e_o = co + 2
    tg_o = e_o + k + 1
    mask = ci[H_BAD]
    bad = not np.isfinite(c)
    if (mask & 1) and not np.isfinite(o):
        bad = True
    if (mask & 2) and not np.isfinite(h):
        bad = True
    if (mask & 4) and not np.isfinite(lo):
        bad = True
    r = np.nan
    if t > 0:
        r = c / fs[co] - 1.0
    fs[co] = c
    code = -1
    regimes = ci[H_REGIMES] != 0
    if regimes:
        code = regime_step(ci, cf, fs, st, h, lo, c, lr)
    lookback = ci[H_LOOKBACK]
    frac = ci[H_FRAC]
    temperature = cf[C_TEMPERATURE]
    include_flat = ci[H_FLAT] != 0
    # scores: strategy return s = target[t-1] * r[t] enters each strategy's window; logits in fs scratch
    top = 0.0 if include_flat else -np.inf
    for j in range(k):
        s = fs[tg_o + j] * r if t > 0 else np.nan
        score = tstat_step(
            fs,
            st,
            us,
            ci[H_TS_F] + j * lookback,
            ci[H_TS_I] + 2 * j,
            ci[H_TS_U] + 3 * j,
            lookback,
            frac,
            t,
            s,
        )
        logit = score
        if regimes:
            style = ci[HEADER_I + j * ROW_I + 7]
            bias = 0.0 + (cf[C_TREND_BIAS] if code == 0 and style == STYLE_TREND else 0.0)
            bias = bias + (cf[C_CHOP_BIAS] if code == 1 and style == STYLE_MEAN_REVERSION else 0.0)
            bias = bias + (cf[C_VOLATILE_BIAS] if code == 2 else 0.0)
            logit = score + bias
        fs[e_o + j] = logit
        z = logit / temperature
        if z > top:
            top = z
    # this bar's targets (NaN on a bar with a missing input), kept for the next bar's strategy returns
    for j in range(k):
        value = strategy_step(ci, cf, j, fs, st, t, o, h, lo, c)
        fs[tg_o + j] = np.nan if bad else value
    total = 0.0
    for j in range(k):
        fs[e_o + j] = math.exp(fs[e_o + j] / temperature - top)
        total += fs[e_o + j]
    width = k
    if include_flat:
        fs[e_o + k] = math.exp(0.0 - top)
        total += fs[e_o + k]
        width = k + 1
    blended = 0.0
    nan_row = False
    for j in range(width):
        w = fs[e_o + j] / total
        if j < k:
            v = fs[tg_o + j]
            if np.isnan(v):
                nan_row = True
            else:
                blended += v * w
    blended = min(1.0, max(-1.0, blended))
    if t < ci[H_FIRST]:
        value = 0.0
    elif nan_row:
        value = fs[co + 1] if ci[H_HOLD] != 0 else 0.0
    else:
        value = blended if abs(blended) >= cf[C_MIN_CONFIDENCE] else 0.0
    fs[co + 1] = value
    return value


@njit(**_JIT)
def decide_many(
    ci: np.ndarray,
    cf: np.ndarray,
    fs: np.ndarray,
    st: np.ndarray,
    us: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    lr: np.ndarray,
    out: np.ndarray,
) -> None:
    """decide_step over a history, oldest bar first (the warm path: one call for any number of bars)."""
    for i in range(c.shape[0]):
        out[i] = decide_step(ci, cf, fs, st, us, o[i], h[i], lo[i], c[i], lr[i])
