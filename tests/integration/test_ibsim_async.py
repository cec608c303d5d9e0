"""The core flow with the real, unmodified ib_async client (server version up to 178) against the gateway.

Same rules as test_ibsim.py: no sleeping (waits run the client's loop until a condition holds, failing with
what they waited for), and every test fails if ib_async's decoder logged "Error handling fields".
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import pytest
from ib_async import IB, LimitOrder, MarketOrder, StopOrder, util
from ib_async import Stock as IbStock

from trader.data.store import BarStore
from trader.data.synth import synth_bars
from trader.ibsim import Account, GatewayConfig, SimGateway, run_gateway
from trader.ibsim.contracts import con_id

pytestmark = pytest.mark.integration

SPY = IbStock("SPY", "SMART", "USD")
INITIAL_CASH = 1_000_000.0


_LOOPS: list[asyncio.AbstractEventLoop] = []


@pytest.fixture(autouse=True)
def _fresh_event_loop() -> Iterator[None]:
    """Give the synchronous client a fresh event loop of its own on this thread.

    ib_async's blocking calls run the thread's current loop, and a test elsewhere that used ``asyncio.run()``
    leaves the main thread with none. The loop stays set after the test, for whoever runs next; the one this
    module set before is closed here.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    for old in _LOOPS:
        if not old.is_running() and not old.is_closed():
            old.close()
    _LOOPS[:] = [loop]
    yield


@pytest.fixture(autouse=True)
def _client_reads_every_message(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if ib_async could not decode a message the gateway sent, or a request crashed in it."""
    caplog.set_level(logging.WARNING, logger="ib_async")
    yield
    bad = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("ib_async")
        and ("Error handling fields" in r.getMessage() or r.getMessage().startswith("Error for "))
    ]
    assert not bad, bad
    crashed = [
        r.getMessage() for r in caplog.records if r.name == "trader.ibsim" and r.levelno >= logging.ERROR
    ]
    assert not crashed, crashed


@pytest.fixture()
def gateway() -> Iterator[Callable[..., SimGateway]]:
    with contextlib.ExitStack() as stack:

        def start(state: Account | None = None, **overrides: Any) -> SimGateway:
            config = GatewayConfig(**{"symbols": ("SPY",), "server_version": 178, **overrides})
            return stack.enter_context(run_gateway(config, account=state))

        yield start


@pytest.fixture()
def connect() -> Iterator[Callable[..., IB]]:
    made: list[IB] = []

    def make(port: int, client_id: int = 1) -> IB:
        ib = IB()
        made.append(ib)
        ib.connect("127.0.0.1", port, clientId=client_id, timeout=10)
        return ib

    yield make
    for ib in made:
        ib.disconnect()


def wait_until(ib: IB, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Run the client's loop until ``predicate()`` holds (checked on every client update, subscribed before
    the loop runs); TimeoutError naming ``what`` after ``timeout`` seconds."""
    if predicate():
        return
    loop = util.getLoop()
    done = loop.create_future()

    def check(*_: Any) -> None:
        if not done.done() and predicate():
            done.set_result(None)

    def recheck() -> None:
        check()
        if not done.done():
            handles.append(loop.call_later(0.2, recheck))

    handles = [loop.call_later(0.2, recheck)]
    ib.updateEvent += check
    ib.disconnectedEvent += check
    try:
        while not done.done():
            try:
                util.run(asyncio.wait_for(asyncio.shield(done), timeout))
            except ConnectionError:
                check()
    except TimeoutError as exc:
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}") from exc
    finally:
        ib.updateEvent -= check
        ib.disconnectedEvent -= check
        for handle in handles:
            handle.cancel()


def error_log(ib: IB) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, contract: seen.append((req_id, code, text))
    return seen


def codes(errors: list[tuple[int, int, str]]) -> list[int]:
    return [code for _, code, _ in errors]


def test_connect_at_178_syncs_the_account(gateway, connect) -> None:
    account = Account("DU1234567", cash=INITIAL_CASH, commission_per_share=0.005, min_commission=1.0)
    held = account.new_order(
        client_id=1,
        order_id=3,
        symbol="SPY",
        con_id=con_id("SPY"),
        action="BUY",
        quantity=50.0,
        order_type="MKT",
        order_ref="seed",
        status="Submitted",
    )
    account.fill(held, 50.0, 300.0, dt.datetime(2025, 1, 2, 15, tzinfo=dt.UTC))
    gw = gateway(state=account)
    gw.set_price("SPY", 310.0)
    ib = connect(gw.port)
    assert ib.client.serverVersion() == 178
    assert ib.managedAccounts() == ["DU1234567"]
    assert [(p.contract.symbol, p.position) for p in ib.positions()] == [("SPY", 50.0)]
    (item,) = ib.portfolio()
    assert (item.marketPrice, item.marketValue) == (310.0, 15_500.0)
    cash = INITIAL_CASH - 50 * 300.0 - 1.0
    net_liq = [float(v.value) for v in ib.accountValues() if v.tag == "NetLiquidation" and not v.modelCode]
    assert net_liq == [pytest.approx(cash + 15_500.0)]
    (fill,) = ib.fills()
    assert (fill.execution.orderRef, fill.execution.price, fill.execution.pendingPriceRevision) == (
        "seed",
        300.0,
        False,
    )


def test_market_order_round_trip(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    (qualified,) = ib.qualifyContracts(IbStock("SPY", "SMART", "USD"))
    assert qualified.conId == con_id("SPY")
    trade = ib.placeOrder(qualified, MarketOrder("BUY", 10, orderRef="async-mkt"))
    wait_until(ib, lambda: trade.orderStatus.status == "Filled" and bool(trade.fills), "the MKT fill")
    (fill,) = trade.fills
    assert (fill.execution.orderRef, fill.execution.shares, fill.execution.price) == ("async-mkt", 10, 400.0)
    wait_until(ib, lambda: fill.commissionReport.commission == 1.0, "the commission report")
    wait_until(ib, lambda: [p.position for p in ib.positions()] == [10.0], "the position")


def test_stop_order_and_cancel_and_reject(gateway, connect) -> None:
    gw = gateway(max_order_qty=100)
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    errors = error_log(ib)
    stop = ib.placeOrder(SPY, StopOrder("SELL", 5, 390.0, orderRef="stop"))
    resting = ib.placeOrder(SPY, LimitOrder("BUY", 5, 350.0, orderRef="rest"))
    wait_until(ib, lambda: resting.orderStatus.status == "Submitted", "the LMT to work")
    gw.set_price("SPY", 389.0)
    wait_until(ib, stop.isDone, "the stop fill")
    assert stop.orderStatus.avgFillPrice == 389.0
    ib.cancelOrder(resting.order)
    wait_until(ib, lambda: resting.orderStatus.status == "Cancelled" and 202 in codes(errors), "the cancel")
    too_big = ib.placeOrder(SPY, MarketOrder("BUY", 500, orderRef="big"))
    wait_until(ib, lambda: 201 in codes(errors), "the rejection")
    assert any(r == too_big.order.orderId and "maximum order size" in t for r, c, t in errors if c == 201)


def test_drop_and_reconnect_sees_the_fill_done_meanwhile(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port, client_id=4)
    trade = ib.placeOrder(SPY, LimitOrder("SELL", 3, 420.0, orderRef="while-away"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the order to rest")
    gw.drop_connections()
    wait_until(ib, lambda: not ib.isConnected(), "the client to see the drop")
    gw.set_price("SPY", 421.0)  # crosses the limit while nobody is connected
    again = connect(gw.port, client_id=4)
    (fill,) = again.reqExecutions()
    assert (fill.execution.orderRef, fill.execution.price, fill.execution.side) == (
        "while-away",
        421.0,
        "SLD",
    )
    assert [(p.position, p.contract.conId) for p in again.positions()] == [(-3.0, con_id("SPY"))]


def test_connectivity_notices_reach_ib_async(gateway, connect) -> None:
    gw = gateway()
    ib = connect(gw.port)
    errors = error_log(ib)
    gw.announce_connectivity_lost()
    gw.announce_connectivity_restored(data_lost=True)
    wait_until(ib, lambda: codes(errors)[-2:] == [1100, 1101], "errors 1100 then 1101")


def test_historical_bars_at_178(gateway, connect, tmp_path) -> None:
    bars = synth_bars("SPY", "1m", "2024-01-02", "2024-01-03", seed=5)
    BarStore(str(tmp_path)).write_bars("SPY", "1m", bars)
    gw = gateway(store=str(tmp_path), interval="1m", start="2024-01-03")
    ib = connect(gw.port)
    started = time.monotonic()
    got = ib.reqHistoricalData(SPY, "", "1 D", "1 min", "TRADES", useRTH=False, formatDate=2)
    clock = gw.now()
    expected = bars.filter((pl.col("ts") >= clock - dt.timedelta(days=1)) & (pl.col("ts") < clock))
    assert [b.close for b in got] == expected["close"].to_list()
    assert time.monotonic() - started < 5.0
