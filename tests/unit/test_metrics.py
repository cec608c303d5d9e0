"""Performance metrics and overfitting statistics (trader.metrics).

Oracles: plain-Python loops written here, Python's statistics module (NormalDist, mean, stdev), Monte Carlo
with fixed seeds, and the worked examples of the papers, cited where pinned.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import statistics
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trader import metrics as m
from trader.data.schema import INTERVALS
from trader.errors import DataError, SchemaError

NORMAL = statistics.NormalDist()


# ---------------------------------------------------------------------------------------------------------
# Plain-Python oracles
# ---------------------------------------------------------------------------------------------------------


def _py_equity(returns: list[float]) -> list[float]:
    equity = [1.0]
    for r in returns:
        equity.append(equity[-1] * (1.0 + r))
    return equity


def _py_max_drawdown(returns: list[float]) -> tuple[float, int]:
    """Max drawdown and the length of that drawdown (peak -> recovery or end), by explicit scanning."""
    equity = _py_equity(returns)
    best_dd, best_start, best_trough = 0.0, 0, 0
    peak_value, peak_at = equity[0], 0
    for i, value in enumerate(equity):
        if value >= peak_value:
            peak_value, peak_at = value, i
        dd = 1.0 - value / peak_value
        if dd > best_dd:
            best_dd, best_start, best_trough = dd, peak_at, i
    if best_dd == 0.0:
        return 0.0, 0
    end = len(equity) - 1
    for j in range(best_trough, len(equity)):
        if equity[j] >= equity[best_start]:
            end = j
            break
    return best_dd, end - best_start


def _py_sharpe(returns: list[float], ppy: float) -> float:
    return statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(ppy)


def _py_moments(xs: list[float]) -> tuple[float, float]:
    n = len(xs)
    mu = sum(xs) / n
    m2 = sum((x - mu) ** 2 for x in xs) / n
    m3 = sum((x - mu) ** 3 for x in xs) / n
    m4 = sum((x - mu) ** 4 for x in xs) / n
    return m3 / m2**1.5, m4 / m2**2


# ---------------------------------------------------------------------------------------------------------
# Annualisation
# ---------------------------------------------------------------------------------------------------------


def test_periods_per_year_follows_the_time_rule_for_every_schema_interval() -> None:
    minute_ns = 60 * 1_000_000_000
    for interval, ns in INTERVALS.items():
        expected = 252.0 if interval == "1d" else 252 * 390 / (ns / minute_ns)
        assert m.periods_per_year(interval) == pytest.approx(expected, rel=1e-15)
    assert m.periods_per_year("1h") == 1638.0  # 6.5 bars a session
    assert m.periods_per_year("5m", sessions_per_year=250, minutes_per_session=360) == 250 * 72
    with pytest.raises(SchemaError, match="unknown bar interval"):
        m.periods_per_year("2h")


# ---------------------------------------------------------------------------------------------------------
# Return and risk metrics
# ---------------------------------------------------------------------------------------------------------


def test_constant_return_compounds_to_the_obvious_cagr_and_total_return() -> None:
    c = 0.0004
    rets = [c] * 504  # two years of days
    assert m.total_return(rets) == pytest.approx((1 + c) ** 504 - 1, rel=1e-12)
    assert m.cagr(rets, periods_per_year=252) == pytest.approx((1 + c) ** 252 - 1, rel=1e-12)
    # Independent of the length: any number of periods at a constant rate has the same annual rate.
    assert m.cagr(rets[:37], periods_per_year=252) == pytest.approx((1 + c) ** 252 - 1, rel=1e-12)
    assert m.cagr([0.01] * 12, periods_per_year=12) == pytest.approx(1.01**12 - 1, rel=1e-12)
    # A constant series has no risk: volatility 0, Sharpe and Sortino undefined, no drawdown.
    assert m.volatility(rets) == 0.0
    assert math.isnan(m.sharpe(rets))
    assert math.isnan(m.sortino(rets))
    assert m.max_drawdown(rets) == 0.0
    assert m.max_drawdown_duration(rets) == 0.0
    assert math.isnan(m.calmar(rets))


def test_cagr_of_a_wiped_out_account() -> None:
    assert m.cagr([0.1, -1.0, 0.0], periods_per_year=252) == -1.0
    assert math.isnan(m.cagr([0.1, -1.5], periods_per_year=252))  # equity below zero: no annual rate


def test_max_drawdown_of_known_curves() -> None:
    # Equity 100 -> 120 -> 90 -> 95 -> 130 -> 65 -> 70: the deepest fall is 130 -> 65 (50 %), never recovered,
    # so its duration runs from the 130 peak (index 4) to the end (index 6).
    prices = [100.0, 120.0, 90.0, 95.0, 130.0, 65.0, 70.0]
    rets = [b / a - 1 for a, b in itertools.pairwise(prices)]
    assert m.max_drawdown(rets) == pytest.approx(0.5, rel=1e-12)
    assert m.max_drawdown_duration(rets) == 2.0
    # 100 -> 80 -> 90 -> 100 -> 110: a 20 % fall from the start, recovered at the third period.
    prices = [100.0, 80.0, 90.0, 100.0, 110.0]
    rets = [b / a - 1 for a, b in itertools.pairwise(prices)]
    assert m.max_drawdown(rets) == pytest.approx(0.2, rel=1e-12)
    assert m.max_drawdown_duration(rets) == 3.0
    np.testing.assert_allclose(m.drawdown_curve(rets), [0.2, 0.1, 0.0, 0.0], atol=1e-12)
    # Flat at the high before the fall: the drawdown starts when equity last stood at the high.
    assert m.max_drawdown_duration([0.1, 0.0, 0.0, -0.2, 0.3]) == 2.0
    # A first-period loss is a drawdown from the starting equity.
    assert m.max_drawdown([-0.25]) == pytest.approx(0.25)
    assert m.max_drawdown_duration([-0.25]) == 1.0


def test_max_drawdown_matches_a_plain_loop_on_random_paths() -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        rets = rng.normal(0.0003, 0.02, int(rng.integers(2, 400))).tolist()
        dd, duration = _py_max_drawdown(rets)
        assert m.max_drawdown(rets) == pytest.approx(dd, rel=1e-12, abs=1e-15)
        assert m.max_drawdown_duration(rets) == duration
        assert m.calmar(rets) == pytest.approx(m.cagr(rets) / dd, rel=1e-12)


def test_sharpe_volatility_sortino_match_plain_python() -> None:
    rng = np.random.default_rng(3)
    rets = rng.normal(0.0004, 0.012, 300).tolist()
    assert m.sharpe(rets) == pytest.approx(_py_sharpe(rets, 252), rel=1e-12)
    assert m.sharpe(rets, periods_per_year=12) == pytest.approx(_py_sharpe(rets, 12), rel=1e-12)
    assert m.volatility(rets) == pytest.approx(statistics.stdev(rets) * math.sqrt(252), rel=1e-12)
    # A 3 % annual risk-free rate compounds to (1.03) ** (1/252) - 1 a day.
    rf_day = 1.03 ** (1 / 252) - 1
    excess = [r - rf_day for r in rets]
    assert m.sharpe(rets, risk_free=0.03) == pytest.approx(_py_sharpe(excess, 252), rel=1e-10)
    # Sortino: target semideviation over all periods.
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in excess) / len(excess))
    expected = statistics.mean(excess) / downside * math.sqrt(252)
    assert m.sortino(rets, risk_free=0.03) == pytest.approx(expected, rel=1e-10)


def test_sharpe_on_a_matrix_is_per_column() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.001, 0.01, (120, 5))
    x[3, 2] = np.nan  # dropped in its column only
    expected = [_py_sharpe([v for v in x[:, j] if not math.isnan(v)], 252) for j in range(5)]
    np.testing.assert_allclose(m.sharpe(x), expected, rtol=1e-12)


def test_trade_metrics_match_plain_python() -> None:
    trades = [0.02, -0.01, 0.0, 0.035, -0.02, 0.01, float("nan")]
    clean = [t for t in trades if not math.isnan(t)]
    assert m.win_rate(trades) == pytest.approx(3 / 6)
    assert m.avg_trade_return(trades) == pytest.approx(statistics.mean(clean))
    assert m.median_trade_return(trades) == pytest.approx(statistics.median(clean))
    assert m.profit_factor(trades) == pytest.approx((0.02 + 0.035 + 0.01) / (0.01 + 0.02))
    frame = pl.DataFrame({"symbol": ["A"] * 6, "return": clean})
    assert m.win_rate(frame) == pytest.approx(0.5)
    assert m.profit_factor({"return": clean}) == pytest.approx(m.profit_factor(clean))
    with pytest.raises(ValueError, match="'return' column"):
        m.win_rate(pl.DataFrame({"pnl": clean}))
    # Undefined cases: no trades at all; no losing trade (gross loss 0).
    for fn in (m.win_rate, m.avg_trade_return, m.median_trade_return, m.profit_factor):
        assert math.isnan(fn([]))
    assert math.isnan(m.profit_factor([0.01, 0.02]))
    assert m.profit_factor([-0.01]) == 0.0


def test_exposure_and_turnover() -> None:
    assert m.exposure([0, 1.5, -2, 0]) == 0.5
    assert m.exposure(np.array([[0, 0], [0, 3], [1, 1], [np.nan, 0]])) == 0.5  # any symbol held
    assert math.isnan(m.exposure([]))
    # 100 traded on each of 2 out of 4 quarterly periods with 1000 equity: 200/1000 over one year.
    assert m.turnover([100.0, 0.0, -100.0, 0.0], [1000.0] * 4, periods_per_year=4) == pytest.approx(0.2)
    # Same trading over 8 periods of a 4-period year is 0.1 a year.
    assert m.turnover([100.0, 0, -100.0, 0, 0, 0, 0, 0], [1000.0] * 8, periods_per_year=4) == pytest.approx(
        0.1
    )
    assert math.isnan(m.turnover([], [1.0]))


def test_equity_curve_compounds() -> None:
    np.testing.assert_allclose(m.equity_curve([0.1, np.nan, -0.5], initial=200.0), [220.0, 220.0, 110.0])


# ---------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------


def test_summarize_has_every_documented_key_as_a_float() -> None:
    rng = np.random.default_rng(5)
    rets = rng.normal(0.0005, 0.01, 500)
    out = m.summarize(
        rets,
        interval="1d",
        trades=[0.02, -0.01, 0.03],
        exposure=np.r_[np.zeros(100), np.ones(400)],
        turnover_notional=np.full(500, 0.5),
    )
    assert list(out) == list(m.SUMMARY_KEYS)
    assert all(type(v) is float for v in out.values())
    json.dumps(out)  # summary.json-ready
    assert out["n_periods"] == 500.0
    assert out["sharpe"] == pytest.approx(_py_sharpe(rets.tolist(), 252), rel=1e-12)
    assert out["max_drawdown"] == pytest.approx(_py_max_drawdown(rets.tolist())[0], rel=1e-12)
    assert out["exposure"] == 0.8
    assert out["win_rate"] == pytest.approx(2 / 3)
    assert out["n_trades"] == 3.0
    equity = np.cumprod(1 + rets)
    assert out["turnover"] == pytest.approx(250.0 / equity.mean() * 252 / 500, rel=1e-12)
    sr = out["sharpe"] / math.sqrt(252)
    expected_psr = m.probabilistic_sharpe_ratio(sr, 0.0, 500, out["skewness"], out["kurtosis"])
    assert out["psr"] == pytest.approx(expected_psr, rel=1e-12)
    assert m.summarize(rets, interval="1d", exposure=0.3)["exposure"] == 0.3


def test_summarize_is_nan_safe() -> None:
    empty = m.summarize([], interval="1h")
    assert empty["n_periods"] == 0.0
    assert empty["periods_per_year"] == 1638.0
    assert all(math.isnan(v) for k, v in empty.items() if k not in ("n_periods", "periods_per_year"))
    constant = m.summarize([0.001] * 50, interval="1d")
    assert constant["volatility"] == 0.0 and constant["max_drawdown"] == 0.0
    for key in ("sharpe", "sortino", "calmar", "skewness", "kurtosis", "psr", "win_rate"):
        assert math.isnan(constant[key]), key
    single = m.summarize([0.01], interval="5m")
    assert single["total_return"] == pytest.approx(0.01) and math.isnan(single["sharpe"])
    # NaN periods are dropped: the same as passing the series without them.
    rets = [0.01, np.nan, -0.02, 0.015, np.nan, 0.003]
    clean = [0.01, -0.02, 0.015, 0.003]
    a, b = m.summarize(rets, interval="1d"), m.summarize(clean, interval="1d")
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)
    with pytest.raises(DataError, match="infinite"):
        m.summarize([0.01, np.inf], interval="1d")
    with pytest.raises(ValueError, match="align"):
        m.summarize([0.01, 0.02], interval="1d", turnover_notional=[1.0])


def test_summarize_on_real_spy_buy_and_hold(shared_data: Path) -> None:
    from trader.data.ingest import read_source

    path = shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv"
    close = read_source(path, fmt="yahoo", interval="1d").frame.sort("ts")["close"].to_numpy()
    rets = close[1:] / close[:-1] - 1
    out = m.summarize(rets, interval="1d")
    n = len(rets)
    assert out["total_return"] == pytest.approx(close[-1] / close[0] - 1, rel=1e-9)
    assert out["cagr"] == pytest.approx((close[-1] / close[0]) ** (252 / n) - 1, rel=1e-9)
    # Drawdown straight from prices: the deepest fall below the running high of the close.
    running_high, deepest, peak_i, trough_i, best_peak = close[0], 0.0, 0, 0, 0
    for i, price in enumerate(close):
        if price >= running_high:
            running_high, peak_i = price, i
        if 1 - price / running_high > deepest:
            deepest, trough_i, best_peak = 1 - price / running_high, i, peak_i
    recovery = next((j for j in range(trough_i, len(close)) if close[j] >= close[best_peak]), len(close) - 1)
    assert out["max_drawdown"] == pytest.approx(deepest, rel=1e-9)
    assert out["max_drawdown_duration"] == recovery - best_peak
    assert 0.4 < deepest < 0.6  # the 2008-09 crash is in this window


# ---------------------------------------------------------------------------------------------------------
# Distribution helpers
# ---------------------------------------------------------------------------------------------------------


def test_normal_ppf_matches_the_stdlib_to_machine_precision() -> None:
    ps = np.concatenate(
        [np.logspace(-300, -1, 120), np.linspace(0.01, 0.99, 197), 1 - np.logspace(-16, -1, 60)]
    )
    for p in ps:
        expected = NORMAL.inv_cdf(float(p))
        assert m.normal_ppf(float(p)) == pytest.approx(expected, rel=1e-13, abs=1e-15), p
    assert m.normal_ppf(0.5) == 0.0
    assert m.normal_ppf(0.0) == -math.inf and m.normal_ppf(1.0) == math.inf
    assert math.isnan(m.normal_ppf(1.5)) and math.isnan(m.normal_ppf(float("nan")))


def test_normal_cdf_matches_the_stdlib_and_keeps_tail_precision() -> None:
    for x in np.linspace(-8, 8, 321):
        assert m.normal_cdf(float(x)) == pytest.approx(NORMAL.cdf(float(x)), rel=1e-12, abs=1e-16)
    # Far in the lower tail the stdlib's 1 + erf loses everything; round trips through the ppf must not.
    for p in (1e-300, 1e-100, 1e-20, 1e-10):
        assert m.normal_cdf(m.normal_ppf(p)) == pytest.approx(p, rel=1e-12)


def test_sample_skewness_and_kurtosis_are_population_moment_ratios() -> None:
    rng = np.random.default_rng(6)
    xs = rng.standard_exponential(200).tolist()
    skew, kurt = _py_moments(xs)
    assert m.sample_skewness(xs) == pytest.approx(skew, rel=1e-10)
    assert m.sample_kurtosis(xs) == pytest.approx(kurt, rel=1e-10)
    # A symmetric two-point distribution: skewness 0, ordinary kurtosis exactly 1 (excess would be -2).
    assert m.sample_skewness([-1.0, 1.0] * 10) == pytest.approx(0.0, abs=1e-15)
    assert m.sample_kurtosis([-1.0, 1.0] * 10) == pytest.approx(1.0)
    for fn in (m.sample_skewness, m.sample_kurtosis):
        assert math.isnan(fn([])) and math.isnan(fn([0.01])) and math.isnan(fn([0.003] * 9))


# ---------------------------------------------------------------------------------------------------------
# PSR, MinTRL, DSR, MinBTL
# ---------------------------------------------------------------------------------------------------------


def test_psr_reduces_to_the_normal_iid_sharpe_standard_error() -> None:
    # For normal IID returns the estimated SR has variance (1 + SR^2 / 2) / (n - 1) (Lo 2002, Mertens 2002);
    # the PSR formula gives that only with *ordinary* kurtosis 3 (with excess kurtosis 0 it would not).
    for sr, bench, n in ((0.1, 0.0, 250), (0.05, 0.02, 1000), (-0.03, 0.01, 60)):
        z = (sr - bench) * math.sqrt(n - 1) / math.sqrt(1 + sr * sr / 2)
        assert m.probabilistic_sharpe_ratio(sr, bench, n, 0.0, 3.0) == pytest.approx(NORMAL.cdf(z), rel=1e-12)
    assert m.probabilistic_sharpe_ratio(0.08, 0.08, 100, -1.0, 6.0) == 0.5
    # Negative skew and fat tails widen the SR's error band, so a positive edge is less certain.
    assert m.probabilistic_sharpe_ratio(0.1, 0.0, 250, -1.0, 8.0) < m.probabilistic_sharpe_ratio(
        0.1, 0.0, 250
    )
    assert math.isnan(m.probabilistic_sharpe_ratio(0.1, 0.0, 1))
    assert math.isnan(m.probabilistic_sharpe_ratio(0.1, 0.0, 100, float("nan"), 3.0))
    assert math.isnan(m.probabilistic_sharpe_ratio(1.0, 0.0, 100, 3.0, 1.0))  # impossible moments


def test_sharpe_estimator_variance_matches_the_psr_denominator_by_monte_carlo() -> None:
    """The PSR's variance term (1 - g3 SR + (g4 - 1)/4 SR^2) / n, checked on non-normal returns."""
    rng = np.random.default_rng(20120701)
    n, reps = 400, 5000
    # Negatively skewed: r = mu - sigma (E - 1), E ~ Exp(1): skewness -2, ordinary kurtosis 9, SR = mu/sigma.
    sr = 0.5
    r = sr - (rng.standard_exponential((reps, n)) - 1.0)
    est = r.mean(axis=1) / r.std(axis=1, ddof=1)
    predicted = 1 - (-2.0) * sr + (9.0 - 1.0) / 4 * sr**2  # 2.5 (a sign error on skew would give 0.5)
    assert est.var() * n == pytest.approx(predicted, rel=0.07)
    # Laplace (skewness 0, ordinary kurtosis 6) at SR 1: 2.25, where excess kurtosis would give 1.5.
    sr = 1.0
    r = sr + rng.laplace(0.0, 1 / math.sqrt(2), (reps, n))
    est = r.mean(axis=1) / r.std(axis=1, ddof=1)
    assert est.var() * n == pytest.approx(1 + (6.0 - 1.0) / 4 * sr**2, rel=0.07)


def test_psr_is_calibrated_on_skewed_returns() -> None:
    """At the true SR, PSR computed from each sample's own moments exceeds 0.95 about 5 % of the time."""
    rng = np.random.default_rng(7)
    reps, n, sr_true = 4000, 500, 0.1
    r = sr_true - (rng.standard_exponential((reps, n)) - 1.0)  # skewness -2, kurtosis 9
    mean = r.mean(axis=1)
    dev = r - mean[:, None]
    m2 = (dev**2).mean(axis=1)
    skew = (dev**3).mean(axis=1) / m2**1.5
    kurt = (dev**4).mean(axis=1) / m2**2
    sr = mean / r.std(axis=1, ddof=1)
    psr = np.array(
        [
            m.probabilistic_sharpe_ratio(*v)
            for v in zip(sr, [sr_true] * reps, [n] * reps, skew, kurt, strict=True)
        ]
    )
    assert np.mean(psr > 0.95) == pytest.approx(0.05, abs=0.02)
    assert np.mean(psr > 0.5) == pytest.approx(0.5, abs=0.05)


def test_min_track_record_length_inverts_psr() -> None:
    for sr, bench, skew, kurt, prob in ((0.1, 0.0, -0.5, 5.0, 0.95), (0.2, 0.05, 0.3, 3.5, 0.99)):
        n = m.min_track_record_length(sr, bench, skew, kurt, prob)
        assert m.probabilistic_sharpe_ratio(sr, bench, n, skew, kurt) == pytest.approx(prob, rel=1e-12)
    assert m.min_track_record_length(0.05, 0.05) == math.inf
    assert m.min_track_record_length(0.01, 0.05) == math.inf
    assert math.isnan(m.min_track_record_length(0.1, 0.0, prob=1.0))
    # More negative skew or fatter tails need a longer track record.
    assert m.min_track_record_length(0.1, 0.0, -1.0, 3.0) > m.min_track_record_length(0.1, 0.0, 0.0, 3.0)
    assert m.min_track_record_length(0.1, 0.0, 0.0, 10.0) > m.min_track_record_length(0.1, 0.0, 0.0, 3.0)


def test_deflated_sharpe_ratio_reproduces_the_papers_numerical_example() -> None:
    """Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", section "A numerical example".

    N = 100 independent trials whose annualised SRs have variance 1/2; the chosen strategy's annualised SR is
    2.5 over 5 years of daily data (T = 1250, 250 days a year), skewness -3, kurtosis 10. The paper finds
    E[max SR] ~ 0.1132 per day and DSR ~ 0.9004.
    """
    var_daily = 0.5 / 250  # annualised variance -> daily
    sr_daily = 2.5 / math.sqrt(250)
    assert m.expected_max_sharpe(100, var_daily) == pytest.approx(0.1132, abs=5e-5)
    assert m.deflated_sharpe_ratio(sr_daily, 100, var_daily, 1250, -3.0, 10.0) == pytest.approx(
        0.9004, abs=5e-5
    )
    # DSR is the PSR against that benchmark.
    sr0 = m.expected_max_sharpe(100, var_daily)
    assert m.deflated_sharpe_ratio(
        sr_daily, 100, var_daily, 1250, -3.0, 10.0
    ) == m.probabilistic_sharpe_ratio(sr_daily, sr0, 1250, -3.0, 10.0)


def test_expected_max_sharpe_matches_monte_carlo() -> None:
    rng = np.random.default_rng(2014)
    for n_trials in (10, 100):
        draws = rng.normal(0.0, math.sqrt(0.3), (20000, n_trials)).max(axis=1)
        # The formula is an approximation for N >> 1: within 3 % at N = 10, 1.5 % at N = 100.
        tol = 0.03 if n_trials == 10 else 0.015
        assert m.expected_max_sharpe(n_trials, 0.3) == pytest.approx(draws.mean(), rel=tol)
    assert m.expected_max_sharpe(1, 0.3) == 0.0
    assert m.expected_max_sharpe(50, 0.0) == 0.0
    with pytest.raises(ValueError):
        m.expected_max_sharpe(0, 0.3)
    with pytest.raises(ValueError):
        m.expected_max_sharpe(10, -1.0)


def test_min_backtest_length_paper_example_and_bound() -> None:
    # Bailey, Borwein, López de Prado & Zhu (2014), "Pseudo-Mathematics and Financial Charlatanism": with an
    # expected maximum SR of 1, five years of data allow no more than 45 independent configurations.
    assert m.min_backtest_length(45) == pytest.approx(5.0, abs=0.05)
    assert m.min_backtest_length(46) > 5.0 > m.min_backtest_length(44)
    previous = 0.0
    for n_trials in (2, 5, 10, 45, 100, 1000):
        years = m.min_backtest_length(n_trials)
        assert previous < years < 2 * math.log(n_trials)  # the paper's upper bound 2 ln N / E[max]^2
        previous = years
    assert m.min_backtest_length(45, 2.0) == pytest.approx(m.min_backtest_length(45) / 4)
    assert m.min_backtest_length(1) == 0.0


def test_min_backtest_length_by_monte_carlo() -> None:
    """Skill-less daily strategies over MinBTL years: the best of N shows an annualised SR of about 1."""
    rng = np.random.default_rng(45)
    n_trials, days = 45, round(m.min_backtest_length(45) * 252)
    maxima = []
    for _ in range(10):
        r = rng.standard_normal((20, days, n_trials))
        sr = r.mean(axis=1) / r.std(axis=1, ddof=1) * math.sqrt(252)
        maxima.append(sr.max(axis=1))
    assert float(np.mean(maxima)) == pytest.approx(1.0, rel=0.06)


# ---------------------------------------------------------------------------------------------------------
# PBO by CSCV
# ---------------------------------------------------------------------------------------------------------


def _py_cscv(matrix: np.ndarray, n_blocks: int, metric) -> dict:
    """CSCV written out with loops: the paper's algorithm, step by step."""
    t_rows, n_configs = matrix.shape
    size = t_rows // n_blocks
    rows = matrix[t_rows - size * n_blocks :].tolist()
    blocks = [rows[i * size : (i + 1) * size] for i in range(n_blocks)]
    logits, chosen, is_vals, oos_vals = [], [], [], []
    for combo in itertools.combinations(range(n_blocks), n_blocks // 2):
        train = [row for b in range(n_blocks) if b in combo for row in blocks[b]]
        test = [row for b in range(n_blocks) if b not in combo for row in blocks[b]]
        r_is = [metric([row[j] for row in train]) for j in range(n_configs)]
        r_oos = [metric([row[j] for row in test]) for j in range(n_configs)]
        best = max(range(n_configs), key=lambda j: r_is[j])
        rank = 1 + sum(1 for j in range(n_configs) if r_oos[j] < r_oos[best])
        w = rank / (n_configs + 1)
        logits.append(math.log(w / (1 - w)))
        chosen.append(best)
        is_vals.append(r_is[best])
        oos_vals.append(r_oos[best])
    xbar, ybar = statistics.mean(is_vals), statistics.mean(oos_vals)
    slope = sum((x - xbar) * (y - ybar) for x, y in zip(is_vals, oos_vals, strict=True)) / sum(
        (x - xbar) ** 2 for x in is_vals
    )
    return {
        "pbo": sum(1 for lam in logits if lam <= 0) / len(logits),
        "logits": logits,
        "selected": chosen,
        "is": is_vals,
        "oos": oos_vals,
        "slope": slope,
        "intercept": ybar - slope * xbar,
        "loss": sum(1 for y in oos_vals if y < 0) / len(oos_vals),
    }


@pytest.mark.parametrize("use_default_metric", [True, False])
def test_pbo_matches_a_plain_python_cscv(use_default_metric: bool) -> None:
    rng = np.random.default_rng(17)
    # 63 rows, 6 blocks of 10: the oldest 3 rows are dropped. Mild drifts make the selection non-trivial.
    matrix = rng.normal(0.0, 0.01, (63, 5)) + np.linspace(-0.001, 0.002, 5)
    if use_default_metric:
        result = m.probability_of_backtest_overfitting(matrix, n_blocks=6)
        oracle = _py_cscv(matrix, 6, lambda xs: _py_sharpe(xs, 252))
    else:
        result = m.probability_of_backtest_overfitting(matrix, n_blocks=6, metric=lambda x: x.mean(axis=0))
        oracle = _py_cscv(matrix, 6, statistics.mean)
    assert result.n_splits == math.comb(6, 3) == len(oracle["logits"])
    assert result.rows_used == 60 and result.n_blocks == 6 and result.n_configs == 5
    np.testing.assert_array_equal(result.selected, oracle["selected"])
    np.testing.assert_allclose(result.logits, oracle["logits"], rtol=1e-12)
    np.testing.assert_allclose(result.is_metric, oracle["is"], rtol=1e-10)
    np.testing.assert_allclose(result.oos_metric, oracle["oos"], rtol=1e-10)
    assert result.pbo == oracle["pbo"]
    assert result.degradation_slope == pytest.approx(oracle["slope"], rel=1e-9)
    assert result.degradation_intercept == pytest.approx(oracle["intercept"], rel=1e-9, abs=1e-15)
    assert result.prob_oos_loss == oracle["loss"]
    np.testing.assert_allclose(result.oos_relative_rank, 1 / (1 + np.exp(-result.logits)), rtol=1e-12)


def test_pbo_fast_sharpe_path_equals_the_generic_path() -> None:
    rng = np.random.default_rng(8)
    matrix = rng.normal(0.0002, 0.01, (203, 12))
    fast = m.probability_of_backtest_overfitting(matrix, n_blocks=8)
    generic = m.probability_of_backtest_overfitting(matrix, n_blocks=8, metric=functools.partial(m.sharpe))
    np.testing.assert_array_equal(fast.selected, generic.selected)
    np.testing.assert_allclose(fast.is_metric, generic.is_metric, rtol=1e-11)
    np.testing.assert_allclose(fast.oos_metric, generic.oos_metric, rtol=1e-11)
    assert fast.pbo == generic.pbo


def test_pbo_is_zero_for_one_truly_dominant_configuration() -> None:
    rng = np.random.default_rng(9)
    matrix = rng.normal(0.0, 0.01, (800, 30))
    matrix[:, 7] += 0.004  # a daily SR of 0.4: best in every half of the data
    result = m.probability_of_backtest_overfitting(matrix, n_blocks=16)
    assert result.n_splits == 12870
    assert result.pbo == 0.0
    assert (result.selected == 7).all()
    np.testing.assert_allclose(result.oos_relative_rank, 30 / 31)
    assert result.prob_oos_loss == 0.0


def test_pbo_of_pure_noise_averages_one_half() -> None:
    # With no skill the OOS rank of the in-sample winner is uniform, so E[PBO] = 1/2 exactly for even N.
    pbos = [
        m.probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 0.01, (80, 10)), 8).pbo
        for seed in range(600)
    ]
    assert float(np.mean(pbos)) == pytest.approx(0.5, abs=0.04)


def test_pbo_ranks_duplicate_configurations_by_their_average_rank() -> None:
    # Two identical configurations (parameters that trade the same way) that dominate the rest: the first one
    # is selected in-sample, and out-of-sample the pair shares ranks N - 1 and N, i.e. N - 1/2 each.
    rng = np.random.default_rng(13)
    matrix = rng.normal(0.0, 0.01, (160, 8))
    matrix[:, 3] += 0.01
    matrix[:, 5] = matrix[:, 3]
    result = m.probability_of_backtest_overfitting(matrix, n_blocks=8)
    assert (result.selected == 3).all()
    np.testing.assert_allclose(result.oos_relative_rank, (8 - 0.5) / 9)


def test_pbo_handles_undefined_metrics_and_bad_input() -> None:
    rng = np.random.default_rng(10)
    matrix = rng.normal(0.0, 0.01, (64, 4))
    matrix[:, 2] = 0.0  # never trades: Sharpe undefined in every half, ranks below everything
    result = m.probability_of_backtest_overfitting(matrix, n_blocks=4)
    assert not (result.selected == 2).any()
    assert np.isfinite(result.logits).all()
    with pytest.raises(ValueError, match="even"):
        m.probability_of_backtest_overfitting(matrix, n_blocks=5)
    with pytest.raises(ValueError, match="2 configurations"):
        m.probability_of_backtest_overfitting(matrix[:, :1], n_blocks=4)
    with pytest.raises(ValueError, match="too few"):
        m.probability_of_backtest_overfitting(matrix[:3], n_blocks=4)
    bad = matrix.copy()
    bad[5, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        m.probability_of_backtest_overfitting(bad, n_blocks=4)


def test_pbo_result_is_frozen_and_deterministic() -> None:
    matrix = np.random.default_rng(12).normal(0, 0.01, (96, 6))
    a = m.probability_of_backtest_overfitting(matrix, n_blocks=6)
    b = m.probability_of_backtest_overfitting(matrix.copy(), n_blocks=6)
    np.testing.assert_array_equal(a.logits, b.logits)
    assert a.pbo == b.pbo
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.pbo = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        a.logits[0] = 0.0
