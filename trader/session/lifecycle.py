"""The life of a trading session as an explicit state machine, driven by the calendar and a clock you pass in.

States and the transitions allowed between them::

    INITIALISING --history_loaded()--> READY --open--> ACTIVE --close--> CLOSING --hooks done--> WAITING
                                                          ^                                       |
                                                          +----------------next open--------------+
    any state but STOPPED --stop()--> STOPPED;  CLOSING --> STOPPED after the last session (end_date)

Nothing here sleeps or reads the wall clock: :meth:`SessionLifecycle.advance` is given ``now`` and performs
every transition that has fallen due by then, in order, each stamped with the calendar instant it was due at
(the open, the close), so the sequence is the same whether the clock ticks every second or jumps a week.
:meth:`SessionLifecycle.next_at` says when to call it next. Every transition is returned as a
:class:`Transition` (from, to, at, session date) for the caller to log.

The first session is the first trading date on or after ``start_date``; holidays are skipped and early
closes (e.g. 2019-11-29, 13:00 New York time) end a session early, as the calendar says.

CLOSING is where the end-of-session work happens: hooks registered with :meth:`SessionLifecycle.on_enter`
for ``CLOSING`` receive the transition and the :class:`CloseActions` configured (cancel or keep open orders,
flatten, checkpoint). When they return, the machine moves on to WAITING (or STOPPED after the last session)
in the same call; when one raises, the machine stays in CLOSING, the error propagates, and the next
``advance`` runs the CLOSING hooks again (so they should be idempotent).

Example::

    import datetime as dt
    from trader.calendar import get_calendar
    from trader.session.lifecycle import SessionLifecycle

    utc = dt.timezone.utc
    lc = SessionLifecycle(get_calendar(), dt.date(2019, 11, 28))       # Thanksgiving: first session 11-29
    lc.history_loaded(dt.datetime(2019, 11, 29, 12, 0, tzinfo=utc))
    [str(t) for t in lc.advance(dt.datetime(2019, 11, 29, 19, 0, tzinfo=utc))]
    # READY->ACTIVE at the open, ACTIVE->CLOSING and CLOSING->WAITING at the 18:00 UTC early close
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import pandas as pd

from trader.errors import LifecycleError
from trader.session.window import TimeLike, ns_text, to_ns

if TYPE_CHECKING:
    from trader.calendar import DateLike, TradingCalendar


class SessionState(enum.Enum):
    """Where a session actor is in its day."""

    INITIALISING = "INITIALISING"
    READY = "READY"
    ACTIVE = "ACTIVE"
    CLOSING = "CLOSING"
    WAITING = "WAITING"
    STOPPED = "STOPPED"


S = SessionState
ALLOWED: Final[dict[SessionState, frozenset[SessionState]]] = {
    S.INITIALISING: frozenset({S.READY, S.STOPPED}),
    S.READY: frozenset({S.ACTIVE, S.STOPPED}),
    S.ACTIVE: frozenset({S.CLOSING, S.STOPPED}),
    S.CLOSING: frozenset({S.WAITING, S.STOPPED}),
    S.WAITING: frozenset({S.ACTIVE, S.STOPPED}),
    S.STOPPED: frozenset(),
}


@dataclass(frozen=True, slots=True)
class CloseActions:
    """What the CLOSING hooks are asked to do at the end of each session."""

    cancel_open_orders: bool = True  # False keeps resting orders (e.g. GTC) into the next session
    flatten: bool = False  # close every position at the close
    checkpoint: bool = True  # persist the session state


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change: ``from_state -> to_state`` at ``at`` (UTC datetime).

    ``session`` is the session date the machine is in, or waiting for, after the transition (for WAITING:
    the next session).
    """

    from_state: SessionState
    to_state: SessionState
    at: dt.datetime
    session: dt.date

    def __str__(self) -> str:
        moved = f"{self.from_state.value}->{self.to_state.value}"
        return f"{moved} at {self.at.isoformat()} (session {self.session})"


Hook = Callable[[Transition, CloseActions], None]


def _utc(ns: int) -> dt.datetime:
    seconds, rem = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC) + dt.timedelta(microseconds=rem // 1000)


class SessionLifecycle:
    """The state machine of one session actor over a run of sessions.

    ``start_date``: the first session is the first trading date on or after it. ``end_date`` (optional,
    inclusive): after that session closes the machine stops instead of waiting. ``actions``: what the
    CLOSING hooks are asked to do.
    """

    def __init__(
        self,
        calendar: TradingCalendar,
        start_date: DateLike,
        *,
        end_date: DateLike | None = None,
        actions: CloseActions | None = None,
    ) -> None:
        self.calendar = calendar
        self.actions = actions or CloseActions()
        # The last session on or before end_date.
        self.end_date = (
            None
            if end_date is None
            else calendar.previous_trading_date(pd.Timestamp(end_date).date() + dt.timedelta(days=1))
        )
        self._state = SessionState.INITIALISING
        self._session = calendar.first_trading_date(start_date)
        self._set_bounds()
        self._now: int | None = None
        self._hooks: dict[SessionState, list[Hook]] = {s: [] for s in SessionState}
        self.history: list[Transition] = []

    def _set_bounds(self) -> None:
        opened, closed = self.calendar.open_close(self._session)
        self._open = int(opened.value)
        self._close = int(closed.value)

    # -- read-only state ------------------------------------------------------------------------------------
    @property
    def state(self) -> SessionState:
        """The current state."""
        return self._state

    @property
    def session(self) -> dt.date:
        """The session the machine is in or waiting for."""
        return self._session

    @property
    def session_open(self) -> dt.datetime:
        """Open of :attr:`session` (UTC)."""
        return _utc(self._open)

    @property
    def session_close(self) -> dt.datetime:
        """Close of :attr:`session` (UTC); early on an early-close day."""
        return _utc(self._close)

    def next_at(self) -> dt.datetime | None:
        """When the next calendar-driven transition falls due (UTC); None when only the caller can move it."""
        if self._state in (SessionState.READY, SessionState.WAITING):
            return _utc(self._open)
        if self._state is SessionState.ACTIVE:
            return _utc(self._close)
        return None

    def on_enter(self, state: SessionState, hook: Hook) -> None:
        """Call ``hook(transition, actions)`` each time the machine enters ``state`` (registration order)."""
        self._hooks[state].append(hook)

    # -- transitions ----------------------------------------------------------------------------------------
    def _tick(self, now: TimeLike) -> int:
        ns = to_ns(now)
        if self._now is not None and ns < self._now:
            raise LifecycleError(
                f"clock went backwards: {ns_text(ns)} is before the last time seen {ns_text(self._now)}"
            )
        self._now = ns
        return ns

    def _go(self, to: SessionState, at_ns: int, events: list[Transition]) -> Transition:
        if to not in ALLOWED[self._state]:
            allowed = (
                ", ".join(s.value for s in sorted(ALLOWED[self._state], key=lambda s: s.value)) or "none"
            )
            raise LifecycleError(
                f"invalid session transition {self._state.value} -> {to.value} "
                f"(from {self._state.value} only: {allowed})"
            )
        event = Transition(self._state, to, _utc(at_ns), self._session)
        self._state = to
        if to is SessionState.WAITING:
            self._session = self.calendar.next_trading_date(self._session)
            self._set_bounds()
            event = Transition(event.from_state, to, event.at, self._session)
        events.append(event)
        self.history.append(event)
        for hook in self._hooks[to]:
            hook(event, self.actions)
        return event

    def transition(self, to: SessionState, now: TimeLike) -> Transition:
        """Force one transition at ``now`` (for callers that drive the machine by hand); LifecycleError when
        the state machine does not allow ``state -> to``."""
        events: list[Transition] = []
        return self._go(to, self._tick(now), events)

    def history_loaded(self, now: TimeLike) -> list[Transition]:
        """INITIALISING -> READY once warm-up bars are in, then whatever else is due at ``now``."""
        at = self._tick(now)
        events: list[Transition] = []
        self._go(SessionState.READY, at, events)
        events.extend(self.advance(now))
        return events

    def stop(self, now: TimeLike) -> Transition:
        """Any state -> STOPPED at ``now``; LifecycleError when already stopped."""
        events: list[Transition] = []
        return self._go(SessionState.STOPPED, self._tick(now), events)

    def advance(self, now: TimeLike) -> list[Transition]:
        """Perform every calendar-driven transition due by ``now``, in order; return them (often empty).

        INITIALISING waits for :meth:`history_loaded`; STOPPED stays stopped. Raises LifecycleError when
        ``now`` is before a time given earlier.
        """
        ns = self._tick(now)
        events: list[Transition] = []
        while True:
            state = self._state
            if state in (SessionState.READY, SessionState.WAITING) and ns >= self._open:
                self._go(SessionState.ACTIVE, self._open, events)
            elif state is SessionState.ACTIVE and ns >= self._close:
                self._go(SessionState.CLOSING, self._close, events)
                self._finish_closing(events)
            elif state is SessionState.CLOSING:
                # A CLOSING hook raised last time: run the hooks again, then move on.
                last = self.history[-1]
                for hook in self._hooks[SessionState.CLOSING]:
                    hook(last, self.actions)
                self._finish_closing(events)
            else:
                return events

    def _finish_closing(self, events: list[Transition]) -> None:
        if self.end_date is not None and self._session >= self.end_date:
            self._go(SessionState.STOPPED, self._close, events)
        else:
            self._go(SessionState.WAITING, self._close, events)

    def __repr__(self) -> str:
        return f"SessionLifecycle({self._state.value}, session {self._session})"
