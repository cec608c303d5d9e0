"""Market regime labels per bar, and the asset class of a symbol.

Regimes are the three the composer blends strategies over, :data:`REGIMES` = ``("trend", "chop",
"volatile")``, coded 0, 1, 2 (-1 while undefined), the same order as ``trader.data.synth.REGIMES``.

Example::

    from trader.data.synth import synth_bars
    from trader.features.regimes import REGIMES, asset_class, regime_labels

    bars = synth_bars("SYN000", "1d", "2015-01-01", "2019-12-31", seed=1)
    codes = regime_labels(bars["high"], bars["low"], bars["close"])
    names = [REGIMES[c] if c >= 0 else None for c in codes]
    asset_class("BTC-USD")    # "crypto"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from numba import njit

from trader.errors import ConfigError
from trader.features.indicators import (
    Feature,
    _columns,
    _finite_runs_of,
    _number,
    _period,
    adx,
    efficiency_ratio,
    realized_vol,
    register_feature,
)

__all__ = [
    "ASSET_CLASSES",
    "CHOP",
    "COMMON_ETFS",
    "REGIMES",
    "TREND",
    "UNDEFINED",
    "VOLATILE",
    "asset_class",
    "regime_labels",
]

REGIMES: Final = ("trend", "chop", "volatile")
TREND: Final = 0
CHOP: Final = 1
VOLATILE: Final = 2
UNDEFINED: Final = -1

ASSET_CLASSES: Final = ("equity", "etf", "crypto")

# A short list of widely traded US ETFs (broad market, bonds, commodities, real estate, regions, and the
# SPDR sector funds spelled out: "XL*" as a pattern would also catch equities such as XLNX).
# fmt: off
COMMON_ETFS: Final = frozenset({
    "SPY", "IVV", "VOO", "VTI", "QQQ", "IWM", "DIA", "MDY", "RSP", "VEU", "VEA", "VWO", "EFA", "EEM", "ACWI",
    "IEF", "TLT", "SHY", "IEI", "AGG", "BND", "LQD", "HYG", "TIP", "GOVT",
    "GLD", "IAU", "SLV", "GDX", "GDXJ", "DBC", "USO", "UNG", "VNQ", "IYR",
    "XLB", "XLC", "XLE", "XLF", "XLI", "XLK", "XLP", "XLRE", "XLU", "XLV", "XLY",
})
# fmt: on
# Quote currencies of crypto pairs written BASE-QUOTE or BASE/QUOTE (BTC-USD, ETH/USD, SOL-USDT).
_CRYPTO_QUOTES: Final = frozenset({"USD", "USDT", "USDC", "BUSD", "DAI", "EUR", "GBP", "BTC", "ETH"})
# Exchange-style pairs without a separator end in a stablecoin (BTCUSDT) ...
_STABLECOIN_SUFFIXES: Final = ("USDT", "USDC", "BUSD")
# ... or are a well-known coin followed by USD (BTCUSD, ETHUSD).
_COMMON_COINS: Final = frozenset(
    {"BTC", "XBT", "ETH", "SOL", "ADA", "XRP", "DOGE", "LTC", "BCH", "DOT", "AVAX"}
)


def regime_labels(
    high: Any,
    low: Any,
    close: Any,
    *,
    er_n: int = 20,
    adx_n: int = 14,
    vol_n: int = 20,
    vol_window: int = 252,
    vol_pct: float = 0.8,
    er_trend: float = 0.3,
    adx_trend: float = 25.0,
) -> np.ndarray:
    """Regime code of every bar (int8): 0 trend, 1 chop, 2 volatile, -1 undefined. Rules, in order:

    1. **volatile** when the trailing realised volatility (:func:`~trader.features.indicators.realized_vol`
       over ``vol_n`` log returns) is strictly above its ``vol_pct`` quantile over the trailing
       ``vol_window`` bars, the current one included (linear interpolation between order statistics, as
       ``numpy.quantile``). The quantile at bar t is computed from rows <= t only;
    2. else **trend** when Kaufman's efficiency ratio over ``er_n`` bars is >= ``er_trend`` (a fraction
       0..1) or ADX over ``adx_n`` bars is >= ``adx_trend`` (0..100);
    3. else **chop**.

    A bar is -1 until all three inputs are defined: ``max(vol_n + vol_window - 1, er_n, 2 * adx_n - 1)``
    rows of warm-up (271 with the defaults), and again wherever a missing bar leaves one of them undefined
    (see the NaN rules in :mod:`trader.features.indicators`).

    >>> from trader.data.synth import synth_bars
    >>> bars = synth_bars("SYN000", "1d", "2015-01-01", "2019-12-31", seed=1)
    >>> codes = regime_labels(bars["high"], bars["low"], bars["close"])
    >>> bool((codes[:271] == -1).all()), bool((codes[271:] >= 0).all())
    (True, True)
    >>> np.bincount(codes[271:], minlength=3).tolist()   # bars labelled trend, chop, volatile
    [540, 258, 189]
    """
    h, lo, c = _columns(high=high, low=low, close=close)
    window = _period(vol_window, "vol_window", 2)
    quantile = _number(vol_pct, "vol_pct", low=0.0, high=1.0)
    er_level = _number(er_trend, "er_trend", low=0.0, high=1.0)
    adx_level = _number(adx_trend, "adx_trend", low=0.0, high=100.0)

    vol = realized_vol(c, _period(vol_n, "vol_n", 2))
    above = _above_trailing_quantile(vol, _finite_runs_of(vol), window, quantile)
    er = efficiency_ratio(c, _period(er_n, "er_n"))
    adx_line = adx(h, lo, c, _period(adx_n, "adx_n", 2))[0]

    labels = np.full(c.size, UNDEFINED, dtype=np.int8)
    defined = ~np.isnan(above) & ~np.isnan(er) & ~np.isnan(adx_line)
    volatile = defined & (above == 1.0)
    trend = defined & ~volatile & ((er >= er_level) | (adx_line >= adx_level))
    labels[defined] = CHOP
    labels[trend] = TREND
    labels[volatile] = VOLATILE
    return labels


@njit(cache=True)
def _above_trailing_quantile(values: np.ndarray, runs: np.ndarray, window: int, q: float) -> np.ndarray:
    """1.0 where values[t] is strictly above the q-quantile of values[t-window+1 .. t], 0.0 where not, NaN
    where the window is not full of finite values. Keeps the window sorted: O(window) per row."""
    out = np.full(values.size, np.nan)
    ordered = np.empty(window + 1)
    # numpy.quantile(method="linear"), step for step: virtual index n*q + (1 + q*(1 - 1 - 1)) - 1.
    virtual = window * q + (1.0 + q * (1.0 - 1.0 - 1.0)) - 1.0
    below = math.floor(virtual)
    gamma = virtual - below
    lower_index = min(max(int(below), 0), window - 1)
    upper_index = min(lower_index + 1, window - 1)
    for r in range(runs.shape[0]):
        lo, hi = runs[r, 0], runs[r, 1]
        size = 0
        for i in range(lo, hi):
            size = _insert_sorted(ordered, size, values[i])
            if size > window:
                size = _remove_sorted(ordered, size, values[i - window])
            if size == window:
                a = ordered[lower_index]
                b = ordered[upper_index]
                # numpy's _lerp: interpolate from whichever end is nearer, for symmetry of rounding.
                diff = b - a
                threshold = b - diff * (1.0 - gamma) if gamma >= 0.5 else a + diff * gamma
                out[i] = 1.0 if values[i] > threshold else 0.0
    return out


@njit(cache=True)
def _insert_sorted(ordered: np.ndarray, size: int, value: float) -> int:
    position = np.searchsorted(ordered[:size], value)
    for j in range(size, position, -1):  # shift in place; a slice copy would allocate every bar
        ordered[j] = ordered[j - 1]
    ordered[position] = value
    return size + 1


@njit(cache=True)
def _remove_sorted(ordered: np.ndarray, size: int, value: float) -> int:
    position = np.searchsorted(ordered[:size], value)
    for j in range(position, size - 1):
        ordered[j] = ordered[j + 1]
    return size - 1


def asset_class(symbol: str, tickers: Mapping[str, Any] | None = None) -> str:
    """``"equity"``, ``"etf"`` or ``"crypto"`` for ``symbol``.

    Settings come first: ``tickers`` maps symbols to their spec (``settings.tickers``, whose values are
    ``TickerSpec`` objects, or plain mappings with an ``asset_class`` key); the symbol is looked up as given,
    then case-insensitively. Otherwise a heuristic decides:

    * crypto: a pair ``BASE-QUOTE`` or ``BASE/QUOTE`` quoted in USD, a stablecoin (USDT, USDC, BUSD, DAI),
      EUR, GBP, BTC or ETH (``BTC-USD``, ``ETH/USD``, ``SOL-USDT``); a symbol ending in USDT, USDC or BUSD
      (``BTCUSDT``); or a common coin followed by USD (``BTCUSD``, ``ETHUSD``);
    * etf: one of :data:`COMMON_ETFS` (SPY, QQQ, IWM, DIA, VTI, IEF, TLT, GLD, GDX, VNQ, VEU, DBC, EEM, the
      SPDR sector funds XLB..XLY, ...);
    * equity: anything else (``AAPL``, ``BRK-B``).

    >>> asset_class("ETH/USD"), asset_class("spy"), asset_class("AAPL")
    ('crypto', 'etf', 'equity')
    >>> asset_class("ARKK", {"ARKK": {"asset_class": "etf", "exchange": "ARCA", "currency": "USD"}})
    'etf'
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise ConfigError(f"asset_class needs a non-empty symbol string, got {symbol!r}")
    if tickers:
        spec = tickers.get(symbol)
        if spec is None:
            wanted = symbol.strip().upper()
            spec = next((v for k, v in tickers.items() if str(k).strip().upper() == wanted), None)
        if spec is not None:
            found = (
                spec.get("asset_class") if isinstance(spec, Mapping) else getattr(spec, "asset_class", None)
            )
            if found not in ASSET_CLASSES:
                raise ConfigError(
                    f"tickers.{symbol}.asset_class is {found!r}; use one of {', '.join(ASSET_CLASSES)}"
                )
            return str(found)
    return _guess_asset_class(symbol.strip().upper())


def _guess_asset_class(symbol: str) -> str:
    for separator in ("-", "/"):
        if separator in symbol:
            base, _, quote = symbol.partition(separator)
            if base.isalnum() and quote in _CRYPTO_QUOTES:
                return "crypto"
    if symbol.isalnum():
        if any(symbol.endswith(s) and len(symbol) > len(s) for s in _STABLECOIN_SUFFIXES):
            return "crypto"
        if symbol.endswith("USD") and symbol[:-3] in _COMMON_COINS:
            return "crypto"
    return "etf" if symbol in COMMON_ETFS else "equity"


register_feature(Feature("regime", ("high", "low", "close"), ("regime",), regime_labels))
