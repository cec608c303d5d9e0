"""Live (paper) trading without Ray: the backtest's decisions and portfolio logic, one bar at a time.

* :mod:`trader.live.portfolio` - :class:`PortfolioStepper`: the simulator kernel's portfolio (fills, costs,
  risk rules) stepped bar by bar, with orders planned at each open and fills reported by the broker.
* :mod:`trader.live.decide` - a symbol's target weights bar by bar, as the backtest decides them.

Example::

    from trader.live import PortfolioStepper
    from trader.sim import SimConfig

    stepper = PortfolioStepper(["SPY", "QQQ"], SimConfig(initial_cash=100_000.0))
    plans = stepper.on_open(0, [450.0, 380.0])         # nothing pending yet: []
    stepper.on_close(0, [451.0, 381.0], [0.5, 0.5])    # decide: orders for bar 1's open
"""

from __future__ import annotations

from trader.live.portfolio import CloseReport, OrderPlan, PortfolioStepper, RuleFiring

__all__ = ["CloseReport", "OrderPlan", "PortfolioStepper", "RuleFiring"]
