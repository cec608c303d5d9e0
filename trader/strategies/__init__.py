"""Signal generators: each maps one symbol's bars and parameters to a target weight per bar in [-1, 1].

Importing this package registers the built-in strategies (:mod:`trader.strategies.library`). Look one up
with :func:`get_strategy`, list them in :data:`STRATEGIES`, add your own with :func:`register_strategy`.

>>> from trader.strategies import STRATEGIES, get_strategy
>>> sorted(STRATEGIES)[:3]
['bollinger_reversion', 'donchian_breakout', 'ema_cross']
>>> params = get_strategy("sma_cross").validate({"fast": 10, "slow": 50})
"""

from __future__ import annotations

from trader.strategies import library as _library  # noqa: F401  (registers the built-in strategies)
from trader.strategies.base import (
    COLUMNS,
    STRATEGIES,
    STYLES,
    BarArrays,
    Param,
    StrategyDef,
    as_bar_arrays,
    get_strategy,
    latch_positions,
    register_strategy,
    strategy_names,
    unregister_strategy,
)

__all__ = [
    "COLUMNS",
    "STRATEGIES",
    "STYLES",
    "BarArrays",
    "Param",
    "StrategyDef",
    "as_bar_arrays",
    "get_strategy",
    "latch_positions",
    "register_strategy",
    "strategy_names",
    "unregister_strategy",
]
