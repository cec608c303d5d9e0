"""Fill rules: when and at what price a working order fills against the simulated market.

The market moves in *events*: a replayed bar (open, high, low, close, volume) or a single price (a tick from
``set_price``, or the current last price when an order arrives; then open = high = low = close). Within a bar
the price path is taken as open first, then anywhere between low and high; we never assume the order in
which high and low happened, so the rules below stay conservative:

* ``MKT`` fills at the event's open (the first price seen after the order became marketable).
* ``LMT`` buy fills at the open when the open is at or below the limit (price improvement), else at the
  limit when the low reaches it; a sell mirrors this with the high.
* ``STP`` buy triggers when the high reaches the stop and then fills like a market order at
  ``max(stop, open)`` (a gap through the stop fills at the open); a sell mirrors with the low.
* ``STP LMT`` triggers like a stop and then works as a limit order. In the event that triggers it, it fills
  only if the trigger price ``max(stop, open)`` (buy) is within the limit, at that price; otherwise it waits
  for the next event, since the bar's low may have come before the trigger.

Quantity: at most ``floor(available)`` shares (the unused part of ``max_volume_share`` x the event's volume;
None means no cap), so a large order fills in parts over several events. Prices are in currency units,
quantities in shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

ORDER_TYPES: Final = ("MKT", "LMT", "STP", "STP LMT")


@dataclass(frozen=True)
class MarketEvent:
    """One step of the market for one symbol: a bar, or a single price (open = high = low = close)."""

    open: float
    high: float
    low: float
    close: float
    volume: float | None = None  # shares traded in the event; None = unknown (no volume cap)

    @classmethod
    def tick(cls, price: float, volume: float | None = None) -> MarketEvent:
        """A single price.

        >>> MarketEvent.tick(400.0).high
        400.0
        """
        return cls(price, price, price, price, volume)


@dataclass(frozen=True)
class WorkingOrder:
    """What the matcher needs to know about an order: side, type, prices, what is left, trigger state."""

    action: str  # BUY or SELL
    order_type: str  # one of ORDER_TYPES
    remaining: float  # shares still to fill, > 0
    lmt_price: float | None = None
    aux_price: float | None = None  # the stop price of STP / STP LMT
    triggered: bool = False  # a stop that has already triggered


@dataclass(frozen=True)
class Match:
    """The outcome of one order against one event: whether a stop triggered, and the fill (qty 0 = none)."""

    triggered: bool
    quantity: float = 0.0
    price: float | None = None


def match_order(order: WorkingOrder, event: MarketEvent, available: float | None = None) -> Match:
    """Apply the fill rules of the module docstring to one order and one market event.

    >>> match_order(WorkingOrder("BUY", "LMT", 100, lmt_price=99.5), MarketEvent(100, 101, 99, 100, 1e6))
    Match(triggered=False, quantity=100, price=99.5)
    >>> match_order(WorkingOrder("SELL", "STP", 10, aux_price=95), MarketEvent(94, 96, 93, 95)).price
    94
    """
    buy = order.action.upper() == "BUY"
    kind = order.order_type.upper()
    triggered = order.triggered
    entry = event.open  # price at which a marketable order meets the market in this event
    just_triggered = False
    if kind in ("STP", "STP LMT") and not triggered:
        stop = order.aux_price
        if stop is None:
            return Match(False)
        hit = event.high >= stop if buy else event.low <= stop
        if not hit:
            return Match(False)
        triggered = just_triggered = True
        entry = max(stop, event.open) if buy else min(stop, event.open)

    if kind in ("MKT", "STP"):
        price: float | None = entry
    else:  # LMT, or a triggered STP LMT
        limit = order.lmt_price
        if limit is None:
            return Match(triggered)
        if buy:
            if entry <= limit:
                price = entry
            elif not just_triggered and event.low <= limit:
                price = limit
            else:
                price = None
        elif entry >= limit:
            price = entry
        elif not just_triggered and event.high >= limit:
            price = limit
        else:
            price = None
    if price is None:
        return Match(triggered)
    # Whole shares of the volume cap: a cap of 153.7 shares lets 153 through this event.
    quantity = order.remaining if available is None else min(order.remaining, float(math.floor(available)))
    if quantity <= 0:
        return Match(triggered)
    return Match(triggered, quantity, price)
