"""The order model: what a strategy asks for (intent), what risk says (approval), what the broker did (fill).

An :class:`OrderIntent` is immutable and validated when built; each bad field raises
:class:`~trader.broker.errors.OrderValidationError` naming it. Its ``intent_id`` is stable: callers derive it
from stable identifiers (:func:`derive_intent_id`), so a restarted session asks for the same order under the
same id and the journal can tell it was already sent. The id travels to the broker as the order's
``orderRef``, which is how statuses and fills are mapped back.

An :class:`Approval` is signed with HMAC-SHA256 over the canonical JSON of the approved intent and the
approval itself. The execution side calls :meth:`Approval.verify` with the shared secret rather than trusting
whoever handed it the approval; each mismatch raises a typed error naming it.

Units: quantities are shares (whole numbers for intents; fills carry what the broker reports), prices and
commissions are in the contract's currency, times are timezone-aware UTC datetimes.

Example::

    from datetime import UTC, datetime
    from trader.broker.order import Approval, OrderIntent, derive_intent_id

    ts = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
    intent = OrderIntent(intent_id=derive_intent_id("paper-1", "SPY", ts), symbol="SPY", side="BUY",
                         quantity=10, order_type="LMT", limit_price=470.5, created_at=ts, source="sma")
    approval = Approval.sign(intent, b"secret", reason="within limits", approver="risk",
                             limits={"max_per_trade": 10_000.0}, issued_at=ts)
    approval.verify(intent, b"secret", now=ts)   # raises an ApprovalError subclass when it must not trade
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import json
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trader.broker.errors import (
    ApprovalError,
    ApprovalExpiredError,
    ApprovalIntentMismatchError,
    ApprovalRejectedError,
    ApprovalSignatureError,
    ApprovalTamperedError,
    OrderValidationError,
)

__all__ = [
    "DEFAULT_APPROVAL_MAX_AGE",
    "DEFAULT_CLOCK_SKEW",
    "Approval",
    "Fill",
    "OrderIntent",
    "OrderStatus",
    "OrderType",
    "Side",
    "TimeInForce",
    "canonical_json",
    "derive_intent_id",
]

UTC = dt.UTC
# An approval is for an order about to be sent, not a standing permission: two minutes covers the hop
# from the risk actor to the execution actor with room for a reconnect, and no more.
DEFAULT_APPROVAL_MAX_AGE = dt.timedelta(minutes=2)
# Clocks of two processes on one host (or a cluster with NTP) agree to well within this.
DEFAULT_CLOCK_SKEW = dt.timedelta(seconds=5)
SIGNATURE_VERSION = 1

# orderRef is free text at IBKR; we keep it printable and short so it survives every display and log.
_INTENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}$")
# IB stock symbols: letters and digits, with '.' or a space for share classes (BRK B / BRK.B).
_SYMBOL = re.compile(r"^[A-Z0-9](?:[A-Z0-9. -]{0,14}[A-Z0-9])?$")


class Side(enum.StrEnum):
    """Order side; the value is IBKR's ``action``."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    """Order type. ``ib_code`` is IBKR's ``orderType`` string."""

    MKT = "MKT"
    LMT = "LMT"
    STP = "STP"
    STP_LMT = "STP_LMT"

    @property
    def ib_code(self) -> str:
        """IBKR's spelling: ``STP LMT`` has a space."""
        return "STP LMT" if self is OrderType.STP_LMT else self.value

    @property
    def needs_limit(self) -> bool:
        return self in (OrderType.LMT, OrderType.STP_LMT)

    @property
    def needs_stop(self) -> bool:
        return self in (OrderType.STP, OrderType.STP_LMT)


class TimeInForce(enum.StrEnum):
    """How long an order works: the session (DAY), until cancelled (GTC), or fill-what-you-can-now (IOC)."""

    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"


class OrderStatus(enum.StrEnum):
    """Where an order stands, mapped from IBKR's statuses (see ``trader.broker.adapter.map_status``)."""

    PENDING_SUBMIT = "PendingSubmit"
    SUBMITTED = "Submitted"
    PARTIALLY_FILLED = "PartiallyFilled"
    FILLED = "Filled"
    CANCELLED = "Cancelled"
    REJECTED = "Rejected"
    INACTIVE = "Inactive"

    @property
    def is_terminal(self) -> bool:
        """Filled, Cancelled or Rejected: the order will not change again. Inactive may be reactivated."""
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED)


# -- field checks ------------------------------------------------------------------------------------------


def _enum(cls: type[enum.StrEnum], name: str, value: object) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)  # type: ignore[attr-defined]
        raise OrderValidationError(name, f"{value!r} is not one of {allowed}") from None


def _utc(name: str, value: object) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise OrderValidationError(name, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise OrderValidationError(name, f"{value.isoformat()} has no timezone; give a UTC datetime")
    v = value.astimezone(UTC)
    # Rebuild as a plain datetime: subclasses (pandas.Timestamp) would not round-trip through JSON equal.
    return dt.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=UTC)


def _price(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OrderValidationError(name, f"must be a number, got {value!r}")
    price = float(value)
    if not math.isfinite(price) or price <= 0:
        raise OrderValidationError(name, f"must be a finite price > 0, got {value!r}")
    return price


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OrderValidationError(name, f"must be non-empty text, got {value!r}")
    return value


def _iso(value: dt.datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _parse_time(name: str, text: object) -> dt.datetime:
    if not isinstance(text, str):
        raise OrderValidationError(name, f"must be an ISO 8601 time, got {text!r}")
    try:
        return _utc(name, dt.datetime.fromisoformat(text))
    except ValueError:
        raise OrderValidationError(name, f"{text!r} is not an ISO 8601 time") from None


def canonical_json(value: Any) -> str:
    """One spelling for one value: sorted keys, no spaces, ASCII, no NaN. Signatures are computed over it.

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def derive_intent_id(session: str, symbol: str, decision_ts: dt.datetime, seq: int = 0) -> str:
    """A stable intent id from the session name, the symbol and the decision bar's time (UTC).

    The same arguments give the same id in any process, so a restarted session recognises an order it
    already sent. ``seq`` tells apart several orders decided on the same bar. The id is
    ``<SYMBOL>-<20 hex digits>``, short enough for IBKR's orderRef and readable in TWS.

    >>> from datetime import UTC, datetime
    >>> derive_intent_id("paper-1", "SPY", datetime(2024, 1, 2, 21, tzinfo=UTC))
    'SPY-7210b372e27c5749a5b5'
    """
    ts = _utc("decision_ts", decision_ts)
    key = canonical_json([session, symbol, _iso(ts), int(seq)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return f"{symbol.replace(' ', '.')}-{digest}"


# -- the intent --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OrderIntent:
    """An order a strategy asks for, before risk has seen it. Immutable; validated when built.

    ``quantity`` is a whole number of shares > 0 (the side says the direction). ``limit_price`` is
    required for LMT and STP_LMT and forbidden otherwise; ``stop_price`` is required for STP and STP_LMT
    and forbidden otherwise. ``created_at`` is the decision time (the decision bar's close), UTC.
    ``source`` names who asked (strategy, session actor).

    >>> from datetime import UTC, datetime
    >>> OrderIntent(intent_id="SPY-1", symbol="SPY", side="SELL", quantity=5,
    ...             created_at=datetime(2024, 1, 2, 21, tzinfo=UTC), source="demo").order_type
    <OrderType.MKT: 'MKT'>
    """

    intent_id: str
    symbol: str
    side: Side
    quantity: int
    order_type: OrderType = OrderType.MKT
    limit_price: float | None = None
    stop_price: float | None = None
    time_in_force: TimeInForce = TimeInForce.DAY
    created_at: dt.datetime
    source: str

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise once, here, and never again
        if not isinstance(self.intent_id, str) or not _INTENT_ID.match(self.intent_id):
            raise OrderValidationError(
                "intent_id",
                f"{self.intent_id!r} must be 1-128 characters of letters, digits and ._:/@+=- "
                "starting with a letter or digit",
            )
        if not isinstance(self.symbol, str) or not _SYMBOL.match(self.symbol):
            hint = (
                " (use upper case)"
                if isinstance(self.symbol, str) and _SYMBOL.match(self.symbol.upper())
                else ""
            )
            raise OrderValidationError(
                "symbol", f"{self.symbol!r} is not a stock symbol like 'SPY' or 'BRK B'{hint}"
            )
        put(self, "side", _enum(Side, "side", self.side))
        if isinstance(self.quantity, bool):
            raise OrderValidationError("quantity", f"must be a whole number of shares, got {self.quantity!r}")
        try:
            quantity = operator.index(self.quantity)  # int and numpy integers; not 1.5, not 100.0
        except TypeError:
            raise OrderValidationError(
                "quantity", f"must be a whole number of shares (int), got {self.quantity!r}"
            ) from None
        if quantity <= 0:
            raise OrderValidationError(
                "quantity", f"must be > 0 shares (side gives direction), got {quantity}"
            )
        put(self, "quantity", int(quantity))
        kind = _enum(OrderType, "order_type", self.order_type)
        put(self, "order_type", kind)
        for name, needed in (("limit_price", kind.needs_limit), ("stop_price", kind.needs_stop)):
            value = getattr(self, name)
            if needed and value is None:
                raise OrderValidationError(name, f"is required for a {kind.value} order")
            if not needed and value is not None:
                raise OrderValidationError(name, f"is not allowed on a {kind.value} order (got {value!r})")
            if value is not None:
                put(self, name, _price(name, value))
        put(self, "time_in_force", _enum(TimeInForce, "time_in_force", self.time_in_force))
        put(self, "created_at", _utc("created_at", self.created_at))
        _text("source", self.source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (enums as their values, time as ISO 8601 UTC); :meth:`from_dict` reverses it."""
        return {
            "intent_id": self.intent_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "quantity": self.quantity,
            "order_type": self.order_type.value,
            "limit_price": self.limit_price,
            "stop_price": self.stop_price,
            "time_in_force": self.time_in_force.value,
            "created_at": _iso(self.created_at),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderIntent:
        """Rebuild (and re-validate) an intent from :meth:`to_dict` output."""
        fields = dict(data)
        fields["created_at"] = _parse_time("created_at", fields.get("created_at"))
        try:
            return cls(**fields)
        except TypeError as exc:  # an unknown or missing key
            raise OrderValidationError("intent", str(exc)) from None


# -- the approval ------------------------------------------------------------------------------------------


def _secret_bytes(secret: bytes | str) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ApprovalError("empty approval secret; give the shared secret both risk and execution use")
    return key


def _check_limits(limits: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in limits.items():
        if not isinstance(key, str):
            raise ApprovalError(f"limits key {key!r} must be text")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ApprovalError(f"limits[{key!r}]={value!r} must be a number, text, true/false or null")
        if isinstance(value, float) and not math.isfinite(value):
            raise ApprovalError(f"limits[{key!r}]={value!r} must be finite")
        out[key] = value
    return out


@dataclass(frozen=True, kw_only=True)
class Approval:
    """Risk's answer to one intent, signed so the execution side can check it instead of trusting it.

    ``intent`` is the approved intent's :meth:`OrderIntent.to_dict` (so a mismatch can be named field by
    field), ``limits`` a snapshot of the limits it was checked against, ``issued_at`` UTC. A rejection is an
    Approval with ``approved=False`` and a ``reason``; verifying it raises ApprovalRejectedError. Build one
    with :meth:`sign`, never by hand.
    """

    intent_id: str
    approved: bool
    reason: str
    approver: str
    limits: dict[str, Any] = field(default_factory=dict)
    issued_at: dt.datetime
    intent: dict[str, Any]
    signature: str

    @classmethod
    def sign(
        cls,
        intent: OrderIntent,
        secret: bytes | str,
        *,
        approved: bool = True,
        reason: str = "",
        approver: str = "risk",
        limits: Mapping[str, Any] | None = None,
        issued_at: dt.datetime | None = None,
    ) -> Approval:
        """Approve (or, with ``approved=False``, reject) ``intent`` and sign the answer with ``secret``.

        >>> from datetime import UTC, datetime
        >>> ts = datetime(2024, 1, 2, 21, tzinfo=UTC)
        >>> i = OrderIntent(intent_id="SPY-1", symbol="SPY", side="BUY", quantity=1, created_at=ts,
        ...                 source="x")
        >>> Approval.sign(i, "k", approved=False, reason="max_per_trade", issued_at=ts).approved
        False
        """
        if not isinstance(intent, OrderIntent):
            raise ApprovalError(f"can only approve an OrderIntent, got {type(intent).__name__}")
        issued = _utc("issued_at", issued_at if issued_at is not None else dt.datetime.now(UTC))
        unsigned = cls(
            intent_id=intent.intent_id,
            approved=bool(approved),
            reason=str(reason),
            approver=_text("approver", approver),
            limits=_check_limits(limits or {}),
            issued_at=issued,
            intent=intent.to_dict(),
            signature="",
        )
        return dataclasses.replace(unsigned, signature=unsigned._digest(_secret_bytes(secret)))

    def _signed_payload(self) -> str:
        return canonical_json(
            {
                "v": SIGNATURE_VERSION,
                "intent": self.intent,
                "approval": {
                    "intent_id": self.intent_id,
                    "approved": self.approved,
                    "reason": self.reason,
                    "approver": self.approver,
                    "limits": self.limits,
                    "issued_at": _iso(self.issued_at),
                },
            }
        )

    def _digest(self, key: bytes) -> str:
        return hmac.new(key, self._signed_payload().encode(), hashlib.sha256).hexdigest()

    def verify(
        self,
        intent: OrderIntent,
        secret: bytes | str,
        *,
        max_age: dt.timedelta | float = DEFAULT_APPROVAL_MAX_AGE,
        now: dt.datetime | None = None,
        clock_skew: dt.timedelta | float = DEFAULT_CLOCK_SKEW,
    ) -> None:
        """Check this approval authorises exactly ``intent`` now; raise an ApprovalError subclass if not.

        Checked in order: the signature (ApprovalSignatureError: approval tampered, or another secret), the
        intent id (ApprovalIntentMismatchError), a rejection (ApprovalRejectedError), every intent field
        against the approved one (ApprovalTamperedError naming the fields), and the age:
        ``now - issued_at`` above ``max_age`` (seconds or a timedelta) or ``issued_at`` more than
        ``clock_skew`` in the future (ApprovalExpiredError).

        >>> approval.verify(intent, b"secret", max_age=30)   # doctest: +SKIP
        """
        if not isinstance(intent, OrderIntent):
            raise ApprovalError(f"can only verify against an OrderIntent, got {type(intent).__name__}")
        try:
            expected = self._digest(_secret_bytes(secret))
        except (TypeError, ValueError) as exc:  # a tampered approval whose content cannot be serialised
            raise ApprovalSignatureError(
                f"approval for intent {self.intent_id}: unreadable content ({exc})"
            ) from None
        if not isinstance(self.signature, str) or not hmac.compare_digest(expected, self.signature):
            raise ApprovalSignatureError(
                f"approval for intent {self.intent_id}: bad signature (the approval was altered after "
                "signing, or signed with another secret); do not send the order"
            )
        if self.intent_id != intent.intent_id or self.intent.get("intent_id") != intent.intent_id:
            raise ApprovalIntentMismatchError(
                f"approval is for intent {self.intent_id}, not {intent.intent_id}; "
                "get an approval for this intent"
            )
        if not self.approved:
            raise ApprovalRejectedError(
                f"intent {intent.intent_id} was rejected by {self.approver}: "
                f"{self.reason or 'no reason given'}",
                self.reason,
            )
        actual = intent.to_dict()
        differing = tuple(
            k for k in sorted(set(actual) | set(self.intent)) if actual.get(k) != self.intent.get(k)
        )
        if differing:
            details = "; ".join(
                f"{k} approved {self.intent.get(k)!r}, got {actual.get(k)!r}" for k in differing
            )
            raise ApprovalTamperedError(
                f"intent {intent.intent_id} differs from the approved one: {details}", differing
            )
        age_limit = max_age if isinstance(max_age, dt.timedelta) else dt.timedelta(seconds=float(max_age))
        skew = clock_skew if isinstance(clock_skew, dt.timedelta) else dt.timedelta(seconds=float(clock_skew))
        at = _utc("now", now) if now is not None else dt.datetime.now(UTC)
        age = at - self.issued_at
        if age > age_limit:
            raise ApprovalExpiredError(
                f"approval for intent {intent.intent_id} expired: issued {_iso(self.issued_at)}, "
                f"{age.total_seconds():.1f} s ago, more than the {age_limit.total_seconds():g} s allowed; "
                "ask risk again"
            )
        if -age > skew:
            raise ApprovalExpiredError(
                f"approval for intent {intent.intent_id} is dated {_iso(self.issued_at)}, "
                f"{-age.total_seconds():.1f} s in the future; check the clocks of risk and execution"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, signature included; :meth:`from_dict` reverses it."""
        return {
            "intent_id": self.intent_id,
            "approved": self.approved,
            "reason": self.reason,
            "approver": self.approver,
            "limits": dict(self.limits),
            "issued_at": _iso(self.issued_at),
            "intent": dict(self.intent),
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Approval:
        """Rebuild an approval from :meth:`to_dict` output (it still has to pass :meth:`verify`)."""
        fields = dict(data)
        fields["issued_at"] = _parse_time("issued_at", fields.get("issued_at"))
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ApprovalError(f"not an approval: {exc}") from None


# -- the fill ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Fill:
    """One execution reported by the broker. ``exec_id`` is unique per execution at IBKR.

    ``intent_id`` comes from the order's orderRef (None for an order not placed through an intent).
    ``qty`` is shares in this execution (> 0; ``side`` gives the direction), ``price`` its price,
    ``commission`` the commission charged (None until the commission report arrives), ``time`` UTC.
    """

    exec_id: str
    intent_id: str | None
    perm_id: int
    order_id: int
    symbol: str
    side: Side
    qty: float
    price: float
    time: dt.datetime
    commission: float | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        _text("exec_id", self.exec_id)
        put(self, "side", _enum(Side, "side", self.side))
        put(self, "qty", _price("qty", self.qty))
        put(self, "price", _price("price", self.price))
        put(self, "time", _utc("time", self.time))
        put(self, "perm_id", int(self.perm_id))
        put(self, "order_id", int(self.order_id))
        if self.commission is not None:
            commission = float(self.commission)
            if not math.isfinite(commission):
                raise OrderValidationError("commission", f"must be finite, got {self.commission!r}")
            put(self, "commission", commission)

    @property
    def signed_qty(self) -> float:
        """Shares with sign: + bought, - sold."""
        return self.qty if self.side is Side.BUY else -self.qty

    def with_commission(self, commission: float) -> Fill:
        """This fill with its commission set (the report arrives after the execution)."""
        return dataclasses.replace(self, commission=commission)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exec_id": self.exec_id,
            "intent_id": self.intent_id,
            "perm_id": self.perm_id,
            "order_id": self.order_id,
            "symbol": self.symbol,
            "side": self.side.value,
            "qty": self.qty,
            "price": self.price,
            "time": _iso(self.time),
            "commission": self.commission,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fill:
        fields = dict(data)
        fields["time"] = _parse_time("time", fields.get("time"))
        try:
            return cls(**fields)
        except TypeError as exc:
            raise OrderValidationError("fill", str(exc)) from None
