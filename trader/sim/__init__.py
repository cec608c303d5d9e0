"""Portfolio simulation: a numba kernel turning target weights into fills, costs, cash, positions and equity.

Example::

    import numpy as np
    from trader.risk import RiskLimits
    from trader.sim import SimConfig, simulate

    close = np.array([[100.0, 50.0], [101.0, 49.0], [103.0, 50.0]])
    weights = np.array([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])     # decided at each bar's close
    result = simulate(close, close, weights, config=SimConfig(commission_bps=1.0),
                      limits=RiskLimits(max_position_pct=0.4))
    result.trades, result.equity
"""

from __future__ import annotations

from trader.sim.kernel import TRADE_REASONS, commission
from trader.sim.portfolio import (
    BatchResult,
    SimConfig,
    SimResult,
    align_bars,
    session_index_from_ts,
    simulate,
    simulate_many,
)

__all__ = [
    "TRADE_REASONS",
    "BatchResult",
    "SimConfig",
    "SimResult",
    "align_bars",
    "commission",
    "session_index_from_ts",
    "simulate",
    "simulate_many",
]
