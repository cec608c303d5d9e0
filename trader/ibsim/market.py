"""The simulated market: bars replayed from a bar store, or prices set by hand, and a clock.

Each symbol has a *tape*: the replayed bars (if a store is configured) and a cursor on the bar that has
happened last, or just a last price set with :meth:`Market.set_price`. Every move of the market is a
:class:`~trader.ibsim.matching.MarketEvent` that working orders are matched against; each event offers
``max_volume_share`` x its volume for fills (shared by all orders on the symbol).

The clock is the close of the last replayed bar (a bar's ``ts`` is its start, so its close is ``ts +
interval``); without replayed bars it is the wall clock. Historical data never reaches past the clock, so a
client replaying through the gateway cannot see the future.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from trader.data.schema import interval_ns
from trader.ibsim.matching import MarketEvent


@dataclass
class _Tape:
    symbol: str
    ts: np.ndarray | None = None  # int64 ns, bar starts
    ohlcv: np.ndarray | None = None  # (n, 5) float64: open, high, low, close, volume
    vwap: np.ndarray | None = None
    trades: np.ndarray | None = None
    cursor: int = -1  # index of the last bar that has happened
    last: float | None = None
    previous: float | None = None  # the last price before the current event (the "close" tick)
    event: MarketEvent | None = None
    event_time: dt.datetime | None = None
    used: float = 0.0  # shares filled against the current event


@dataclass(frozen=True)
class Step:
    """One symbol's move: the event, and the bar row that produced it (None for a set price)."""

    symbol: str
    event: MarketEvent
    time: dt.datetime  # the bar's start, or the wall time of a set price
    vwap: float
    trades: int


class Market:
    """Prices, volume caps and the clock of the simulated market (used on the gateway's loop only)."""

    def __init__(self, symbols: tuple[str, ...], interval: str, max_volume_share: float | None) -> None:
        self.interval = interval
        self.interval_ns = interval_ns(interval)
        self.max_volume_share = max_volume_share
        self.tapes = {s: _Tape(s) for s in symbols}
        self._clock_ns: int | None = None

    # -- loading and stepping ----------------------------------------------------------------------

    def load(self, bars: pl.DataFrame) -> None:
        """Take replay bars (a frame with ``symbol``, ``ts`` and the bar columns) and put every symbol's
        cursor before its first bar; call :meth:`step` to let the first bar happen."""
        for symbol, tape in self.tapes.items():
            part = bars.filter(pl.col("symbol") == symbol).sort("ts")
            if part.is_empty():
                continue
            tape.ts = part["ts"].dt.epoch("ns").to_numpy()
            tape.ohlcv = part.select("open", "high", "low", "close", "volume").to_numpy().astype(np.float64)
            close = tape.ohlcv[:, 3]
            vwap = (
                part["vwap"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
                if "vwap" in part.columns
                else np.full(len(close), np.nan)
            )
            tape.vwap = np.where(np.isnan(vwap), close, vwap)
            tape.trades = (
                part["trades"].fill_null(0).to_numpy() if "trades" in part.columns else np.zeros(len(close))
            )
            tape.cursor = -1

    @property
    def replaying(self) -> bool:
        return any(t.ts is not None for t in self.tapes.values())

    def bars_left(self) -> int:
        return sum(len(t.ts) - 1 - t.cursor for t in self.tapes.values() if t.ts is not None)

    def step(self) -> list[Step]:
        """Let the next bar time happen: every symbol with a bar at the earliest pending ``ts`` moves."""
        pending = [
            (int(t.ts[t.cursor + 1]), s)
            for s, t in self.tapes.items()
            if t.ts is not None and t.cursor + 1 < len(t.ts)
        ]
        if not pending:
            return []
        now_ns = min(ns for ns, _ in pending)
        steps = []
        for ns, symbol in pending:
            if ns != now_ns:
                continue
            tape = self.tapes[symbol]
            tape.cursor += 1
            o, h, low, c, v = (float(x) for x in tape.ohlcv[tape.cursor])  # type: ignore[index]
            when = dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
            event = MarketEvent(o, h, low, c, v)
            self._set_event(tape, event, when)
            steps.append(
                Step(symbol, event, when, float(tape.vwap[tape.cursor]), int(tape.trades[tape.cursor]))  # type: ignore[index]
            )
        self._clock_ns = now_ns + self.interval_ns
        return steps

    def set_price(self, symbol: str, price: float, volume: float | None = None) -> Step:
        """A new last price (and optionally the volume traded at it) for ``symbol``."""
        tape = self.tapes.setdefault(symbol, _Tape(symbol))
        when = self.now()
        event = MarketEvent.tick(float(price), volume)
        self._set_event(tape, event, when)
        return Step(symbol, event, when, float(price), 0 if volume is None else 1)

    def _set_event(self, tape: _Tape, event: MarketEvent, when: dt.datetime) -> None:
        tape.event, tape.event_time, tape.used = event, when, 0.0
        tape.previous = tape.last
        tape.last = event.close

    # -- queries -----------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The market clock: the close of the last replayed bar, else the wall clock (UTC)."""
        if self._clock_ns is not None:
            return dt.datetime.fromtimestamp(self._clock_ns / 1e9, dt.UTC)
        return dt.datetime.fromtimestamp(time.time(), dt.UTC)

    def last(self, symbol: str) -> float | None:
        tape = self.tapes.get(symbol)
        return None if tape is None else tape.last

    def previous_close(self, symbol: str) -> float | None:
        tape = self.tapes.get(symbol)
        return None if tape is None else tape.previous

    def prices(self) -> dict[str, float]:
        return {s: t.last for s, t in self.tapes.items() if t.last is not None}

    def quote(self, symbol: str, spread_bps: float) -> tuple[float, float, float] | None:
        """(bid, last, ask) with the spread split evenly around the last price, in cents; None if no price."""
        last = self.last(symbol)
        if last is None:
            return None
        half = max(round(last * spread_bps / 2e4, 2), 0.01)
        return round(last - half, 2), last, round(last + half, 2)

    def current_event(self, symbol: str) -> MarketEvent | None:
        """The last price as an event, for matching an order that arrives between market moves."""
        tape = self.tapes.get(symbol)
        if tape is None or tape.last is None:
            return None
        volume = tape.event.volume if tape.event is not None else None
        return MarketEvent(tape.last, tape.last, tape.last, tape.last, volume)

    def available(self, symbol: str) -> float | None:
        """Shares the current event can still fill (None = no cap)."""
        tape = self.tapes.get(symbol)
        if tape is None or tape.event is None or tape.event.volume is None or self.max_volume_share is None:
            return None
        return max(self.max_volume_share * tape.event.volume - tape.used, 0.0)

    def consume(self, symbol: str, shares: float) -> None:
        self.tapes[symbol].used += shares

    def current_bar(self, symbol: str) -> Step | None:
        tape = self.tapes.get(symbol)
        if tape is None or tape.event is None or tape.event_time is None:
            return None
        vwap = (
            float(tape.vwap[tape.cursor]) if tape.vwap is not None and tape.cursor >= 0 else tape.event.close
        )
        return Step(symbol, tape.event, tape.event_time, vwap, 0)
