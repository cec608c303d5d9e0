"""IBAdapter against the simulated gateway (trader.ibsim) over a real socket, with both client libraries.

Each test runs inside ``asyncio.run(...)`` (a running loop, as in a Ray async actor) and awaits events with
timeouts; nothing sleeps. The gateway runs in its own thread; its control calls are made through
``asyncio.to_thread`` so they never block the loop that has to read the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from trader.broker.adapter import IBAdapter
from trader.broker.errors import BrokerConnectionError, ContractError, DuplicateIntentError, OrderNotOpenError
from trader.broker.events import (
    BrokerEvent,
    CommissionEvent,
    ConnectionEvent,
    ConnectionState,
    ErrorEvent,
    FillEvent,
    StatusEvent,
)
from trader.broker.journal import OrderJournal
from trader.broker.order import OrderIntent, OrderStatus, OrderType, Side
from trader.ibsim import GatewayConfig, run_gateway

pytestmark = pytest.mark.integration

ACCOUNT = "DU1234567"
TS = dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC)
TIMEOUT = 15.0  # seconds to wait for one event; generous for a loaded 2-core machine
LIBRARIES = ["ib_insync", "ib_async"]


# The highest API version each client speaks; the gateway is run at that ceiling for the client under test.
SERVER_VERSION = {"ib_insync": 176, "ib_async": 178}


@pytest.fixture()
def gateway(request: pytest.FixtureRequest) -> Iterator[Any]:
    callspec = getattr(request.node, "callspec", None)
    library = callspec.params.get("library", "ib_insync") if callspec else "ib_insync"
    config = GatewayConfig(
        port=0,
        account=ACCOUNT,
        server_version=SERVER_VERSION[library],
        symbols=("SPY", "QQQ"),
        max_order_qty=1000,
    )
    with run_gateway(config) as gw:
        yield gw


def make_intent(intent_id: str, **overrides: Any) -> OrderIntent:
    fields: dict[str, Any] = {
        "intent_id": intent_id,
        "symbol": "SPY",
        "side": "BUY",
        "quantity": 10,
        "created_at": TS,
        "source": "integration",
    }
    fields.update(overrides)
    return OrderIntent(**fields)


def status_of(intent_id: str, *statuses: OrderStatus) -> Callable[[BrokerEvent], bool]:
    return lambda e: isinstance(e, StatusEvent) and e.intent_id == intent_id and e.status in statuses


async def control(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a gateway control method off the loop (it may wait for the gateway's own loop)."""
    return await asyncio.to_thread(fn, *args)


def run(coro_fn: Callable[[], Any]) -> Any:
    return asyncio.run(coro_fn())


def make_adapter(gw: Any, library: str, client_id: int = 7) -> IBAdapter:
    return IBAdapter(
        port=gw.port, client_id=client_id, account=ACCOUNT, client_library=library, request_timeout=TIMEOUT
    )


@contextlib.asynccontextmanager
async def connected(gw: Any, library: str, client_id: int = 7) -> AsyncIterator[IBAdapter]:
    """A connected adapter, disconnected at the end even when the test fails (before its loop closes)."""
    adapter = make_adapter(gw, library, client_id)
    await adapter.connect()
    try:
        yield adapter
    finally:
        adapter.disconnect()


@pytest.mark.parametrize("library", LIBRARIES)
def test_connects_inside_a_running_loop(gateway: Any, library: str):
    async def main() -> None:
        asyncio.get_running_loop()  # the adapter runs inside this loop, as in an async actor
        adapter = make_adapter(gateway, library)
        async with adapter.stream(ConnectionEvent) as events:
            await adapter.connect()
            assert adapter.connected
            assert adapter.managed_accounts == [ACCOUNT]
            assert adapter.server_version == SERVER_VERSION[library]
            event = await events.wait_for(lambda e: e.state is ConnectionState.CONNECTED, TIMEOUT)
            assert event.code == 0
            adapter.disconnect()
            await events.wait_for(lambda e: e.state is ConnectionState.DISCONNECTED, TIMEOUT)
        assert not adapter.connected and adapter.server_version is None

    run(main)


@pytest.mark.parametrize("library", LIBRARIES)
def test_an_account_the_login_does_not_manage_is_refused(gateway: Any, library: str):
    adapter = IBAdapter(port=gateway.port, client_id=8, account="DU7654321", client_library=library)
    with pytest.raises(BrokerConnectionError, match=f"DU7654321 is not managed .*managed: {ACCOUNT}"):
        run(adapter.connect)
    assert not adapter.connected


@pytest.mark.parametrize("library", LIBRARIES)
def test_contract_is_qualified_once_and_cached(gateway: Any, library: str):
    async def main() -> None:
        async with connected(gateway, library) as adapter:
            calls: list[Any] = []
            real = adapter.ib.qualifyContractsAsync

            async def counting(*contracts: Any) -> Any:
                calls.append(contracts)
                return await real(*contracts)

            adapter.ib.qualifyContractsAsync = counting
            await control(gateway.set_price, "SPY", 400.0)
            first = await adapter.qualify("SPY")
            assert first.conId > 0 and first.symbol == "SPY" and first.exchange == "SMART"
            assert await adapter.qualify("SPY") is first
            await adapter.place(make_intent("CACHE-1", order_type="LMT", limit_price=300.0))
            await adapter.place(make_intent("CACHE-2", order_type="LMT", limit_price=300.0))
            assert len(calls) == 1
            with pytest.raises(ContractError, match="NOPE"):
                await adapter.qualify("NOPE")

    run(main)


@pytest.mark.parametrize("library", LIBRARIES)
def test_market_order_status_fill_and_commission_map_to_the_intent(gateway: Any, library: str):
    async def main() -> None:
        async with connected(gateway, library) as adapter:
            await control(gateway.set_price, "SPY", 400.0)
            intent = make_intent("MKT-1", quantity=10)
            async with adapter.stream() as events:
                order_id = await adapter.place(intent)
                assert order_id > 0
                fill_event = await events.wait_for(lambda e: isinstance(e, FillEvent), TIMEOUT)
                commission = await events.wait_for(lambda e: isinstance(e, CommissionEvent), TIMEOUT)
                filled = await events.wait_for(status_of("MKT-1", OrderStatus.FILLED), TIMEOUT)
            fill = fill_event.fill
            assert (fill.intent_id, fill.order_id, fill.symbol, fill.side) == (
                "MKT-1",
                order_id,
                "SPY",
                Side.BUY,
            )
            assert fill.qty == 10 and fill.price == pytest.approx(400.0)
            assert fill.commission is None
            assert commission.exec_id == fill.exec_id and commission.fill.intent_id == "MKT-1"
            # The simulated gateway charges max(min_commission, per_share x shares): max(1.0, 0.005 x 10).
            assert (
                commission.commission == pytest.approx(max(1.0, 0.005 * 10)) and commission.currency == "USD"
            )
            assert commission.fill == fill.with_commission(commission.commission)
            assert (filled.order_id, filled.filled, filled.remaining) == (order_id, 10.0, 0.0)
            assert filled.avg_price == pytest.approx(400.0) and filled.perm_id == fill.perm_id

            executions = await adapter.executions()
            assert [(f.exec_id, f.intent_id, f.commission) for f in executions] == [
                (fill.exec_id, "MKT-1", commission.commission)
            ]
            positions = await adapter.positions()
            assert [(p.account, p.symbol, p.quantity) for p in positions] == [(ACCOUNT, "SPY", 10.0)]
            completed = await adapter.completed_orders()
            done = [o for o in completed if o.intent_id == "MKT-1"]
            assert (
                len(done) == 1
                and done[0].status is OrderStatus.FILLED
                and done[0].order_type is OrderType.MKT
            )
            tags = {v.tag for v in await adapter.account_values()}
            assert "NetLiquidation" in tags

    run(main)


@pytest.mark.parametrize("library", LIBRARIES)
def test_limit_order_rests_then_fills_when_the_price_comes(gateway: Any, library: str):
    async def main() -> None:
        async with connected(gateway, library) as adapter:
            await control(gateway.set_price, "SPY", 400.0)
            intent = make_intent(
                "LMT-1", quantity=20, order_type="LMT", limit_price=395.0, time_in_force="GTC"
            )
            async with adapter.stream() as events:
                order_id = await adapter.place(intent)
                await events.wait_for(status_of("LMT-1", OrderStatus.SUBMITTED), TIMEOUT)
                [snapshot] = [o for o in await adapter.open_orders() if o.intent_id == "LMT-1"]
                assert (snapshot.order_id, snapshot.order_type, snapshot.limit_price) == (
                    order_id,
                    OrderType.LMT,
                    395.0,
                )
                assert (snapshot.side, snapshot.quantity, snapshot.status) == (
                    Side.BUY,
                    20.0,
                    OrderStatus.SUBMITTED,
                )
                assert snapshot.time_in_force is not None and snapshot.time_in_force.value == "GTC"
                await control(gateway.set_price, "SPY", 394.0)
                fill_event = await events.wait_for(lambda e: isinstance(e, FillEvent), TIMEOUT)
                await events.wait_for(status_of("LMT-1", OrderStatus.FILLED), TIMEOUT)
            assert fill_event.fill.intent_id == "LMT-1" and fill_event.fill.price <= 395.0
            assert not [o for o in await adapter.open_orders() if o.intent_id == "LMT-1"]

    run(main)


@pytest.mark.parametrize("library", LIBRARIES)
def test_cancel(gateway: Any, library: str):
    async def main() -> None:
        async with connected(gateway, library) as adapter:
            await control(gateway.set_price, "SPY", 400.0)
            async with adapter.stream(StatusEvent) as events:
                await adapter.place(make_intent("CXL-1", order_type="LMT", limit_price=300.0))
                await events.wait_for(status_of("CXL-1", OrderStatus.SUBMITTED), TIMEOUT)
                await adapter.cancel("CXL-1")
                await events.wait_for(status_of("CXL-1", OrderStatus.CANCELLED), TIMEOUT)
            with pytest.raises(OrderNotOpenError, match="CXL-1"):
                await adapter.cancel("CXL-1")
            assert not [o for o in await adapter.open_orders() if o.intent_id == "CXL-1"]

    run(main)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_refused_order_is_rejected_with_the_error(gateway: Any, library: str):
    async def main() -> None:
        async with connected(gateway, library) as adapter:
            await control(gateway.set_price, "SPY", 400.0)
            # Two streams: the libraries emit the status and the error in either order.
            async with adapter.stream(StatusEvent) as statuses, adapter.stream(ErrorEvent) as errors:
                await adapter.place(make_intent("BIG-1", quantity=5000))  # above the gateway's max_order_qty
                error = await errors.wait_for(lambda e: e.code == 201, TIMEOUT)
                rejected = await statuses.wait_for(status_of("BIG-1", OrderStatus.REJECTED), TIMEOUT)
            assert error.intent_id == "BIG-1" and not error.warning
            assert rejected.error_code == 201

    run(main)


def is_connection(state: ConnectionState) -> Callable[[BrokerEvent], bool]:
    return lambda e: isinstance(e, ConnectionEvent) and e.state is state


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("fault", ["drop_connections", "restart"])
def test_open_orders_after_reconnect_and_no_double_send(gateway: Any, library: str, fault: str):
    async def main() -> None:
        async with connected(gateway, library, client_id=11) as adapter:
            await control(gateway.set_price, "SPY", 400.0)
            intent = make_intent("RECON-1", order_type="LMT", limit_price=350.0, time_in_force="GTC")
            async with adapter.stream() as events:
                order_id = await adapter.place(intent)
                await events.wait_for(status_of("RECON-1", OrderStatus.SUBMITTED), TIMEOUT)

                await control(getattr(gateway, fault))  # the gateway goes away under us (state kept)
                await events.wait_for(is_connection(ConnectionState.DISCONNECTED), TIMEOUT)
                assert not adapter.connected

                await adapter.connect()
                await events.wait_for(is_connection(ConnectionState.CONNECTED), TIMEOUT)
            [snapshot] = [o for o in await adapter.open_orders() if o.intent_id == "RECON-1"]
            assert (snapshot.order_id, snapshot.status, snapshot.limit_price) == (
                order_id,
                OrderStatus.SUBMITTED,
                350.0,
            )
            with pytest.raises(DuplicateIntentError, match="RECON-1"):
                await adapter.place(intent)
            async with adapter.stream(StatusEvent) as statuses:
                await adapter.cancel("RECON-1")  # the order found after reconnect can be managed
                await statuses.wait_for(status_of("RECON-1", OrderStatus.CANCELLED), TIMEOUT)

    run(main)


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_fill_while_disconnected_is_found_after_reconnect(gateway: Any, library: str):
    """What reconciliation relies on: executions, completed orders and the double-send guard."""

    async def main() -> None:
        async with connected(gateway, library, client_id=12) as adapter:
            await control(gateway.set_price, "SPY", 400.0)
            intent = make_intent("AWAY-1", quantity=15, order_type="LMT", limit_price=390.0)
            async with adapter.stream() as events:
                order_id = await adapter.place(intent)
                await events.wait_for(status_of("AWAY-1", OrderStatus.SUBMITTED), TIMEOUT)
                adapter.disconnect()
                await events.wait_for(is_connection(ConnectionState.DISCONNECTED), TIMEOUT)
            assert await control(gateway.fill_open_orders, 389.5, "SPY", "AWAY-1") == 1
            await adapter.connect()
            fills = [f for f in await adapter.executions() if f.intent_id == "AWAY-1"]
            assert [(f.order_id, f.qty, f.price, f.side) for f in fills] == [
                (order_id, 15.0, 389.5, Side.BUY)
            ]
            assert not [o for o in await adapter.open_orders() if o.intent_id == "AWAY-1"]
            [done] = [o for o in await adapter.completed_orders() if o.intent_id == "AWAY-1"]
            assert done.status is OrderStatus.FILLED and done.filled == 15.0
            with pytest.raises(DuplicateIntentError, match="AWAY-1"):
                await adapter.place(intent)
            with pytest.raises(OrderNotOpenError):
                await adapter.cancel("AWAY-1")
            positions = {p.symbol: p.quantity for p in await adapter.positions()}
            assert positions == {"SPY": 15.0}

    run(main)


@pytest.mark.parametrize("library", LIBRARIES)
def test_connectivity_lost_and_restored_notices(gateway: Any, library: str):
    async def main() -> None:
        async with connected(gateway, library) as adapter:
            async with adapter.stream(ConnectionEvent) as events:
                await control(gateway.announce_connectivity_lost)
                lost = await events.wait_for(lambda e: e.state is ConnectionState.CONNECTIVITY_LOST, TIMEOUT)
                await control(gateway.announce_connectivity_restored)
                back = await events.wait_for(
                    lambda e: e.state is ConnectionState.CONNECTIVITY_RESTORED, TIMEOUT
                )
                await control(gateway.announce_connectivity_lost)
                await control(gateway.announce_connectivity_restored, True)  # market data lost
                data_lost = await events.wait_for(
                    lambda e: e.state is ConnectionState.CONNECTIVITY_RESTORED_DATA_LOST, TIMEOUT
                )
            assert (lost.code, back.code, data_lost.code) == (1100, 1102, 1101)
            assert adapter.connected  # the API socket stays up through 1100/1101/1102

    run(main)


def test_events_feed_the_journal_end_to_end(gateway: Any, tmp_path: Any):
    """What the execution actor will do: record every adapter event; the derived state ends Filled."""

    async def main() -> None:
        async with connected(gateway, "ib_insync") as adapter:
            await control(gateway.set_price, "SPY", 400.0)
            intent = make_intent("JRNL-1", quantity=30)
            with OrderJournal(tmp_path / "orders.sqlite") as journal:
                journal.record_intent(intent)

                def record(event: BrokerEvent) -> None:
                    if isinstance(event, StatusEvent) and event.intent_id:
                        journal.record_status(
                            event.intent_id, event.order_id, event.perm_id, event.status,
                            event.filled, event.remaining, event.avg_price,
                        )  # fmt: skip
                    elif isinstance(event, FillEvent):
                        journal.record_fill(event.fill)
                    elif isinstance(event, CommissionEvent):
                        journal.record_fill(event.fill)  # idempotent: already there from the FillEvent
                        journal.record_commission(event.exec_id, event.commission, event.currency)

                adapter.add_listener(record)
                async with adapter.stream(StatusEvent) as events:
                    order_id = await adapter.place(intent)
                    journal.record_submission(intent.intent_id, order_id, adapter.client_id)
                    await events.wait_for(status_of("JRNL-1", OrderStatus.FILLED), TIMEOUT)
                adapter.remove_listener(record)
                # Fills seen again after a restart (reqExecutions) are stored once.
                for fill in await adapter.executions():
                    journal.record_fill(fill)
                state = journal.state("JRNL-1")
                assert state.submitted and state.status is OrderStatus.FILLED and state.done
                assert state.filled == 30.0 and state.avg_price == pytest.approx(400.0)
                assert state.commission == pytest.approx(max(1.0, 0.005 * 30))
                assert len(journal.fills("JRNL-1")) == len(await adapter.executions())

    run(main)
