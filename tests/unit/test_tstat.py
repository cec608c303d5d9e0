"""Rolling t-statistic: equal to a plain-Python two-pass oracle, exactly start-independent, and exact on
constant windows, huge values and NaN gaps."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.features.tstat import VALUE_BITS, fixed_point_bits, rolling_tstat


def _oracle(row: list[float], lookback: int) -> list[float]:
    out = []
    for t in range(len(row)):
        window = [v for v in row[max(0, t - lookback + 1) : t + 1] if math.isfinite(v)]
        score = 0.0
        if len(window) >= 2:
            mean, sd = statistics.fmean(window), statistics.stdev(window)
            if sd > 1e-15 * max(1.0, abs(mean)):
                score = mean / sd * math.sqrt(len(window))
        out.append(score)
    return out


def _series(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0002, 0.01, (3, n))
    x[0, ::7] = np.nan  # gaps: left out of the window's count
    x[1, 40:90] = 0.0  # a flat stretch: constant windows score exactly 0
    x[2, 30] = 3 * 2.0**VALUE_BITS  # a huge value: its windows take the exact two-pass path
    x[2, 31] = -np.inf
    return x


@pytest.mark.parametrize("lookback", [1, 2, 3, 20, 64])
def test_matches_the_two_pass_oracle(lookback: int) -> None:
    x = _series(3, 400)
    got = rolling_tstat(x, lookback)
    for j in range(x.shape[0]):
        want = np.array(_oracle(x[j].tolist(), lookback))
        np.testing.assert_allclose(got[j], want, rtol=1e-9, atol=1e-9, err_msg=f"row {j}")
    assert np.all(rolling_tstat(x, 1) == 0)  # one value per window: no spread


def test_constant_and_flat_windows_score_exactly_zero() -> None:
    x = _series(5, 200)
    got = rolling_tstat(x, 20)
    assert np.all(got[1, 59:90] == 0.0)
    # A constant negative series far from zero: the integer spread is exactly 0, never rounding noise.
    assert np.all(rolling_tstat(np.full((1, 50), -0.0123456789), 10) == 0.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    lookback=st.integers(2, 80),
    start=st.integers(1, 300),
)
def test_a_later_start_scores_every_full_window_bit_for_bit(seed: int, lookback: int, start: int) -> None:
    x = _series(seed, 500)
    whole = rolling_tstat(x, lookback)
    part = rolling_tstat(x[:, start:], lookback)
    # From the first full window of the shorter array on, every value is identical, not merely close.
    np.testing.assert_array_equal(part[:, lookback - 1 :], whole[:, start + lookback - 1 :])


def test_very_long_lookbacks_fall_back_to_two_passes() -> None:
    assert fixed_point_bits(50) == 48
    assert fixed_point_bits(2**40) == 0
    x = _series(9, 120)
    np.testing.assert_allclose(
        rolling_tstat(x, 2**40)[0], _oracle(x[0].tolist(), 2**40), rtol=1e-9, atol=1e-9
    )


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="series, bars"):
        rolling_tstat(np.zeros(5), 3)


@pytest.mark.parametrize("lookback", [3, 20])
def test_windows_whose_entering_value_equals_the_leaving_one(lookback: int) -> None:
    # A series that repeats with period ``lookback``: every bar's entering value equals the one leaving, the
    # case the kernel short-cuts by carrying the previous score. Flat stretches and gaps repeat too.
    rng = np.random.default_rng(11)
    pattern = rng.normal(0.0003, 0.01, lookback)
    pattern[0] = 0.0
    pattern[-1] = np.nan
    x = np.vstack([np.tile(pattern, 12), np.r_[np.zeros(5 * lookback), np.tile(pattern, 7)]])
    got = rolling_tstat(x, lookback)
    for j in range(x.shape[0]):
        want = np.array(_oracle(x[j].tolist(), lookback))
        np.testing.assert_allclose(got[j], want, rtol=1e-9, atol=1e-9, err_msg=f"row {j}")
    # A huge value in a repeating window takes the two-pass path at every bar, never a carried score.
    y = np.tile(np.r_[pattern[:-1], 2.0**VALUE_BITS], 5)[None, :]
    np.testing.assert_allclose(rolling_tstat(y, lookback)[0], _oracle(y[0].tolist(), lookback), rtol=1e-9)
