"""What the broker adapter reports, as plain immutable values (no client-library objects leak out).

Events (:data:`BrokerEvent`): :class:`StatusEvent` (an order's status changed), :class:`FillEvent` (an
execution), :class:`CommissionEvent` (the commission report of an execution, matched to it by exec_id),
:class:`ErrorEvent` (a gateway error or warning), :class:`ConnectionEvent` (connected, disconnected, and
IBKR's 1100 / 1101 / 1102 connectivity notices). Snapshots: :class:`OrderSnapshot`,
:class:`PositionSnapshot`, :class:`AccountValue`.

:class:`EventStream` is an async iterator over events, for use inside a running event loop::

    async with adapter.stream() as events:
        async for event in events:
            if isinstance(event, FillEvent):
                journal.record_fill(event.fill)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType

from trader.broker.order import Fill, OrderStatus, OrderType, Side, TimeInForce

__all__ = [
    "AccountValue",
    "BrokerEvent",
    "CommissionEvent",
    "ConnectionEvent",
    "ConnectionState",
    "ErrorEvent",
    "EventStream",
    "FillEvent",
    "OrderSnapshot",
    "PositionSnapshot",
    "StatusEvent",
]


class ConnectionState(enum.StrEnum):
    """Connection news. The last three are IBKR's notices 1100, 1101 and 1102 (the API socket stays up)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CONNECTIVITY_LOST = "connectivity_lost"  # 1100: gateway lost its link to IBKR
    CONNECTIVITY_RESTORED_DATA_LOST = "connectivity_restored_data_lost"  # 1101: resubscribe market data
    CONNECTIVITY_RESTORED = "connectivity_restored"  # 1102: link back, data kept


@dataclass(frozen=True)
class StatusEvent:
    """An order's status changed. ``status`` is the order model's; ``ib_status`` IBKR's own word.

    ``filled``/``remaining`` are shares, ``avg_price`` the average price of the filled shares (None when
    nothing filled), ``error_code`` the IBKR error that ended the order (0 when none), ``time`` UTC.
    """

    intent_id: str | None
    order_id: int
    perm_id: int
    client_id: int
    symbol: str
    status: OrderStatus
    ib_status: str
    filled: float
    remaining: float
    avg_price: float | None
    last_fill_price: float | None
    error_code: int
    time: dt.datetime


@dataclass(frozen=True)
class FillEvent:
    """An execution (IBKR execDetails). ``fill.commission`` is None here; it follows in a CommissionEvent."""

    fill: Fill


@dataclass(frozen=True)
class CommissionEvent:
    """The commission report of one execution, matched by exec_id; ``fill`` carries the commission.

    ``commission`` and ``realized_pnl`` are in ``currency``.
    """

    fill: Fill
    exec_id: str
    commission: float
    currency: str
    realized_pnl: float | None


@dataclass(frozen=True)
class ErrorEvent:
    """A gateway error or warning (code and message as IBKR sends them).

    ``req_id`` is the request or order id it is about (-1 for none); ``intent_id`` and ``order_id`` are set
    when it is about one of the orders the adapter knows. ``warning`` is True for IBKR's informational
    codes (2100-2199 and the order warnings), which do not end an order.
    """

    code: int
    message: str
    req_id: int
    intent_id: str | None
    order_id: int | None
    warning: bool
    time: dt.datetime


@dataclass(frozen=True)
class ConnectionEvent:
    """Connection news; ``code`` is IBKR's (1100/1101/1102) or 0 for connect and disconnect."""

    state: ConnectionState
    code: int
    message: str
    time: dt.datetime


BrokerEvent = StatusEvent | FillEvent | CommissionEvent | ErrorEvent | ConnectionEvent


@dataclass(frozen=True)
class OrderSnapshot:
    """An order as the gateway reports it (open or completed). Quantities in shares, prices per share.

    ``order_type`` is None for an IBKR order type the order model does not have (``ib_order_type`` keeps it).
    """

    intent_id: str | None
    order_id: int
    perm_id: int
    client_id: int
    symbol: str
    side: Side
    quantity: float
    order_type: OrderType | None
    ib_order_type: str
    limit_price: float | None
    stop_price: float | None
    time_in_force: TimeInForce | None
    status: OrderStatus
    ib_status: str
    filled: float
    remaining: float
    avg_price: float | None


@dataclass(frozen=True)
class PositionSnapshot:
    """A position: ``quantity`` shares (negative = short), ``avg_cost`` per share in the account currency."""

    account: str
    symbol: str
    con_id: int
    quantity: float
    avg_cost: float


@dataclass(frozen=True)
class AccountValue:
    """One account value as IBKR names it (``tag`` e.g. NetLiquidation, ``value`` as text)."""

    account: str
    tag: str
    value: str
    currency: str


class EventStream:
    """An async iterator over broker events from the moment it was opened; unbounded, never drops.

    ``kinds`` limits it to some event classes. Close it (or use ``async with``) so the adapter stops
    queueing for it.
    """

    def __init__(
        self,
        kinds: tuple[type, ...] | None = None,
        on_close: Callable[[EventStream], None] | None = None,
    ) -> None:
        self._queue: asyncio.Queue[BrokerEvent] = asyncio.Queue()
        self._kinds = kinds
        self._on_close = on_close
        self.closed = False

    def put(self, event: BrokerEvent) -> None:
        """Queue an event (called by the adapter, in the event loop's thread)."""
        if not self.closed and (self._kinds is None or isinstance(event, self._kinds)):
            self._queue.put_nowait(event)

    def pending(self) -> int:
        """Events queued and not yet read."""
        return self._queue.qsize()

    async def get(self, timeout: float | None = None) -> BrokerEvent:
        """The next event; TimeoutError after ``timeout`` seconds without one."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    async def wait_for(self, predicate: Callable[[BrokerEvent], bool], timeout: float) -> BrokerEvent:
        """The first event satisfying ``predicate`` within ``timeout`` seconds; events before it are consumed.

        >>> await events.wait_for(lambda e: isinstance(e, FillEvent), timeout=5)   # doctest: +SKIP
        """

        async def scan() -> BrokerEvent:
            while True:
                event = await self._queue.get()
                if predicate(event):
                    return event

        return await asyncio.wait_for(scan(), timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._on_close is not None:
                self._on_close(self)

    def __aiter__(self) -> AsyncIterator[BrokerEvent]:
        return self

    async def __anext__(self) -> BrokerEvent:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
