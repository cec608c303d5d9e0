"""A simulated IB Gateway that speaks the TWS API socket protocol, for testing real clients offline.

The unmodified ib_insync / ib_async clients connect to it over loopback as they would to TWS or IB Gateway:
version handshake, start-up synchronisation (positions, open and completed orders, account updates,
executions), contract details, historical and real-time bars and ticks replayed from a bar store or set by
hand, MKT / LMT / STP / STP LMT orders with partial fills, commissions, rejections and cancels, pacing, and
injected faults (dropped connections, restarts with state kept, IB connectivity loss, stalls, fills while
no client is connected, skipped real-time bars, refused historical data).

Example::

    from trader.ibsim import GatewayConfig, run_gateway

    with run_gateway(GatewayConfig(symbols=("SPY",), account="DU1234567")) as gw:
        gw.set_price("SPY", 400.0)
        ...  # ib.connect("127.0.0.1", gw.port, clientId=1)

Modules: protocol (framing, handshake), messages (message ids, field layouts per server version), contracts,
account (orders, executions, positions, cash), matching (fill rules), market (replay and clock), orders
(the order desk), handlers (requests), session (one connection), faults (pacing, stalls), events (waits for
tests), server (SimGateway), runner (run_gateway on a thread).
"""

from __future__ import annotations

from trader.ibsim.account import Account, SimExecution, SimOrder
from trader.ibsim.config import GatewayConfig
from trader.ibsim.runner import run_gateway
from trader.ibsim.server import SimGateway

__all__ = ["Account", "GatewayConfig", "SimExecution", "SimGateway", "SimOrder", "run_gateway"]
