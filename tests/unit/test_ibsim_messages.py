"""Every message the simulated gateway writes, read back by the real ib_insync and ib_async decoders.

The decoders read fields positionally and depend on the server version; a layout that is one field off
either raises inside the decoder (logged as "Error handling fields") or shifts values into the wrong
attributes. Each test frames a message exactly as the gateway does, splits it exactly as the clients'
``_onSocketHasData`` does, runs the client's own ``Decoder.interpret`` on it and checks what reached the
wrapper against the values the message was built from.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from typing import Any

import pytest
from ib_async.decoder import Decoder as AsyncDecoder
from ib_insync.decoder import Decoder as InsyncDecoder

from trader.ibsim import messages as msg
from trader.ibsim.account import SimExecution, SimOrder
from trader.ibsim.contracts import Stock, con_id
from trader.ibsim.protocol import encode_message

INSYNC_VERSIONS = [157, 158, 160, 162, 163, 164, 166, 169, 170, 176]
ASYNC_VERSIONS = [*INSYNC_VERSIONS, 177, 178]
CLIENTS = [("ib_insync", InsyncDecoder, v) for v in INSYNC_VERSIONS] + [
    ("ib_async", AsyncDecoder, v) for v in ASYNC_VERSIONS
]
STOCK = Stock("SPY", con_id("SPY"), "ARCA")
WHEN = dt.datetime(2025, 3, 4, 15, 30, 5, tzinfo=dt.UTC)


class Recorder:
    """Stands in for the clients' Wrapper: records every call the decoder makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.defaultTimezone = dt.UTC  # ib_async converts execution times into this
        self.ib = type("IBStub", (), {"TimezoneTWS": None})()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def decode(
    decoder_cls: type, version: int, fields: list[object], caplog: pytest.LogCaptureFixture
) -> Recorder:
    """Frame ``fields`` like the gateway, split like the client, decode with the client's Decoder."""
    wire = encode_message(fields)
    (length,) = struct.unpack(">I", wire[:4])
    assert length == len(wire) - 4
    parts = wire[4:].decode().split("\0")
    parts.pop()  # as the clients do: the last field's NUL leaves an empty tail
    recorder = Recorder()
    with caplog.at_level(logging.ERROR):
        decoder_cls(recorder, version).interpret(parts)
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not problems, problems
    return recorder


def only_call(recorder: Recorder, name: str) -> tuple[Any, ...]:
    calls = [args for n, args in recorder.calls if n == name]
    assert len(calls) == 1, recorder.calls
    return calls[0]


def sample_order(**changes: Any) -> SimOrder:
    order = SimOrder(
        perm_id=1_000_007,
        client_id=3,
        order_id=42,
        symbol="SPY",
        con_id=STOCK.con_id,
        action="SELL",
        quantity=250.0,
        order_type="STP LMT",
        lmt_price=399.5,
        aux_price=400.25,
        tif="GTC",
        order_ref="strat-7",
        account="DU1234567",
        parent_id=41,
        status="Submitted",
        filled=100.0,
        avg_fill_price=401.0,
        last_fill_price=401.5,
        completed_at=WHEN,
    )
    for key, value in changes.items():
        setattr(order, key, value)
    return order


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_open_order_reaches_the_wrapper_field_for_field(lib, decoder, version, caplog) -> None:
    order = sample_order()
    order_id, contract, decoded, state = only_call(
        decode(decoder, version, msg.open_order(version, order, STOCK), caplog), "openOrder"
    )
    assert order_id == 42
    assert (contract.conId, contract.symbol, contract.secType, contract.exchange) == (
        STOCK.con_id,
        "SPY",
        "STK",
        "SMART",
    )
    assert (decoded.action, decoded.totalQuantity, decoded.orderType) == ("SELL", 250.0, "STP LMT")
    assert (decoded.lmtPrice, decoded.auxPrice, decoded.tif) == (399.5, 400.25, "GTC")
    assert (decoded.orderRef, decoded.clientId, decoded.permId, decoded.parentId) == (
        "strat-7",
        3,
        1_000_007,
        41,
    )
    assert decoded.account == "DU1234567"
    assert decoded.whatIf is False
    assert state.status == "Submitted"


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_what_if_open_order_carries_margin_figures(lib, decoder, version, caplog) -> None:
    what_if = msg.WhatIf(
        "0.00",
        "0.00",
        "1000000.00",
        "20000.00",
        "10000.00",
        "-1.00",
        "20000.00",
        "10000.00",
        "999999.00",
        1.0,
    )
    fields = msg.open_order(version, sample_order(status="PreSubmitted"), STOCK, what_if)
    _, _, decoded, state = only_call(decode(decoder, version, fields, caplog), "openOrder")
    assert decoded.whatIf is True
    assert (state.initMarginChange, state.maintMarginAfter, state.commission) == ("20000.00", "10000.00", 1.0)


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_completed_order(lib, decoder, version, caplog) -> None:
    order = sample_order(status="Filled", filled=250.0)
    contract, decoded, state = only_call(
        decode(decoder, version, msg.completed_order(version, order, STOCK), caplog), "completedOrder"
    )
    assert contract.conId == STOCK.con_id
    assert (decoded.permId, decoded.orderRef, decoded.totalQuantity, decoded.filledQuantity) == (
        1_000_007,
        "strat-7",
        250.0,
        250.0,
    )
    assert (state.status, state.completedStatus) == ("Filled", "Filled")
    assert state.completedTime == "20250304 15:30:05 UTC"


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_contract_details(lib, decoder, version, caplog) -> None:
    fields = msg.contract_details(version, 9, STOCK, "SMART", "20250304:0930-20250304:1600")
    req_id, details = only_call(decode(decoder, version, fields, caplog), "contractDetails")
    assert req_id == 9
    c = details.contract
    assert (c.conId, c.symbol, c.secType, c.exchange, c.primaryExchange, c.currency) == (
        STOCK.con_id,
        "SPY",
        "STK",
        "SMART",
        "ARCA",
        "USD",
    )
    assert details.minTick == 0.01
    assert details.timeZoneId == "US/Eastern"
    assert details.stockType == "COMMON"
    assert only_call(decode(decoder, version, msg.contract_details_end(9), caplog), "contractDetailsEnd") == (
        9,
    )


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_exec_details_and_commission_report(lib, decoder, version, caplog) -> None:
    ex = SimExecution(
        exec_id="000f4247.00000003.01.01",
        perm_id=1_000_007,
        order_id=42,
        client_id=3,
        symbol="SPY",
        con_id=STOCK.con_id,
        side="SLD",
        shares=100.0,
        price=401.5,
        time=WHEN,
        cum_qty=200.0,
        avg_price=401.25,
        order_ref="strat-7",
        commission=0.5,
        realized_pnl=12.5,
        account="DU1234567",
    )
    req_id, contract, execution = only_call(
        decode(decoder, version, msg.exec_details(version, -1, ex, STOCK), caplog), "execDetails"
    )
    assert (req_id, contract.conId, contract.symbol) == (-1, STOCK.con_id, "SPY")
    assert (execution.execId, execution.side, execution.shares, execution.price) == (
        ex.exec_id,
        "SLD",
        100.0,
        401.5,
    )
    assert (execution.permId, execution.clientId, execution.orderId, execution.orderRef) == (
        1_000_007,
        3,
        42,
        "strat-7",
    )
    assert (execution.cumQty, execution.avgPrice, execution.acctNumber) == (200.0, 401.25, "DU1234567")
    assert execution.time == WHEN
    (report,) = only_call(decode(decoder, version, msg.commission_report(ex), caplog), "commissionReport")
    assert (report.execId, report.commission, report.currency, report.realizedPNL) == (
        ex.exec_id,
        0.5,
        "USD",
        12.5,
    )


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_order_status(lib, decoder, version, caplog) -> None:
    args = only_call(decode(decoder, version, msg.order_status(sample_order()), caplog), "orderStatus")
    assert args == (42, "Submitted", 100.0, 150.0, 401.0, 1_000_007, 41, 401.5, 3, "", 0.0)


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_error_message_with_and_without_advanced_reject(lib, decoder, version, caplog) -> None:
    fields = msg.error(version, 42, 201, "Order rejected - reason:too big")
    assert only_call(decode(decoder, version, fields, caplog), "error")[:3] == (
        42,
        201,
        "Order rejected - reason:too big",
    )


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_account_messages(lib, decoder, version, caplog) -> None:
    rec = decode(decoder, version, msg.position("DU1234567", STOCK, 150.0, 400.1), caplog)
    account, contract, quantity, avg_cost = only_call(rec, "position")
    assert (account, contract.conId, quantity, avg_cost) == ("DU1234567", STOCK.con_id, 150.0, 400.1)
    fields = msg.portfolio_value(STOCK, -20.0, 401.0, -8020.0, 399.0, -40.0, 3.5, "DU1234567")
    contract, *numbers, account = only_call(decode(decoder, version, fields, caplog), "updatePortfolio")
    assert (contract.conId, contract.primaryExchange, account) == (STOCK.con_id, "ARCA", "DU1234567")
    assert numbers == [-20.0, 401.0, -8020.0, 399.0, -40.0, 3.5]
    fields = msg.account_value("NetLiquidation", "1000000.00", "USD", "DU1234567")
    rec = decode(decoder, version, fields, caplog)
    assert only_call(rec, "updateAccountValue") == ("NetLiquidation", "1000000.00", "USD", "DU1234567")
    rec = decode(
        decoder, version, msg.account_update_multi(5, "DU1234567", "TotalCashValue", "10.00", "USD"), caplog
    )
    assert only_call(rec, "accountUpdateMulti") == (5, "DU1234567", "", "TotalCashValue", "10.00", "USD")
    rec = decode(decoder, version, msg.account_summary(6, "DU1234567", "BuyingPower", "5.00", "USD"), caplog)
    assert only_call(rec, "accountSummary") == (6, "DU1234567", "BuyingPower", "5.00", "USD")
    rec = decode(decoder, version, msg.position_multi(7, "DU1234567", STOCK, 3.0, 10.0), caplog)
    req_id, account, _, contract, quantity, avg_cost = only_call(rec, "positionMulti")
    assert (req_id, account, contract.conId, quantity, avg_cost) == (7, "DU1234567", STOCK.con_id, 3.0, 10.0)
    assert only_call(
        decode(decoder, version, msg.account_download_end("DU1"), caplog), "accountDownloadEnd"
    ) == ("DU1",)
    for fields, name, expected in (
        (msg.position_end(), "positionEnd", ()),
        (msg.open_order_end(), "openOrderEnd", ()),
        (msg.completed_orders_end(), "completedOrdersEnd", ()),
        (msg.exec_details_end(4), "execDetailsEnd", (4,)),
        (msg.account_update_multi_end(5), "accountUpdateMultiEnd", (5,)),
        (msg.account_summary_end(6), "accountSummaryEnd", (6,)),
        (msg.position_multi_end(7), "positionMultiEnd", (7,)),
        (msg.next_valid_id(17), "nextValidId", (17,)),
        (msg.managed_accounts(["DU1", "DU2"]), "managedAccounts", ("DU1,DU2",)),
        (msg.current_time(1_700_000_000), "currentTime", (1_700_000_000,)),
        (msg.account_time(WHEN), "updateAccountTime", ("15:30",)),
    ):
        assert only_call(decode(decoder, version, fields, caplog), name) == expected


@pytest.mark.parametrize(("lib", "decoder", "version"), CLIENTS)
def test_market_data_messages(lib, decoder, version, caplog) -> None:
    rec = decode(decoder, version, msg.tick_price(3, 4, 400.25, 300.0), caplog)
    assert only_call(rec, "priceSizeTick") == (3, 4, 400.25, 300.0)
    assert only_call(decode(decoder, version, msg.tick_size(3, 8, 1200.0), caplog), "tickSize") == (
        3,
        8,
        1200.0,
    )
    assert only_call(decode(decoder, version, msg.market_data_type(3, 3), caplog), "marketDataType") == (3, 3)
    rec = decode(decoder, version, msg.tick_req_params(3, 0.01, "9c0001", 3), caplog)
    assert only_call(rec, "tickReqParams") == (3, 0.01, "9c0001", 3)
    assert only_call(decode(decoder, version, msg.tick_snapshot_end(3), caplog), "tickSnapshotEnd") == (3,)
    rec = decode(
        decoder, version, msg.realtime_bar(4, 1_700_000_000, 1.0, 2.0, 0.5, 1.5, 1000.0, 1.2, 7), caplog
    )
    assert only_call(rec, "realtimeBar") == (4, 1_700_000_000, 1.0, 2.0, 0.5, 1.5, 1000.0, 1.2, 7)
    rows = [
        ("20250304 14:30:00 UTC", 1.0, 2.0, 0.5, 1.5, 1000.0, 1.25, 9),
        ("20250304 14:31:00 UTC", 1.5, 1.6, 1.4, 1.45, 10.0, 1.5, 2),
    ]
    rec = decode(decoder, version, msg.historical_data(5, "a", "b", rows), caplog)
    bars = [args[1] for name, args in rec.calls if name == "historicalData"]
    assert [(b.date, b.open, b.high, b.low, b.close, b.volume, b.average, b.barCount) for b in bars] == rows
    assert only_call(rec, "historicalDataEnd") == (5, "a", "b")
    rec = decode(
        decoder,
        version,
        msg.historical_data_update(5, "20250304 14:32:00 UTC", 1, 2, 0.5, 1.5, 10, 1.2, 3),
        caplog,
    )
    req_id, bar = only_call(rec, "historicalDataUpdate")
    assert (
        req_id,
        bar.date,
        bar.open,
        bar.high,
        bar.low,
        bar.close,
        bar.volume,
        bar.average,
        bar.barCount,
    ) == (
        5,
        "20250304 14:32:00 UTC",
        1.0,
        2.0,
        0.5,
        1.5,
        10.0,
        1.2,
        3,
    )


def test_quantities_are_written_like_decimals() -> None:
    assert msg.qty(100.0) == "100"
    assert msg.qty(12.5) == "12.5"


@pytest.mark.parametrize(
    ("lib", "version"),
    [
        ("ib_insync", 157),
        ("ib_insync", 170),
        ("ib_insync", 176),
        ("ib_async", 176),
        ("ib_async", 177),
        ("ib_async", 178),
    ],
)
def test_place_order_is_read_as_the_clients_write_it(lib, version) -> None:
    """The fields the clients' own Client.placeOrder writes, parsed back by the gateway."""
    import importlib

    client_mod = importlib.import_module(f"{lib}.client")
    lib_mod = importlib.import_module(lib)
    sent: list[str] = []
    client = client_mod.Client(wrapper=Recorder())
    client._serverVersion = version
    client.connState = client_mod.Client.CONNECTED
    client.sendMsg = sent.append
    order = lib_mod.LimitOrder("BUY", 300, 401.5, orderRef="r-1", tif="GTC", whatIf=version in (170, 178))
    client.placeOrder(12, lib_mod.Stock("SPY", "SMART", "USD"), order)
    stop = lib_mod.StopOrder("SELL", 5, 390.0, orderRef="s-1", parentId=12, transmit=False)
    client.placeOrder(13, lib_mod.Stock("SPY", "SMART", "USD"), stop)
    req = msg.parse_place_order(sent[0].split("\0")[:-1], version)
    assert (req.order_id, req.contract.symbol, req.action, req.quantity) == (12, "SPY", "BUY", 300.0)
    assert (req.order_type, req.lmt_price, req.aux_price, req.tif) == ("LMT", 401.5, None, "GTC")
    assert (req.order_ref, req.transmit, req.parent_id, req.what_if) == (
        "r-1",
        True,
        0,
        version in (170, 178),
    )
    req = msg.parse_place_order(sent[1].split("\0")[:-1], version)
    assert (req.order_type, req.aux_price, req.parent_id, req.transmit, req.what_if) == (
        "STP",
        390.0,
        12,
        False,
        False,
    )
