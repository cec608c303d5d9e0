"""The bars and indicators one symbol's session actor holds, built as base bars arrive.

Streams
-------
``SessionData(symbol, streams=("1m", "5m", "1d"), ...)`` keeps a :class:`~trader.session.window.BarWindow`
per stream. The smallest interval is the *base* stream: its bars are given to :meth:`SessionData.on_bar`
one at a time, in time order. Every larger stream is *built* from the base bars:

* Alignment: intraday buckets are aligned to the session open, not to the clock. A 5m bar covers
  ``[open + 5k min, open + 5(k+1) min)``; a 1h bar on a 09:30 New York open covers 09:30-10:30, and the last
  bucket is cut at the close (15:30-16:00; 12:30-13:00 on an early close). For an exchange opening on a round
  five minutes, 5m buckets coincide with clock-aligned ones. A 1d bar is the whole session, labelled with
  the session date at 00:00 UTC (trader/data/schema.py).
* Aggregation: first open, max high, min low, last close, summed volume, over the base bars present. A
  bucket without any base bar produces no bar.
* Closing: a bucket closes when its last base bar arrives, when a base bar of a later bucket arrives (its
  last bar was missing), when :meth:`SessionData.advance_to` passes its end, or when the session ends (the
  calendar's close, early closes included). Closed bars are returned by the call that closed them, base bar
  first in its time order, and appended to their window.
* Late data: a base bar that arrives after its bucket closed (a filled gap, see :meth:`SessionData.fill`)
  revises that bucket: the window row is overwritten and the new values are returned with
  ``revised=True``. Decisions already taken on the old values stay taken.

Bars must lie inside a regular session of ``calendar``; a bar's session is the date of its start in the
exchange time zone ``tz``. Base bars must start on the open plus a whole number of base intervals.

Indicators
----------
Real time (per base bar, current session): :attr:`~SessionData.session_vwap` (volume-weighted typical price
``(h + l + c) / 3``), session open/high/low/volume, :attr:`~SessionData.last_close` and
:attr:`~SessionData.last_return` (simple close-to-close return of the last two base bars, a fraction; across
a session boundary it is the overnight return). Historical (from completed sessions, seeded by
:meth:`SessionData.warm_up`): :attr:`~SessionData.avg_volume_20d` (mean session volume over the last 20
completed sessions, or as many as there are; shares per session) and :attr:`~SessionData.high_52w` /
:attr:`~SessionData.low_52w` (over the last 252 sessions; NaN until 252 sessions are known). Numbers that
cannot be computed yet are NaN.

Quality
-------
Per stream, :meth:`SessionData.quality` is the share of the bars expected so far in the current session
that are present, and :meth:`SessionData.history_quality` the same over completed sessions (warm-up
included; a session without any bar counts fully missing). Expected = the calendar's session length /
interval, counting only bars that have ended by the latest bar or clock time seen. A built bar is *present*
when at least one of its base bars arrived and *complete* when all did. Filling a gap recomputes both.

Example::

    from trader.calendar import get_calendar
    from trader.data.synth import synth_bars
    from trader.session.data import SessionData

    data = SessionData("SYN000", ("1m", "5m", "1d"), capacity_bars=500, calendar=get_calendar())
    data.warm_up(synth_bars("SYN000", "1m", "2019-11-18", "2019-11-22", seed=1))
    closed = data.feed(synth_bars("SYN000", "1m", "2019-11-25", "2019-11-25", seed=1))
    data.window("5m").close[-3:], data.session_vwap, data.quality("1m").share
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import polars as pl

from trader.calendar import TradingCalendar, get_calendar
from trader.data.schema import check_interval, interval_ns
from trader.errors import ConfigError, DataError
from trader.session.gaps import Gap, GapTracker
from trader.session.window import FIELDS, BarWindow, TimeLike, _ts_ns, ns_text, to_ns

DAILY = "1d"
AVG_VOLUME_SESSIONS = 20
SESSIONS_52W = 252
_NS_PER_S = 1_000_000_000


class Bar(NamedTuple):
    """One bar of one stream. ``ts``: start, int64 ns UTC (1d: the session date at 00:00 UTC)."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval: str = "1m"
    revised: bool = False  # a bar returned again with new values after late base bars filled it

    @classmethod
    def make(
        cls,
        ts: TimeLike,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: float,
        interval: str = "1m",
    ) -> Bar:
        """A bar from any instant ``to_ns`` accepts.

        >>> Bar.make("2019-11-29T14:30:00Z", 1.0, 1.1, 0.9, 1.05, 100.0).ts
        1575037800000000000
        """
        return cls(to_ns(ts), float(open), float(high), float(low), float(close), float(volume), interval)


@dataclass(frozen=True, slots=True)
class StreamQuality:
    """Bars of one stream: ``expected`` by the calendar, ``present`` (>= 1 base bar), ``complete`` (all)."""

    interval: str
    expected: int
    present: int
    complete: int

    @property
    def share(self) -> float:
        """``present / expected`` (0..1); 1.0 while nothing is expected yet."""
        return 1.0 if self.expected == 0 else self.present / self.expected

    @property
    def complete_share(self) -> float:
        """``complete / expected`` (0..1); equals :attr:`share` for the base stream."""
        return 1.0 if self.expected == 0 else self.complete / self.expected

    def __add__(self, other: StreamQuality) -> StreamQuality:
        return StreamQuality(
            self.interval,
            self.expected + other.expected,
            self.present + other.present,
            self.complete + other.complete,
        )


class _Bucket:
    """A built bar being aggregated (or closed) from base bars."""

    __slots__ = (
        "c",
        "closed",
        "count",
        "end",
        "expected",
        "first",
        "h",
        "label",
        "last",
        "lo",
        "o",
        "start",
        "v",
    )

    def __init__(self, start: int, end: int, label: int, expected: int) -> None:
        self.start = start
        self.end = end
        self.label = label
        self.expected = expected
        self.count = 0
        self.first = 0
        self.last = 0
        self.o = self.h = self.lo = self.c = self.v = math.nan
        self.closed = False

    def add(self, ts: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        if self.count == 0:
            self.first, self.last = ts, ts
            self.o, self.h, self.lo, self.c, self.v = o, h, lo, c, v
        else:
            if ts < self.first:
                self.first, self.o = ts, o
            if ts > self.last:
                self.last, self.c = ts, c
            self.h = max(self.h, h)
            self.lo = min(self.lo, lo)
            self.v += v
        self.count += 1

    def bar(self, interval: str, revised: bool = False) -> Bar:
        return Bar(self.label, self.o, self.h, self.lo, self.c, self.v, interval, revised)


class _Session:
    """State of one session: its gap tracker, its built buckets and its real-time aggregates."""

    def __init__(
        self, day: dt.date, opened: int, closed: int, base_ns: int, derived: Mapping[str, int]
    ) -> None:
        self.day = day
        self.open = opened
        self.close = closed
        self.label = int(pd.Timestamp(day).value)
        self.tracker = GapTracker(np.arange(opened, closed, base_ns, dtype=np.int64), base_ns)
        self.base_ns = base_ns
        self.derived = dict(derived)
        self.buckets: dict[str, dict[int, _Bucket]] = {iv: {} for iv in derived}
        self.pending: dict[str, _Bucket | None] = {iv: None for iv in derived}
        self.as_of = opened
        self.ended = False
        self.day_bar = _Bucket(self.label, closed, self.label, len(self.tracker.expected))
        self.pv = 0.0  # sum of typical price x volume, for the VWAP

    def bucket_for(self, interval: str, ts: int) -> _Bucket:
        buckets = self.buckets[interval]
        size = self.derived[interval]
        if interval == DAILY:
            start, end, label = self.open, self.close, self.label
        else:
            start = self.open + (ts - self.open) // size * size
            end = min(start + size, self.close)
            label = start
        b = buckets.get(start)
        if b is None:
            b = buckets[start] = _Bucket(start, end, label, -(-(end - start) // self.base_ns))
        return b

    def expected(self, interval: str, upto: int) -> int:
        """Bars of ``interval`` ending at or before ``upto``."""
        if interval == DAILY:
            return int(upto >= self.close)
        size = self.derived[interval]
        if upto >= self.close:
            return -(-(self.close - self.open) // size)
        return max(0, (upto - self.open) // size)

    def full_expected(self, interval: str) -> int:
        return self.expected(interval, self.close)


class SessionData:
    """Bars per stream, real-time and historical indicators, gaps and quality for one symbol.

    ``streams``: bar intervals kept ("1m", "5m", "1h", "1d"); the smallest is the base fed to
    :meth:`on_bar` and must be intraday; the others must be whole multiples of it (or "1d").
    ``capacity_bars``: bars kept per stream (an int for all, or a mapping per interval).
    ``calendar``: the exchange calendar (default XNYS); ``tz``: the zone whose date names a bar's session
    (default the calendar's).
    """

    def __init__(
        self,
        symbol: str,
        streams: Sequence[str] = ("1m",),
        capacity_bars: int | Mapping[str, int] = 2_000,
        calendar: TradingCalendar | None = None,
        tz: str | None = None,
    ) -> None:
        if not streams:
            raise ConfigError(f"{symbol}: give at least one stream interval, e.g. ('1m', '5m')")
        ivs = sorted({check_interval(s) for s in streams}, key=interval_ns)
        if len(ivs) != len(streams):
            raise ConfigError(f"{symbol}: duplicate stream intervals in {tuple(streams)}")
        self.base = ivs[0]
        if self.base == DAILY:
            raise ConfigError(f"{symbol}: the base stream must be intraday (1m, 5m or 1h), got only 1d")
        self.base_ns = interval_ns(self.base)
        self.derived: dict[str, int] = {}
        for iv in ivs[1:]:
            size = interval_ns(iv)
            if iv != DAILY and size % self.base_ns:
                raise ConfigError(
                    f"{symbol}: stream {iv} is not a whole multiple of the base stream {self.base}"
                )
            self.derived[iv] = size
        self.symbol = symbol
        self.streams = tuple(ivs)
        self.calendar = calendar or get_calendar()
        self.tz = ZoneInfo(tz or self.calendar.tz)
        caps = {iv: capacity_bars for iv in ivs} if not isinstance(capacity_bars, Mapping) else capacity_bars
        missing = [iv for iv in ivs if iv not in caps]
        if missing:
            raise ConfigError(f"{symbol}: capacity_bars has no entry for stream(s) {', '.join(missing)}")
        self.windows = {iv: BarWindow(caps[iv], name=f"{symbol} {iv}") for iv in ivs}
        self._cur: _Session | None = None
        self._hist = {iv: StreamQuality(iv, 0, 0, 0) for iv in ivs}
        self._daily: deque[tuple[float, float, float]] = deque(maxlen=SESSIONS_52W)
        self._live = False
        self.warmup_quality: dict[str, StreamQuality] = {}

    # -- inputs ---------------------------------------------------------------------------------------------
    def on_bar(self, bar: Bar) -> list[Bar]:
        """Take the next base bar (at its close); return every bar closed or revised by it, in time order.

        The base bar itself comes back first among bars closing at its end. Raises DataError for a bar of
        another interval, one not after the previous base bar, outside a session, or off the session's grid.
        """
        self._live = True
        return self._ingest(bar)

    def feed(self, frame: pl.DataFrame) -> list[Bar]:
        """:meth:`on_bar` for every row of a base-interval bar frame (a replay); all closed bars, in order."""
        self._live = True
        out: list[Bar] = []
        for bar in self._rows(frame):
            out.extend(self._ingest(bar))
        return out

    def warm_up(self, frame: pl.DataFrame, daily: pl.DataFrame | None = None) -> dict[str, StreamQuality]:
        """Load history before live bars: base bars in ``frame``, optionally longer ``daily`` bars.

        ``frame`` holds base-interval bars (e.g. ``session.historical`` trading days of 1m bars) and fills
        every stream's window exactly as live bars would. ``daily`` (1d bars, e.g. a year) seeds the
        historical indicators and the 1d window with the sessions before ``frame``'s first. Returns (and
        keeps as :attr:`warmup_quality`) the quality of every stream over the completed warm-up sessions.
        Raises DataError once live bars have been given.

        >>> q = data.warm_up(history_1m, daily=history_1d)  # doctest: +SKIP
        """
        if self._live:
            raise DataError(f"{self.symbol}: warm_up after live bars; load history before the first on_bar")
        first_ns = None
        if frame.height:
            first_ns = int(_ts_ns(frame["ts"])[0])
        if daily is not None and daily.height:
            self._seed_daily(daily, first_ns)
        for bar in self._rows(frame):
            self._ingest(bar)
        self.warmup_quality = {iv: self.history_quality(iv) for iv in self.streams}
        return dict(self.warmup_quality)

    def advance_to(self, now: TimeLike) -> list[Bar]:
        """Let the clock reach ``now`` (UTC): close built bars whose end has passed, count bars that have not
        arrived as missing, end the session at its close and start the next one at its open.

        Call it a little after each bar end (bars arrive late; give a grace delay) and at the close.
        """
        ns = to_ns(now)
        self._live = True
        out: list[Bar] = []
        cur = self._cur
        if cur is not None and not cur.ended:
            upto = min(ns, cur.close)
            for iv in self.derived:
                p = cur.pending[iv]
                if p is not None and p.end <= upto:
                    out.append(self._close_bucket(cur, iv, p))
            cur.tracker.advance_to(upto)
            cur.as_of = max(cur.as_of, upto)
            if ns >= cur.close:
                out.extend(self._end_session(cur))
        located = self._locate(ns)
        if located is not None and (self._cur is None or located[0] > self._cur.day):
            fresh = self._start_session(*located)
            fresh.as_of = ns
            fresh.tracker.advance_to(ns)
        return out

    def fill(self, bars: Iterable[Bar] | pl.DataFrame) -> list[Bar]:
        """Put late base bars (answers to gap re-requests) in place; return the built bars they revised.

        Each bar must be a known missing bar of the current (or just ended) session; one already present
        is ignored (a duplicate answer). Quality, VWAP and session aggregates are recomputed.
        """
        items = list(self._rows(bars)) if isinstance(bars, pl.DataFrame) else sorted(bars, key=lambda b: b.ts)
        cur = self._cur
        out: list[Bar] = []
        for bar in items:
            if cur is None or not (cur.open <= bar.ts < cur.close):
                raise DataError(
                    f"{self.symbol}: fill bar at {ns_text(bar.ts)} is not in the current session"
                    + ("" if cur is None else f" {cur.day}")
                )
            if not cur.tracker.filled([bar.ts]):
                continue
            self.windows[self.base].insert(bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
            out.extend(self._add_to_session(cur, bar, late=True))
        return out

    # -- reading --------------------------------------------------------------------------------------------
    def window(self, interval: str) -> BarWindow:
        """The window of stream ``interval``."""
        try:
            return self.windows[interval]
        except KeyError:
            raise DataError(
                f"{self.symbol}: no stream {interval!r}; streams are {', '.join(self.streams)}"
            ) from None

    def frame(self, interval: str) -> pl.DataFrame:
        """The bars kept for ``interval`` as a polars frame in the bar schema."""
        return self.window(interval).to_frame()

    @property
    def session(self) -> dt.date | None:
        """The current (or just ended) session date, None before the first bar."""
        return None if self._cur is None else self._cur.day

    def missing(self) -> list[int]:
        """Missing base bar starts (int64 ns UTC) of the current session, oldest first."""
        return [] if self._cur is None else self._cur.tracker.missing()

    def gaps(self) -> list[Gap]:
        """:meth:`missing` as runs (:class:`trader.session.gaps.Gap`), for :class:`GapFiller.plan`."""
        return [] if self._cur is None else self._cur.tracker.gaps()

    def quality(self, interval: str) -> StreamQuality:
        """Quality of stream ``interval`` in the current session so far."""
        self.window(interval)
        if self._cur is None:
            return StreamQuality(interval, 0, 0, 0)
        return self._session_quality(self._cur, interval)

    def history_quality(self, interval: str) -> StreamQuality:
        """Quality of stream ``interval`` over every completed session (warm-up included)."""
        self.window(interval)
        total = self._hist[interval]
        if self._cur is not None and self._cur.ended:
            total = total + self._session_quality(self._cur, interval)
        return total

    def _session_quality(self, s: _Session, interval: str) -> StreamQuality:
        if interval == self.base:
            t = s.tracker
            return StreamQuality(interval, t.known, t.present, t.present)
        buckets = [s.day_bar] if interval == DAILY else list(s.buckets[interval].values())
        if interval == DAILY:
            closed = [b for b in buckets if s.ended and b.count]
        else:
            closed = [b for b in buckets if b.closed]
        complete = sum(1 for b in closed if b.count == b.expected)
        upto = s.close if s.ended else s.as_of
        return StreamQuality(interval, s.expected(interval, upto), len(closed), complete)

    # real-time indicators (current session)
    @property
    def session_volume(self) -> float:
        """Volume traded so far in the current session (shares); NaN before the first bar."""
        return math.nan if self._cur is None or not self._cur.day_bar.count else self._cur.day_bar.v

    @property
    def session_open(self) -> float:
        """Open of the first base bar of the current session; NaN before it."""
        return math.nan if self._cur is None else self._cur.day_bar.o

    @property
    def session_high(self) -> float:
        """Highest high so far in the current session; NaN before the first bar."""
        return math.nan if self._cur is None else self._cur.day_bar.h

    @property
    def session_low(self) -> float:
        """Lowest low so far in the current session; NaN before the first bar."""
        return math.nan if self._cur is None else self._cur.day_bar.lo

    @property
    def session_vwap(self) -> float:
        """Volume-weighted average of the typical price ``(h + l + c) / 3`` of the session's base bars; NaN
        before any volume traded."""
        if self._cur is None or not self._cur.day_bar.count or self._cur.day_bar.v <= 0:
            return math.nan
        return self._cur.pv / self._cur.day_bar.v

    @property
    def last_close(self) -> float:
        """Close of the newest base bar; NaN when none."""
        w = self.windows[self.base]
        return float(w.close[-1]) if len(w) else math.nan

    @property
    def last_return(self) -> float:
        """Simple return (fraction) between the closes of the last two base bars; NaN with fewer than two."""
        c = self.windows[self.base].close
        return float(c[-1] / c[-2] - 1.0) if len(c) >= 2 else math.nan

    # historical indicators (completed sessions)
    def _daily_rows(self) -> list[tuple[float, float, float]]:
        rows = list(self._daily)
        cur = self._cur
        if cur is not None and cur.ended and cur.day_bar.count:
            rows.append((cur.day_bar.h, cur.day_bar.lo, cur.day_bar.v))
        return rows[-SESSIONS_52W:]

    @property
    def avg_volume_20d(self) -> float:
        """Mean session volume (shares per session) over the last 20 completed sessions, or all there are if
        fewer; NaN with none."""
        rows = self._daily_rows()[-AVG_VOLUME_SESSIONS:]
        return float(np.mean([r[2] for r in rows])) if rows else math.nan

    @property
    def high_52w(self) -> float:
        """Highest high of the last 252 completed sessions; NaN until 252 are known."""
        rows = self._daily_rows()
        return max(r[0] for r in rows) if len(rows) >= SESSIONS_52W else math.nan

    @property
    def low_52w(self) -> float:
        """Lowest low of the last 252 completed sessions; NaN until 252 are known."""
        rows = self._daily_rows()
        return min(r[1] for r in rows) if len(rows) >= SESSIONS_52W else math.nan

    # -- machinery ------------------------------------------------------------------------------------------
    def _rows(self, frame: pl.DataFrame) -> Iterable[Bar]:
        if "symbol" in frame.columns:
            others = frame.filter(pl.col("symbol") != self.symbol)
            if others.height:
                raise DataError(f"{self.symbol}: frame holds bars of {others['symbol'][0]!r}")
        if frame.height == 0:
            return []
        ts = _ts_ns(frame["ts"])
        cols = [frame[c].cast(pl.Float64).to_numpy() for c in FIELDS]
        base = self.base
        return (
            Bar(int(t), float(o), float(h), float(lo), float(c), float(v), base)
            for t, o, h, lo, c, v in zip(ts, *cols, strict=True)
        )

    def _seed_daily(self, daily: pl.DataFrame, before_ns: int | None) -> None:
        ts = _ts_ns(daily["ts"])
        if before_ns is not None:
            # Only sessions before the base history: those after are built from the base bars.
            cut = self._locate_day(before_ns)
            keep = ts < int(pd.Timestamp(cut).value)
            daily = daily.filter(pl.Series(keep))
            ts = ts[keep]
        if daily.height == 0:
            return
        highs, lows, vols = (daily[c].cast(pl.Float64).to_numpy() for c in ("high", "low", "volume"))
        for h, lo, v in zip(highs[-SESSIONS_52W:], lows[-SESSIONS_52W:], vols[-SESSIONS_52W:], strict=True):
            self._daily.append((float(h), float(lo), float(v)))
        if DAILY in self.windows:
            self.windows[DAILY].extend(daily)

    def _locate_day(self, ns: int) -> dt.date:
        return dt.datetime.fromtimestamp(ns // _NS_PER_S, tz=self.tz).date()

    def _locate(self, ns: int) -> tuple[dt.date, int, int] | None:
        """The session whose [open, close) holds ``ns``, or None."""
        day = self._locate_day(ns)
        if not self.calendar.is_session(day):
            return None
        opened, closed = self.calendar.open_close(day)
        if not (opened.value <= ns < closed.value):
            return None
        return day, int(opened.value), int(closed.value)

    def _start_session(self, day: dt.date, opened: int, closed: int) -> _Session:
        prev = self._cur
        if prev is not None:
            if not prev.ended:
                self._end_session(prev)
            for iv in self.streams:
                self._hist[iv] = self._hist[iv] + self._session_quality(prev, iv)
            if prev.day_bar.count:
                self._daily.append((prev.day_bar.h, prev.day_bar.lo, prev.day_bar.v))
            # Sessions without a single bar in between count as fully missing.
            skipped = self.calendar.sessions(prev.day + dt.timedelta(days=1), day - dt.timedelta(days=1))
            for d in skipped:
                o, c = self.calendar.open_close(d)
                ghost = _Session(d, int(o.value), int(c.value), self.base_ns, self.derived)
                for iv in self.streams:
                    n = ghost.tracker.expected.size if iv == self.base else ghost.full_expected(iv)
                    self._hist[iv] = self._hist[iv] + StreamQuality(iv, n, 0, 0)
        self._cur = _Session(day, opened, closed, self.base_ns, self.derived)
        return self._cur

    def _end_session(self, s: _Session) -> list[Bar]:
        out = [self._close_bucket(s, iv, p) for iv, p in s.pending.items() if p is not None and iv != DAILY]
        if DAILY in self.derived and s.day_bar.count:
            self.windows[DAILY].append(
                s.label, s.day_bar.o, s.day_bar.h, s.day_bar.lo, s.day_bar.c, s.day_bar.v
            )
            out.append(s.day_bar.bar(DAILY))
        s.tracker.advance_to(s.close)
        s.as_of = s.close
        s.ended = True
        return out

    def _close_bucket(self, s: _Session, interval: str, b: _Bucket) -> Bar:
        b.closed = True
        if s.pending[interval] is b:
            s.pending[interval] = None
        self.windows[interval].append(b.label, b.o, b.h, b.lo, b.c, b.v)
        return b.bar(interval)

    def _ingest(self, bar: Bar) -> list[Bar]:
        if bar.interval != self.base:
            raise DataError(f"{self.symbol}: got a {bar.interval} bar; on_bar takes {self.base} (base) bars")
        ts = bar.ts
        last = self.windows[self.base].last_ts
        if last is not None and ts <= last:
            raise DataError(
                f"{self.symbol} {self.base}: bar at {ns_text(ts)} is not after the last bar at "
                f"{ns_text(last)}; give late bars to fill()"
            )
        out: list[Bar] = []
        cur = self._cur
        if cur is None or not (cur.open <= ts < cur.close):
            located = self._locate(ts)
            if located is None:
                raise DataError(
                    f"{self.symbol}: bar at {ns_text(ts)} is outside every {self.calendar.exchange} session; "
                    "keep regular-hours bars only"
                )
            if cur is not None and not cur.ended:
                out.extend(self._end_session(cur))
            cur = self._start_session(*located)
        late = cur.ended or ts < cur.as_of
        cur.tracker.on_bar(ts)  # validates the grid position before anything changes
        if not late:
            # A bar of a later bucket closes the pending one whose last bar never came.
            for iv in self.derived:
                p = cur.pending[iv]
                if p is not None and p.end <= ts:
                    out.append(self._close_bucket(cur, iv, p))
        self.windows[self.base].append(ts, bar.open, bar.high, bar.low, bar.close, bar.volume)
        out.append(bar)
        out.extend(self._add_to_session(cur, bar, late=late))
        end = ts + self.base_ns
        cur.as_of = max(cur.as_of, end)
        if end >= cur.close and not cur.ended:
            out.extend(self._end_session(cur))
        return out

    def _add_to_session(self, s: _Session, bar: Bar, *, late: bool) -> list[Bar]:
        """Aggregate a base bar into the session and its buckets; return bars closed or revised."""
        ts, o, h, lo, c, v = bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume
        out: list[Bar] = []
        revise_daily = s.ended and DAILY in self.derived and s.day_bar.count
        s.day_bar.add(ts, o, h, lo, c, v)
        s.pv += (h + lo + c) / 3.0 * v
        for iv in self.derived:
            if iv == DAILY:
                continue
            b = s.bucket_for(iv, ts)
            fresh = b.count == 0
            b.add(ts, o, h, lo, c, v)
            if b.closed:
                # The window may have let an old bucket go; the revision is still reported.
                if self.windows[iv].index_of(b.label) is not None:
                    self.windows[iv].replace(b.label, b.o, b.h, b.lo, b.c, b.v)
                out.append(b.bar(iv, revised=True))
            elif fresh and late and (s.ended or b.end <= s.as_of):
                # A bucket with no bar so far, wholly in the past: it closes at once, in its time order.
                b.closed = True
                self.windows[iv].insert(b.label, b.o, b.h, b.lo, b.c, b.v)
                out.append(b.bar(iv, revised=True))
            else:
                pending = s.pending[iv]
                if pending is None or pending.start < b.start:
                    s.pending[iv] = b
                if not late and ts + self.base_ns >= b.end:
                    out.append(self._close_bucket(s, iv, b))
        if revise_daily:
            w = self.windows[DAILY]
            if w.index_of(s.label) is not None:
                w.replace(s.label, s.day_bar.o, s.day_bar.h, s.day_bar.lo, s.day_bar.c, s.day_bar.v)
            out.append(s.day_bar.bar(DAILY, revised=True))
        return out
