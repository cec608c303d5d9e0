"""IBAdapter: a thin, typed translation layer over ib_insync / ib_async, async interface only.

It turns :class:`~trader.broker.order.OrderIntent` into IBKR orders (``orderRef`` = intent_id) and IBKR's
statuses, executions, commission reports, errors and connection notices into the order model's values
(:mod:`trader.broker.events`), mapped back to intent ids through ``orderRef``. Every call is a coroutine or
a non-blocking call, so it runs inside a running event loop (a Ray async actor); the client library's
blocking helpers (``IB.connect``, ``IB.sleep``...) are never used.

It decides no policy: reconnecting, checking approvals, journaling and idempotency belong to the execution
actor built on top of it. The one guard it keeps is cheap and local: it refuses to place an intent whose
orderRef the gateway already shows (DuplicateIntentError).

Example::

    import asyncio
    from trader.broker.adapter import IBAdapter

    async def main(intent):
        adapter = IBAdapter(host="127.0.0.1", port=4002, client_id=7, client_library="ib_async")
        await adapter.connect()
        async with adapter.stream() as events:
            order_id = await adapter.place(intent)
            print(await events.get(timeout=10))
        adapter.disconnect()
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trader.broker.clients import load_client_library
from trader.broker.errors import (
    BrokerConnectionError,
    ContractError,
    DuplicateIntentError,
    NotConnectedError,
    OrderNotOpenError,
    UnknownIntentError,
)
from trader.broker.events import (
    AccountValue,
    BrokerEvent,
    CommissionEvent,
    ConnectionEvent,
    ConnectionState,
    ErrorEvent,
    EventStream,
    FillEvent,
    OrderSnapshot,
    PositionSnapshot,
    StatusEvent,
)
from trader.broker.order import Fill, OrderIntent, OrderStatus, OrderType, Side, TimeInForce

if TYPE_CHECKING:
    from trader.config import IbkrSettings

__all__ = ["IBAdapter", "map_status"]

log = logging.getLogger(__name__)

# IBKR connectivity notices, reported as errors with reqId -1.
_CONNECTIVITY = {
    1100: ConnectionState.CONNECTIVITY_LOST,
    1101: ConnectionState.CONNECTIVITY_RESTORED_DATA_LOST,
    1102: ConnectionState.CONNECTIVITY_RESTORED,
}
# Informational codes and order warnings: the order (if any) stays live. From IBKR's message-code list and
# the warning sets of ib_insync 0.9.86 / ib_async 2.1.0.
_WARNING_CODES = frozenset({105, 110, 165, 202, 321, 329, 399, 404, 434, 492, 10167})
# Codes on an order's log that mean it ended by cancellation, not rejection: 202 order cancelled,
# 10147/10148/161 cancel of an unknown or uncancellable order (the order's fate is reported separately).
_CANCEL_CODES = frozenset({202, 161, 10147, 10148})
_IB_TYPES = {t.ib_code: t for t in OrderType}
_UNSET = 1e300  # IBKR's "unset" doubles are sys.float_info.max; anything this large is not a price


def _is_warning(code: int) -> bool:
    return code in _WARNING_CODES or 2100 <= code < 2200


def map_status(ib_status: str, filled: float, remaining: float, error_code: int = 0) -> OrderStatus:
    """The order model's status for IBKR's ``ib_status``.

    PendingSubmit/ApiPending -> PendingSubmit; PreSubmitted/Submitted/PendingCancel (and ib_async's
    ValidationError, a warning on a live order) -> Submitted, or PartiallyFilled once some shares
    filled; Filled -> Filled; Cancelled/ApiCancelled -> Rejected when an order error (``error_code`` other
    than a cancel notice) ended it before any fill, else Cancelled; Inactive -> Inactive (Rejected with
    such an error code).

    >>> map_status("Submitted", filled=30, remaining=70)
    <OrderStatus.PARTIALLY_FILLED: 'PartiallyFilled'>
    >>> map_status("Cancelled", filled=0, remaining=100, error_code=201)
    <OrderStatus.REJECTED: 'Rejected'>
    """
    rejected = bool(error_code) and error_code not in _CANCEL_CODES and not _is_warning(error_code)
    if ib_status in ("PendingSubmit", "ApiPending"):
        return OrderStatus.PENDING_SUBMIT
    if ib_status in ("PreSubmitted", "Submitted", "PendingCancel", "ValidationError"):
        if filled > 0 and remaining > 0:
            return OrderStatus.PARTIALLY_FILLED
        return OrderStatus.SUBMITTED
    if ib_status == "Filled":
        return OrderStatus.FILLED
    if ib_status in ("Cancelled", "ApiCancelled"):
        return OrderStatus.REJECTED if rejected and filled <= 0 else OrderStatus.CANCELLED
    if ib_status == "Inactive":
        return OrderStatus.REJECTED if rejected and filled <= 0 else OrderStatus.INACTIVE
    # An unknown word from a newer gateway: keep the order visible as live rather than guess it ended.
    log.warning("unknown IBKR order status %r; treating it as Submitted", ib_status)
    return OrderStatus.SUBMITTED


def _price_or_none(value: Any) -> float | None:
    if value is None:
        return None
    price = float(value)
    return None if not math.isfinite(price) or price <= 0 or price >= _UNSET else price


def _qty(value: Any) -> float:
    qty = float(value or 0.0)
    return 0.0 if not math.isfinite(qty) or abs(qty) >= _UNSET else qty


def _utc(value: Any) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        return dt.datetime.now(dt.UTC)
    # The libraries stamp live events in UTC; executions from reqExecutions may come naive (gateway time,
    # which the API sends as UTC), so a naive time is read as UTC.
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _trade_error_code(trade: Any) -> int:
    """The last order-ending error IBKR logged on a trade (0 when none)."""
    for entry in reversed(getattr(trade, "log", []) or []):
        code = int(getattr(entry, "errorCode", 0) or 0)
        if code and not _is_warning(code):
            return code
    return 0


class IBAdapter:
    """The broker connection, translated to the order model. See the module docstring.

    ``client_library`` is ``"ib_insync"`` or ``"ib_async"``. ``account`` (optional) is checked against the
    gateway's managed accounts on connect and set on every order. Timeouts are seconds. Build it from
    settings with :meth:`from_settings`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4002,
        client_id: int = 1,
        account: str | None = None,
        client_library: str = "ib_insync",
        connect_timeout: float = 10.0,
        request_timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.client_id = int(client_id)
        self.account = account or None
        self.client_library = client_library
        self.connect_timeout = float(connect_timeout)
        self.request_timeout = float(request_timeout)
        self._lib = load_client_library(client_library)
        self._ib = self._lib.IB()
        self._contracts: dict[str, Any] = {}
        self._qualify_locks: dict[str, asyncio.Lock] = {}
        self._fills: dict[str, Fill] = {}  # exec_id -> fill, to match the commission report that follows
        self._listeners: list[Callable[[BrokerEvent], None]] = []
        self._streams: list[EventStream] = []
        ib = self._ib
        ib.connectedEvent += self._on_connected
        ib.disconnectedEvent += self._on_disconnected
        ib.orderStatusEvent += self._on_order_status
        ib.execDetailsEvent += self._on_exec_details
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error

    @classmethod
    def from_settings(cls, ibkr: IbkrSettings, **kwargs: Any) -> IBAdapter:
        """An adapter for the ``ibkr`` settings section (host, port, client_id, account, client_library).

        >>> from trader.config import load_settings
        >>> IBAdapter.from_settings(load_settings(env={}).ibkr).port
        4002
        """
        return cls(
            host=ibkr.host,
            port=ibkr.port,
            client_id=ibkr.client_id,
            account=ibkr.account,
            client_library=ibkr.client_library,
            **kwargs,
        )

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return (
            f"IBAdapter({self.host}:{self.port}, client_id={self.client_id}, {self.client_library}, {state})"
        )

    # -- connection ----------------------------------------------------------------------------------------

    @property
    def ib(self) -> Any:
        """The client library's ``IB`` object, for what this adapter does not translate (read-only use)."""
        return self._ib

    @property
    def connected(self) -> bool:
        """True while the API connection is up and synchronised."""
        return bool(self._ib.isConnected())

    @property
    def managed_accounts(self) -> list[str]:
        """Accounts the gateway manages for this login (empty while disconnected)."""
        return list(self._ib.managedAccounts()) if self.connected else []

    @property
    def server_version(self) -> int | None:
        """The gateway's API server version (None while disconnected)."""
        return int(self._ib.client.serverVersion()) if self.connected else None

    async def connect(self) -> None:
        """Connect and synchronise (open orders, completed orders, executions, positions, account).

        Raises BrokerConnectionError when the gateway cannot be reached, times out (often: the client id is
        in use) or does not manage ``account``. Connecting while connected does nothing.
        """
        if self.connected:
            return
        where = f"IB gateway at {self.host}:{self.port} (client id {self.client_id})"
        # Start from a clean client-side cache: ib_insync keeps the previous session's trades after a
        # disconnect() (ib_async clears them), and a stale 'Submitted' trade would hide a fill that happened
        # while we were away and stop the completed-orders sync from replacing it.
        self._ib.wrapper.reset()
        self._fills.clear()
        try:
            await self._ib.connectAsync(
                self.host,
                self.port,
                clientId=self.client_id,
                timeout=self.connect_timeout,
                # Not our account here: an unmanaged one would stall the sync for the whole timeout. With
                # one managed account the library subscribes it itself; with several, see below.
                account="",
            )
        except TimeoutError:
            raise BrokerConnectionError(
                f"{where}: no answer within {self.connect_timeout:g} s; is the API enabled and the client id "
                "free (another session may hold it)?"
            ) from None
        except (ConnectionError, OSError) as exc:
            raise BrokerConnectionError(
                f"{where}: cannot connect ({exc or type(exc).__name__}); is TWS / IB Gateway running with "
                "the API enabled on that port?"
            ) from None
        if not self.connected:
            raise BrokerConnectionError(f"{where}: the connection dropped while synchronising; try again")
        if self.account and self.account not in self.managed_accounts:
            accounts = ", ".join(self.managed_accounts) or "none"
            self.disconnect()
            raise BrokerConnectionError(
                f"{where}: account {self.account} is not managed by this login (managed: {accounts}); "
                "fix ibkr.account"
            )
        if self.account and len(self.managed_accounts) > 1:
            await self._request(
                self._ib.reqAccountUpdatesAsync(self.account), f"account updates {self.account}"
            )

    def disconnect(self) -> None:
        """Close the API connection (a ConnectionEvent DISCONNECTED follows). Safe when not connected."""
        self._ib.disconnect()

    def _require_connected(self) -> None:
        if not self.connected:
            raise NotConnectedError(
                f"not connected to the IB gateway at {self.host}:{self.port}; await adapter.connect() first"
            )

    async def _request(self, awaitable: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.request_timeout)
        except TimeoutError:
            raise BrokerConnectionError(
                f"{what}: no answer from {self.host}:{self.port} within {self.request_timeout:g} s"
            ) from None
        except ConnectionError as exc:
            raise NotConnectedError(f"{what}: connection lost ({exc}); reconnect and retry") from None

    # -- events --------------------------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[BrokerEvent], None]) -> None:
        """Call ``callback(event)`` for every event, in the event loop's thread. Exceptions are logged."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[BrokerEvent], None]) -> None:
        self._listeners.remove(callback)

    def stream(self, *kinds: type) -> EventStream:
        """An async iterator over events from now on, optionally only of the event classes ``kinds``.

        >>> async with adapter.stream(FillEvent, CommissionEvent) as fills:   # doctest: +SKIP
        ...     event = await fills.get(timeout=10)
        """
        stream = EventStream(kinds or None, on_close=self._streams.remove)
        self._streams.append(stream)
        return stream

    def _emit(self, event: BrokerEvent) -> None:
        for stream in list(self._streams):
            stream.put(event)
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:  # a listener's bug must not stop the client library's dispatch
                log.exception("broker event listener %r failed on %r", callback, event)

    def _on_connected(self) -> None:
        self._emit(ConnectionEvent(ConnectionState.CONNECTED, 0, "connected", dt.datetime.now(dt.UTC)))

    def _on_disconnected(self) -> None:
        self._emit(ConnectionEvent(ConnectionState.DISCONNECTED, 0, "disconnected", dt.datetime.now(dt.UTC)))

    def _on_order_status(self, trade: Any) -> None:
        self._emit(self._status_event(trade))

    def _on_exec_details(self, trade: Any, ib_fill: Any) -> None:
        fill = self._to_fill(ib_fill, trade, with_commission=False)
        self._fills[fill.exec_id] = fill
        self._emit(FillEvent(fill))

    def _on_commission(self, trade: Any, ib_fill: Any, report: Any) -> None:
        exec_id = str(report.execId)
        base = self._fills.get(exec_id) or self._to_fill(ib_fill, trade, with_commission=False)
        commission = float(report.commission)
        pnl_raw = float(report.realizedPNL or 0.0)
        pnl = pnl_raw if math.isfinite(pnl_raw) and abs(pnl_raw) < _UNSET else None
        self._emit(
            CommissionEvent(
                fill=base.with_commission(commission),
                exec_id=exec_id,
                commission=commission,
                currency=str(report.currency),
                realized_pnl=pnl,
            )
        )

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        now = dt.datetime.now(dt.UTC)
        if code in _CONNECTIVITY:
            self._emit(ConnectionEvent(_CONNECTIVITY[code], int(code), str(message), now))
            return
        trade = self._trade_by_order_id(int(req_id)) if req_id is not None and req_id >= 0 else None
        intent_id = (trade.order.orderRef or None) if trade is not None else None
        order_id = int(trade.order.orderId) if trade is not None else None
        self._emit(
            ErrorEvent(int(code), str(message), int(req_id), intent_id, order_id, _is_warning(code), now)
        )

    # -- translation ---------------------------------------------------------------------------------------

    def _status_event(self, trade: Any) -> StatusEvent:
        st = trade.orderStatus
        filled, remaining = _qty(st.filled), _qty(st.remaining)
        code = _trade_error_code(trade)
        last = trade.log[-1].time if trade.log else None
        return StatusEvent(
            intent_id=trade.order.orderRef or None,
            order_id=int(trade.order.orderId),
            perm_id=int(st.permId or trade.order.permId or 0),
            client_id=int(st.clientId or trade.order.clientId or 0),
            symbol=str(trade.contract.symbol),
            status=map_status(st.status, filled, remaining, code),
            ib_status=str(st.status),
            filled=filled,
            remaining=remaining,
            avg_price=_price_or_none(st.avgFillPrice) if filled > 0 else None,
            last_fill_price=_price_or_none(st.lastFillPrice),
            error_code=code,
            time=_utc(last),
        )

    def _to_fill(self, ib_fill: Any, trade: Any = None, *, with_commission: bool = True) -> Fill:
        ex = ib_fill.execution
        ref = ex.orderRef or (trade.order.orderRef if trade is not None else "")
        report = ib_fill.commissionReport
        commission = float(report.commission) if with_commission and report.execId else None
        return Fill(
            exec_id=str(ex.execId),
            intent_id=ref or None,
            perm_id=int(ex.permId),
            order_id=int(ex.orderId),
            symbol=str(ib_fill.contract.symbol),
            side=Side.BUY if ex.side in ("BOT", "BUY") else Side.SELL,
            qty=float(ex.shares),
            price=float(ex.price),
            time=_utc(ib_fill.time or ex.time),
            commission=commission,
        )

    def _snapshot(self, trade: Any) -> OrderSnapshot:
        order, st = trade.order, trade.orderStatus
        filled = _qty(st.filled) or _qty(getattr(order, "filledQuantity", 0.0))
        quantity = _qty(order.totalQuantity)
        remaining = _qty(st.remaining) if st.remaining or filled else max(quantity - filled, 0.0)
        tif = str(order.tif or "DAY")
        return OrderSnapshot(
            intent_id=order.orderRef or None,
            order_id=int(order.orderId),
            perm_id=int(st.permId or order.permId or 0),
            client_id=int(order.clientId or 0),
            symbol=str(trade.contract.symbol),
            side=Side.BUY if order.action == "BUY" else Side.SELL,
            quantity=quantity,
            order_type=_IB_TYPES.get(order.orderType),
            ib_order_type=str(order.orderType),
            limit_price=_price_or_none(order.lmtPrice),
            stop_price=_price_or_none(order.auxPrice),
            time_in_force=TimeInForce(tif) if tif in TimeInForce.__members__ else None,
            status=map_status(st.status, filled, remaining, _trade_error_code(trade)),
            ib_status=str(st.status),
            filled=filled,
            remaining=remaining,
            avg_price=_price_or_none(st.avgFillPrice) if filled > 0 else None,
        )

    def _trade_by_order_id(self, order_id: int) -> Any:
        for trade in self._ib.trades():
            if int(trade.order.orderId) == order_id and int(trade.order.clientId or 0) == self.client_id:
                return trade
        return None

    def _trade_for(self, intent_id: str) -> Any:
        """The gateway's trade for this intent: a live one if there is one, else the latest known."""
        found = [t for t in self._ib.trades() if t.order.orderRef == intent_id]
        live = [t for t in found if not t.isDone()]
        return (live or found or [None])[-1]

    # -- contracts -----------------------------------------------------------------------------------------

    async def qualify(self, symbol: str) -> Any:
        """The qualified ``Stock(symbol, "SMART", "USD")`` contract, asked for once and then cached.

        Raises ContractError when the gateway knows no such stock (or several).
        """
        cached = self._contracts.get(symbol)
        if cached is not None:
            return cached
        lock = self._qualify_locks.setdefault(symbol, asyncio.Lock())
        async with lock:  # two orders for a new symbol at once ask the gateway once
            cached = self._contracts.get(symbol)
            if cached is not None:
                return cached
            self._require_connected()
            stock = self._lib.Stock(symbol, "SMART", "USD")
            result = await self._request(self._ib.qualifyContractsAsync(stock), f"qualifying {symbol}")
            found = [c for c in result if c is not None and not isinstance(c, list) and c.conId]
            if len(found) != 1:
                raise ContractError(
                    f"the IB gateway has no unique USD stock {symbol!r} on SMART; check the symbol"
                )
            self._contracts[symbol] = found[0]
            return found[0]

    # -- orders --------------------------------------------------------------------------------------------

    async def place(self, intent: OrderIntent) -> int:
        """Send the order for ``intent``; returns the gateway order id. Statuses and fills follow as events.

        orderRef is the intent_id, tif and type map one to one (STP_LMT -> "STP LMT"). Raises
        NotConnectedError, ContractError, or DuplicateIntentError when the gateway already shows an order
        with this orderRef (never send an intent twice).
        """
        if not isinstance(intent, OrderIntent):
            raise TypeError(f"place() takes an OrderIntent, got {type(intent).__name__}")
        self._require_connected()
        contract = await self.qualify(intent.symbol)
        self._require_connected()
        # Checked after the last await: nothing else runs between this check and placeOrder below.
        existing = self._trade_for(intent.intent_id)
        if existing is not None:
            raise DuplicateIntentError(
                f"intent {intent.intent_id}: the gateway already has order {existing.order.orderId} "
                f"({existing.orderStatus.status}) for it; not sending it again"
            )
        order = self._lib.Order(
            action=intent.side.value,
            totalQuantity=intent.quantity,
            orderType=intent.order_type.ib_code,
            tif=intent.time_in_force.value,
            orderRef=intent.intent_id,
            transmit=True,
        )
        if intent.limit_price is not None:
            order.lmtPrice = intent.limit_price
        if intent.stop_price is not None:
            order.auxPrice = intent.stop_price
        if self.account:
            order.account = self.account
        trade = self._ib.placeOrder(contract, order)
        return int(trade.order.orderId)

    async def cancel(self, intent_id: str) -> None:
        """Ask the gateway to cancel the order of ``intent_id``; a Cancelled status follows as an event.

        Raises UnknownIntentError when the gateway shows no order for it, OrderNotOpenError when that order
        is already filled or cancelled.
        """
        self._require_connected()
        trade = self._trade_for(intent_id)
        if trade is None:
            raise UnknownIntentError(f"no order for intent {intent_id} at the gateway; nothing to cancel")
        if trade.isDone():
            raise OrderNotOpenError(
                f"intent {intent_id}: order {trade.order.orderId} is already {trade.orderStatus.status}"
            )
        self._ib.cancelOrder(trade.order)

    async def open_orders(self) -> list[OrderSnapshot]:
        """This client's open orders, fresh from the gateway (after a reconnect too)."""
        self._require_connected()
        trades = await self._request(self._ib.reqOpenOrdersAsync(), "open orders")
        return [self._snapshot(t) for t in trades]

    async def completed_orders(self) -> list[OrderSnapshot]:
        """Orders completed today (filled, cancelled, rejected), all clients', fresh from the gateway."""
        self._require_connected()
        trades = await self._request(self._ib.reqCompletedOrdersAsync(False), "completed orders")
        return [self._snapshot(t) for t in trades]

    async def executions(self) -> list[Fill]:
        """Today's executions as fills (commission set when its report has arrived)."""
        self._require_connected()
        fills = await self._request(self._ib.reqExecutionsAsync(), "executions")
        # The library answers with fresh Fill objects; commission reports land on the copy it keeps per
        # execId (ib.fills()), so take the commission from there when it has arrived.
        reports = {f.commissionReport.execId: f.commissionReport for f in self._ib.fills()}
        out = []
        for ib_fill in fills:
            fill = self._to_fill(ib_fill)
            report = reports.get(fill.exec_id)
            if fill.commission is None and report is not None:
                fill = fill.with_commission(float(report.commission))
            out.append(fill)
        return out

    async def positions(self) -> list[PositionSnapshot]:
        """Positions of every managed account, fresh from the gateway."""
        self._require_connected()
        positions = await self._request(self._ib.reqPositionsAsync(), "positions")
        return [
            PositionSnapshot(
                account=str(p.account),
                symbol=str(p.contract.symbol),
                con_id=int(p.contract.conId),
                quantity=float(p.position),
                avg_cost=float(p.avgCost),
            )
            for p in positions
        ]

    async def account_values(self) -> list[AccountValue]:
        """Account values (NetLiquidation, BuyingPower, ...) streamed since connect; of ``account`` if set."""
        self._require_connected()
        values = self._ib.accountValues(self.account or "")
        return [AccountValue(str(v.account), str(v.tag), str(v.value), str(v.currency)) for v in values]
