"""Performance metrics, and the statistics that say how much a backtest's Sharpe ratio can be trusted.

Conventions (every function follows them unless its docstring says otherwise):

* ``returns`` are per-period *simple* returns as fractions (0.01 = +1 %), one per bar, oldest first. A NaN
  marks a period without a return (e.g. the first bar) and is dropped; ``±inf`` is refused with
  :class:`~trader.errors.DataError`.
* Annualised figures use ``periods_per_year`` (see :func:`periods_per_year`); "per period" figures are per
  bar. Fractions are fractions, never percent.
* A metric that is undefined for its input (an empty series, a zero denominator such as the Sharpe ratio of a
  constant series or the profit factor without a losing trade) is ``nan``; nothing here raises for an empty
  or constant series.
* The overfitting statistics use the papers' definitions exactly: Sharpe ratios *per period* (not
  annualised), sample skewness and *ordinary* kurtosis (a normal distribution has 3, not 0), both from
  population moments.

References:

* Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2): PSR, MinTRL.
* Bailey & López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest
  Overfitting and Non-Normality", Journal of Portfolio Management 40(5): expected maximum Sharpe, DSR.
* Bailey, Borwein, López de Prado & Zhu (2014), "Pseudo-Mathematics and Financial Charlatanism: The Effects
  of Backtest Overfitting on Out-of-Sample Performance", Notices of the AMS 61(5): MinBTL.
* Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest Overfitting", Journal of
  Computational Finance 20(4): PBO by combinatorially symmetric cross-validation (CSCV).

Example::

    import numpy as np
    from trader.metrics import summarize, deflated_sharpe_ratio

    rets = np.random.default_rng(0).normal(0.0005, 0.01, 1000)
    summary = summarize(rets, interval="1d")
    print(summary["sharpe"], summary["max_drawdown"])
    # The chosen trial's SR per day (2.5 a year), 100 trials whose daily SRs have variance 0.5 / 250
    print(deflated_sharpe_ratio(2.5 / 250**0.5, 100, 0.5 / 250, 1250, -3.0, 10.0))   # ~0.90
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike

from trader.errors import DataError, SchemaError

__all__ = [
    "DEFAULT_PERIODS_PER_YEAR",
    "EULER_MASCHERONI",
    "SUMMARY_KEYS",
    "PBOResult",
    "avg_trade_return",
    "cagr",
    "calmar",
    "deflated_sharpe_ratio",
    "drawdown_curve",
    "equity_curve",
    "expected_max_sharpe",
    "exposure",
    "max_drawdown",
    "max_drawdown_duration",
    "median_trade_return",
    "min_backtest_length",
    "min_track_record_length",
    "normal_cdf",
    "normal_ppf",
    "periods_per_year",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "profit_factor",
    "sample_kurtosis",
    "sample_skewness",
    "sharpe",
    "sortino",
    "summarize",
    "total_return",
    "turnover",
    "volatility",
    "win_rate",
]

EULER_MASCHERONI: Final = 0.5772156649015329
#: Default annualisation of the functions below: daily bars, 252 sessions a year.
DEFAULT_PERIODS_PER_YEAR: Final = 252.0
NAN: Final = float("nan")

# Bar length in minutes of each interval; "1d" is one whole session. Kept in step with
# trader.data.schema.INTERVALS (a test checks) without importing polars/pyarrow here.
_BAR_MINUTES: Final[Mapping[str, int | None]] = {"1m": 1, "5m": 5, "1h": 60, "1d": None}

# A standard deviation this small relative to the mean is rounding noise of a constant series (the mean of n
# equal floats is not always exactly that float), not risk; treating it as risk would give a Sharpe of 1e15.
_CONSTANT_RTOL: Final = 1e-13

# Splits of the PBO evaluated per matrix product: bounds temporary memory to a few (chunk x N) arrays.
_PBO_CHUNK: Final = 2048


# --------------------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------------------


def _as_float_array(values: ArrayLike, name: str, ndim: tuple[int, ...] = (1,)) -> np.ndarray:
    """``values`` as a float64 array of an allowed dimension; ``±inf`` is refused (NaN is allowed)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must be {' or '.join(f'{d}-D' for d in ndim)}, got shape {arr.shape}")
    if np.isinf(arr).any():
        where = int(np.flatnonzero(np.isinf(arr.ravel()))[0])
        raise DataError(f"{name} holds an infinite value at flat index {where}; values must be finite")
    return arr


def _clean(returns: ArrayLike, name: str = "returns") -> np.ndarray:
    """1-D float64 returns with NaN periods dropped."""
    arr = _as_float_array(returns, name)
    return arr[~np.isnan(arr)]


def _rf_per_period(risk_free: float, ppy: float) -> float:
    """Annual risk-free rate (fraction) -> per-period rate, compounded so that ``ppy`` periods give a year."""
    if risk_free == 0.0:
        return 0.0
    return math.expm1(math.log1p(risk_free) / ppy)


def _check_ppy(ppy: float) -> float:
    if not (ppy > 0 and math.isfinite(ppy)):
        raise ValueError(f"periods_per_year must be a positive finite number, got {ppy!r}")
    return float(ppy)


def _scalar_or_array(values: np.ndarray) -> float | np.ndarray:
    return float(values) if values.ndim == 0 else values


# --------------------------------------------------------------------------------------------------------
# Annualisation
# --------------------------------------------------------------------------------------------------------


def periods_per_year(
    interval: str, sessions_per_year: float = 252, minutes_per_session: float = 390
) -> float:
    """Bars of ``interval`` in a year, for annualising per-bar figures.

    Rule: a year is ``sessions_per_year`` sessions of ``minutes_per_session`` minutes, and an intraday bar
    counts as the fraction of a session it spans: ``sessions_per_year * minutes_per_session / bar_minutes``.
    So a regular 6.5 h (390 min) US session gives 390 one-minute bars, 78 five-minute bars and 6.5 hourly
    bars (the half-hour bar that closes the session counts as half a bar, because variance accrues with
    time, not with bar count); "1d" is one bar per session. Defaults: 252 sessions, 390 minutes.

    Example::

        periods_per_year("1d")   # 252.0
        periods_per_year("1h")   # 1638.0 = 252 * 6.5
        periods_per_year("1m")   # 98280.0 = 252 * 390
    """
    if interval not in _BAR_MINUTES:  # the same error the bar schema raises for the same mistake
        raise SchemaError(f"unknown bar interval {interval!r}; use one of {', '.join(_BAR_MINUTES)}")
    if not (sessions_per_year > 0 and minutes_per_session > 0):
        raise ValueError("sessions_per_year and minutes_per_session must be positive")
    bar_minutes = _BAR_MINUTES[interval]
    if bar_minutes is None:
        return float(sessions_per_year)
    return float(sessions_per_year) * float(minutes_per_session) / bar_minutes


# --------------------------------------------------------------------------------------------------------
# Return and risk metrics
# --------------------------------------------------------------------------------------------------------


def _growth(r: np.ndarray) -> float:
    """Compounded growth factor prod(1 + r); summed in log space when every return is above -100 %."""
    if r.size == 0:
        return 1.0
    if (r > -1.0).all():
        return math.exp(float(np.log1p(r).sum()))
    return float(np.prod(1.0 + r))


def equity_curve(returns: ArrayLike, initial: float = 1.0) -> np.ndarray:
    """Equity after each period, compounding ``returns`` from ``initial`` (same units as ``initial``).

    NaN returns count as flat periods here, so the curve keeps the length and alignment of ``returns``.

    Example::

        equity_curve([0.1, -0.5])   # array([1.1 , 0.55])
    """
    r = _as_float_array(returns, "returns")
    return initial * np.cumprod(1.0 + np.nan_to_num(r, nan=0.0))


def total_return(returns: ArrayLike) -> float:
    """Compounded return over the whole series, a fraction (``prod(1 + r) - 1``); NaN when empty.

    Example::

        total_return([0.1, 0.1])   # 0.21
    """
    r = _clean(returns)
    if r.size == 0:
        return NAN
    return _growth(r) - 1.0


def cagr(returns: ArrayLike, *, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> float:
    """Compound annual growth rate, a fraction per year, from the number of periods and ``periods_per_year``.

    ``(prod(1 + r)) ** (periods_per_year / n) - 1``. -1.0 when the equity ends at zero, NaN when it ends
    below zero (a loss beyond the whole account has no annual rate) or the series is empty.

    Example::

        cagr([0.01] * 12, periods_per_year=12)   # 0.1268... = 1.01**12 - 1
    """
    ppy = _check_ppy(periods_per_year)
    r = _clean(returns)
    if r.size == 0:
        return NAN
    growth = _growth(r)
    if growth < 0 or math.isnan(growth):
        return NAN
    if growth == 0:
        return -1.0
    try:
        return math.expm1(math.log(growth) * ppy / r.size)
    except OverflowError:
        return math.inf


def _column_moments(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and sample standard deviation (ddof=1) of each column (or of a 1-D series), NaN-aware.

    Undefined values (fewer than two observations) are NaN; a standard deviation that is rounding noise of a
    constant series is 0.
    """
    ok = ~np.isnan(r)
    count = ok.sum(axis=0)
    filled = np.where(ok, r, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=0) / count
        dev = np.where(ok, r - mean, 0.0)
        var = (dev * dev).sum(axis=0) / (count - 1)
    std = np.sqrt(var)
    std = np.where(count >= 2, std, np.nan)
    std = np.where(std <= _CONSTANT_RTOL * np.abs(mean), 0.0, std)
    return count, mean, std


def volatility(returns: ArrayLike, *, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> float:
    """Annualised volatility: sample std (ddof=1) of per-period returns x sqrt(periods_per_year).

    A fraction per sqrt(year); 0.0 for a constant series, NaN for fewer than two returns.

    Example::

        volatility([0.01, -0.01, 0.01, -0.01], periods_per_year=252)   # 0.1833 = 0.011547 * sqrt(252)
    """
    ppy = _check_ppy(periods_per_year)
    _, _, std = _column_moments(_clean(returns))
    return float(std * math.sqrt(ppy))


def sharpe(
    returns: ArrayLike, *, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, risk_free: float = 0.0
) -> float | np.ndarray:
    """Annualised Sharpe ratio: mean / sample std (ddof=1) of per-period excess returns x sqrt(ppy).

    ``risk_free`` is an annual rate (fraction), turned into a per-period rate by compounding
    (``(1 + rf) ** (1 / periods_per_year) - 1``). NaN when fewer than two returns or when the excess returns
    are constant (zero risk: the ratio is undefined, not infinite). A 2-D ``returns`` (periods x
    configurations) gives one ratio per column, NaNs dropped per column; that form is what
    :func:`probability_of_backtest_overfitting` uses.

    The per-period Sharpe ratio the PSR/DSR formulas want is ``sharpe(r, periods_per_year=1)``.

    Example::

        sharpe([0.01, -0.005, 0.007, 0.002])                      # annualised with 252 periods a year
        sharpe([0.01, -0.005, 0.007, 0.002], periods_per_year=1)  # per period: 0.5337...
    """
    ppy = _check_ppy(periods_per_year)
    r = _as_float_array(returns, "returns", ndim=(1, 2))
    if r.ndim == 1:
        r = r[~np.isnan(r)]
    excess = r - _rf_per_period(risk_free, ppy)
    _, mean, std = _column_moments(excess)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(std > 0, mean / np.where(std > 0, std, 1.0), np.nan) * math.sqrt(ppy)
    return _scalar_or_array(np.asarray(ratio, dtype=np.float64))


def sortino(
    returns: ArrayLike, *, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR, risk_free: float = 0.0
) -> float:
    """Annualised Sortino ratio: mean excess return / downside deviation x sqrt(periods_per_year).

    The downside deviation is the target semideviation ``sqrt(mean(min(r - t, 0) ** 2))`` over *all*
    periods (Sortino & Price 1994), with the target ``t`` the per-period risk-free rate (see :func:`sharpe`).
    NaN when empty or when no period falls below the target (no downside: undefined, not infinite).

    Example::

        sortino([0.02, -0.01, 0.01, -0.01], periods_per_year=1)   # 0.3536 = 0.0025 / sqrt(0.0002 / 4)
    """
    ppy = _check_ppy(periods_per_year)
    r = _clean(returns)
    if r.size == 0:
        return NAN
    target = _rf_per_period(risk_free, ppy)
    shortfall = np.minimum(r - target, 0.0)
    downside = math.sqrt(float(np.mean(shortfall * shortfall)))
    if downside == 0.0:
        return NAN
    return float(np.mean(r - target)) / downside * math.sqrt(ppy)


def _equity_from_one(r: np.ndarray) -> np.ndarray:
    """Equity with the starting 1.0 included (length n + 1), so that a loss in the first period counts."""
    return np.concatenate(([1.0], np.cumprod(1.0 + r)))


def drawdown_curve(returns: ArrayLike) -> np.ndarray:
    """Drawdown after each period, a positive fraction below the running peak of equity (starting at 1).

    NaN returns count as flat periods (the curve keeps the alignment of ``returns``).

    Example::

        drawdown_curve([0.1, -0.5, 0.2])   # array([0. , 0.5, 0.4])
    """
    r = np.nan_to_num(_as_float_array(returns, "returns"), nan=0.0)
    equity = _equity_from_one(r)
    return (1.0 - equity / np.maximum.accumulate(equity))[1:]


def max_drawdown(returns: ArrayLike) -> float:
    """Largest fall of equity from a running peak, as a positive fraction of that peak (0.25 = -25 %).

    Equity starts at 1 before the first return, so a first-period loss is a drawdown. 0.0 when equity never
    falls; NaN for an empty series.

    Example::

        max_drawdown([0.1, -0.5, 0.2])   # 0.5
    """
    r = _clean(returns)
    if r.size == 0:
        return NAN
    equity = _equity_from_one(r)
    return float((1.0 - equity / np.maximum.accumulate(equity)).max())


def max_drawdown_duration(returns: ArrayLike) -> float:
    """Length, in periods, of the maximum drawdown: from its peak to the recovery of that peak, or to the end.

    The peak is the last period at which equity stood at the high it later fell from most deeply; recovery is
    the first later period whose equity is at least that high. 0 when there is no drawdown; NaN when empty.
    Returned as a float so it sits in the metrics dict with the others.

    Example::

        max_drawdown_duration([-0.1, 0.05, 0.1, -0.01])   # 3.0: from the start to the third period
    """
    r = _clean(returns)
    if r.size == 0:
        return NAN
    equity = _equity_from_one(r)
    peak = np.maximum.accumulate(equity)
    dd = 1.0 - equity / peak
    trough = int(np.argmax(dd))
    if dd[trough] <= 0.0:
        return 0.0
    high = peak[trough]
    # peak[] copies equity values, so exact equality finds where that high was set (last time before trough).
    start = int(np.flatnonzero(equity[: trough + 1] == high)[-1])
    recovered = np.flatnonzero(equity[trough:] >= high)
    end = trough + int(recovered[0]) if recovered.size else equity.size - 1
    return float(end - start)


def calmar(returns: ArrayLike, *, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> float:
    """Calmar ratio over the whole series: :func:`cagr` / :func:`max_drawdown`; NaN without a drawdown.

    (The classic Calmar uses the last 36 months; here it is the full sample passed in.)

    Example::

        calmar(np.random.default_rng(1).normal(0.001, 0.01, 756))
    """
    dd = max_drawdown(returns)
    if not dd > 0:
        return NAN
    return cagr(returns, periods_per_year=periods_per_year) / dd


# --------------------------------------------------------------------------------------------------------
# Trade metrics, exposure and turnover
# --------------------------------------------------------------------------------------------------------


def _trade_returns(trades: Any) -> np.ndarray:
    """Per-trade returns from an array-like, or from a frame/mapping with a ``return`` column."""
    if hasattr(trades, "columns") or isinstance(trades, Mapping):
        columns = list(trades.columns) if hasattr(trades, "columns") else list(trades)
        if "return" not in columns:
            raise ValueError(
                f"trade list needs a 'return' column (per-trade return, fraction); has {columns}"
            )
        trades = trades["return"]
        if hasattr(trades, "to_numpy"):
            trades = trades.to_numpy()
    return _clean(trades, "trade returns")


def win_rate(trades: ArrayLike) -> float:
    """Share of trades with a positive return (a fraction; a flat trade is not a win). NaN without trades.

    ``trades``: per-trade returns (fractions) or P&L (currency), or a frame with a ``return`` column.

    Example::

        win_rate([0.02, -0.01, 0.0, 0.03])   # 0.5
    """
    t = _trade_returns(trades)
    return float(np.mean(t > 0)) if t.size else NAN


def avg_trade_return(trades: ArrayLike) -> float:
    """Mean per-trade return (fraction, or currency if P&L is passed). NaN without trades.

    Example::

        avg_trade_return([0.02, -0.01, 0.0, 0.03])   # 0.01
    """
    t = _trade_returns(trades)
    return float(np.mean(t)) if t.size else NAN


def median_trade_return(trades: ArrayLike) -> float:
    """Median per-trade return (fraction, or currency if P&L is passed). NaN without trades.

    Example::

        median_trade_return([0.02, -0.01, 0.0, 0.03])   # 0.01
    """
    t = _trade_returns(trades)
    return float(np.median(t)) if t.size else NAN


def profit_factor(trades: ArrayLike) -> float:
    """Gross gains / gross losses of the trades (sum of positive / -sum of negative). NaN without a loss.

    Works on per-trade returns or currency P&L alike (summing returns weights trades equally). 0.0 when
    there are losses but no gains.

    Example::

        profit_factor([0.02, -0.01, 0.03, -0.01])   # 2.5
    """
    t = _trade_returns(trades)
    losses = -float(t[t < 0].sum())
    if losses <= 0:
        return NAN
    return float(t[t > 0].sum()) / losses


def exposure(positions: ArrayLike) -> float:
    """Share of periods holding a position (a fraction in [0, 1]). NaN when empty.

    ``positions``: one value per period (position size, weight or gross exposure; only ``!= 0`` matters) or
    a 2-D periods x symbols array (a period counts when any symbol is held). NaN entries count as flat.

    Example::

        exposure([0, 1.5, -2, 0])   # 0.5
    """
    p = np.nan_to_num(_as_float_array(positions, "positions", ndim=(1, 2)), nan=0.0)
    if p.shape[0] == 0:
        return NAN
    held = p != 0 if p.ndim == 1 else (p != 0).any(axis=1)
    return float(np.mean(held))


# summarize() has a parameter named ``exposure``; this name reaches the function from inside it.
_exposure_share = exposure


def turnover(
    traded_notional: ArrayLike, equity: ArrayLike, *, periods_per_year: float = DEFAULT_PERIODS_PER_YEAR
) -> float:
    """Annualised turnover: sum of |traded notional| / average equity, scaled to a year.

    ``traded_notional``: one value per period (currency, sign ignored: buys and sells both count);
    ``equity``: the account's equity curve in the same currency (its mean over finite values is the
    denominator). The result is in multiples of equity per year: 2.0 means the book was traded twice over in
    a year. ``sum|traded| / mean(equity) * periods_per_year / n_periods``; NaN when empty or equity <= 0.

    Example::

        turnover([100.0, 0.0, 100.0, 0.0], [1000.0] * 4, periods_per_year=4)   # 0.2 a year
    """
    ppy = _check_ppy(periods_per_year)
    traded = np.nan_to_num(_as_float_array(traded_notional, "traded_notional"), nan=0.0)
    eq = _clean(equity, "equity")
    if traded.size == 0 or eq.size == 0:
        return NAN
    avg_equity = float(np.mean(eq))
    if not avg_equity > 0:
        return NAN
    return float(np.abs(traded).sum()) / avg_equity * ppy / traded.size


# --------------------------------------------------------------------------------------------------------
# Distribution helpers
# --------------------------------------------------------------------------------------------------------


def _central_moments(returns: ArrayLike) -> tuple[float, float, float, int]:
    r = _clean(returns)
    if r.size < 2:
        return NAN, NAN, NAN, int(r.size)
    dev = r - r.mean()
    sq = dev * dev  # products, not dev**3 / dev**4: numpy's pow is ~10x slower on long minute series
    m2 = float(np.mean(sq))
    if m2 <= (_CONSTANT_RTOL * abs(float(r.mean()))) ** 2:
        return 0.0, 0.0, 0.0, int(r.size)
    return m2, float(np.mean(sq * dev)), float(np.mean(sq * sq)), int(r.size)


def _skew_kurt(returns: ArrayLike) -> tuple[float, float]:
    """(:func:`sample_skewness`, :func:`sample_kurtosis`) from one pass of central moments."""
    m2, m3, m4, _ = _central_moments(returns)
    if not m2 > 0:
        return NAN, NAN
    return m3 / m2**1.5, m4 / m2**2


def sample_skewness(returns: ArrayLike) -> float:
    """Sample skewness from population moments, ``m3 / m2**1.5`` (m_k = mean((r - mean)**k)), as the papers.

    This is the plug-in estimator (``scipy.stats.skew(bias=True)``); NaN for fewer than two returns or a
    constant series.

    Example::

        sample_skewness([0.0, 0.0, 0.0, 1.0])   # 1.1547
    """
    m2, m3, _, _ = _central_moments(returns)
    if not m2 > 0:
        return NAN
    return m3 / m2**1.5


def sample_kurtosis(returns: ArrayLike) -> float:
    """Sample *ordinary* kurtosis (normal = 3, not excess) from population moments, ``m4 / m2**2``.

    As the papers use it: the plug-in estimator (``scipy.stats.kurtosis(fisher=False, bias=True)``); NaN for
    fewer than two returns or a constant series.

    Example::

        sample_kurtosis([0.0, 0.0, 0.0, 1.0])   # 2.3333
    """
    m2, _, m4, _ = _central_moments(returns)
    if not m2 > 0:
        return NAN
    return m4 / m2**2


_SQRT2: Final = math.sqrt(2.0)
_SQRT2PI: Final = math.sqrt(2.0 * math.pi)


def normal_cdf(x: float) -> float:
    """Standard normal CDF Phi(x), via ``erfc`` so that the lower tail keeps full relative precision.

    Example::

        normal_cdf(1.959963984540054)   # 0.975
    """
    return 0.5 * math.erfc(-x / _SQRT2)


# Acklam's rational approximation of the normal quantile (relative error < 1.15e-9), refined below.
_PPF_A: Final = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_PPF_B: Final = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_PPF_C: Final = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_PPF_D: Final = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_PPF_LOW: Final = 0.02425


def _ppf_lower(p: float) -> float:
    """Quantile for 0 < p <= 0.5 (x <= 0), where Phi(x) is computed without cancellation."""
    if p < _PPF_LOW:
        q = math.sqrt(-2.0 * math.log(p))
        c, d = _PPF_C, _PPF_D
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0
        )
    else:
        q = p - 0.5
        r = q * q
        a, b = _PPF_A, _PPF_B
        x = (
            (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
            * q
            / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0)
        )
    # Halley steps on Phi(x) - p (cubic convergence): 1e-9 -> machine precision in one, the second is a guard.
    for _ in range(2):
        pdf = math.exp(-0.5 * x * x) / _SQRT2PI
        if pdf == 0.0:  # p below ~1e-300: the approximation is already as good as a double allows
            break
        u = (normal_cdf(x) - p) / pdf
        x -= u / (1.0 + 0.5 * x * u)
    return x


def normal_ppf(p: float) -> float:
    """Standard normal quantile Phi^-1(p), accurate to about 1e-15 relative (tested against the stdlib).

    Acklam's rational approximation refined by Halley steps; the upper half uses the symmetry
    ``Phi^-1(p) = -Phi^-1(1 - p)`` (``1 - p`` is exact there). ``-inf``/``inf`` at 0/1, NaN outside [0, 1].
    (scipy is not a dependency of this project, so it is not used.)

    Example::

        normal_ppf(0.975)   # 1.959963984540054
    """
    if math.isnan(p) or p < 0.0 or p > 1.0:
        return NAN
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if p > 0.5:
        return -_ppf_lower(1.0 - p)
    return _ppf_lower(p)


# --------------------------------------------------------------------------------------------------------
# Sharpe-ratio statistics
# --------------------------------------------------------------------------------------------------------


def _sr_variance_factor(sr: float, skew: float, kurtosis: float) -> float:
    """``1 - g3 SR + (g4 - 1)/4 SR^2``: (n - 1) x the asymptotic variance of the estimated SR (2012 paper)."""
    return 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr


def probabilistic_sharpe_ratio(
    sr: float, sr_benchmark: float, n: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """Probabilistic Sharpe ratio: the probability that the true Sharpe ratio exceeds ``sr_benchmark``.

    Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier"::

        PSR(SR*) = Phi( (SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1)/4 SR^2) )

    ``sr`` and ``sr_benchmark`` are *per-period* (not annualised) Sharpe ratios, ``n`` the number of return
    observations, ``skew`` the sample skewness and ``kurtosis`` the sample *ordinary* kurtosis (3 for a normal
    distribution; see :func:`sample_skewness`, :func:`sample_kurtosis`). NaN when ``n < 2``, an input is NaN,
    or the moments are impossible (the variance term is not positive: real distributions have
    ``g4 >= g3**2 + 1``, which keeps it >= 0).

    Example::

        probabilistic_sharpe_ratio(0.1, 0.0, 250, skew=-0.5, kurtosis=5.0)   # ~0.94
    """
    values = (sr, sr_benchmark, n, skew, kurtosis)
    if any(math.isnan(v) for v in values) or n < 2:
        return NAN
    factor = _sr_variance_factor(sr, skew, kurtosis)
    if not factor > 0:
        return NAN
    return normal_cdf((sr - sr_benchmark) * math.sqrt(n - 1.0) / math.sqrt(factor))


def min_track_record_length(
    sr: float, sr_benchmark: float, skew: float = 0.0, kurtosis: float = 3.0, prob: float = 0.95
) -> float:
    """Minimum track record length: observations needed for PSR(``sr_benchmark``) to reach ``prob``.

    Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier"::

        MinTRL = 1 + (1 - g3 SR + (g4 - 1)/4 SR^2) (Z_prob / (SR - SR*))^2

    In periods of the frequency ``sr`` is measured at (per-period Sharpe ratios, ordinary kurtosis; divide by
    periods per year for years). ``inf`` when ``sr <= sr_benchmark`` (no length of track record is enough);
    NaN for NaN inputs, impossible moments, or ``prob`` outside (0, 1).

    Example::

        min_track_record_length(0.1, 0.0, skew=-0.5, kurtosis=5.0)   # ~288 periods
    """
    if any(math.isnan(v) for v in (sr, sr_benchmark, skew, kurtosis, prob)) or not 0.0 < prob < 1.0:
        return NAN
    factor = _sr_variance_factor(sr, skew, kurtosis)
    if not factor > 0:
        return NAN
    if sr <= sr_benchmark:
        return math.inf
    return 1.0 + factor * (normal_ppf(prob) / (sr - sr_benchmark)) ** 2


def _max_sharpe_z(n_trials: float) -> float:
    """``(1 - gamma) Z^-1[1 - 1/N] + gamma Z^-1[1 - 1/(N e)]``: about E[max of N standard normals]."""
    if not (n_trials >= 1 and math.isfinite(n_trials)):
        raise ValueError(f"n_trials must be a finite number >= 1, got {n_trials!r}")
    if n_trials == 1:
        return 0.0  # one trial, no selection: the formula's -inf limit is not the expectation (which is 0)
    g = EULER_MASCHERONI
    return (1.0 - g) * normal_ppf(1.0 - 1.0 / n_trials) + g * normal_ppf(1.0 - 1.0 / (n_trials * math.e))


def expected_max_sharpe(n_trials: float, var_trials: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` independent skill-less trials (true SR 0).

    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio"::

        SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))

    with gamma the Euler-Mascheroni constant and ``V = var_trials`` the variance of the trials' Sharpe
    ratios, in the units of those ratios (per-period SRs -> per-period SR0). The approximation is for
    ``N >> 1``; a single trial gives 0. ``n_trials`` may be fractional (an effective number of trials).

    Example::

        expected_max_sharpe(100, 0.5 / 250)   # 0.1132 per day (the DSR paper's example)
    """
    if not var_trials >= 0:
        raise ValueError(f"var_trials must be >= 0, got {var_trials!r}")
    return math.sqrt(var_trials) * _max_sharpe_z(n_trials)


def deflated_sharpe_ratio(
    sr: float, n_trials: float, var_trials: float, n: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """Deflated Sharpe ratio: PSR against the Sharpe ratio the best of ``n_trials`` would show by luck.

    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio"::

        DSR = PSR(SR0),  SR0 = expected_max_sharpe(n_trials, var_trials)

    ``sr``: the selected trial's per-period Sharpe ratio over ``n`` observations, with its sample skewness
    and ordinary kurtosis; ``var_trials``: variance across all trials of their per-period Sharpe ratios. A
    probability; above 0.95 is significant at 5 % after correcting for the number of trials.

    Example::

        deflated_sharpe_ratio(2.5 / 250**0.5, 100, 0.5 / 250, 1250, -3.0, 10.0)   # 0.9004
    """
    return probabilistic_sharpe_ratio(sr, expected_max_sharpe(n_trials, var_trials), n, skew, kurtosis)


def min_backtest_length(n_trials: float, expected_max_sr_annual: float = 1.0) -> float:
    """Minimum backtest length, in years, so that the best of ``n_trials`` lucky trials misses an SR target.

    Bailey, Borwein, López de Prado & Zhu (2014), "Pseudo-Mathematics and Financial Charlatanism"::

        MinBTL ~ ((1 - gamma) Z^-1[1 - 1/N] + gamma Z^-1[1 - 1/(N e)])^2 / E[max_N]^2

    ``expected_max_sr_annual`` is the annualised in-sample Sharpe ratio the best trial should *not* be
    expected to reach when no trial has skill (annualised SRs of unit-variance returns over y years have a
    variance of about 1/y). With fewer years, the best of ``n_trials`` is expected to reach it by chance. The
    paper's upper bound is ``2 ln N / E[max_N]^2``. 0.0 for a single trial (nothing to select from).

    Example::

        min_backtest_length(45)   # ~5.0 years: with 5 years of data, try no more than 45 configurations
    """
    if not expected_max_sr_annual > 0:
        raise ValueError(f"expected_max_sr_annual must be > 0, got {expected_max_sr_annual!r}")
    z = _max_sharpe_z(n_trials)
    if z <= 0:
        return 0.0
    return (z / expected_max_sr_annual) ** 2


# --------------------------------------------------------------------------------------------------------
# Probability of backtest overfitting (CSCV)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PBOResult:
    """Outcome of :func:`probability_of_backtest_overfitting`; arrays hold one entry per CSCV split.

    Splits are in the order of ``itertools.combinations(range(n_blocks), n_blocks // 2)`` over the blocks
    that form the in-sample half. Metric values are in the metric's own units (the default :func:`sharpe`
    is annualised with 252 periods a year).

    Attributes:
        pbo: probability of backtest overfitting, the share of splits whose logit is <= 0 (the in-sample
            best ranks at or below the out-of-sample median).
        logits: lambda = ln(w / (1 - w)) per split, w = OOS rank of the in-sample best / (N + 1).
        oos_relative_rank: w per split, in (0, 1); 1 is best.
        selected: index (column) of the configuration that was best in-sample, per split.
        is_metric: the selected configuration's in-sample metric, per split.
        oos_metric: its out-of-sample metric, per split.
        degradation_slope, degradation_intercept: least-squares fit ``oos = intercept + slope * is`` over
            the splits (performance degradation; a slope well below 1, or negative, is a warning sign).
        prob_oos_loss: share of splits whose selected configuration has an OOS metric < 0.
        n_splits: C(n_blocks, n_blocks / 2).
        n_blocks: S.
        n_configs: N, the columns of the matrix.
        rows_used: rows actually used (the oldest ``T mod S`` rows are dropped so blocks are equal).
    """

    pbo: float
    logits: np.ndarray
    oos_relative_rank: np.ndarray
    selected: np.ndarray
    is_metric: np.ndarray
    oos_metric: np.ndarray
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float
    n_splits: int
    n_blocks: int
    n_configs: int
    rows_used: int


def _split_masks(n_blocks: int) -> np.ndarray:
    """(C(S, S/2) x S) 0/1 matrix: row c marks the blocks of split c's in-sample half."""
    combos = list(itertools.combinations(range(n_blocks), n_blocks // 2))
    masks = np.zeros((len(combos), n_blocks), dtype=np.float64)
    for i, combo in enumerate(combos):
        masks[i, list(combo)] = 1.0
    return masks


def _sharpe_from_sums(
    mean_shift: np.ndarray, s1: np.ndarray, s2: np.ndarray, n: int, ppy: float
) -> np.ndarray:
    """Sharpe per row/column from sums of centred returns (s1) and of their squares (s2) over ``n`` rows."""
    mean_c = s1 / n
    var = np.maximum(s2 - s1 * mean_c, 0.0) / (n - 1)
    std = np.sqrt(var)
    mean = mean_shift + mean_c
    std = np.where(std <= _CONSTANT_RTOL * np.abs(mean), 0.0, std)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(std > 0, mean / np.where(std > 0, std, 1.0), np.nan) * math.sqrt(ppy)


def _select_and_rank(is_m: np.ndarray, oos_m: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each split (row): the in-sample best, its IS/OOS metric, and its OOS rank (1 = worst, N = best).

    An undefined metric (NaN) ranks below every defined one; ties share their average rank; ties for the
    in-sample best go to the lowest column index.
    """
    is_sel = np.where(np.isnan(is_m), -np.inf, is_m)
    oos_sel = np.where(np.isnan(oos_m), -np.inf, oos_m)
    rows = np.arange(is_m.shape[0])
    chosen = np.argmax(is_sel, axis=1)
    valid = np.isfinite(is_sel[rows, chosen])
    v = oos_sel[rows, chosen][:, None]
    less = (oos_sel < v).sum(axis=1)
    equal = (oos_sel == v).sum(axis=1)  # includes the chosen one itself
    rank = less + (equal + 1) / 2.0
    return chosen, is_m[rows, chosen], oos_m[rows, chosen], np.where(valid, rank, np.nan)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def probability_of_backtest_overfitting(
    returns_matrix: ArrayLike,
    n_blocks: int = 16,
    metric: Callable[[np.ndarray], Any] = sharpe,
) -> PBOResult:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

    Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest Overfitting":

    1. ``returns_matrix`` is T x N: per-period returns of N configurations (trials) over the same T periods.
    2. Its rows are split into S = ``n_blocks`` contiguous blocks of equal size (the oldest ``T mod S`` rows
       are dropped).
    3. For each of the C(S, S/2) ways to pick S/2 blocks as the in-sample set J (the rest, J-bar, is
       out-of-sample), the metric of every configuration is computed on J and on J-bar (blocks kept in time
       order); n* is the configuration with the best in-sample metric; w = (OOS rank of n*) / (N + 1), with
       rank 1 the worst and N the best; lambda = ln(w / (1 - w)).
    4. PBO = the share of splits with lambda <= 0, i.e. where the in-sample winner is at or below the
       out-of-sample median. The fit of OOS on IS metric of the selected configurations gives the
       performance degradation, and the share of negative OOS metrics the probability of loss.

    An undefined metric (NaN, e.g. the Sharpe ratio of a configuration that never trades in a half) ranks
    below every defined one; a split where no configuration has a defined in-sample metric gets a NaN logit
    and is left out of the PBO.

    ``metric`` maps a (rows x N) matrix to N values, higher is better; the default :func:`sharpe` is
    computed from per-block sums in one matrix product per chunk of splits (fast: C(16, 8) = 12,870 splits of
    a 1000 x 200 matrix take well under a second), any other callable is called twice per split.
    ``returns_matrix`` must be finite (fill periods without a position with 0). Raises ValueError for an
    odd or too large ``n_blocks`` or fewer than two configurations.

    Example::

        import numpy as np
        rng = np.random.default_rng(0)
        result = probability_of_backtest_overfitting(rng.normal(0, 0.01, (1000, 50)), n_blocks=16)
        result.pbo   # noise "strategies": 0.5 on average over seeds (any one matrix varies)
    """
    x = _as_float_array(returns_matrix, "returns_matrix", ndim=(2,))
    if np.isnan(x).any():
        raise DataError("returns_matrix holds NaN; fill periods without a return (e.g. flat) with 0 first")
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, int | np.integer):
        raise ValueError(f"n_blocks must be an int, got {n_blocks!r}")
    n_blocks = int(n_blocks)
    t_rows, n_configs = x.shape
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks must be even and >= 2, got {n_blocks}")
    if n_configs < 2:
        raise ValueError(f"returns_matrix needs at least 2 configurations (columns), got {n_configs}")
    block_len = t_rows // n_blocks
    if block_len * (n_blocks // 2) < 2:
        raise ValueError(f"{t_rows} rows are too few for {n_blocks} blocks; each half needs at least 2 rows")
    rows_used = block_len * n_blocks
    x = x[t_rows - rows_used :]
    masks = _split_masks(n_blocks)
    n_splits = masks.shape[0]

    chosen = np.empty(n_splits, dtype=np.int64)
    is_val = np.empty(n_splits)
    oos_val = np.empty(n_splits)
    rank = np.empty(n_splits)

    if metric is sharpe:
        # Sums of centred returns per block: a split's in-sample sums are a 0/1 combination of block sums,
        # and its out-of-sample sums the complement. Centring keeps sum-of-squares variance accurate.
        shift = x.mean(axis=0)
        blocks = (x - shift).reshape(n_blocks, block_len, n_configs)
        s1 = blocks.sum(axis=1)
        s2 = (blocks * blocks).sum(axis=1)
        tot1, tot2 = s1.sum(axis=0), s2.sum(axis=0)
        half = block_len * (n_blocks // 2)
        for lo in range(0, n_splits, _PBO_CHUNK):
            m = masks[lo : lo + _PBO_CHUNK]
            a1, a2 = m @ s1, m @ s2
            is_m = _sharpe_from_sums(shift, a1, a2, half, DEFAULT_PERIODS_PER_YEAR)
            oos_m = _sharpe_from_sums(shift, tot1 - a1, tot2 - a2, half, DEFAULT_PERIODS_PER_YEAR)
            sl = slice(lo, lo + m.shape[0])
            chosen[sl], is_val[sl], oos_val[sl], rank[sl] = _select_and_rank(is_m, oos_m)
    else:
        block_rows = np.arange(rows_used).reshape(n_blocks, block_len)
        for c in range(n_splits):
            in_sample = masks[c] > 0
            is_m = np.asarray(metric(x[block_rows[in_sample].ravel()]), dtype=np.float64)
            oos_m = np.asarray(metric(x[block_rows[~in_sample].ravel()]), dtype=np.float64)
            if is_m.shape != (n_configs,) or oos_m.shape != (n_configs,):
                raise ValueError(f"metric must return {n_configs} values (one per column), got {is_m.shape}")
            sel, iv, ov, rk = _select_and_rank(is_m[None, :], oos_m[None, :])
            chosen[c], is_val[c], oos_val[c], rank[c] = sel[0], iv[0], ov[0], rk[0]

    w = rank / (n_configs + 1)
    logits = np.log(w / (1.0 - w))
    finite_logits = logits[~np.isnan(logits)]
    pbo = float(np.mean(finite_logits <= 0.0)) if finite_logits.size else NAN

    pairs = np.isfinite(is_val) & np.isfinite(oos_val)
    slope = intercept = NAN
    if pairs.sum() >= 2:
        xs, ys = is_val[pairs], oos_val[pairs]
        dx = xs - xs.mean()
        sxx = float(dx @ dx)
        if sxx > 0:
            slope = float(dx @ (ys - ys.mean())) / sxx
            intercept = float(ys.mean()) - slope * float(xs.mean())
    defined_oos = oos_val[~np.isnan(oos_val)]
    prob_loss = float(np.mean(defined_oos < 0)) if defined_oos.size else NAN

    return PBOResult(
        pbo=pbo,
        logits=_readonly(logits),
        oos_relative_rank=_readonly(w),
        selected=_readonly(chosen),
        is_metric=_readonly(is_val),
        oos_metric=_readonly(oos_val),
        degradation_slope=slope,
        degradation_intercept=intercept,
        prob_oos_loss=prob_loss,
        n_splits=n_splits,
        n_blocks=n_blocks,
        n_configs=n_configs,
        rows_used=rows_used,
    )


# --------------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------------

#: Keys of :func:`summarize`, always all present (NaN when undefined or not given), with their units.
SUMMARY_KEYS: Final[Mapping[str, str]] = {
    "n_periods": "periods with a return (NaN periods dropped)",
    "periods_per_year": "bars per year used to annualise (see periods_per_year())",
    "total_return": "compounded return over the run, fraction",
    "cagr": "compound annual growth rate, fraction per year",
    "volatility": "annualised standard deviation of returns, fraction",
    "sharpe": "annualised Sharpe ratio of excess returns",
    "sortino": "annualised Sortino ratio (target = risk-free)",
    "max_drawdown": "largest peak-to-trough fall of equity, positive fraction",
    "max_drawdown_duration": "periods from the max drawdown's peak to recovery (or to the end)",
    "calmar": "cagr / max_drawdown",
    "skewness": "sample skewness of per-period returns (population moments)",
    "kurtosis": "sample ordinary kurtosis of per-period returns (normal = 3)",
    "psr": "probabilistic Sharpe ratio against SR* = 0, probability",
    "n_trades": "closed trades given",
    "win_rate": "share of trades with a positive return, fraction",
    "avg_trade": "mean per-trade return, fraction",
    "median_trade": "median per-trade return, fraction",
    "profit_factor": "gross gains / gross losses of trades",
    "exposure": "share of periods holding a position, fraction",
    "turnover": "traded notional / average equity, per year",
}


def summarize(
    returns: ArrayLike,
    *,
    interval: str,
    trades: ArrayLike | None = None,
    exposure: ArrayLike | float | None = None,
    turnover_notional: ArrayLike | None = None,
    initial_equity: float = 1.0,
    risk_free: float = 0.0,
) -> dict[str, float]:
    """The metrics dict written to summary.json: every key of :data:`SUMMARY_KEYS`, each a float.

    ``returns``: per-period simple returns of the run (fractions) at bar ``interval`` ("1m", "5m", "1h",
    "1d"; annualised with :func:`periods_per_year` defaults). ``trades``: per-trade returns (fractions) or a
    frame with a ``return`` column. ``exposure``: either per-period positions / gross exposure (share of
    non-zero periods is taken) or that share already computed. ``turnover_notional``: traded notional per
    period, in currency, aligned with ``returns``; equity for turnover is ``initial_equity`` compounded by
    ``returns``. ``risk_free``: annual rate, fraction. Metrics that are undefined for the input, or whose
    input is not given, are NaN; an empty or constant series never raises.

    Example::

        import numpy as np
        rets = np.random.default_rng(0).normal(0.0005, 0.01, 500)
        summarize(rets, interval="1d", trades=[0.02, -0.01, 0.03], exposure=np.ones(500))
    """
    ppy = periods_per_year(interval)
    raw = _as_float_array(returns, "returns")
    r = raw[~np.isnan(raw)]
    # PSR wants the per-period Sharpe ratio; the annualised one is it times sqrt(ppy).
    sr_period = float(sharpe(r, periods_per_year=ppy, risk_free=risk_free)) / math.sqrt(ppy)
    skew, kurt = _skew_kurt(r)
    out: dict[str, float] = {
        "n_periods": float(r.size),
        "periods_per_year": ppy,
        "total_return": total_return(r),
        "cagr": cagr(r, periods_per_year=ppy),
        "volatility": volatility(r, periods_per_year=ppy),
        "sharpe": sr_period * math.sqrt(ppy),
        "sortino": sortino(r, periods_per_year=ppy, risk_free=risk_free),
        "max_drawdown": max_drawdown(r),
        "max_drawdown_duration": max_drawdown_duration(r),
        "calmar": calmar(r, periods_per_year=ppy),
        "skewness": skew,
        "kurtosis": kurt,
        "psr": probabilistic_sharpe_ratio(sr_period, 0.0, r.size, skew, kurt),
    }
    t = _trade_returns(trades) if trades is not None else None
    out["n_trades"] = float(t.size) if t is not None else NAN
    for key, fn in (
        ("win_rate", win_rate),
        ("avg_trade", avg_trade_return),
        ("median_trade", median_trade_return),
        ("profit_factor", profit_factor),
    ):
        out[key] = fn(t) if t is not None else NAN
    if exposure is None:
        out["exposure"] = NAN
    elif np.ndim(exposure) == 0:
        out["exposure"] = float(exposure)  # type: ignore[arg-type]
    else:
        out["exposure"] = _exposure_share(exposure)
    if turnover_notional is None:
        out["turnover"] = NAN
    else:
        traded = _as_float_array(turnover_notional, "turnover_notional")
        if traded.shape != raw.shape:
            raise ValueError(
                f"turnover_notional has {traded.size} periods but returns has {raw.size}; align them"
            )
        out["turnover"] = turnover(traded, equity_curve(raw, initial_equity), periods_per_year=ppy)
    return {key: out[key] for key in SUMMARY_KEYS}
