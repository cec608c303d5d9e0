"""SessionLifecycle: calendar-driven session states over a fake clock (trader/session/lifecycle.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from trader.calendar import get_calendar
from trader.session import CloseActions, LifecycleError, SessionLifecycle, SessionState, Transition

UTC = dt.UTC
S = SessionState
CAL = get_calendar()


def _t(day: int, hour: int, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2019, month, day, hour, minute, tzinfo=UTC)


def _d(day: int, month: int = 11) -> dt.date:
    return dt.date(2019, month, day)


# Thanksgiving week 2019, written from the NYSE schedule (not from the calendar code): regular sessions
# 09:30-16:00 New York = 14:30-21:00 UTC (EST); no session on Thursday 11-28 (Thanksgiving); Friday 11-29
# closes early at 13:00 New York = 18:00 UTC.
LOADED = _t(24, 12)
EXPECTED = [
    (S.INITIALISING, S.READY, LOADED, _d(25)),
    (S.READY, S.ACTIVE, _t(25, 14, 30), _d(25)),
    (S.ACTIVE, S.CLOSING, _t(25, 21), _d(25)),
    (S.CLOSING, S.WAITING, _t(25, 21), _d(26)),
    (S.WAITING, S.ACTIVE, _t(26, 14, 30), _d(26)),
    (S.ACTIVE, S.CLOSING, _t(26, 21), _d(26)),
    (S.CLOSING, S.WAITING, _t(26, 21), _d(27)),
    (S.WAITING, S.ACTIVE, _t(27, 14, 30), _d(27)),
    (S.ACTIVE, S.CLOSING, _t(27, 21), _d(27)),
    (S.CLOSING, S.WAITING, _t(27, 21), _d(29)),
    (S.WAITING, S.ACTIVE, _t(29, 14, 30), _d(29)),
    (S.ACTIVE, S.CLOSING, _t(29, 18), _d(29)),
    (S.CLOSING, S.WAITING, _t(29, 18), _d(2, 12)),
    (S.WAITING, S.ACTIVE, _t(2, 14, 30, 12), _d(2, 12)),
    (S.ACTIVE, S.CLOSING, _t(2, 21, 0, 12), _d(2, 12)),
    (S.CLOSING, S.WAITING, _t(2, 21, 0, 12), _d(3, 12)),
]


def _as_tuples(events: list[Transition]) -> list[tuple]:
    return [(e.from_state, e.to_state, e.at, e.session) for e in events]


def _run(step: dt.timedelta) -> tuple[SessionLifecycle, list[Transition]]:
    lc = SessionLifecycle(CAL, _d(23))  # a Saturday: the first session is Monday 11-25
    events = list(lc.advance(_t(23, 0)))  # INITIALISING waits for the history
    events += lc.history_loaded(LOADED)
    now = LOADED
    while now < _t(3, 0, 0, 12):
        now = min(now + step, _t(3, 0, 0, 12))
        events += lc.advance(now)
    return lc, events


def test_thanksgiving_week_exact_transitions_with_a_fine_clock() -> None:
    lc, events = _run(dt.timedelta(minutes=15))
    assert _as_tuples(events) == EXPECTED
    assert lc.history == events
    assert lc.state is S.WAITING and lc.session == _d(3, 12)


def test_a_coarse_clock_gives_the_same_sequence() -> None:
    # Calendar instants stamp the transitions, so jumping a day at a time changes nothing.
    _, events = _run(dt.timedelta(days=1, hours=7))
    assert _as_tuples(events) == EXPECTED


def test_first_session_is_the_first_trading_date_on_or_after_start() -> None:
    lc = SessionLifecycle(CAL, _d(28))  # Thanksgiving
    assert lc.session == _d(29)
    assert (lc.session_open, lc.session_close) == (_t(29, 14, 30), _t(29, 18))
    lc.history_loaded(_t(29, 12))
    assert lc.next_at() == _t(29, 14, 30)
    assert lc.advance(_t(29, 14, 29)) == []
    assert [e.to_state for e in lc.advance(_t(29, 14, 30))] == [S.ACTIVE]
    assert lc.next_at() == _t(29, 18)


def test_closing_hooks_get_the_actions_and_a_failing_hook_keeps_closing() -> None:
    calls: list[tuple[dt.date, CloseActions]] = []
    fail = {"left": 1}

    def hook(event: Transition, actions: CloseActions) -> None:
        calls.append((event.session, actions))
        if fail["left"]:
            fail["left"] -= 1
            raise RuntimeError("broker unreachable")

    actions = CloseActions(cancel_open_orders=False, flatten=True, checkpoint=True)
    lc = SessionLifecycle(CAL, _d(29), actions=actions)
    lc.on_enter(S.CLOSING, hook)
    lc.history_loaded(_t(29, 12))
    with pytest.raises(RuntimeError, match="unreachable"):
        lc.advance(_t(29, 18, 1))
    assert lc.state is S.CLOSING
    again = lc.advance(_t(29, 18, 2))
    assert _as_tuples(again) == [(S.CLOSING, S.WAITING, _t(29, 18), _d(2, 12))]
    assert calls == [(_d(29), actions), (_d(29), actions)]


def test_end_date_stops_after_the_last_session() -> None:
    lc = SessionLifecycle(CAL, _d(25), end_date=_d(28))  # last session on or before: 11-27
    lc.history_loaded(_t(25, 12))
    events = lc.advance(_t(29, 23))
    assert [e.to_state for e in events][-2:] == [S.CLOSING, S.STOPPED]
    assert events[-1].at == _t(27, 21) and events[-1].session == _d(27)
    assert lc.advance(_t(30, 23)) == []


def test_invalid_transitions_raise_with_the_state_names() -> None:
    lc = SessionLifecycle(CAL, _d(25))
    with pytest.raises(LifecycleError, match="INITIALISING -> ACTIVE"):
        lc.transition(S.ACTIVE, _t(24, 12))
    lc.history_loaded(_t(25, 15))  # READY, then ACTIVE at the open already passed
    assert lc.state is S.ACTIVE
    with pytest.raises(LifecycleError, match="ACTIVE -> READY"):
        lc.history_loaded(_t(25, 16))
    with pytest.raises(LifecycleError, match="backwards"):
        lc.advance(_t(25, 15))
    stop = lc.stop(_t(25, 17))
    assert (stop.from_state, stop.to_state, stop.session) == (S.ACTIVE, S.STOPPED, _d(25))
    assert lc.advance(_t(26, 17)) == []
    with pytest.raises(LifecycleError, match="STOPPED -> STOPPED"):
        lc.stop(_t(26, 18))
