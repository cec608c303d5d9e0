"""Order model: intent validation names each bad field; approvals catch every kind of tampering."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from trader.broker.errors import (
    ApprovalError,
    ApprovalExpiredError,
    ApprovalIntentMismatchError,
    ApprovalRejectedError,
    ApprovalSignatureError,
    ApprovalTamperedError,
    OrderValidationError,
)
from trader.broker.order import (
    DEFAULT_APPROVAL_MAX_AGE,
    Approval,
    Fill,
    OrderIntent,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    derive_intent_id,
)
from trader.errors import TraderError

TS = dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC)
SECRET = b"shared-secret"


def intent(**overrides: Any) -> OrderIntent:
    fields: dict[str, Any] = {
        "intent_id": "SPY-0001",
        "symbol": "SPY",
        "side": "BUY",
        "quantity": 10,
        "order_type": "LMT",
        "limit_price": 470.5,
        "created_at": TS,
        "source": "sma_cross",
    }
    fields.update(overrides)
    return OrderIntent(**fields)


# -- intents -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_type", "limit", "stop"),
    [("MKT", None, None), ("LMT", 470.5, None), ("STP", None, 460.0), ("STP_LMT", 461.0, 460.0)],
)
def test_each_order_type_with_its_prices_is_valid(order_type: str, limit: float | None, stop: float | None):
    built = intent(order_type=order_type, limit_price=limit, stop_price=stop)
    assert built.order_type is OrderType(order_type)
    assert (built.limit_price, built.stop_price) == (limit, stop)


def test_ib_codes_of_order_types():
    assert [t.ib_code for t in OrderType] == ["MKT", "LMT", "STP", "STP LMT"]


BAD_FIELDS = [
    ("intent_id", {"intent_id": ""}),
    ("intent_id", {"intent_id": "has space"}),
    ("intent_id", {"intent_id": "x" * 129}),
    ("intent_id", {"intent_id": 17}),
    ("symbol", {"symbol": ""}),
    ("symbol", {"symbol": "spy"}),
    ("symbol", {"symbol": "SPY "}),
    ("symbol", {"symbol": None}),
    ("side", {"side": "buy"}),
    ("side", {"side": "HOLD"}),
    ("quantity", {"quantity": 0}),
    ("quantity", {"quantity": -5}),
    ("quantity", {"quantity": 1.5}),
    ("quantity", {"quantity": 100.0}),
    ("quantity", {"quantity": True}),
    ("quantity", {"quantity": "10"}),
    ("order_type", {"order_type": "MARKET"}),
    ("limit_price", {"order_type": "LMT", "limit_price": None}),
    ("limit_price", {"order_type": "MKT", "limit_price": 470.5}),
    ("limit_price", {"order_type": "STP", "limit_price": 470.5, "stop_price": 460.0}),
    ("limit_price", {"order_type": "STP_LMT", "limit_price": None, "stop_price": 460.0}),
    ("stop_price", {"order_type": "STP", "limit_price": None}),
    ("stop_price", {"order_type": "STP_LMT", "limit_price": 461.0}),
    ("stop_price", {"order_type": "LMT", "stop_price": 460.0}),
    ("limit_price", {"limit_price": float("nan")}),
    ("limit_price", {"limit_price": float("inf")}),
    ("limit_price", {"limit_price": 0.0}),
    ("limit_price", {"limit_price": -1.0}),
    ("limit_price", {"limit_price": "470.5"}),
    ("limit_price", {"limit_price": True}),
    ("time_in_force", {"time_in_force": "FOK"}),
    ("created_at", {"created_at": dt.datetime(2024, 1, 2, 21)}),
    ("created_at", {"created_at": "2024-01-02T21:00:00+00:00"}),
    ("source", {"source": ""}),
    ("source", {"source": "   "}),
]


@pytest.mark.parametrize(("field", "overrides"), BAD_FIELDS)
def test_each_bad_field_raises_an_error_naming_it(field: str, overrides: dict[str, Any]):
    with pytest.raises(OrderValidationError) as info:
        intent(**overrides)
    assert info.value.field == field
    assert field in str(info.value)
    assert isinstance(info.value, TraderError)


def test_lower_case_symbol_message_says_how_to_fix():
    with pytest.raises(OrderValidationError, match="upper case"):
        intent(symbol="spy")


def test_missing_limit_message_names_the_order_type():
    with pytest.raises(OrderValidationError, match="required for a LMT order"):
        intent(limit_price=None)


def test_quantity_accepts_numpy_integers_and_stores_int():
    built = intent(quantity=np.int64(25))
    assert built.quantity == 25 and type(built.quantity) is int


def test_created_at_in_another_zone_is_stored_as_utc():
    eastern = dt.timezone(dt.timedelta(hours=-5))
    built = intent(created_at=dt.datetime(2024, 1, 2, 16, 0, tzinfo=eastern))
    assert built.created_at == TS and built.created_at.utcoffset() == dt.timedelta(0)


def test_enum_fields_accept_values_and_store_enums():
    built = intent(side="SELL", time_in_force="GTC")
    assert built.side is Side.SELL and built.time_in_force is TimeInForce.GTC


def test_intent_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        intent().quantity = 11  # type: ignore[misc]


def test_intent_round_trips_through_json():
    original = intent(order_type="STP_LMT", limit_price=461.25, stop_price=460.0, time_in_force="IOC")
    again = OrderIntent.from_dict(json.loads(json.dumps(original.to_dict())))
    assert again == original


def test_from_dict_rejects_unknown_keys_and_revalidates():
    data = intent().to_dict()
    with pytest.raises(OrderValidationError):
        OrderIntent.from_dict({**data, "colour": "red"})
    with pytest.raises(OrderValidationError) as info:
        OrderIntent.from_dict({**data, "quantity": -1})
    assert info.value.field == "quantity"


def test_derive_intent_id_is_stable_and_distinguishes_its_parts():
    base = derive_intent_id("paper-1", "SPY", TS)
    assert base == derive_intent_id("paper-1", "SPY", TS)
    others = {
        derive_intent_id("paper-2", "SPY", TS),
        derive_intent_id("paper-1", "QQQ", TS),
        derive_intent_id("paper-1", "SPY", TS + dt.timedelta(minutes=1)),
        derive_intent_id("paper-1", "SPY", TS, seq=1),
    }
    assert base not in others and len(others) == 4
    assert base.startswith("SPY-")
    intent(intent_id=base)  # a derived id is a valid intent id


def test_derive_intent_id_is_the_same_in_another_process():
    code = (
        "import datetime as dt; from trader.broker.order import derive_intent_id; "
        "print(derive_intent_id('paper-1', 'SPY', dt.datetime(2024, 1, 2, 21, tzinfo=dt.UTC)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert out.stdout.strip() == derive_intent_id("paper-1", "SPY", TS)


def test_derive_intent_id_refuses_a_naive_time():
    with pytest.raises(OrderValidationError, match="decision_ts"):
        derive_intent_id("paper-1", "SPY", dt.datetime(2024, 1, 2))


# -- statuses and fills ------------------------------------------------------------------------------------


def test_terminal_statuses():
    terminal = {s for s in OrderStatus if s.is_terminal}
    assert terminal == {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED}


def test_fill_validates_and_round_trips():
    fill = Fill(
        exec_id="0001.01",
        intent_id="SPY-0001",
        perm_id=5,
        order_id=3,
        symbol="SPY",
        side="SELL",
        qty=7,
        price=470.25,
        time=TS,
    )
    assert fill.signed_qty == -7.0 and fill.commission is None
    priced = fill.with_commission(1.25)
    assert Fill.from_dict(json.loads(json.dumps(priced.to_dict()))) == priced
    with pytest.raises(OrderValidationError) as info:
        dataclasses.replace(fill, qty=0)
    assert info.value.field == "qty"
    with pytest.raises(OrderValidationError) as info:
        dataclasses.replace(fill, exec_id="")
    assert info.value.field == "exec_id"


# -- approvals ---------------------------------------------------------------------------------------------


def approval(target: OrderIntent | None = None, **kwargs: Any) -> Approval:
    kwargs.setdefault("issued_at", TS)
    kwargs.setdefault("limits", {"max_per_trade": 10_000.0, "max_position_pct": 0.1})
    kwargs.setdefault("approver", "portfolio_risk")
    kwargs.setdefault("reason", "within limits")
    return Approval.sign(target or intent(), SECRET, **kwargs)


def test_a_valid_approval_verifies():
    approval().verify(intent(), SECRET, now=TS + dt.timedelta(seconds=1))


def test_signature_is_hmac_sha256_of_the_canonical_json():
    # Spelled out independently, so a verifier in another language can be written from this test.
    target = intent()
    signed = approval(target)
    body = {
        "v": 1,
        "intent": target.to_dict(),
        "approval": {
            "intent_id": target.intent_id,
            "approved": True,
            "reason": "within limits",
            "approver": "portfolio_risk",
            "limits": {"max_per_trade": 10_000.0, "max_position_pct": 0.1},
            "issued_at": "2024-01-02T21:00:00.000000+00:00",
        },
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert signed.signature == hmac.new(SECRET, text.encode(), hashlib.sha256).hexdigest()


def test_approval_for_another_intent_is_refused():
    other = intent(intent_id="QQQ-0001", symbol="QQQ")
    with pytest.raises(ApprovalIntentMismatchError, match="QQQ-0001"):
        approval(other).verify(intent(), SECRET, now=TS)


@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("quantity", {"quantity": 1000}),
        ("side", {"side": "SELL"}),
        ("limit_price", {"limit_price": 480.0}),
        ("symbol", {"symbol": "QQQ"}),
        ("time_in_force", {"time_in_force": "GTC"}),
    ],
)
def test_an_intent_changed_after_approval_is_refused_naming_the_field(field: str, overrides: dict[str, Any]):
    signed = approval(intent())
    with pytest.raises(ApprovalTamperedError) as info:
        signed.verify(intent(**overrides), SECRET, now=TS)
    assert info.value.fields == (field,)
    assert field in str(info.value)


def test_tampered_quantity_message_shows_both_values():
    with pytest.raises(ApprovalTamperedError, match="quantity approved 10, got 1000"):
        approval().verify(intent(quantity=1000), SECRET, now=TS)


@pytest.mark.parametrize(
    "change",
    [
        {"approved": True},  # a rejection turned into an approval
        {"limits": {"max_per_trade": 1e9}},
        {"reason": "ok"},
        {"approver": "someone"},
        {"issued_at": TS + dt.timedelta(hours=1)},  # refreshed to dodge expiry
        {"intent_id": "SPY-0002"},
    ],
)
def test_an_approval_edited_after_signing_has_a_bad_signature(change: dict[str, Any]):
    signed = approval(approved=False, reason="max_per_trade")
    forged = dataclasses.replace(signed, **change)
    target = intent(intent_id=forged.intent_id)
    with pytest.raises(ApprovalSignatureError):
        forged.verify(target, SECRET, now=TS)


def test_editing_intent_and_its_snapshot_together_is_still_caught():
    signed = approval()
    bigger = intent(quantity=1000)
    forged = dataclasses.replace(signed, intent=bigger.to_dict())
    with pytest.raises(ApprovalSignatureError):
        forged.verify(bigger, SECRET, now=TS)


def test_another_secret_is_a_bad_signature():
    with pytest.raises(ApprovalSignatureError):
        approval().verify(intent(), b"other-secret", now=TS)


def test_empty_secret_is_refused():
    with pytest.raises(ApprovalError, match="empty approval secret"):
        Approval.sign(intent(), b"")
    with pytest.raises(ApprovalError, match="empty approval secret"):
        approval().verify(intent(), "", now=TS)


def test_a_rejection_is_refused_with_its_reason():
    rejection = approval(approved=False, reason="max_per_trade exceeded: 12000 > 10000")
    with pytest.raises(ApprovalRejectedError, match="max_per_trade exceeded") as info:
        rejection.verify(intent(), SECRET, now=TS)
    assert info.value.reason == "max_per_trade exceeded: 12000 > 10000"


def test_expiry_uses_max_age():
    signed = approval()
    limit = DEFAULT_APPROVAL_MAX_AGE
    signed.verify(intent(), SECRET, now=TS + limit)  # exactly at the limit is still fine
    with pytest.raises(ApprovalExpiredError, match="expired"):
        signed.verify(intent(), SECRET, now=TS + limit + dt.timedelta(microseconds=1))
    signed.verify(intent(), SECRET, now=TS + dt.timedelta(seconds=50), max_age=60)
    with pytest.raises(ApprovalExpiredError):
        signed.verify(intent(), SECRET, now=TS + dt.timedelta(seconds=61), max_age=60)


def test_an_approval_dated_in_the_future_is_refused_beyond_the_clock_skew():
    signed = approval(issued_at=TS + dt.timedelta(seconds=3))
    signed.verify(intent(), SECRET, now=TS)  # 3 s ahead: within the 5 s default skew
    with pytest.raises(ApprovalExpiredError, match="future"):
        signed.verify(intent(), SECRET, now=TS, clock_skew=1)


def test_approval_survives_json_transport():
    signed = approval()
    again = Approval.from_dict(json.loads(json.dumps(signed.to_dict())))
    assert again == signed
    again.verify(intent(), SECRET, now=TS)


def test_limits_must_be_plain_values():
    with pytest.raises(ApprovalError, match="limits"):
        approval(limits={"max": object()})
    with pytest.raises(ApprovalError, match="finite"):
        approval(limits={"max": float("nan")})
