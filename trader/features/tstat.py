"""Rolling t-statistics whose value at a bar depends only on the bars in its window.

``rolling_tstat(x, lookback)[j, t]`` is ``mean / sample stdev * sqrt(count)`` of the finite values of
``x[j, t - lookback + 1 .. t]`` (0 with fewer than 2 values or no spread). It is the composer's strategy
score, computed for every bar of long minute histories, so it must be O(bars) rather than
O(bars x lookback), and it must not depend on where the array starts: a walk-forward task that loads a
fold's window plus warm-up has to score each bar exactly (bit for bit) as a run over the whole history
does, or results would change with how folds are grouped into tasks.

A floating-point running sum fails the second requirement (its rounding carries history from the first
bar). So each value is rounded to a fixed-point integer ``q = round(v * 2**F)`` and the window sums of ``q``
and ``q**2`` slide by adding the entering bar and subtracting the leaving one in integers (wrapping 64- and
128-bit arithmetic is exact for any result that fits), so they hold exactly the window's values.

``F`` depends only on ``lookback``: with ``|v| < 2**VALUE_BITS`` the window sum of ``q`` fits 63 bits and
``count * sum(q**2) - sum(q)**2`` (the spread, exactly, and exactly 0 for a window of equal values) fits
128. A window holding a value at or beyond ``2**VALUE_BITS`` (a return of 25,600 % in a bar: bad data, but
handled) is computed by the exact two-pass formula instead. For a lookback of 50 bars ``F`` is 48, a
resolution of 3.6e-15 per value.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["VALUE_BITS", "fixed_point_bits", "rolling_tstat"]

#: Values with ``|v| < 2**VALUE_BITS`` go through the exact integer sums; a window with a larger one falls
#: back to two passes over the window.
VALUE_BITS = 8

_U32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_TWO64 = 18446744073709551616.0


def fixed_point_bits(lookback: int) -> int:
    """Fraction bits ``F`` of the fixed-point values for a window of ``lookback`` bars (0: two passes)."""
    bits = 62 - VALUE_BITS - int(lookback).bit_length()
    return bits if bits >= 24 else 0


@njit(cache=True, inline="always")
def _mul(a: np.uint64, b: np.uint64) -> tuple[np.uint64, np.uint64]:
    # Full 128-bit product of two unsigned 64-bit integers as (high, low) words, from 32-bit halves.
    a0, a1 = a & _U32, a >> _S32
    b0, b1 = b & _U32, b >> _S32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> _S32) + (p01 & _U32) + (p10 & _U32)
    lo = (p00 & _U32) | (mid << _S32)
    hi = p11 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)
    return hi, lo


@njit(cache=True, inline="always")
def _sub(ah: np.uint64, al: np.uint64, bh: np.uint64, bl: np.uint64) -> tuple[np.uint64, np.uint64]:
    lo = al - bl
    borrow = _ONE if al < bl else _ZERO
    return ah - bh - borrow, lo


@njit(cache=True)
def _two_pass(row: np.ndarray, lo: int, hi: int) -> float:
    # Exact for any finite values: mean, then the spread around it; only for windows with huge values.
    count = 0
    total = 0.0
    for u in range(lo, hi):
        v = row[u]
        if np.isfinite(v):
            count += 1
            total += v
    if count < 2:
        return 0.0
    mean = total / count
    ss = 0.0
    for u in range(lo, hi):
        v = row[u]
        if np.isfinite(v):
            ss += (v - mean) * (v - mean)
    sd = math.sqrt(ss / (count - 1))
    if sd > 1e-15 * max(1.0, abs(mean)):
        return mean / sd * math.sqrt(count)
    return 0.0


@njit(cache=True)
def _rolling_tstat_kernel(x: np.ndarray, lookback: int, frac_bits: int) -> np.ndarray:
    k, n = x.shape
    out = np.zeros((k, n), dtype=np.float64)
    if frac_bits == 0:
        for j in range(k):
            for t in range(n):
                out[j, t] = _two_pass(x[j], max(0, t - lookback + 1), t + 1)
        return out
    scale = 2.0**frac_bits
    big = 2.0**VALUE_BITS
    # Each window value's kind (0 missing, 1 fixed point, 2 huge), q and q**2, kept in a ring so the bar
    # leaving the window is subtracted without being converted again.
    kind = np.zeros(lookback, dtype=np.int8)
    qs = np.zeros(lookback, dtype=np.int64)
    sq_hs = np.zeros(lookback, dtype=np.uint64)
    sq_ls = np.zeros(lookback, dtype=np.uint64)
    for j in range(k):
        row = x[j]
        # The window's exact state: count of finite values, count of huge ones, sum of q (wrapping 64-bit)
        # and sum of q**2 (wrapping 128-bit, high and low words). Adding the bar entering the window and
        # subtracting the one leaving it is exact, so the state depends on the window's values only.
        m = 0
        huge = 0
        total = _ZERO
        sq_h = _ZERO
        sq_l = _ZERO
        kind[:] = 0
        for t in range(n):
            slot = t % lookback  # the entering bar takes the slot of the one leaving (bar t - lookback)
            out_kind = kind[slot]
            out_q = qs[slot]
            v = row[t]
            in_kind = 0
            q = np.int64(0)
            if np.isfinite(v):
                in_kind = 1 if abs(v) < big else 2
                if in_kind == 1:
                    q = np.int64(math.floor(v * scale + 0.5))
            if in_kind == out_kind and in_kind != 2 and q == out_q and huge == 0 and t > 0:
                # The same value enters as leaves: the state, and so the score, is the previous bar's
                # (a window holding a huge value is scored from its values instead, so it never skips).
                out[j, t] = out[j, t - 1]
                continue
            if out_kind == 1:
                m -= 1
                total = total - np.uint64(out_q)
                sq_h, sq_l = _sub(sq_h, sq_l, sq_hs[slot], sq_ls[slot])
            elif out_kind == 2:
                m -= 1
                huge -= 1
            kind[slot] = in_kind
            qs[slot] = q
            if in_kind == 1:
                m += 1
                total = total + np.uint64(q)
                a = np.uint64(q if q >= 0 else -q)
                ph, pl = _mul(a, a)
                sq_hs[slot] = ph
                sq_ls[slot] = pl
                nl = sq_l + pl
                sq_h = sq_h + ph + (_ONE if nl < sq_l else _ZERO)
                sq_l = nl
            elif in_kind == 2:
                m += 1
                huge += 1
            if m < 2:
                continue
            if huge > 0:
                out[j, t] = _two_pass(row, max(0, t - lookback + 1), t + 1)
                continue
            s = np.int64(total)  # exact: the window's sum fits 63 bits
            # m * sum(q^2) - sum(q)^2 = m (m - 1) * sample variance, in q units squared; exact and >= 0.
            nh, nl = _mul(sq_l, np.uint64(m))
            nh = nh + sq_h * np.uint64(m)
            a = np.uint64(s if s >= 0 else -s)
            th, tl = _mul(a, a)
            dh, dl = _sub(nh, nl, th, tl)
            spread = float(dh) * _TWO64 + float(dl)
            if spread == 0.0:
                continue
            mean = s / m / scale
            sd = math.sqrt(spread / (m * (m - 1.0))) / scale
            if sd > 1e-15 * max(1.0, abs(mean)):
                out[j, t] = mean / sd * math.sqrt(m)
    return out


def rolling_tstat(x: np.ndarray, lookback: int) -> np.ndarray:
    """Rolling t-statistic of each row of ``x`` (series, bars) over windows of ``lookback`` bars.

    Score at t = mean / sample-stdev x sqrt(count) over the finite values of ``x[j, t-lookback+1 .. t]``
    (dimensionless); fewer than 2 values or no spread give 0. Same shape as ``x``. The value at t depends
    only on the window's values, never on where ``x`` starts (see the module docstring).

    >>> float(rolling_tstat(np.array([[0.01, 0.03, 0.02]]), 3)[0, 2]).__round__(6)  # mean .02, sd .01
    3.464102
    """
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if arr.ndim != 2:
        raise ValueError(f"rolling_tstat needs a (series, bars) array, got shape {arr.shape}")
    return _rolling_tstat_kernel(arr, int(lookback), fixed_point_bits(int(lookback)))
