"""Calendar facts a backtest relies on: closures, early closes, next/previous sessions, and clear errors."""

from __future__ import annotations

import datetime as dt

import pytest

from trader.calendar import get_calendar
from trader.errors import CalendarError

D = dt.date


@pytest.fixture(scope="module")
def xnys():
    return get_calendar("XNYS")


@pytest.mark.parametrize(
    "day",
    [
        D(2012, 10, 29),  # Hurricane Sandy
        D(2012, 10, 30),
        D(2001, 9, 11),  # September 11
        D(2001, 9, 12),
        D(2001, 9, 13),
        D(2001, 9, 14),
        D(2007, 1, 2),  # National day of mourning, President Ford
    ],
)
def test_unscheduled_closures_are_not_sessions(xnys, day):
    assert day.weekday() < 5
    assert not xnys.is_session(day)
    assert day in xnys.holidays(day, day)


def test_sessions_resume_after_closures(xnys):
    assert xnys.is_session(D(2012, 10, 31))
    assert xnys.is_session(D(2001, 9, 17))
    assert xnys.next_trading_date(D(2001, 9, 10)) == D(2001, 9, 17)
    assert xnys.session_count(D(2012, 10, 26), D(2012, 10, 31)) == 2


def test_day_after_thanksgiving_2019_closes_early_with_210_minutes(xnys):
    assert xnys.is_early_close(D(2019, 11, 29))
    assert not xnys.is_early_close(D(2019, 11, 27))
    assert len(xnys.session_minutes(D(2019, 11, 29))) == 210
    assert len(xnys.session_minutes(D(2019, 11, 27))) == 390
    opened, closed = xnys.open_close(D(2019, 11, 29))
    assert (closed - opened).total_seconds() == 210 * 60
    assert D(2019, 11, 29) in xnys.early_closes(D(2019, 11, 1), D(2019, 11, 30))


def test_session_minutes_start_at_the_open_and_end_before_the_close(xnys):
    minutes = xnys.session_minutes(D(2019, 11, 27))
    opened, closed = xnys.open_close(D(2019, 11, 27))
    assert minutes[0] == opened.to_datetime64()
    assert minutes[-1] == (closed - dt.timedelta(minutes=1)).to_datetime64()


def test_first_trading_date_is_inclusive(xnys):
    assert xnys.first_trading_date(D(2025, 7, 4)) == D(2025, 7, 7)  # Independence Day, then a weekend
    assert xnys.first_trading_date(D(2025, 7, 7)) == D(2025, 7, 7)


def test_next_and_previous_trading_dates_skip_weekends_and_holidays(xnys):
    assert xnys.next_trading_date(D(2025, 7, 3)) == D(2025, 7, 7)  # Friday the 4th is a holiday
    assert xnys.previous_trading_date(D(2025, 7, 7)) == D(2025, 7, 3)
    assert xnys.next_trading_date(D(2019, 11, 22)) == D(2019, 11, 25)  # plain weekend
    assert xnys.previous_trading_date(D(2019, 11, 25)) == D(2019, 11, 22)
    assert xnys.next_trading_date(D(2019, 11, 27)) == D(2019, 11, 29)  # Thanksgiving


def test_unknown_exchange_is_a_calendar_error():
    with pytest.raises(CalendarError, match="XXXX"):
        get_calendar("XXXX")


def test_date_outside_the_calendar_is_a_calendar_error(xnys):
    with pytest.raises(CalendarError, match="outside"):
        xnys.is_session(D(1980, 1, 2))
    with pytest.raises(CalendarError, match="outside"):
        xnys.next_trading_date(D(2200, 1, 2))


def test_open_close_of_a_holiday_is_a_calendar_error(xnys):
    with pytest.raises(CalendarError, match="not a XNYS session"):
        xnys.open_close(D(2025, 7, 4))
