"""The simulated gateway's pure parts: fill rules, the account's books, framing and pacing."""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.errors import ConfigError
from trader.ibsim import Account, GatewayConfig
from trader.ibsim.faults import StallGate, TokenBucket
from trader.ibsim.matching import MarketEvent, WorkingOrder, match_order
from trader.ibsim.protocol import (
    ProtocolError,
    VersionRange,
    decode_fields,
    encode_message,
    negotiate,
    parse_version_range,
)

WHEN = dt.datetime(2025, 1, 2, 15, 0, tzinfo=dt.UTC)

# -- fill rules: worked examples -------------------------------------------------------------------

BAR = MarketEvent(open=100.0, high=102.0, low=98.0, close=101.0, volume=10_000.0)


@pytest.mark.parametrize(
    ("order", "event", "expected"),
    [
        # market orders meet the first price of the event
        (WorkingOrder("BUY", "MKT", 10), BAR, (10, 100.0)),
        # a limit already through at the open fills at the open (price improvement) ...
        (WorkingOrder("BUY", "LMT", 10, lmt_price=100.5), BAR, (10, 100.0)),
        # ... else at the limit when the bar reaches it
        (WorkingOrder("BUY", "LMT", 10, lmt_price=99.0), BAR, (10, 99.0)),
        (WorkingOrder("SELL", "LMT", 10, lmt_price=101.5), BAR, (10, 101.5)),
        # a limit the bar never reaches does not fill
        (WorkingOrder("BUY", "LMT", 10, lmt_price=97.0), BAR, (0, None)),
        # a stop fills at the stop, or at the open when the open gapped through it
        (WorkingOrder("BUY", "STP", 10, aux_price=101.0), BAR, (10, 101.0)),
        (WorkingOrder("SELL", "STP", 10, aux_price=99.0), BAR, (10, 99.0)),
        (WorkingOrder("SELL", "STP", 10, aux_price=100.5), BAR, (10, 100.0)),
        # a stop-limit triggered in this bar fills only if the trigger price is inside the limit
        (WorkingOrder("BUY", "STP LMT", 10, lmt_price=101.5, aux_price=101.0), BAR, (10, 101.0)),
        (WorkingOrder("BUY", "STP LMT", 10, lmt_price=100.5, aux_price=101.0), BAR, (0, None)),
        # ... and once triggered works as a plain limit order
        (
            WorkingOrder("BUY", "STP LMT", 10, lmt_price=99.0, aux_price=105.0, triggered=True),
            BAR,
            (10, 99.0),
        ),
    ],
)
def test_fill_rule_examples(order: WorkingOrder, event: MarketEvent, expected: tuple) -> None:
    result = match_order(order, event)
    assert (result.quantity, result.price) == expected


def test_stop_trigger_without_fill_is_reported() -> None:
    result = match_order(WorkingOrder("BUY", "STP LMT", 10, lmt_price=100.5, aux_price=101.0), BAR)
    assert result.triggered and result.quantity == 0
    assert not match_order(WorkingOrder("BUY", "STP", 10, aux_price=103.0), BAR).triggered


def test_volume_cap_fills_whole_shares_of_what_is_left() -> None:
    order = WorkingOrder("BUY", "MKT", 250)
    assert match_order(order, BAR, available=153.7).quantity == 153
    assert match_order(order, BAR, available=0.4).quantity == 0
    assert match_order(order, BAR, available=None).quantity == 250


# -- fill rules: properties ------------------------------------------------------------------------

prices = st.floats(min_value=1.0, max_value=1000.0, allow_nan=False)


@st.composite
def bars(draw: st.DrawFn) -> MarketEvent:
    a, b, c, d = (draw(prices) for _ in range(4))
    low, high = min(a, b, c, d), max(a, b, c, d)
    return MarketEvent(open=c, high=high, low=low, close=d, volume=draw(st.floats(0, 1e6)))


@st.composite
def orders(draw: st.DrawFn) -> WorkingOrder:
    kind = draw(st.sampled_from(["MKT", "LMT", "STP", "STP LMT"]))
    return WorkingOrder(
        action=draw(st.sampled_from(["BUY", "SELL"])),
        order_type=kind,
        remaining=float(draw(st.integers(1, 10_000))),
        lmt_price=draw(prices) if kind in ("LMT", "STP LMT") else None,
        aux_price=draw(prices) if kind in ("STP", "STP LMT") else None,
        triggered=draw(st.booleans()) if kind in ("STP", "STP LMT") else False,
    )


@settings(max_examples=400, deadline=None)
@given(order=orders(), event=bars(), available=st.one_of(st.none(), st.floats(0, 20_000)))
def test_fills_stay_inside_the_bar_the_limit_and_the_cap(
    order: WorkingOrder, event: MarketEvent, available: float | None
) -> None:
    result = match_order(order, event, available)
    buy = order.action == "BUY"
    if order.order_type in ("STP", "STP LMT") and not order.triggered:
        assert result.triggered == (event.high >= order.aux_price if buy else event.low <= order.aux_price)
    if result.quantity == 0:
        return
    assert event.low <= result.price <= event.high
    assert 0 < result.quantity <= order.remaining
    if available is not None:
        assert result.quantity <= math.floor(available)
    if order.lmt_price is not None:
        assert result.price <= order.lmt_price if buy else result.price >= order.lmt_price
    if order.order_type in ("STP", "STP LMT"):
        assert result.triggered
    if order.order_type == "MKT":
        assert result.price == event.open


# -- the account's books ---------------------------------------------------------------------------


def new_account(cash: float = 100_000.0) -> Account:
    return Account("DU1234567", cash=cash, commission_per_share=0.005, min_commission=1.0)


def test_commission_minimum_is_per_order_across_partial_fills() -> None:
    account = new_account()
    order = account.new_order(
        client_id=1, order_id=1, symbol="SPY", con_id=1, action="BUY", quantity=500, order_type="MKT"
    )
    charged = [account.fill(order, q, 10.0, WHEN).commission for q in (100, 100, 300)]
    # max(1, 0.005 * filled) after each fill: 1.0, 1.0, 2.5 -> charged 1.0, 0.0, 1.5
    assert charged == [1.0, 0.0, 1.5]
    assert order.status == "Filled" and order.avg_fill_price == 10.0


@settings(max_examples=200, deadline=None)
@given(
    fills=st.lists(
        st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 500), st.floats(10.0, 20.0)),
        min_size=1,
        max_size=25,
    ),
    last=st.floats(10.0, 20.0),
)
def test_books_balance_cash_positions_and_pnl(fills: list[tuple[str, int, float]], last: float) -> None:
    account = new_account()
    position = 0.0
    cash = 100_000.0
    for i, (action, quantity, price) in enumerate(fills):
        order = account.new_order(
            client_id=1,
            order_id=i + 1,
            symbol="SPY",
            con_id=1,
            action=action,
            quantity=float(quantity),
            order_type="MKT",
        )
        ex = account.fill(order, float(quantity), price, WHEN)
        commission = max(1.0, 0.005 * quantity)
        assert ex.commission == pytest.approx(commission)
        signed = quantity if action == "BUY" else -quantity
        position += signed
        cash -= signed * price + commission
    pos = account.positions["SPY"]
    assert pos.quantity == pytest.approx(position)
    assert account.cash == pytest.approx(cash)
    # Every dollar is accounted for: realised plus unrealised P&L is the change in net liquidation.
    values = account.values({"SPY": last})
    unrealized = pos.quantity * last - pos.quantity * pos.avg_cost
    assert values["UnrealizedPnL"] == pytest.approx(unrealized, abs=1e-6)
    assert account.realized_pnl + unrealized == pytest.approx(values["NetLiquidation"] - 100_000.0, abs=1e-6)


def test_executions_filter_like_ib() -> None:
    account = new_account()
    for client_id, symbol, action in ((1, "SPY", "BUY"), (2, "QQQ", "SELL"), (1, "QQQ", "BUY")):
        order = account.new_order(
            client_id=client_id,
            order_id=len(account.orders) + 1,
            symbol=symbol,
            con_id=1,
            action=action,
            quantity=1.0,
            order_type="MKT",
        )
        account.fill(order, 1.0, 10.0, WHEN)
    assert len(list(account.executions_matching())) == 3
    assert [e.symbol for e in account.executions_matching(client_id=1)] == ["SPY", "QQQ"]
    assert [e.client_id for e in account.executions_matching(symbol="qqq", side="BUY")] == [1]
    assert list(account.executions_matching(since=WHEN + dt.timedelta(seconds=1))) == []


# -- framing, handshake, pacing --------------------------------------------------------------------


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=20),
        max_size=12,
    )
)
def test_framing_round_trips(fields: list[str]) -> None:
    wire = encode_message(fields)
    assert int.from_bytes(wire[:4], "big") == len(wire) - 4
    assert decode_fields(wire[4:]) == fields


def test_fields_are_written_like_the_gateway() -> None:
    wire = encode_message([3, True, None, 400.0, 1.7976931348623157e308, "SPY"])
    assert wire[4:] == b"3\x001\x00\x00400.0\x001.7976931348623157E308\x00SPY\x00"
    with pytest.raises(ValueError, match="NUL"):
        encode_message(["a\0b"])


@pytest.mark.parametrize(
    ("text", "ceiling", "expected"),
    [
        ("v157..176", 176, 176),
        ("v157..178", 176, 176),
        ("v157..178", 178, 178),
        ("v157..160", 176, 160),
        ("v100..151", 176, None),
        ("v177..178", 176, None),
        ("v176", 176, 176),
        ("v157..176 +PACEAPI", 170, 170),
    ],
)
def test_version_negotiation(text: str, ceiling: int, expected: int | None) -> None:
    assert negotiate(parse_version_range(text), ceiling) == expected


def test_bad_version_ranges_are_refused() -> None:
    for text in ("157..176", "vX", "v176..157"):
        with pytest.raises(ProtocolError):
            parse_version_range(text)
    assert parse_version_range("v157..176 +PACEAPI") == VersionRange(157, 176, "+PACEAPI")


def test_token_bucket_allows_the_rate_and_refills() -> None:
    bucket = TokenBucket(50, now=0.0)
    allowed = sum(bucket.take(now=0.0) for _ in range(80))
    assert allowed == 50
    assert bucket.take(now=0.01) is False  # half a token back after 10 ms
    assert bucket.take(now=0.021) is True
    assert sum(bucket.take(now=10.0) for _ in range(80)) == 50  # never more than one second's worth


def test_stall_gate_holds_until_released() -> None:
    async def scenario() -> list[str]:
        gate, seen = StallGate(), []
        gate.stall()
        waiter = asyncio.create_task(gate.wait())
        await asyncio.sleep(0)
        seen.append("held" if not waiter.done() else "passed")
        gate.release()
        await waiter
        seen.append("released")
        return seen

    assert asyncio.run(scenario()) == ["held", "released"]


def test_gateway_config_is_validated() -> None:
    assert GatewayConfig(account="U1234567").is_paper is False
    for bad in (
        {"server_version": 201},
        {"server_version": 150},
        {"account": "paper"},
        {"symbols": ()},
        {"max_volume_share": 0.0},
        {"pacing_per_second": 0},
    ):
        with pytest.raises(ConfigError):
            GatewayConfig(**bad)
