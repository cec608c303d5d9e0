"""The simulated brokerage account: orders, executions, positions and cash.

This is the state a real gateway keeps on IB's side, so it outlives client connections and gateway
restarts: a client that reconnects finds its open orders, the executions done while it was away and the
positions they left. Amounts are in USD, quantities in shares (positive = long), prices in USD per share.

Costs follow IB's fixed pricing in shape: ``commission_per_share`` x shares with ``min_commission`` per
*order* (a partially filled order pays the minimum once: each execution is charged the growth of
``max(min, per_share x filled so far)``). Average cost includes commissions, as IB reports it (a long's cost
is raised by them, a short's proceeds lowered), and realised P&L is measured against that average cost, so
realised + unrealised P&L always equals the change in net liquidation.

Margin figures are a plain Reg-T sketch: initial margin 50% and maintenance 25% of gross position value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

ACTIVE_STATES: Final = frozenset({"PreSubmitted", "Submitted", "PendingCancel"})
DONE_STATES: Final = frozenset({"Filled", "Cancelled", "Inactive"})
INITIAL_MARGIN: Final = 0.50
MAINTENANCE_MARGIN: Final = 0.25


@dataclass
class SimOrder:
    """One order as the gateway tracks it. ``perm_id`` is the account-wide key; (client_id, order_id) the
    client's key. Prices are None when unset."""

    perm_id: int
    client_id: int
    order_id: int
    symbol: str
    con_id: int
    action: str  # BUY / SELL
    quantity: float
    order_type: str  # MKT, LMT, STP, STP LMT
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = "DAY"
    order_ref: str = ""
    account: str = ""
    parent_id: int = 0
    oca_group: str = ""
    transmit: bool = True
    outside_rth: bool = False
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    triggered: bool = False  # stop orders: the stop price has been reached
    commission: float = 0.0  # charged so far, USD
    why_held: str = ""
    reason: str = ""  # why it was cancelled or rejected
    submitted_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    completed_at: dt.datetime | None = None

    @property
    def remaining(self) -> float:
        return max(self.quantity - self.filled, 0.0)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATES

    def snapshot(self) -> SimOrder:
        """A copy that later fills do not change (what tests and other threads should hold)."""
        return dataclasses.replace(self)


@dataclass(frozen=True)
class SimExecution:
    """One fill. ``side`` is IB's ``BOT``/``SLD``; ``realized_pnl`` is None for a fill that opens or adds."""

    exec_id: str
    perm_id: int
    order_id: int
    client_id: int
    symbol: str
    con_id: int
    side: str
    shares: float
    price: float
    time: dt.datetime
    cum_qty: float
    avg_price: float
    order_ref: str
    commission: float
    realized_pnl: float | None
    account: str


@dataclass
class SimPosition:
    """Shares held (negative = short) and the average cost per share including commissions."""

    quantity: float = 0.0
    avg_cost: float = 0.0


class Account:
    """Orders, executions, positions and cash of one account; survives gateway restarts.

    All mutations happen on the gateway's event loop; ``lock`` guards them so that other threads can take
    consistent snapshots.

    >>> acct = Account("DU1234567", cash=100_000.0, commission_per_share=0.005, min_commission=1.0)
    >>> order = acct.new_order(client_id=1, order_id=1, symbol="SPY", con_id=1, action="BUY", quantity=100,
    ...                        order_type="MKT")
    >>> acct.fill(order, 100, 400.0, dt.datetime(2025, 1, 2, tzinfo=dt.UTC)).commission
    1.0
    >>> acct.cash
    59999.0
    """

    def __init__(
        self,
        account_id: str,
        *,
        cash: float,
        commission_per_share: float,
        min_commission: float,
        first_perm_id: int = 1_000_001,
    ) -> None:
        self.account_id = account_id
        self.cash = float(cash)
        self.commission_per_share = float(commission_per_share)
        self.min_commission = float(min_commission)
        self.realized_pnl = 0.0
        self.orders: dict[int, SimOrder] = {}  # perm_id -> order, in arrival order
        # The orders not yet done, in arrival order: every market update scans the open orders, and a long
        # session accumulates thousands of finished ones. Done states are final, so pruning is safe.
        self._unfinished: dict[int, SimOrder] = {}
        self.by_client: dict[tuple[int, int], int] = {}  # (client_id, order_id) -> perm_id
        self.executions: list[SimExecution] = []
        self.positions: dict[str, SimPosition] = {}
        self.con_ids: dict[str, int] = {}
        self.next_perm_id = first_perm_id
        self._exec_seq = 0
        self.lock = threading.RLock()

    # -- orders ------------------------------------------------------------------------------------

    def find(self, client_id: int, order_id: int) -> SimOrder | None:
        perm_id = self.by_client.get((client_id, order_id))
        return None if perm_id is None else self.orders[perm_id]

    def new_order(
        self, *, client_id: int, order_id: int, symbol: str, con_id: int, **terms: object
    ) -> SimOrder:
        """Register an accepted order under a fresh permId."""
        with self.lock:
            order = SimOrder(
                perm_id=self.next_perm_id,
                client_id=client_id,
                order_id=order_id,
                symbol=symbol,
                con_id=con_id,
                **terms,  # type: ignore[arg-type]
            )
            self.next_perm_id += 1
            self.orders[order.perm_id] = order
            self._unfinished[order.perm_id] = order
            self.by_client[(client_id, order_id)] = order.perm_id
            self.con_ids[symbol] = con_id
            return order

    def open_orders(self, client_id: int | None = None) -> list[SimOrder]:
        """Active orders, of one client or (None) of all, in arrival order."""
        with self.lock:
            done = [p for p, o in self._unfinished.items() if o.status in DONE_STATES]
            for perm_id in done:
                del self._unfinished[perm_id]
            return [
                o
                for o in self._unfinished.values()
                if o.is_active and (client_id is None or o.client_id == client_id)
            ]

    def completed_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.status in DONE_STATES]

    def close_order(self, order: SimOrder, status: str, reason: str = "") -> None:
        with self.lock:
            order.status = status
            order.reason = reason
            order.completed_at = dt.datetime.now(dt.UTC)

    # -- fills -------------------------------------------------------------------------------------

    def fill(self, order: SimOrder, quantity: float, price: float, when: dt.datetime) -> SimExecution:
        """Book a fill of ``quantity`` shares at ``price``: order, position, cash, commission, realised."""
        with self.lock:
            before = self._order_commission(order.filled)
            new_filled = order.filled + quantity
            commission = round(self._order_commission(new_filled) - before, 6)
            order.avg_fill_price = (order.avg_fill_price * order.filled + price * quantity) / new_filled
            order.filled = new_filled
            order.last_fill_price = price
            order.commission += commission
            if order.remaining <= 1e-9:
                order.status = "Filled"
                order.completed_at = when
            realized = self._apply_position(order.symbol, order.action, quantity, price, commission)
            sign = 1.0 if order.action == "BUY" else -1.0
            self.cash -= sign * quantity * price + commission
            self._exec_seq += 1
            execution = SimExecution(
                exec_id=f"{order.perm_id:08x}.{self._exec_seq:08x}.01.01",
                perm_id=order.perm_id,
                order_id=order.order_id,
                client_id=order.client_id,
                symbol=order.symbol,
                con_id=order.con_id,
                side="BOT" if order.action == "BUY" else "SLD",
                shares=quantity,
                price=price,
                time=when,
                cum_qty=order.filled,
                avg_price=order.avg_fill_price,
                order_ref=order.order_ref,
                commission=commission,
                realized_pnl=realized,
                account=self.account_id,
            )
            self.executions.append(execution)
            return execution

    def _order_commission(self, filled: float) -> float:
        if filled <= 0:
            return 0.0
        return max(self.min_commission, self.commission_per_share * filled)

    def _apply_position(
        self, symbol: str, action: str, quantity: float, price: float, commission: float
    ) -> float | None:
        """Update the position; return the realised P&L of the part that closed, None if nothing closed."""
        pos = self.positions.setdefault(symbol, SimPosition())
        signed = quantity if action == "BUY" else -quantity
        if pos.quantity == 0 or (pos.quantity > 0) == (signed > 0):
            # A long pays its commission on top of the price; a short's proceeds are net of it.
            cost = (
                pos.avg_cost * abs(pos.quantity)
                + quantity * price
                + (commission if signed > 0 else -commission)
            )
            pos.quantity += signed
            pos.avg_cost = cost / abs(pos.quantity)
            return None
        closing = min(abs(signed), abs(pos.quantity))
        direction = 1.0 if pos.quantity > 0 else -1.0
        share_of_commission = commission * closing / quantity
        realized = direction * (price - pos.avg_cost) * closing - share_of_commission
        pos.quantity += signed
        if abs(pos.quantity) < 1e-9:
            pos.quantity, pos.avg_cost = 0.0, 0.0
        elif (pos.quantity > 0) != (direction > 0):  # flipped through zero: the rest opens at this price
            opened = abs(pos.quantity)
            rest = (commission - share_of_commission) / opened
            pos.avg_cost = price + rest if pos.quantity > 0 else price - rest
        self.realized_pnl += realized
        return realized

    # -- valuation ---------------------------------------------------------------------------------

    def portfolio(self, prices: dict[str, float]) -> list[tuple[str, SimPosition, float, float, float]]:
        """(symbol, position, market price, market value, unrealised P&L) for every symbol ever held."""
        rows = []
        for symbol, pos in sorted(self.positions.items()):
            price = prices.get(symbol, pos.avg_cost)
            value = pos.quantity * price
            rows.append((symbol, pos, price, value, value - pos.quantity * pos.avg_cost))
        return rows

    def values(self, prices: dict[str, float]) -> dict[str, float]:
        """The account values a gateway reports (tag -> USD amount), at ``prices``."""
        rows = self.portfolio(prices)
        long_value = sum(v for _, p, _, v, _ in rows if p.quantity > 0)
        short_value = sum(v for _, p, _, v, _ in rows if p.quantity < 0)
        gross = long_value - short_value
        net_liq = self.cash + long_value + short_value
        init_margin = INITIAL_MARGIN * gross
        maint_margin = MAINTENANCE_MARGIN * gross
        return {
            "NetLiquidation": net_liq,
            "TotalCashValue": self.cash,
            "SettledCash": self.cash,
            "CashBalance": self.cash,
            "EquityWithLoanValue": net_liq,
            "GrossPositionValue": gross,
            "StockMarketValue": long_value + short_value,
            "InitMarginReq": init_margin,
            "MaintMarginReq": maint_margin,
            "AvailableFunds": net_liq - init_margin,
            "ExcessLiquidity": net_liq - maint_margin,
            "BuyingPower": (net_liq - init_margin) / INITIAL_MARGIN,
            "UnrealizedPnL": sum(u for *_, u in rows),
            "RealizedPnL": self.realized_pnl,
        }

    def executions_matching(
        self,
        *,
        client_id: int = 0,
        account: str = "",
        since: dt.datetime | None = None,
        symbol: str = "",
        side: str = "",
    ) -> Iterable[SimExecution]:
        """Executions passing an IB ExecutionFilter (0 / empty = no filter on that field)."""
        for ex in self.executions:
            if client_id and ex.client_id != client_id:
                continue
            if account and ex.account != account:
                continue
            if since is not None and ex.time < since:
                continue
            if symbol and ex.symbol != symbol.upper():
                continue
            if side and ex.side != {"BUY": "BOT", "SELL": "SLD"}.get(side.upper(), side.upper()):
                continue
            yield ex
