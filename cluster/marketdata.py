"""Live bars from the IB gateway: 5-second real-time bars built into session-aligned interval bars.

:class:`GatewayBars` is the market-data source of LIVE mode (replay mode reads the store instead). It holds
its own API connection (its own client id, read-only, async API only) and, per symbol, a real-time bar
subscription (``reqRealTimeBars``, 5-second TRADES bars, regular hours).

Building bars
    5-second bars are aggregated into ``interval`` bars (1m, 5m or 1h) aligned to the session open, as
    :class:`trader.session.SessionData` aligns them: a bar covers ``[open + k*interval, open +
    (k+1)*interval)``, cut at the close. First open, max high, min low, last close, summed volume.

When a bar is emitted
    Time is the gateway's: the stamps of the bars it sends (a 5-second bar stamped ``s`` covers ``[s, s +
    5 s)``), never the local wall clock (unless ``clock`` is given, see below). An interval has *ended* once
    any symbol's stream has passed its end. It is emitted as soon as every symbol's stream has passed it, or
    ``grace_seconds`` (wall seconds) after it ended, whichever comes first; intervals go out in time order.
    A symbol without a bar in an emitted interval is missing: the gap is detected right then. With the
    simulated gateway, whose one real-time bar per replayed bar is stamped with the bar's start, an
    interval is therefore emitted when the next replayed bar arrives.

Gaps and back-fill
    Each symbol's bars of each session are followed by a :class:`trader.session.GapTracker` (expected:
    every interval from the feed's first interval, or from the open in later sessions, up to the close)
    and re-requested on the :class:`trader.session.GapFiller` schedule (``max_retries`` requests,
    ``retry_interval_seconds`` apart) with ``reqHistoricalDataAsync`` (1-minute bars, aggregated as above).
    A back-filled bar is *late*: it is recorded (:meth:`GatewayBars.recorded`) and reported in the notes
    with the recomputed quality, but it is **not** emitted again as a decision bar: decisions taken
    without it stay taken, as in :meth:`trader.session.SessionData.fill`. A gap whose requests are used up
    is reported as given up.

Reconnection
    A dropped connection is noticed at once (``disconnected`` note); the feed reconnects with exponential
    backoff (``reconnect_backoff`` seconds, first and largest delay), subscribes again and back-fills what
    it missed. The interval that was being built when the connection dropped is discarded (some of its
    5-second bars may be lost) and back-filled too; so is the part of an interval before the first bar
    after a (re)connection. IB's "connectivity restored, data lost" notice (1101) is handled the same way.

Notes
    Dicts with ``kind`` (``gap``, ``backfill``, ``backfill_miss``, ``gap_given_up``, ``late_bar``,
    ``outside_session``, ``disconnected``, ``reconnected``, ``connectivity_lost``, ``resubscribed``),
    ``symbol`` where there is one, instants as int ns UTC and ``quality`` (share of the expected bars
    present, 0..1). They are handed out with the next emitted interval; :attr:`GatewayBars.log` keeps the
    latest ones.

Example::

    import asyncio
    from trader.calendar import get_calendar
    from trader.config import GapFillerSettings
    from cluster.marketdata import GatewayBars

    async def main():
        feed = GatewayBars("127.0.0.1", 4002, 21, ("SPY", "QQQ"), calendar=get_calendar(),
                           gap_filler=GapFillerSettings(), clock=None)
        await feed.start()
        async for ts, rows, notes in feed.bars():
            print(ts, rows["SPY"]["close"] if "SPY" in rows else None, notes)
        await feed.close()

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from trader.broker.clients import load_client_library
from trader.broker.errors import BrokerConnectionError, ContractError
from trader.calendar import TradingCalendar, get_calendar
from trader.config import GapFillerSettings
from trader.data.schema import interval_ns
from trader.errors import ConfigError, DataError
from trader.session.data import StreamQuality
from trader.session.gaps import FillRequest, GapFiller, GapTracker, runs

__all__ = ["GatewayBars", "Note", "Row"]

log = logging.getLogger(__name__)

Row = dict[str, float]  # {"open", "high", "low", "close", "volume"}
Note = dict[str, Any]

NS: Final = 1_000_000_000
RT_BAR_NS: Final = 5 * NS  # IB real-time bars are 5 seconds long
LIVE_INTERVALS: Final = ("1m", "5m", "1h")
_DATA_LOST: Final = 1101  # "connectivity restored - data lost": market data subscriptions are gone
_CONNECTIVITY_LOST: Final = 1100
_LOG_NOTES: Final = 10_000


def _ns(value: Any) -> int:
    """An IB bar time (aware or naive-UTC datetime, or epoch seconds) as int ns UTC."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return round(value.timestamp() * 1e6) * 1000
    if isinstance(value, dt.date):
        return _ns(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC))
    return int(value) * NS


def _utc(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / NS, dt.UTC)


@dataclass(frozen=True, slots=True)
class _Session:
    day: dt.date
    open: int
    close: int


class _Agg:
    """One symbol's bar being aggregated (first open, max high, min low, last close, summed volume)."""

    __slots__ = ("c", "h", "lo", "o", "v")

    def __init__(self, o: float, h: float, lo: float, c: float, v: float) -> None:
        self.o, self.h, self.lo, self.c, self.v = o, h, lo, c, v

    def add(self, h: float, lo: float, c: float, v: float) -> None:
        self.h = max(self.h, h)
        self.lo = min(self.lo, lo)
        self.c = c
        self.v += v

    def row(self) -> Row:
        return {"open": self.o, "high": self.h, "low": self.lo, "close": self.c, "volume": self.v}


@dataclass
class _Bucket:
    """One interval of all symbols, pending emission."""

    session: _Session
    start: int
    end: int
    bars: dict[str, _Agg] = field(default_factory=dict)
    ended_at: float | None = None  # time.monotonic() when the gateway's clock first passed ``end``


@dataclass
class _Stream:
    """One symbol over one session: which bars are missing, and their re-request schedule."""

    symbol: str
    session: _Session
    tracker: GapTracker
    filler: GapFiller
    given_up: set[int] = field(default_factory=set)


class GatewayBars:
    """Live interval bars of ``symbols`` from an IB gateway (see the module docstring).

    ``interval``: "1m", "5m" or "1h". ``calendar``: the exchange calendar (default XNYS). ``gap_filler``:
    the re-request policy (``session.gap_filler`` settings). ``client_library``: "ib_insync" or "ib_async".
    ``grace_seconds``: wall seconds an ended interval waits for streams that have not passed it yet.
    ``clock``: optional wall clock (a callable returning int ns UTC, e.g. ``time.time_ns``); given, an
    interval also ends when ``clock()`` passes its end plus the grace, so a gateway that goes silent
    still produces gaps; None (the default) trusts only the bar times the gateway sends, which a
    replaying simulator needs. ``reconnect_backoff``: (first, largest) delay between reconnection attempts,
    seconds. ``history_timeout``: seconds one back-fill request may take. ``record_bars``: bars kept per
    symbol by :meth:`recorded`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: int,
        symbols: Sequence[str],
        *,
        interval: str = "1m",
        calendar: TradingCalendar | None = None,
        gap_filler: GapFillerSettings | None = None,
        client_library: str = "ib_insync",
        grace_seconds: float = 2.0,
        clock: Callable[[], int] | None = None,
        connect_timeout: float = 10.0,
        history_timeout: float = 30.0,
        reconnect_backoff: tuple[float, float] = (0.25, 8.0),
        record_bars: int = 20_000,
    ) -> None:
        if interval not in LIVE_INTERVALS:
            raise ConfigError(
                f"live bars are built at {', '.join(LIVE_INTERVALS)}, not {interval!r}; daily bars come "
                "from the store"
            )
        if not symbols:
            raise ConfigError("GatewayBars needs at least one symbol")
        if len(set(symbols)) != len(symbols):
            raise ConfigError(f"duplicate symbols in {tuple(symbols)}")
        if grace_seconds < 0:
            raise ConfigError(f"grace_seconds must be >= 0, got {grace_seconds}")
        first, largest = reconnect_backoff
        if not 0 < first <= largest:
            raise ConfigError(
                f"reconnect_backoff must be (first, largest), 0 < first <= largest; got {reconnect_backoff}"
            )
        self.host = host
        self.port = int(port)
        self.client_id = int(client_id)
        self.symbols = tuple(s.upper() for s in symbols)
        self.interval = interval
        self.step = interval_ns(interval)
        self.calendar = calendar or get_calendar()
        self.settings = gap_filler or GapFillerSettings()
        self.grace = float(grace_seconds)
        self.clock = clock
        self.connect_timeout = float(connect_timeout)
        self.history_timeout = float(history_timeout)
        self.backoff = (float(first), float(largest))
        self.log: deque[Note] = deque(maxlen=_LOG_NOTES)
        self.stats: dict[str, int] = dict.fromkeys(
            ("realtime_bars", "emitted", "backfilled", "late_bars", "outside_session", "reconnects"), 0
        )
        self._tz = ZoneInfo(self.calendar.tz)
        self._lib = load_client_library(client_library)
        self._ib = self._lib.IB()
        self._ib.barUpdateEvent += self._on_bar_update
        self._ib.disconnectedEvent += self._on_disconnected
        self._ib.errorEvent += self._on_error
        self._contracts: dict[str, Any] = {}
        self._subs: dict[int, str] = {}  # real-time request id -> symbol, this connection only
        self._last_stamp: dict[str, int] = {}  # newest 5-second bar start seen per symbol
        # The first interval taken after (re)connecting, per symbol; None until its first bar comes.
        self._resume: dict[str, int | None] = dict.fromkeys(self.symbols)
        self._gw_clock: int | None = None  # the gateway's time: end of the newest 5-second bar seen
        self._pending: dict[int, _Bucket] = {}
        self._closed_before: int | None = None  # intervals starting before this are emitted (or let go)
        self._first_start: int | None = None  # the feed's first interval; earlier bars are not expected
        self._streams: dict[tuple[str, dt.date], _Stream] = {}
        self._current: dict[str, _Stream] = {}
        self._sessions: dict[dt.date, _Session | None] = {}
        self._record: dict[str, dict[int, tuple[float, float, float, float, float, bool]]] = {
            s: {} for s in self.symbols
        }
        self._record_cap = int(record_bars)
        self._late_seen: set[tuple[str, int]] = set()
        self._outside_seen: set[tuple[str, dt.date]] = set()
        self._queue: asyncio.Queue[tuple[int, dict[str, Row], list[Note]] | None] = asyncio.Queue()
        self._notes: list[Note] = []
        self._note_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reconnecting: asyncio.Task[None] | None = None
        self._fill_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._disconnected_at: float | None = None
        self._online = False  # connected and subscribed; a disconnect is reported once per connection
        self._closing = False
        self._started = False

    # -- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, qualify the stocks and subscribe 5-second real-time bars for every symbol.

        Raises BrokerConnectionError when the gateway cannot be reached within ``connect_timeout`` and
        ContractError naming the symbols the gateway does not know.
        """
        if self._started:
            return
        loop = asyncio.get_running_loop()
        # ib_insync finds its loop through the policy, which knows only the main thread's; register ours.
        asyncio.set_event_loop(loop)
        self._loop = loop
        await self._connect()
        self._started = True
        self._fill_task = loop.create_task(self._fill_loop(), name="marketdata-backfill")
        if self.clock is not None:
            self._tick_task = loop.create_task(self._tick(), name="marketdata-clock")

    async def close(self) -> None:
        """Cancel the subscriptions, disconnect and end :meth:`bars`. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        tasks = [
            t for t in (self._reconnecting, self._fill_task, self._tick_task, *self._tasks) if t is not None
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ib.isConnected():
            for req_id in list(self._subs):
                with contextlib.suppress(Exception):
                    self._ib.client.cancelRealTimeBars(req_id)
            self._ib.disconnect()
        self._subs.clear()
        self._queue.put_nowait(None)

    @property
    def connected(self) -> bool:
        return bool(self._ib.isConnected()) and bool(self._subs)

    async def _connect(self) -> None:
        try:
            await self._ib.connectAsync(
                self.host, self.port, clientId=self.client_id, timeout=self.connect_timeout, readonly=True
            )
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise BrokerConnectionError(
                f"market data: cannot connect to the gateway at {self.host}:{self.port} as client "
                f"{self.client_id} ({type(exc).__name__}: {exc}); is it running, and the client id free?"
            ) from None
        try:
            if not self._contracts:
                await self._qualify()
            await self._subscribe()
        except TimeoutError:
            self._ib.disconnect()
            raise BrokerConnectionError(
                f"market data: the gateway at {self.host}:{self.port} did not answer within "
                f"{self.connect_timeout:g} s after connecting; is it stalled?"
            ) from None
        except BaseException:
            self._ib.disconnect()
            raise
        self._online = True

    async def _qualify(self) -> None:
        stocks = {s: self._lib.Stock(s, "SMART", "USD") for s in self.symbols}
        await asyncio.wait_for(self._ib.qualifyContractsAsync(*stocks.values()), self.connect_timeout)
        unknown = [s for s, c in stocks.items() if not getattr(c, "conId", 0)]
        if unknown:
            raise ContractError(
                f"market data: the gateway knows no stock {', '.join(unknown)} (SMART, USD); check symbols"
            )
        self._contracts = stocks

    async def _subscribe(self) -> None:
        """Subscribe every symbol; return once the gateway has them (it answers requests in order, so one
        round trip after the subscriptions proves they are in: no bar sent after this is lost)."""
        self._subs.clear()
        for symbol in self.symbols:
            bars = self._ib.reqRealTimeBars(self._contracts[symbol], 5, "TRADES", True)
            self._subs[bars.reqId] = symbol
        await asyncio.wait_for(self._ib.reqCurrentTimeAsync(), self.connect_timeout)

    # -- the feed ------------------------------------------------------------------------------------------

    async def bars(self) -> AsyncIterator[tuple[int, dict[str, Row], list[Note]]]:
        """Closed interval bars, in time order: ``(ts, rows, notes)`` with ``ts`` the interval's start (int ns
        UTC), ``rows = {symbol: {"open", "high", "low", "close", "volume"}}`` for every symbol that has a bar
        in it (prices in USD, volume in shares), and ``notes`` the events since the previous item.

        Back-filled bars are never yielded here (see the module docstring). Ends after :meth:`close`.

        >>> async for ts, rows, notes in feed.bars():  # doctest: +SKIP
        ...     decide(ts, rows)
        """
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # a second iterator ends too
                return
            yield item

    def take_notes(self) -> list[Note]:
        """Notes not yet handed out with an interval (and now taken); e.g. the last back-fill at the end."""
        out, self._notes = self._notes, []
        return out

    async def wait_for_note(
        self, kind: str, *, symbol: str | None = None, timeout: float = 10.0, since: int = 0
    ) -> Note:
        """The first note of ``kind`` (and ``symbol``) in :attr:`log` from position ``since``, waiting up to
        ``timeout`` seconds for it; TimeoutError naming it otherwise.

        >>> note = await feed.wait_for_note("reconnected", timeout=30)  # doctest: +SKIP
        """

        def find() -> Note | None:
            for note in list(self.log)[since:]:
                if note["kind"] == kind and (symbol is None or note.get("symbol") == symbol):
                    return note
            return None

        async def wait() -> Note:
            while (note := find()) is None:
                self._note_event.clear()
                await self._note_event.wait()
            return note

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"market data: no {kind!r} note{'' if symbol is None else ' for ' + symbol} "
                f"within {timeout:g} s"
            ) from None

    def quality(self) -> dict[str, dict[str, StreamQuality]]:
        """Per symbol and stream: bars expected so far in the current session (from the feed's first
        interval), present (live or back-filled) and complete; ``share`` is present / expected (0..1).

        >>> feed.quality()["SPY"]["1m"].share  # doctest: +SKIP
        1.0
        """
        out: dict[str, dict[str, StreamQuality]] = {}
        for symbol in self.symbols:
            st = self._current.get(symbol)
            q = (
                StreamQuality(self.interval, 0, 0, 0)
                if st is None
                else StreamQuality(self.interval, st.tracker.known, st.tracker.present, st.tracker.present)
            )
            out[symbol] = {self.interval: q}
        return out

    def missing(self, symbol: str) -> list[int]:
        """Starts (int ns UTC) of ``symbol``'s bars known to be missing and not back-filled, oldest first."""
        return [
            ts for (s, _), st in sorted(self._streams.items()) if s == symbol for ts in st.tracker.missing()
        ]

    def recorded(self, symbol: str) -> pl.DataFrame:
        """Every bar of ``symbol`` the feed holds (emitted live and back-filled), sorted by ``ts``, with a
        ``late`` column (True = back-filled, never emitted as a decision bar). At most ``record_bars``: the
        oldest go first."""
        rows = sorted(self._record[symbol.upper()].items())
        return pl.DataFrame(
            {
                "ts": pl.Series([t for t, _ in rows], dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
                "open": [r[0] for _, r in rows],
                "high": [r[1] for _, r in rows],
                "low": [r[2] for _, r in rows],
                "close": [r[3] for _, r in rows],
                "volume": [r[4] for _, r in rows],
                "late": [r[5] for _, r in rows],
            },
            schema_overrides={c: pl.Float64 for c in ("open", "high", "low", "close", "volume")},
        )

    # -- sessions and the grid ------------------------------------------------------------------------------

    def _session_of(self, ns: int) -> _Session | None:
        """The regular session holding instant ``ns``, None outside every session."""
        day = dt.datetime.fromtimestamp(ns // NS, self._tz).date()
        if day not in self._sessions:
            found: _Session | None = None
            if self.calendar.is_session(day):
                opened, closed = self.calendar.open_close(day)
                found = _Session(day, int(opened.value), int(closed.value))
            self._sessions[day] = found
        s = self._sessions[day]
        return s if s is not None and s.open <= ns < s.close else None

    def _grid(self, s: _Session, ns: int) -> tuple[int, int]:
        """(start, end) of the interval of session ``s`` holding ``ns``: aligned to the open, cut at close."""
        start = s.open + (ns - s.open) // self.step * self.step
        return start, min(start + self.step, s.close)

    # -- real-time bars --------------------------------------------------------------------------------------

    def _on_bar_update(self, bars: Any, has_new_bar: bool) -> None:
        symbol = self._subs.get(getattr(bars, "reqId", -1))
        if symbol is None or not has_new_bar or not bars or not isinstance(bars, self._lib.RealTimeBarList):
            return
        bar = bars[-1]
        bars.clear()  # the client keeps every bar otherwise; a long session would grow without bound
        try:
            self._on_realtime(
                symbol, _ns(bar.time), float(bar.open_), float(bar.high), float(bar.low), float(bar.close),
                float(bar.volume),
            )  # fmt: skip
        except Exception:  # a bug here must not stop the client's reader; it is logged loudly
            log.exception("market data: real-time bar of %s at %s failed", symbol, bar.time)

    def _on_realtime(
        self, symbol: str, stamp: int, o: float, h: float, lo: float, c: float, v: float
    ) -> None:
        """One 5-second bar of ``symbol`` starting at ``stamp`` (int ns UTC)."""
        last = self._last_stamp.get(symbol)
        if last is not None and stamp <= last:
            return  # a repeat (IB does not resend, but a resubscription may overlap)
        self.stats["realtime_bars"] += 1
        self._last_stamp[symbol] = stamp
        self._gw_clock = max(self._gw_clock or 0, stamp + RT_BAR_NS)
        session = self._session_of(stamp)
        if session is None:
            self.stats["outside_session"] += 1
            day = dt.datetime.fromtimestamp(stamp // NS, self._tz).date()
            if (symbol, day) not in self._outside_seen:
                self._outside_seen.add((symbol, day))
                self._note({"kind": "outside_session", "symbol": symbol, "ts": stamp})
            self._advance()
            return
        start, end = self._grid(session, stamp)
        resume = self._resume[symbol]
        if resume is None:
            # First bar after (re)connecting: the interval it falls in is whole only if it starts with it.
            resume = self._resume[symbol] = start if stamp == start else end
        if start < resume:
            self._advance()
            return
        if self._closed_before is not None and start < self._closed_before:
            self.stats["late_bars"] += 1
            if (symbol, start) not in self._late_seen:
                self._late_seen.add((symbol, start))
                self._note({"kind": "late_bar", "symbol": symbol, "ts": start, "stamp": stamp})
            self._advance()
            return
        bucket = self._pending.get(start)
        if bucket is None:
            bucket = self._pending[start] = _Bucket(session, start, end)
        agg = bucket.bars.get(symbol)
        if agg is None:
            bucket.bars[symbol] = _Agg(o, h, lo, c, v)
        else:
            agg.add(h, lo, c, v)
        self._advance()

    def _passed(self, symbol: str, end: int) -> bool:
        last = self._last_stamp.get(symbol)
        return last is not None and last + RT_BAR_NS >= end

    def _advance(self) -> None:
        """Emit, in time order, every pending interval that has ended and that every stream has passed or
        whose grace is over; arm a timer for the first one still in its grace."""
        if self._closing:
            return
        now = time.monotonic()
        clock = self._gw_clock
        wall = self.clock() - round(self.grace * NS) if self.clock is not None else None
        for start in sorted(self._pending):
            b = self._pending[start]
            if b.ended_at is not None:
                continue
            if clock is not None and b.end <= clock:
                b.ended_at = now
            elif wall is not None and b.end <= wall:
                b.ended_at = now - self.grace  # the wall clock already waited the grace
            else:
                break
        while self._pending:
            start = min(self._pending)
            b = self._pending[start]
            if b.ended_at is None:
                break
            waited = now - b.ended_at
            if waited < self.grace and not all(self._passed(s, b.end) for s in self.symbols):
                self._arm(self.grace - waited)
                break
            del self._pending[start]
            self._emit(b)

    def _arm(self, seconds: float) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        loop = self._loop or asyncio.get_running_loop()
        self._grace_timer = loop.call_later(max(seconds, 0.0) + 1e-3, self._advance)

    def _emit(self, b: _Bucket) -> None:
        """Hand out one interval and account for the symbols missing from it."""
        if self._first_start is None:
            self._first_start = b.start
        self._closed_before = b.end
        rows = {s: b.bars[s].row() for s in self.symbols if s in b.bars}
        for symbol in self.symbols:
            st = self._stream(symbol, b.session)
            missing: list[int] = []
            if symbol in rows:
                missing += st.tracker.on_bar(b.start)
                r = rows[symbol]
                self._keep(symbol, b.start, (r["open"], r["high"], r["low"], r["close"], r["volume"], False))
            missing += st.tracker.advance_to(b.end)
            self._report_gaps(st, missing)
        self.stats["emitted"] += 1
        notes, self._notes = self._notes, []
        if rows:
            self._queue.put_nowait((b.start, rows, notes))
        else:
            self._notes = notes

    def _stream(self, symbol: str, session: _Session) -> _Stream:
        st = self._streams.get((symbol, session.day))
        if st is not None:
            return st
        old = self._current.get(symbol)
        if old is not None and old.session.day < session.day:
            # The previous session is over: its final bars that never came are missing too.
            self._report_gaps(old, old.tracker.advance_to(old.session.close))
        first = self._first_start if self._first_start is not None else session.open
        begin = first if session.open <= first < session.close else session.open
        expected = np.arange(begin, session.close, self.step, dtype=np.int64)
        filler = GapFiller.from_settings(self.settings, mode="live")
        st = _Stream(symbol, session, GapTracker(expected, self.step), filler)
        self._streams[(symbol, session.day)] = st
        self._current[symbol] = st
        # Keep this session and the one before: gaps older than that are no longer worth a request.
        older = sorted(d for s, d in self._streams if s == symbol and d < session.day)
        for day in older[:-1]:
            del self._streams[(symbol, day)]
        self._wake.set()
        return st

    def _report_gaps(self, st: _Stream, missing: list[int]) -> None:
        if not missing:
            return
        quality = st.tracker.quality()
        for gap in runs(sorted(missing), self.step):
            self._note(
                {
                    "kind": "gap",
                    "symbol": st.symbol,
                    "start": gap.start,
                    "end": gap.end,
                    "bars": gap.bars,
                    "quality": quality,
                }
            )
        self._wake.set()

    def _keep(self, symbol: str, ts: int, row: tuple[float, float, float, float, float, bool]) -> None:
        rec = self._record[symbol]
        rec[ts] = row
        while len(rec) > self._record_cap:
            del rec[next(iter(rec))]  # the first kept: the oldest but for a few back-filled ones

    def _note(self, note: Note) -> None:
        self._notes.append(note)
        self.log.append(note)
        self._note_event.set()
        log.info("market data: %s", note)

    async def _tick(self) -> None:
        """With a wall clock: close intervals of a silent gateway (every half grace, at most 1 s apart)."""
        period = min(max(self.grace / 2, 0.05), 1.0)
        while not self._closing:
            await asyncio.sleep(period)
            self.check_clock()

    def check_clock(self) -> None:
        """With a wall clock (``clock``): emit what has ended by ``clock() - grace`` and count the intervals
        that ended without any bar at all as missing. Runs on its own every half grace; call it to act now.
        """
        if self.clock is None or self._closing:
            return
        self._advance()
        if self._first_start is None:
            return  # nothing expected before the first interval
        upto = self.clock() - round(self.grace * NS)
        if self._pending:
            upto = min(upto, min(self._pending))  # never overtake an interval still to be emitted
        day = dt.datetime.fromtimestamp((upto - 1) // NS, self._tz).date()
        self._session_of(upto - 1)  # caches the day's session, if it is one
        session = self._sessions.get(day)
        if session is None or upto <= session.open:
            return
        boundary = session.close if upto >= session.close else self._grid(session, upto)[0]
        if boundary <= (self._closed_before or 0):
            return
        self._closed_before = boundary
        for symbol in self.symbols:
            st = self._stream(symbol, session)
            self._report_gaps(st, st.tracker.advance_to(boundary))

    # -- connection ---------------------------------------------------------------------------------------

    def _on_disconnected(self) -> None:
        if self._closing or not self._online:
            return
        self._online = False
        self._subs.clear()
        self._interrupted()
        self._disconnected_at = time.monotonic()
        self._note({"kind": "disconnected", "ts": self._gw_clock})
        if self._reconnecting is None or self._reconnecting.done():
            assert self._loop is not None
            self._reconnecting = self._loop.create_task(self._reconnect(), name="marketdata-reconnect")

    def _on_error(self, req_id: int, code: int, text: str, *_: Any) -> None:
        if code == _CONNECTIVITY_LOST:
            self._note({"kind": "connectivity_lost", "ts": self._gw_clock, "text": text})
        elif code == _DATA_LOST and self._started and not self._closing and self._ib.isConnected():
            # The gateway dropped every market data subscription: whatever was being built is incomplete.
            self._interrupted()
            for old in list(self._subs):
                with contextlib.suppress(Exception):
                    self._ib.client.cancelRealTimeBars(old)
            self._spawn(self._resubscribe(text))

    async def _resubscribe(self, text: str) -> None:
        try:
            await self._subscribe()
        except (TimeoutError, ConnectionError, OSError) as exc:
            # The connection is failing too; the disconnect handler reconnects and subscribes.
            log.warning("market data: resubscribing after %r failed: %s", text, exc)
            return
        self._note({"kind": "resubscribed", "ts": self._gw_clock, "text": text})
        self._wake.set()

    def _interrupted(self) -> None:
        """Forget the part-built intervals (5-second bars may be lost from them): they will be back-filled."""
        for symbol in self.symbols:
            self._resume[symbol] = None
        for start in list(self._pending):
            b = self._pending[start]
            for symbol in [s for s in b.bars if not self._passed(s, b.end)]:
                del b.bars[symbol]
            if not b.bars:
                del self._pending[start]
        self._advance()

    async def _reconnect(self) -> None:
        delay, largest = self.backoff
        attempt = 0
        while not self._closing:
            await asyncio.sleep(delay)
            attempt += 1
            try:
                await self._connect()
            except (BrokerConnectionError, ContractError, TimeoutError, ConnectionError, OSError) as exc:
                log.warning("market data: reconnection attempt %s failed: %s", attempt, exc)
                delay = min(delay * 2, largest)
                continue
            self.stats["reconnects"] += 1
            down = time.monotonic() - (self._disconnected_at or time.monotonic())
            self._note(
                {
                    "kind": "reconnected",
                    "ts": self._gw_clock,
                    "attempts": attempt,
                    "down_seconds": round(down, 3),
                }
            )
            self._wake.set()
            return

    # -- back-fill -------------------------------------------------------------------------------------------

    async def _fill_loop(self) -> None:
        """Ask for missing bars on the gap filler's schedule; report the gaps it gives up on."""
        while not self._closing:
            self._wake.clear()
            now = time.monotonic_ns()
            wake_at: int | None = None
            if self._ib.isConnected() and self._subs:
                for st in list(self._streams.values()):
                    gaps = st.tracker.gaps()
                    for request in st.filler.plan(gaps, now):
                        self._spawn(self._request(st, request))
                    self._give_up(st, now)
                    nxt = st.filler.next_at(now)
                    if nxt is not None:
                        wake_at = nxt if wake_at is None else min(wake_at, nxt)
            timeout = None if wake_at is None else max((wake_at - now) / NS, 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _give_up(self, st: _Stream, now: int) -> None:
        for gap in st.filler.given_up(now):
            fresh = [t for t in range(gap.start, gap.end, self.step) if t not in st.given_up]
            if not fresh:
                continue
            st.given_up.update(fresh)
            for run in runs(fresh, self.step):
                self._note(
                    {
                        "kind": "gap_given_up",
                        "symbol": st.symbol,
                        "start": run.start,
                        "end": run.end,
                        "bars": run.bars,
                        "requests": st.filler.max_retries,
                        "quality": st.tracker.quality(),
                    }
                )

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, st: _Stream, request: FillRequest) -> None:
        """One re-request: 1-minute bars of ``[request.start, request.end)``, built into interval bars."""
        seconds = max(math.ceil((request.end - request.start) / NS), 60)
        try:
            answer = await self._ib.reqHistoricalDataAsync(
                self._contracts[st.symbol],
                _utc(request.end),
                f"{seconds} S",
                "1 min",
                "TRADES",
                True,
                formatDate=2,
                timeout=self.history_timeout,
            )
        except (ConnectionError, OSError) as exc:
            answer = []
            log.warning("market data: back-fill of %s failed: %s", st.symbol, exc)
        finally:
            self._wake.set()
        filled = self._apply_fill(st, request, answer or [])
        still_missing = any(request.start <= ts < request.end for ts in st.tracker.missing())
        if not filled and still_missing:  # (an answer to an earlier attempt may have filled them already)
            self._note(
                {
                    "kind": "backfill_miss",
                    "symbol": st.symbol,
                    "start": request.start,
                    "end": request.end,
                    "attempt": request.attempt,
                    "bars_received": len(answer or []),
                }
            )

    def _apply_fill(self, st: _Stream, request: FillRequest, answer: Iterable[Any]) -> int:
        """Put the answer's bars into the gaps they fill; returns how many interval bars were filled."""
        built: dict[int, _Agg] = {}
        for bar in sorted(answer, key=lambda b: _ns(b.date)):
            ts = _ns(bar.date)
            if not (request.start <= ts < request.end) or not (st.session.open <= ts < st.session.close):
                continue
            start, _ = self._grid(st.session, ts)
            agg = built.get(start)
            o, h, lo, c, v = (float(x) for x in (bar.open, bar.high, bar.low, bar.close, bar.volume))
            if agg is None:
                built[start] = _Agg(o, h, lo, c, v)
            else:
                agg.add(h, lo, c, v)
        count = 0
        for start in sorted(built):
            try:
                if not st.tracker.filled([start]):
                    continue  # present already (a duplicate answer)
            except DataError:
                continue  # not a known gap (outside the tracked part of the session)
            count += 1
            self.stats["backfilled"] += 1
            row = built[start].row()
            self._keep(
                st.symbol, start, (row["open"], row["high"], row["low"], row["close"], row["volume"], True)
            )
            self._note(
                {
                    "kind": "backfill",
                    "symbol": st.symbol,
                    "ts": start,
                    "bar": row,
                    "attempt": request.attempt,
                    "quality": st.tracker.quality(),
                }
            )
        return count
