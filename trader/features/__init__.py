"""Indicators and regime labels over bar columns.

Numeric functions take float64 arrays and return arrays of the same length (NaN in warm-up rows);
:func:`add_features` adds registered features (:data:`FEATURES`) to a polars bar frame, per symbol.
See :mod:`trader.features.indicators` for the conventions (TA-Lib parity, warm-up, NaN handling).

Example::

    from trader.data.synth import synth_bars
    from trader.features import FEATURES, add_features

    bars = synth_bars("SYN000", "1d", "2019-01-01", "2021-12-31", seed=1)
    bars = add_features(bars, ["rsi", "atr", "regime"], rsi={"n": 21})
    sorted(FEATURES)   # every registered feature name
"""

from __future__ import annotations

from trader.features.indicators import (
    FEATURES,
    Feature,
    add_features,
    adx,
    atr,
    bollinger,
    cci,
    donchian,
    efficiency_ratio,
    ema,
    keltner,
    log_returns,
    macd,
    mfi,
    momentum,
    obv,
    percent_b,
    realized_vol,
    register_feature,
    roc,
    rsi,
    sma,
    stoch,
    williams_r,
    wma,
    zscore,
)

# Imported after the indicators: it registers the "regime" feature into FEATURES.
from trader.features.regimes import REGIMES, asset_class, regime_labels

__all__ = [
    "FEATURES",
    "REGIMES",
    "Feature",
    "add_features",
    "adx",
    "asset_class",
    "atr",
    "bollinger",
    "cci",
    "donchian",
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
    "regime_labels",
    "register_feature",
    "roc",
    "rsi",
    "sma",
    "stoch",
    "williams_r",
    "wma",
    "zscore",
]
