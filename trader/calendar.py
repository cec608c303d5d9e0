"""Exchange sessions, holidays and early closes, on top of exchange_calendars.

Dates are ``datetime.date`` (a session label); instants are UTC ``pandas.Timestamp`` or numpy
``datetime64[ns]``. A session's minutes are labelled by their start, from the open up to (not including) the
close: a regular NYSE session has 390, an early close 210.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

from trader.errors import CalendarError

DEFAULT_EXCHANGE = "XNYS"
# Our real-data corpus starts in 1995 and exchange_calendars defaults to the last 20 years only.
CALENDAR_START = "1990-01-01"

DateLike = dt.date | dt.datetime | str | pd.Timestamp | np.datetime64


def _to_date(value: DateLike) -> dt.date:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise CalendarError(f"not a date: {value!r}") from exc
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return ts.date()


class TradingCalendar:
    """Sessions of one exchange (default XNYS). Instances are cached per exchange by :func:`get_calendar`."""

    def __init__(self, exchange: str = DEFAULT_EXCHANGE) -> None:
        try:
            self._cal = xcals.get_calendar(exchange, start=CALENDAR_START)
        except xcals.errors.InvalidCalendarName as exc:
            raise CalendarError(
                f"unknown exchange calendar {exchange!r}; use an ISO MIC such as XNYS, XNAS, XLON"
            ) from exc
        self.exchange = exchange
        self.tz = str(self._cal.tz)
        self.first_session = self._cal.first_session.date()
        self.last_session = self._cal.last_session.date()

    # -- single dates -------------------------------------------------------------------------------------
    def _label(self, day: DateLike) -> pd.Timestamp:
        d = _to_date(day)
        if not (self.first_session <= d <= self.last_session):
            raise CalendarError(
                f"{d} is outside the {self.exchange} calendar ({self.first_session}..{self.last_session})"
            )
        return pd.Timestamp(d)

    def is_session(self, day: DateLike) -> bool:
        """True when the exchange trades on ``day``."""
        return bool(self._cal.is_session(self._label(day)))

    def is_early_close(self, day: DateLike) -> bool:
        """True when ``day`` is a session that closes early (e.g. the day after US Thanksgiving)."""
        return _to_date(day) in self._early_close_set()

    def first_trading_date(self, day: DateLike) -> dt.date:
        """The first session on or after ``day`` (inclusive)."""
        return self._cal.date_to_session(self._label(day), direction="next").date()

    def next_trading_date(self, day: DateLike) -> dt.date:
        """The first session strictly after ``day``."""
        d = self._label(day)
        return self._cal.date_to_session(d + pd.Timedelta(days=1), direction="next").date()

    def previous_trading_date(self, day: DateLike) -> dt.date:
        """The last session strictly before ``day``."""
        d = self._label(day)
        return self._cal.date_to_session(d - pd.Timedelta(days=1), direction="previous").date()

    def open_close(self, day: DateLike) -> tuple[pd.Timestamp, pd.Timestamp]:
        """UTC open and close instants of session ``day``; CalendarError when it is not a session."""
        label = self._label(day)
        if not self._cal.is_session(label):
            raise CalendarError(f"{label.date()} is not a {self.exchange} session")
        return self._cal.session_open_close(label)

    # -- ranges (cached) ----------------------------------------------------------------------------------
    def sessions(self, start: DateLike, end: DateLike) -> list[dt.date]:
        """Sessions from ``start`` to ``end``, both inclusive."""
        return list(_sessions(self.exchange, _to_date(start), _to_date(end)))

    def session_count(self, start: DateLike, end: DateLike) -> int:
        """Number of sessions from ``start`` to ``end``, both inclusive."""
        return len(_sessions(self.exchange, _to_date(start), _to_date(end)))

    def holidays(self, start: DateLike, end: DateLike) -> list[dt.date]:
        """Weekdays from ``start`` to ``end`` (inclusive) on which the exchange is closed."""
        s, e = _to_date(start), _to_date(end)
        days = pd.bdate_range(s, e)
        sessions = set(_sessions(self.exchange, s, e))
        return [d.date() for d in days if d.date() not in sessions]

    def early_closes(self, start: DateLike, end: DateLike) -> list[dt.date]:
        """Sessions from ``start`` to ``end`` (inclusive) that close early."""
        s, e = _to_date(start), _to_date(end)
        return sorted(d for d in self._early_close_set() if s <= d <= e)

    def session_minutes(self, day: DateLike) -> np.ndarray:
        """Start instants (``datetime64[ns]``, UTC) of every minute of session ``day``."""
        return _session_minutes(self.exchange, _to_date(day))

    def session_bounds(self, start: DateLike, end: DateLike) -> tuple[np.ndarray, np.ndarray]:
        """Open and close instants (``datetime64[ns]`` UTC) of every session from ``start`` to ``end``."""
        return _session_bounds(self.exchange, _to_date(start), _to_date(end))

    def _early_close_set(self) -> frozenset[dt.date]:
        return _early_closes(self.exchange)


@lru_cache(maxsize=16)
def get_calendar(exchange: str = DEFAULT_EXCHANGE) -> TradingCalendar:
    """The cached calendar of ``exchange`` (an ISO MIC, default XNYS)."""
    return TradingCalendar(exchange)


@lru_cache(maxsize=256)
def _sessions(exchange: str, start: dt.date, end: dt.date) -> tuple[dt.date, ...]:
    cal = get_calendar(exchange)
    s = max(start, cal.first_session)
    e = min(end, cal.last_session)
    if s > e:
        return ()
    return tuple(d.date() for d in cal._cal.sessions_in_range(pd.Timestamp(s), pd.Timestamp(e)))


@lru_cache(maxsize=16)
def _early_closes(exchange: str) -> frozenset[dt.date]:
    cal = get_calendar(exchange)._cal
    return frozenset(d.date() for d in cal.early_closes)


@lru_cache(maxsize=4096)
def _session_minutes(exchange: str, day: dt.date) -> np.ndarray:
    cal = get_calendar(exchange)
    opened, closed = cal.open_close(day)
    minutes = np.arange(opened.value, closed.value, 60_000_000_000, dtype=np.int64).view("datetime64[ns]")
    minutes.setflags(write=False)
    return minutes


@lru_cache(maxsize=256)
def _session_bounds(exchange: str, start: dt.date, end: dt.date) -> tuple[np.ndarray, np.ndarray]:
    cal = get_calendar(exchange)
    days = _sessions(exchange, start, end)
    if not days:
        empty = np.array([], dtype="datetime64[ns]")
        return empty, empty
    sched = cal._cal.schedule.loc[pd.Timestamp(days[0]) : pd.Timestamp(days[-1])]
    opens = sched["open"].to_numpy(dtype="datetime64[ns]")
    closes = sched["close"].to_numpy(dtype="datetime64[ns]")
    opens.setflags(write=False)
    closes.setflags(write=False)
    return opens, closes
