"""IBAdapter without a gateway: the client library's events are translated to the order model.

The events are emitted on the library's own ``IB`` object with the library's own types, exactly as its
wrapper does when messages arrive; the gateway round trip is covered by
tests/integration/test_broker_adapter.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from typing import Any

import pytest

from trader.broker.adapter import IBAdapter, map_status
from trader.broker.clients import load_client_library
from trader.broker.errors import BrokerConnectionError, NotConnectedError
from trader.broker.events import (
    CommissionEvent,
    ConnectionEvent,
    ConnectionState,
    ErrorEvent,
    EventStream,
    FillEvent,
    StatusEvent,
)
from trader.broker.order import OrderIntent, OrderStatus, Side
from trader.config import IbkrSettings

TS = dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC)
LIBRARIES = ["ib_insync", "ib_async"]


@pytest.mark.parametrize(
    ("ib_status", "filled", "remaining", "code", "expected"),
    [
        ("PendingSubmit", 0, 100, 0, OrderStatus.PENDING_SUBMIT),
        ("ApiPending", 0, 100, 0, OrderStatus.PENDING_SUBMIT),
        ("PreSubmitted", 0, 100, 0, OrderStatus.SUBMITTED),
        ("Submitted", 0, 100, 0, OrderStatus.SUBMITTED),
        ("Submitted", 40, 60, 0, OrderStatus.PARTIALLY_FILLED),
        ("PendingCancel", 0, 100, 0, OrderStatus.SUBMITTED),
        ("ValidationError", 0, 100, 399, OrderStatus.SUBMITTED),
        ("Filled", 100, 0, 0, OrderStatus.FILLED),
        ("Cancelled", 0, 100, 0, OrderStatus.CANCELLED),
        ("Cancelled", 0, 100, 202, OrderStatus.CANCELLED),
        ("Cancelled", 40, 60, 0, OrderStatus.CANCELLED),
        ("ApiCancelled", 0, 100, 0, OrderStatus.CANCELLED),
        ("Cancelled", 0, 100, 201, OrderStatus.REJECTED),
        ("Cancelled", 40, 60, 201, OrderStatus.CANCELLED),  # ended by an error after fills: not a rejection
        ("Inactive", 0, 100, 0, OrderStatus.INACTIVE),
        ("Inactive", 0, 100, 201, OrderStatus.REJECTED),
        ("Cancelled", 0, 100, 2109, OrderStatus.CANCELLED),  # an informational code is no rejection
    ],
)
def test_map_status(ib_status: str, filled: float, remaining: float, code: int, expected: OrderStatus):
    assert map_status(ib_status, filled, remaining, code) is expected


def adapter_for(name: str) -> IBAdapter:
    return IBAdapter(port=4002, client_id=3, client_library=name)


def make_trade(lib: Any, status: str = "Submitted", filled: float = 0.0, remaining: float = 100.0) -> Any:
    order = lib.Order(
        orderId=7,
        clientId=3,
        permId=9001,
        orderRef="SPY-1",
        action="BUY",
        totalQuantity=100,
        orderType="LMT",
        lmtPrice=470.5,
        tif="DAY",
    )
    order_status = lib.OrderStatus(
        orderId=7,
        status=status,
        filled=filled,
        remaining=remaining,
        avgFillPrice=470.1 if filled else 0.0,
        permId=9001,
        clientId=3,
    )
    log = [lib.TradeLogEntry(TS, status, "")]
    return lib.Trade(lib.Stock("SPY", "SMART", "USD"), order, order_status, [], log)


def make_ib_fill(lib: Any, exec_id: str, shares: float, price: float, side: str = "BOT") -> Any:
    execution = lib.Execution(
        execId=exec_id,
        time=TS,
        side=side,
        shares=shares,
        price=price,
        permId=9001,
        clientId=3,
        orderId=7,
        orderRef="SPY-1",
    )
    return lib.Fill(lib.Stock("SPY", "SMART", "USD"), execution, lib.CommissionReport(), TS)


def drain(adapter: IBAdapter, emit: Any, *kinds: type) -> list[Any]:
    async def main() -> list[Any]:
        async with adapter.stream(*kinds) as events:
            emit()
            return [await events.get(timeout=1) for _ in range(events.pending())]

    return asyncio.run(main())


@pytest.mark.parametrize("name", LIBRARIES)
def test_status_changes_map_to_the_order_model(name: str):
    lib = load_client_library(name)
    adapter = adapter_for(name)
    partial = make_trade(lib, "Submitted", filled=40, remaining=60)
    [event] = drain(adapter, lambda: adapter.ib.orderStatusEvent.emit(partial))
    assert isinstance(event, StatusEvent)
    assert (event.intent_id, event.order_id, event.perm_id, event.client_id, event.symbol) == (
        "SPY-1", 7, 9001, 3, "SPY",
    )  # fmt: skip
    assert (event.status, event.ib_status) == (OrderStatus.PARTIALLY_FILLED, "Submitted")
    assert (event.filled, event.remaining, event.avg_price) == (40.0, 60.0, 470.1)
    assert event.time == TS and event.error_code == 0


@pytest.mark.parametrize("name", LIBRARIES)
def test_an_order_ended_by_an_error_is_rejected(name: str):
    lib = load_client_library(name)
    adapter = adapter_for(name)
    trade = make_trade(lib, "Cancelled")
    trade.log.append(lib.TradeLogEntry(TS, "Cancelled", "Error 201, reqId 7: Order rejected", 201))
    [event] = drain(adapter, lambda: adapter.ib.orderStatusEvent.emit(trade))
    assert event.status is OrderStatus.REJECTED and event.error_code == 201


@pytest.mark.parametrize("name", LIBRARIES)
def test_fill_then_commission_are_matched_by_exec_id(name: str):
    lib = load_client_library(name)
    adapter = adapter_for(name)
    trade = make_trade(lib)
    first, second = make_ib_fill(lib, "e1", 40, 470.0), make_ib_fill(lib, "e2", 60, 470.2)

    def emit() -> None:
        adapter.ib.execDetailsEvent.emit(trade, first)
        adapter.ib.execDetailsEvent.emit(trade, second)
        # Reports arrive in another order than the executions; each finds its own fill.
        report = lib.CommissionReport(execId="e2", commission=1.2, currency="USD", realizedPNL=0.0)
        adapter.ib.commissionReportEvent.emit(trade, second, report)
        report = lib.CommissionReport(execId="e1", commission=1.0, currency="USD", realizedPNL=0.0)
        adapter.ib.commissionReportEvent.emit(trade, first, report)

    events = drain(adapter, emit)
    assert [type(e) for e in events] == [FillEvent, FillEvent, CommissionEvent, CommissionEvent]
    fill = events[0].fill
    assert (fill.exec_id, fill.intent_id, fill.perm_id, fill.order_id, fill.symbol) == (
        "e1", "SPY-1", 9001, 7, "SPY",
    )  # fmt: skip
    assert (fill.side, fill.qty, fill.price, fill.time, fill.commission) == (Side.BUY, 40.0, 470.0, TS, None)
    assert events[2].exec_id == "e2" and events[2].fill.qty == 60.0 and events[2].fill.commission == 1.2
    assert events[3].exec_id == "e1" and events[3].fill == fill.with_commission(1.0)
    assert events[3].currency == "USD" and events[3].realized_pnl == 0.0


@pytest.mark.parametrize("name", LIBRARIES)
def test_sold_executions_are_sell_fills(name: str):
    lib = load_client_library(name)
    adapter = adapter_for(name)
    emit = lambda: adapter.ib.execDetailsEvent.emit(make_trade(lib), make_ib_fill(lib, "e3", 5, 10.0, "SLD"))  # noqa: E731
    [event] = drain(adapter, emit)
    assert event.fill.side is Side.SELL and event.fill.signed_qty == -5.0


@pytest.mark.parametrize("name", LIBRARIES)
@pytest.mark.parametrize(
    ("code", "state"),
    [
        (1100, ConnectionState.CONNECTIVITY_LOST),
        (1101, ConnectionState.CONNECTIVITY_RESTORED_DATA_LOST),
        (1102, ConnectionState.CONNECTIVITY_RESTORED),
    ],
)
def test_connectivity_notices_are_connection_events(name: str, code: int, state: ConnectionState):
    adapter = adapter_for(name)
    [event] = drain(adapter, lambda: adapter.ib.errorEvent.emit(-1, code, "Connectivity notice", None))
    assert isinstance(event, ConnectionEvent) and event.state is state and event.code == code


@pytest.mark.parametrize("name", LIBRARIES)
def test_errors_name_the_order_they_are_about(name: str):
    lib = load_client_library(name)
    adapter = adapter_for(name)
    trade = make_trade(lib)
    adapter.ib.wrapper.trades[(3, 7)] = trade  # as the wrapper keeps a placed order

    def emit() -> None:
        adapter.ib.errorEvent.emit(7, 201, "Order rejected - reason: test", None)
        adapter.ib.errorEvent.emit(-1, 2104, "Market data farm connection is OK", None)

    order_error, info = drain(adapter, emit, ErrorEvent)
    assert (order_error.code, order_error.intent_id, order_error.order_id, order_error.warning) == (
        201, "SPY-1", 7, False,
    )  # fmt: skip
    assert (info.code, info.intent_id, info.req_id, info.warning) == (2104, None, -1, True)


def test_stream_filters_by_kind_and_close_stops_delivery():
    adapter = adapter_for("ib_insync")

    async def main() -> tuple[int, int]:
        connection_only = adapter.stream(ConnectionEvent)
        everything = adapter.stream()
        adapter.ib.errorEvent.emit(-1, 2104, "farm OK", None)
        adapter.ib.errorEvent.emit(-1, 1100, "lost", None)
        counts = connection_only.pending(), everything.pending()
        connection_only.close()
        everything.close()
        adapter.ib.errorEvent.emit(-1, 1102, "restored", None)
        assert (connection_only.pending(), everything.pending()) == counts
        return counts

    assert asyncio.run(main()) == (1, 2)


def test_a_failing_listener_is_logged_and_others_still_run(caplog: pytest.LogCaptureFixture):
    adapter = adapter_for("ib_insync")
    seen: list[Any] = []

    def broken(event: Any) -> None:
        raise RuntimeError("listener bug")

    adapter.add_listener(broken)
    adapter.add_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="trader.broker.adapter"):
        adapter.ib.errorEvent.emit(-1, 1100, "lost", None)
    assert len(seen) == 1 and "listener" in caplog.text
    adapter.remove_listener(broken)


def test_requests_need_a_connection():
    adapter = adapter_for("ib_insync")
    intent = OrderIntent(intent_id="SPY-1", symbol="SPY", side="BUY", quantity=1, created_at=TS, source="t")

    async def main() -> None:
        assert not adapter.connected and adapter.server_version is None and adapter.managed_accounts == []
        for call in (
            adapter.place(intent),
            adapter.cancel("SPY-1"),
            adapter.open_orders(),
            adapter.positions(),
        ):
            with pytest.raises(NotConnectedError, match="connect"):
                await call

    asyncio.run(main())


@pytest.mark.parametrize("name", LIBRARIES)
def test_connect_to_a_closed_port_is_a_clear_error(name: str):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    adapter = IBAdapter(port=port, client_id=1, client_library=name, connect_timeout=5)
    with pytest.raises(BrokerConnectionError, match=f"127.0.0.1:{port}"):
        asyncio.run(adapter.connect())
    assert not adapter.connected


def test_from_settings_takes_the_ibkr_section():
    ibkr = IbkrSettings(host="10.0.0.5", port=7497, client_id=11, account="DU1", client_library="ib_async")
    adapter = IBAdapter.from_settings(ibkr)
    assert (adapter.host, adapter.port, adapter.client_id, adapter.account, adapter.client_library) == (
        "10.0.0.5", 7497, 11, "DU1", "ib_async",
    )  # fmt: skip
    assert type(adapter.ib).__module__.startswith("ib_async")


def test_event_stream_get_times_out():
    async def main() -> None:
        stream = EventStream()
        with pytest.raises(TimeoutError):
            await stream.get(timeout=0.01)
        stream.put(ConnectionEvent(ConnectionState.CONNECTED, 0, "connected", TS))
        assert (await stream.get(timeout=1)).state is ConnectionState.CONNECTED

    asyncio.run(main())
