"""The real, unmodified ib_insync client against the simulated gateway over loopback.

No test sleeps: each waits on the client's own events (``ib.waitOnUpdate``) or on the gateway's counters,
with a deadline that fails naming what it waited for. Every test also fails if the client's decoder logged
"Error handling fields" (a message whose layout the client could not read).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import polars as pl
import pytest
from ib_insync import IB, LimitOrder, MarketOrder, StopLimitOrder, StopOrder, util
from ib_insync import Stock as IbStock

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

    ib_insync's blocking calls run the thread's current loop, and a test elsewhere that used ``asyncio.run()``
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
    """Fail the test if ib_insync could not decode a message the gateway sent, or a request crashed in it."""
    caplog.set_level(logging.WARNING, logger="ib_insync")
    yield
    bad = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("ib_insync")
        and ("Error handling fields" in r.getMessage() or r.getMessage().startswith("Error for "))
    ]
    assert not bad, bad
    crashed = [
        r.getMessage() for r in caplog.records if r.name == "trader.ibsim" and r.levelno >= logging.ERROR
    ]
    assert not crashed, crashed


@pytest.fixture()
def gateway() -> Iterator[Callable[..., SimGateway]]:
    """Factory: start a gateway on a background thread (stopped at teardown)."""
    with contextlib.ExitStack() as stack:

        def start(state: Account | None = None, **overrides: Any) -> SimGateway:
            config = GatewayConfig(**{"symbols": ("SPY", "QQQ"), **overrides})
            return stack.enter_context(run_gateway(config, account=state))

        yield start


@pytest.fixture()
def connect() -> Iterator[Callable[..., IB]]:
    """Factory: a connected ib_insync IB (disconnected at teardown)."""
    made: list[IB] = []

    def make(port: int, client_id: int = 1, timeout: float = 10.0) -> IB:
        ib = IB()
        made.append(ib)
        ib.connect("127.0.0.1", port, clientId=client_id, timeout=timeout)
        return ib

    yield make
    for ib in made:
        ib.disconnect()


def wait_until(ib: IB, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Run the client's loop until ``predicate()`` holds; TimeoutError naming ``what`` after ``timeout``.

    The check is subscribed to the client's update and disconnect events *before* the loop runs, so data
    already waiting on the socket is not missed (``waitOnUpdate`` would subscribe one step too late).
    """
    if predicate():
        return
    loop = util.getLoop()
    done = loop.create_future()

    def check(*_: Any) -> None:
        if not done.done() and predicate():
            done.set_result(None)

    def recheck() -> None:  # for gateway-side conditions that no client event announces
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
            except ConnectionError:  # ib_insync's run() raises this when the socket drops mid-wait
                check()
    except TimeoutError as exc:
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}") from exc
    finally:
        ib.updateEvent -= check
        ib.disconnectedEvent -= check
        for handle in handles:
            handle.cancel()


def wait_disconnected(ib: IB) -> None:
    wait_until(ib, lambda: not ib.isConnected(), "the client to notice that the gateway dropped it")


def error_log(ib: IB) -> list[tuple[int, int, str]]:
    """(reqId, code, message) of every error/notice the client receives from now on."""
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, contract: seen.append((req_id, code, text))
    return seen


def codes(errors: list[tuple[int, int, str]]) -> list[int]:
    return [code for _, code, _ in errors]


def seeded_account() -> Account:
    """An account that already holds 100 SPY (bought at 400) and has a resting LMT order of client 1."""
    account = Account("DU1234567", cash=INITIAL_CASH, commission_per_share=0.005, min_commission=1.0)
    when = dt.datetime(2025, 1, 2, 15, 0, tzinfo=dt.UTC)
    bought = account.new_order(
        client_id=1,
        order_id=5,
        symbol="SPY",
        con_id=con_id("SPY"),
        action="BUY",
        quantity=100.0,
        order_type="MKT",
        order_ref="seed-buy",
        status="Submitted",
    )
    account.fill(bought, 100.0, 400.0, when)
    account.new_order(
        client_id=1,
        order_id=6,
        symbol="SPY",
        con_id=con_id("SPY"),
        action="SELL",
        quantity=40.0,
        order_type="LMT",
        lmt_price=450.0,
        order_ref="seed-lmt",
        status="Submitted",
    )
    return account


def value_of(ib: IB, tag: str) -> float:
    values = [v for v in ib.accountValues() if v.tag == tag and v.currency == "USD" and not v.modelCode]
    assert values, f"no {tag} in account values"
    return float(values[-1].value)


# -- handshake and start-up synchronisation --------------------------------------------------------


@pytest.mark.parametrize("version", [157, 176])
def test_connect_syncs_account_positions_orders_and_fills(gateway, connect, version) -> None:
    gw = gateway(state=seeded_account(), server_version=version)
    gw.set_price("SPY", 410.0)
    ib = connect(gw.port)
    assert ib.client.serverVersion() == version
    assert ib.managedAccounts() == ["DU1234567"]
    (position,) = ib.positions()
    avg_cost = (100 * 400.0 + 1.0) / 100  # commission is part of IB's average cost
    assert (position.contract.symbol, position.position, position.avgCost) == ("SPY", 100.0, avg_cost)
    (item,) = ib.portfolio()
    assert (item.position, item.marketPrice, item.marketValue) == (100.0, 410.0, 41_000.0)
    assert item.unrealizedPNL == pytest.approx(41_000.0 - 100 * avg_cost)
    cash = INITIAL_CASH - 100 * 400.0 - 1.0
    assert value_of(ib, "TotalCashValue") == pytest.approx(cash)
    assert value_of(ib, "NetLiquidation") == pytest.approx(cash + 41_000.0)
    assert value_of(ib, "AvailableFunds") == pytest.approx(cash + 41_000.0 - 0.5 * 41_000.0)
    (open_trade,) = ib.openTrades()
    assert (open_trade.order.orderRef, open_trade.order.lmtPrice, open_trade.orderStatus.status) == (
        "seed-lmt",
        450.0,
        "Submitted",
    )
    (fill,) = ib.fills()
    assert (fill.execution.orderRef, fill.execution.shares, fill.execution.price) == (
        "seed-buy",
        100.0,
        400.0,
    )
    assert fill.commissionReport.commission == 1.0
    assert any(t.order.orderRef == "seed-buy" and t.orderStatus.status == "Filled" for t in ib.trades())
    assert ib.client.getReqId() >= 7  # nextValidId is past every order id the account has seen


def test_a_live_looking_account_is_reported_as_is(gateway, connect) -> None:
    gw = gateway(account="U1234567", extra_accounts=("DU7654321",))
    ib = connect(gw.port)
    assert ib.managedAccounts() == ["U1234567", "DU7654321"]


def _raw_handshake(port: int, version_text: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"API\0" + struct.pack(">I", len(version_text)) + version_text)
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(4096):
                data += chunk
                if len(data) >= 4 and len(data) >= 4 + struct.unpack(">I", data[:4])[0]:
                    break
        return data


def test_version_negotiation_on_the_wire(gateway) -> None:
    gw = gateway(server_version=176)
    reply = _raw_handshake(gw.port, b"v157..178")
    version, conn_time = reply[4:].decode().split("\0")[:2]
    assert version == "176"  # min(client max, our ceiling)
    assert conn_time.endswith(" UTC")
    assert _raw_handshake(gw.port, b"v157..160")[4:].split(b"\0")[0] == b"160"
    assert _raw_handshake(gw.port, b"v100..151") == b""  # below 157: refused, socket closed


# -- orders ----------------------------------------------------------------------------------------


def test_market_order_fills_with_commission_position_and_account_values(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    trade = ib.placeOrder(SPY, MarketOrder("BUY", 10, orderRef="mkt-1"))
    wait_until(ib, trade.isDone, "the MKT order to finish")
    assert trade.orderStatus.status == "Filled"
    assert (trade.orderStatus.filled, trade.orderStatus.remaining, trade.orderStatus.avgFillPrice) == (
        10,
        0,
        400,
    )
    (server_order,) = gw.orders()
    assert trade.orderStatus.permId == server_order.perm_id and trade.order.permId == server_order.perm_id
    (fill,) = trade.fills
    assert (fill.execution.orderRef, fill.execution.side, fill.execution.shares) == ("mkt-1", "BOT", 10)
    assert fill.commissionReport.commission == max(1.0, 0.005 * 10)
    wait_until(ib, lambda: [p.position for p in ib.positions()] == [10.0], "the SPY position")
    wait_until(
        ib, lambda: value_of(ib, "TotalCashValue") == INITIAL_CASH - 4000.0 - 1.0, "cash after the fill"
    )
    assert gw.orders_received() == {"mkt-1": 1}


def test_limit_order_waits_until_the_price_crosses(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    trade = ib.placeOrder(SPY, LimitOrder("BUY", 5, 399.0, orderRef="lmt"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the LMT order to work")
    gw.set_price("SPY", 399.5)  # above the limit: no fill
    gw.set_price("SPY", 398.75)  # through the limit: fills at the better price
    wait_until(ib, trade.isDone, "the LMT fill")
    assert trade.orderStatus.avgFillPrice == min(399.0, 398.75)
    assert [len(trade.fills), gw.executions()[0].price] == [1, 398.75]


def test_modifying_a_working_order_reprices_it(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    order = LimitOrder("SELL", 5, 405.0, orderRef="modify")
    trade = ib.placeOrder(SPY, order)
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the order to work")
    order.lmtPrice = 399.0  # now marketable: fills at the market, which is better than the limit
    ib.placeOrder(SPY, order)
    wait_until(ib, trade.isDone, "the modified order to fill")
    assert trade.orderStatus.avgFillPrice == 400.0
    assert [o.lmt_price for o in gw.orders()] == [399.0]
    assert any(entry.message == "Modify" for entry in trade.log)


def test_stop_order_triggers_then_fills(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    trade = ib.placeOrder(SPY, StopOrder("SELL", 3, 395.0, orderRef="stp"))
    wait_until(ib, lambda: trade.orderStatus.status == "PreSubmitted", "the stop to rest")
    gw.set_price("SPY", 396.0)
    assert not gw.executions()
    gw.set_price("SPY", 394.0)  # through the stop: a market order that meets 394
    wait_until(ib, trade.isDone, "the stop fill")
    assert trade.orderStatus.avgFillPrice == min(395.0, 394.0)


def test_stop_limit_order_fills_only_within_its_limit(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    trade = ib.placeOrder(SPY, StopLimitOrder("BUY", 2, 406.0, 405.0, orderRef="stplmt"))
    wait_until(ib, lambda: trade.orderStatus.status == "PreSubmitted", "the stop-limit to rest")
    gw.set_price("SPY", 407.0)  # triggers, but 407 is above the 406 limit
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the trigger")
    assert not gw.executions()
    gw.set_price("SPY", 405.5)
    wait_until(ib, trade.isDone, "the stop-limit fill")
    assert trade.orderStatus.avgFillPrice == 405.5


def test_partial_fills_follow_the_volume_cap(gateway, connect) -> None:
    gw = gateway(max_volume_share=0.1)
    gw.set_price("SPY", 400.0, volume=1000)
    ib = connect(gw.port)
    trade = ib.placeOrder(SPY, MarketOrder("BUY", 250, orderRef="big"))
    wait_until(ib, lambda: trade.orderStatus.filled == 100, "the first partial fill")
    assert (trade.orderStatus.status, trade.orderStatus.remaining) == ("Submitted", 150)
    gw.set_price("SPY", 400.5, volume=1000)
    wait_until(ib, lambda: trade.orderStatus.filled == 200, "the second partial fill")
    gw.set_price("SPY", 401.0, volume=1000)
    wait_until(ib, trade.isDone, "the last partial fill")
    wait_until(ib, lambda: all(f.commissionReport.execId for f in trade.fills), "commission reports")
    shares = [f.execution.shares for f in trade.fills]
    prices = [f.execution.price for f in trade.fills]
    assert shares == [100, 100, 50] and prices == [400.0, 400.5, 401.0]
    assert len({f.execution.execId for f in trade.fills}) == 3
    assert trade.orderStatus.avgFillPrice == pytest.approx(
        sum(s * p for s, p in zip(shares, prices, strict=True)) / 250
    )
    # The minimum commission is charged once per order, then per share.
    assert sum(f.commissionReport.commission for f in trade.fills) == pytest.approx(max(1.0, 0.005 * 250))


def test_bracket_children_work_after_the_parent_and_cancel_each_other(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    parent, take_profit, stop_loss = (
        ib.placeOrder(SPY, o) for o in ib.bracketOrder("BUY", 10, 399.0, 410.0, 390.0)
    )
    wait_until(ib, lambda: parent.orderStatus.status == "Submitted", "the parent to work")
    assert take_profit.orderStatus.status == "PreSubmitted"
    gw.set_price("SPY", 398.0)
    wait_until(ib, lambda: parent.isDone() and take_profit.orderStatus.status == "Submitted", "the children")
    gw.set_price("SPY", 411.0)
    wait_until(ib, lambda: take_profit.isDone() and stop_loss.isDone(), "the take-profit and its OCA cancel")
    assert (take_profit.orderStatus.status, stop_loss.orderStatus.status) == ("Filled", "Cancelled")
    assert take_profit.orderStatus.avgFillPrice == 411.0
    assert gw.positions() == {}


def test_cancel_gives_cancelled_and_error_202(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    errors = error_log(ib)
    trade = ib.placeOrder(SPY, LimitOrder("BUY", 5, 300.0, orderRef="far"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the order to work")
    ib.cancelOrder(trade.order)
    wait_until(
        ib, lambda: trade.orderStatus.status == "Cancelled" and 202 in codes(errors), "Cancelled + 202"
    )
    assert (trade.order.orderId, 202) in [(r, c) for r, c, _ in errors]
    assert gw.open_orders() == []
    ib.cancelOrder(trade.order)  # cancelling a finished order is refused
    wait_until(ib, lambda: 10148 in codes(errors), "error 10148")


@pytest.mark.parametrize(
    ("contract", "order", "reason"),
    [
        (IbStock("NOPE", "SMART", "USD"), MarketOrder("BUY", 10), "Unknown contract NOPE"),
        (SPY, MarketOrder("BUY", 0), "quantity must be positive"),
        (SPY, MarketOrder("BUY", 5000), "exceeds the maximum order size 1000"),
        (SPY, MarketOrder("BUY", 1.5), "Fractional-sized order"),
    ],
)
def test_rejections_give_error_201_with_a_reason(gateway, connect, contract, order, reason) -> None:
    gw = gateway(max_order_qty=1000)
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    errors = error_log(ib)
    order.orderRef = "rejected"
    trade = ib.placeOrder(contract, order)
    wait_until(ib, lambda: 201 in codes(errors), "error 201")
    ((req_id, text),) = [(r, t) for r, c, t in errors if c == 201]
    assert req_id == trade.order.orderId and text.startswith("Order rejected - reason:") and reason in text
    assert trade.orderStatus.status == "Cancelled"
    assert gw.orders() == [] and gw.orders_received() == {"rejected": 1}


def test_duplicate_order_id_gives_error_103(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    errors = error_log(ib)
    trade = ib.placeOrder(SPY, MarketOrder("BUY", 1))
    wait_until(ib, trade.isDone, "the first order")
    ib.client.placeOrder(trade.order.orderId, SPY, MarketOrder("BUY", 1))
    wait_until(ib, lambda: 103 in codes(errors), "error 103")
    assert (trade.order.orderId, 103) in [(r, c) for r, c, _ in errors]
    assert len(gw.executions()) == 1


def test_what_if_order_reports_margin_without_trading(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    state = ib.whatIfOrder(SPY, MarketOrder("BUY", 100))
    assert float(state.initMarginChange) == pytest.approx(0.5 * 100 * 400.0)
    assert state.commission == max(1.0, 0.005 * 100)
    assert gw.orders() == [] and gw.executions() == []


# -- connection rules ------------------------------------------------------------------------------


def test_duplicate_client_id_gets_326_and_a_closed_socket(gateway, connect) -> None:
    gw = gateway()
    connect(gw.port, client_id=7)
    second = IB()
    errors = error_log(second)
    closed: list[str] = []
    second.client.apiError += closed.append
    with pytest.raises((TimeoutError, ConnectionError)):
        second.connect("127.0.0.1", gw.port, clientId=7, timeout=1.5)
    assert 326 in codes(errors)
    assert any("already in use" in m or "Peer closed" in m for m in closed), closed
    assert gw.connected_clients() == [7]


def test_flooding_beyond_the_pacing_limit_gives_error_100(gateway, connect) -> None:
    gw = gateway(pacing_per_second=50)
    ib = connect(gw.port)
    errors = error_log(ib)
    ib.client.MaxRequests = 0  # switch off ib_insync's own throttle so the flood reaches the gateway
    for _ in range(120):
        ib.client.reqCurrentTime()
    wait_until(ib, lambda: 100 in codes(errors), "error 100")
    assert "Max rate of messages per second has been exceeded" in next(t for _, c, t in errors if c == 100)
    assert ib.isConnected()


def test_unsupported_request_gets_error_321_instead_of_silence(gateway, connect) -> None:
    gw = gateway()
    ib = connect(gw.port)
    errors = error_log(ib)
    started = time.monotonic()
    assert not ib.reqMatchingSymbols("SP")  # without the error it would wait 4 s for an answer
    assert time.monotonic() - started < 3.0
    assert 321 in codes(errors)


# -- contracts and market data ---------------------------------------------------------------------


def test_qualify_contracts(gateway, connect) -> None:
    gw = gateway()
    ib = connect(gw.port)
    spy, nope = IbStock("SPY", "SMART", "USD"), IbStock("NOPE", "SMART", "USD")
    assert ib.qualifyContracts(spy, nope) == [spy]
    assert (spy.conId, spy.primaryExchange, spy.exchange) == (con_id("SPY"), "ARCA", "SMART")
    again = IbStock("SPY", "SMART", "USD")
    ib.qualifyContracts(again)
    assert again.conId == spy.conId  # stable per symbol
    (details,) = ib.reqContractDetails(IbStock(conId=con_id("QQQ")))
    assert details.contract.symbol == "QQQ"


@pytest.fixture()
def minute_store(tmp_path) -> tuple[str, pl.DataFrame]:
    """A bar store with three sessions of synthetic SPY minute bars."""
    bars = synth_bars("SPY", "1m", "2024-01-02", "2024-01-04", seed=11)
    BarStore(str(tmp_path)).write_bars("SPY", "1m", bars)
    return str(tmp_path), bars


def test_historical_bars_come_from_the_store_up_to_the_replay_clock(gateway, connect, minute_store) -> None:
    uri, bars = minute_store
    gw = gateway(store=uri, interval="1m", symbols=("SPY",), start="2024-01-03")
    gw.advance(29)  # 30 minute bars of 2024-01-03 have happened
    clock = gw.now()
    ib = connect(gw.port)
    got = ib.reqHistoricalData(SPY, "", "1 D", "1 min", "TRADES", useRTH=False, formatDate=2)
    start = clock - dt.timedelta(days=1)
    expected = bars.filter((pl.col("ts") >= start) & (pl.col("ts") < clock))
    assert len(got) == expected.height > 30
    assert [b.date for b in got] == expected["ts"].to_list()
    assert [b.close for b in got] == expected["close"].to_list()
    assert [b.volume for b in got] == expected["volume"].to_list()
    assert max(b.date for b in got) < clock  # nothing from the future


def test_historical_bars_are_resampled_from_minutes(gateway, connect, minute_store) -> None:
    uri, bars = minute_store
    gw = gateway(store=uri, interval="1m", symbols=("SPY",), start="2024-01-04")
    ib = connect(gw.port)
    got = ib.reqHistoricalData(SPY, "", "1 D", "5 mins", "TRADES", useRTH=True, formatDate=1)
    clock = gw.now()
    # Independent aggregation: plain Python over the minute bars of [clock - 1 day, clock).
    groups: dict[dt.datetime, list[dict[str, Any]]] = {}
    for row in bars.filter((pl.col("ts") >= clock - dt.timedelta(days=1)) & (pl.col("ts") < clock)).iter_rows(
        named=True
    ):
        ts = row["ts"]
        groups.setdefault(ts.replace(minute=ts.minute - ts.minute % 5, second=0), []).append(row)
    expected = [
        (start, rows[0]["open"], max(r["high"] for r in rows), min(r["low"] for r in rows), rows[-1]["close"])
        for start, rows in sorted(groups.items())
    ]
    assert [(b.date, b.open, b.high, b.low, b.close) for b in got] == expected


def test_ticks_and_realtime_bars_follow_the_replay(gateway, connect, minute_store) -> None:
    uri, bars = minute_store
    gw = gateway(store=uri, interval="1m", symbols=("SPY",), start="2024-01-03")
    day = bars.filter(pl.col("ts") >= dt.datetime(2024, 1, 3, tzinfo=dt.UTC))
    ib = connect(gw.port)
    ticker = ib.reqMktData(SPY)
    wait_until(ib, lambda: ticker.last == day["close"][0], "the first last price")
    realtime = ib.reqRealTimeBars(SPY, 5, "TRADES", useRTH=False)
    ib.reqCurrentTime()  # a round trip: the gateway reads requests in order, so the subscription is in
    gw.advance(2)
    wait_until(ib, lambda: ticker.last == day["close"][2], "ticks of the replayed bars")
    assert ticker.bid < ticker.last < ticker.ask
    wait_until(ib, lambda: len(realtime) == 2, "two real-time bars")
    assert [b.close for b in realtime] == day["close"][1:3].to_list()
    assert [b.time for b in realtime] == day["ts"][1:3].to_list()
    assert realtime[-1].volume == day["volume"][2]


def test_delayed_market_data_and_a_running_replay(gateway, connect, minute_store) -> None:
    uri, _ = minute_store
    gw = gateway(store=uri, interval="1m", symbols=("SPY",), start="2024-01-03", speed=60 * 40)  # 40 bars/s
    ib = connect(gw.port)
    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(SPY)
    first = gw.now()
    wait_until(ib, lambda: ticker.marketDataType == 3 and not math.isnan(ticker.last), "delayed ticks")
    wait_until(ib, lambda: gw.now() >= first + dt.timedelta(minutes=5), "the replay to move on its own")
    wait_until(ib, lambda: ticker.last == gw.last_price("SPY"), "the ticker to follow")


# -- faults ----------------------------------------------------------------------------------------


def test_fill_while_disconnected_is_seen_after_reconnecting(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    trade = ib.placeOrder(SPY, LimitOrder("BUY", 10, 390.0, orderRef="away"))
    wait_until(ib, lambda: trade.orderStatus.status == "Submitted", "the order to rest")
    gw.drop_connections()
    wait_disconnected(ib)
    assert gw.fill_open_orders(price=389.5) == 1
    again = connect(gw.port)  # a fresh process would do exactly this
    (fill,) = again.fills()
    assert (fill.execution.orderRef, fill.execution.price, fill.execution.shares) == ("away", 389.5, 10)
    assert [(f.execution.execId, f.execution.orderRef) for f in again.reqExecutions()] == [
        (fill.execution.execId, "away")
    ]
    assert [(p.contract.symbol, p.position) for p in again.positions()] == [("SPY", 10.0)]
    assert again.openTrades() == []
    completed = again.reqCompletedOrders(apiOnly=False)
    assert [(t.order.orderRef, t.orderStatus.status) for t in completed] == [("away", "Filled")]


def test_restart_keeps_orders_and_positions(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    bought = ib.placeOrder(SPY, MarketOrder("BUY", 20, orderRef="before"))
    resting = ib.placeOrder(SPY, LimitOrder("SELL", 20, 420.0, orderRef="target"))
    wait_until(ib, lambda: bought.isDone() and resting.orderStatus.status == "Submitted", "both orders")
    port = gw.port
    gw.restart()
    wait_disconnected(ib)
    assert gw.port == port
    again = connect(port)
    (trade,) = again.openTrades()
    assert (trade.order.orderRef, trade.order.permId) == ("target", resting.order.permId)
    assert [p.position for p in again.positions()] == [20.0]
    gw.set_price("SPY", 421.0)
    wait_until(again, trade.isDone, "the kept order to fill after the restart")
    assert trade.orderStatus.avgFillPrice == 421.0


def test_connectivity_lost_and_restored_notices(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    errors = error_log(ib)
    gw.announce_connectivity_lost()
    wait_until(ib, lambda: 1100 in codes(errors), "error 1100")
    held = ib.placeOrder(SPY, MarketOrder("BUY", 1, orderRef="held"))
    wait_until(ib, lambda: held.orderStatus.status == "PreSubmitted", "the order to be held")
    assert gw.executions() == []
    gw.announce_connectivity_restored(data_lost=False)
    wait_until(ib, lambda: 1102 in codes(errors) and held.isDone(), "error 1102 and the held fill")
    gw.announce_connectivity_restored(data_lost=True)
    wait_until(ib, lambda: 1101 in codes(errors), "error 1101")
    assert all(r == -1 for r, c, _ in errors if c in (1100, 1101, 1102))


def test_stall_holds_answers_until_released(gateway, connect) -> None:
    gw = gateway()
    gw.set_price("SPY", 400.0)
    ib = connect(gw.port)
    gw.stall()  # until released
    trade = ib.placeOrder(SPY, MarketOrder("BUY", 1, orderRef="stalled"))
    gw.wait_for_orders(1, order_ref="stalled")
    gw.wait_for(lambda: len(gw.executions()) == 1, what="the fill on the gateway side")
    gw.release()
    wait_until(ib, trade.isDone, "the answers after the release")
    gw.stall(0.3)
    started = time.monotonic()
    timed = ib.placeOrder(SPY, MarketOrder("BUY", 1))
    wait_until(ib, timed.isDone, "the answers after a 0.3 s stall")
    assert time.monotonic() - started >= 0.25


def test_gateway_runs_on_a_callers_own_event_loop() -> None:
    """``await gw.start()`` / ``await gw.stop()`` on the caller's loop, spoken to with raw frames."""
    from trader.ibsim.protocol import decode_fields, encode_message

    async def read_message(reader: asyncio.StreamReader) -> list[str]:
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        return decode_fields(await reader.readexactly(length))

    async def scenario() -> list[list[str]]:
        gw = SimGateway(GatewayConfig(symbols=("SPY",), server_version=170))
        await gw.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"API\0" + struct.pack(">I", 9) + b"v157..176")
            assert (await read_message(reader))[0] == "170"
            writer.write(encode_message([71, 2, 9, ""]))  # startApi, client id 9
            await gw.events.wait_for_async(lambda: gw.connected_clients() == [9], 5.0, "client 9")
            gw.set_price("SPY", 400.0)  # called on the gateway's own loop: runs directly
            writer.write(encode_message([49, 1]))  # reqCurrentTime
            seen = []
            while not seen or seen[-1][0] != "49":
                seen.append(await read_message(reader))
            writer.close()
            return seen
        finally:
            await gw.stop()

    loop = asyncio.new_event_loop()  # not installed as the thread's loop: the sync clients keep theirs
    try:
        messages = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert [m[0] for m in messages[:2]] == ["15", "9"]  # managedAccounts, nextValidId
    assert messages[0][2] == "DU1234567"
    assert abs(int(messages[-1][2]) - time.time()) < 60  # wall clock: nothing is being replayed
