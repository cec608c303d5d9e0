"""Gaps in a live bar stream: which expected bars are missing, and when to ask for them again.

:class:`GapTracker` follows one session of one stream. It is given the expected bar starts (from the
calendar: every minute from the open up to the close for "1m") and is told of each bar as it arrives; a bar
that skips expected starts reveals a gap at once. :class:`GapFiller` is the re-request policy: pure
bookkeeping over a clock you pass in (no sleeps, no I/O). In live mode it says which gaps to request and
when, honouring ``max_retries`` and ``retry_interval_seconds`` (trader.config.GapFillerSettings); in replay
mode the data will never change, so it requests nothing and only reports.

Instants are int64 nanoseconds since the epoch, UTC; a bar is named by its start.

Example::

    from trader.calendar import get_calendar
    from trader.session.gaps import GapFiller, GapTracker

    tracker = GapTracker.for_session(get_calendar(), "2019-11-29", "1m")
    opened = int(tracker.expected[0])
    tracker.on_bar(opened)
    tracker.on_bar(opened + 4 * 60_000_000_000)     # -> the 3 starts in between
    filler = GapFiller(max_retries=3, retry_interval_seconds=5.0, mode="live")
    filler.plan(tracker.gaps(), now=opened + 5 * 60_000_000_000)   # -> one FillRequest, attempt 1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from trader.data.schema import interval_ns
from trader.errors import ConfigError, DataError
from trader.session.window import TimeLike, ns_text, to_ns

if TYPE_CHECKING:
    from trader.calendar import DateLike, TradingCalendar
    from trader.config import GapFillerSettings

_NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of consecutive missing bars: starts ``start``, ``start + step``, ... up to ``end`` (exclusive).

    ``start`` and ``end`` are int64 ns UTC; ``end`` is the end of the last missing bar, so the run covers
    ``[start, end)`` and holds ``bars`` bars.
    """

    start: int
    end: int
    bars: int

    def __str__(self) -> str:
        return f"{self.bars} bar(s) {ns_text(self.start)}..{ns_text(self.end)}"


@dataclass(frozen=True, slots=True)
class FillRequest:
    """Ask the data source for the bars of ``[start, end)`` (int64 ns UTC) at ``at``.

    ``attempt`` counts the requests for these bars, from 1.
    """

    start: int
    end: int
    bars: int
    attempt: int
    at: int


def runs(starts: Sequence[int] | np.ndarray, step: int) -> list[Gap]:
    """Group sorted bar starts (int64 ns) into runs of consecutive bars ``step`` ns apart.

    >>> runs([0, 60, 120, 300], 60)
    [Gap(start=0, end=180, bars=3), Gap(start=300, end=360, bars=1)]
    """
    out: list[Gap] = []
    arr = np.asarray(starts, dtype=np.int64)
    if arr.size == 0:
        return out
    breaks = np.flatnonzero(np.diff(arr) != step) + 1
    for chunk in np.split(arr, breaks):
        out.append(Gap(int(chunk[0]), int(chunk[-1]) + step, int(chunk.size)))
    return out


class GapTracker:
    """Missing bars of one stream over one session, found as bars arrive.

    ``expected`` holds the start of every bar the session should have (int64 ns UTC, evenly ``step`` ns
    apart; ``step`` defaults to the spacing of ``expected``). Bars must arrive in time
    order; a late bar for a missing start goes to :meth:`filled`, not :meth:`on_bar`.
    """

    def __init__(self, expected: np.ndarray | Sequence[int], step: int | None = None) -> None:
        exp = np.asarray(expected)
        if exp.dtype.kind == "M":
            exp = exp.astype("datetime64[ns]").view(np.int64)
        exp = exp.astype(np.int64, copy=True)
        if exp.ndim != 1 or exp.size == 0:
            raise DataError("a gap tracker needs at least one expected bar start")
        if exp.size > 1 and (np.diff(exp) <= 0).any():
            raise DataError("expected bar starts must be strictly increasing")
        if step is None:
            if exp.size < 2:
                raise ConfigError("give step (ns) when a session expects a single bar")
            step = int(exp[1] - exp[0])
        if exp.size > 1 and (np.diff(exp) != step).any():
            raise DataError(f"expected bar starts must be evenly {step} ns apart")
        self.step = int(step)
        self._first = int(exp[0])
        exp.setflags(write=False)
        self.expected = exp
        self._seen = np.zeros(exp.size, dtype=bool)
        # Index into `expected` after the newest bar seen (or after the newest start known to be missing).
        self._cursor = 0
        self._last: int | None = None

    @classmethod
    def for_session(cls, calendar: TradingCalendar, day: DateLike, interval: str = "1m") -> GapTracker:
        """A tracker for every ``interval`` bar of session ``day``, aligned to the open."""
        opened, closed = calendar.open_close(day)
        step = interval_ns(interval)
        return cls(np.arange(opened.value, closed.value, step, dtype=np.int64), step)

    # -- arrivals -------------------------------------------------------------------------------------------
    def _index(self, ts: int) -> int:
        # Evenly spaced starts: the index is arithmetic, no search.
        i, off = divmod(ts - self._first, self.step)
        if off or not 0 <= i < self.expected.size:
            raise DataError(
                f"bar at {ns_text(ts)} is not an expected bar start of this session "
                f"({ns_text(int(self.expected[0]))}..{ns_text(int(self.expected[-1]))}, every {self.step} ns)"
            )
        return i

    def on_bar(self, ts: TimeLike) -> list[int]:
        """Record the bar starting at ``ts``; return the expected starts it skipped (a new gap; often empty).

        Raises DataError when ``ts`` is not an expected start, or not after the previous bar.
        """
        ts = to_ns(ts)
        if self._last is not None and ts <= self._last:
            raise DataError(f"bar at {ns_text(ts)} is not after the previous bar at {ns_text(self._last)}")
        i = self._index(ts)
        if self._seen[i]:
            raise DataError(f"bar at {ns_text(ts)} arrived twice")
        # Starts between the cursor and this bar that never arrived (advance_to may have moved the cursor).
        lo = self._cursor
        skipped = [int(x) for x in self.expected[lo:i][~self._seen[lo:i]]] if i > lo else []
        self._seen[i] = True
        self._cursor = max(self._cursor, i + 1)
        self._last = ts
        return skipped

    def advance_to(self, now: TimeLike) -> list[int]:
        """Declare missing every expected bar that has ended by ``now`` without arriving; return the new ones.

        Call it with a grace delay past each bar's end (a bar arrives a little after it closes), and at the
        session close so that missing final bars count.
        """
        now = to_ns(now)
        # Bars ending at or before `now`: start + step <= now.
        stop = int(np.searchsorted(self.expected, now - self.step, side="right"))
        if stop <= self._cursor:
            return []
        lo = self._cursor
        new = [int(x) for x in self.expected[lo:stop][~self._seen[lo:stop]]]
        self._cursor = stop
        return new

    def filled(self, ts_list: Iterable[TimeLike]) -> list[int]:
        """Mark late bars as arrived; return those that were missing (others already present are ignored).

        Raises DataError for a start the session does not expect or one not yet known to be missing.
        """
        done: list[int] = []
        for value in ts_list:
            ts = to_ns(value)
            i = self._index(ts)
            if self._seen[i]:
                continue
            if i >= self._cursor:
                raise DataError(f"bar at {ns_text(ts)} is not a known gap yet; give it to on_bar instead")
            self._seen[i] = True
            done.append(ts)
        return done

    # -- state ----------------------------------------------------------------------------------------------
    def missing(self) -> list[int]:
        """Starts (int64 ns UTC) of the bars known to be missing and not yet filled, oldest first."""
        idx = np.flatnonzero(~self._seen[: self._cursor])
        return [int(x) for x in self.expected[idx]]

    def gaps(self) -> list[Gap]:
        """:meth:`missing` grouped into runs of consecutive bars."""
        return runs(self.missing(), self.step)

    @property
    def known(self) -> int:
        """Expected bars whose fate is known so far: arrived, or known to be missing."""
        return self._cursor

    @property
    def present(self) -> int:
        """Bars arrived (filled ones included)."""
        return int(self._seen.sum())

    def quality(self) -> float:
        """Share (0..1) of the bars known so far that are present; 1.0 before any bar is due."""
        return 1.0 if self._cursor == 0 else float(self._seen[: self._cursor].sum()) / self._cursor


class GapFiller:
    """Re-request policy for missing bars; pure bookkeeping over a clock you pass in.

    ``max_retries`` is the number of requests per missing bar; ``retry_interval_seconds`` the wait between
    two requests for the same bar. A bar is requested at once when first seen missing (attempt 1), then
    every ``retry_interval_seconds`` until it fills or ``max_retries`` requests were made; one interval after
    the last request it is *given up* and reported. ``mode="replay"`` never requests: every gap is reported
    at once (replayed data cannot change).
    """

    def __init__(
        self,
        max_retries: int = 3,
        retry_interval_seconds: float = 5.0,
        *,
        mode: Literal["live", "replay"] = "live",
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"gap_filler.max_retries must be a whole number >= 0, got {max_retries!r}")
        if not retry_interval_seconds > 0:
            raise ConfigError(
                f"gap_filler.retry_interval_seconds must be > 0 seconds, got {retry_interval_seconds!r}"
            )
        if mode not in ("live", "replay"):
            raise ConfigError(f"gap filler mode must be 'live' or 'replay', got {mode!r}")
        self.max_retries = max_retries
        self.retry_ns = round(retry_interval_seconds * _NS_PER_S)
        self.mode = mode
        # Missing bar start -> (requests made, instant of the last request).
        self._state: dict[int, tuple[int, int]] = {}
        self._missing: list[int] = []
        self._step = 0

    @classmethod
    def from_settings(cls, settings: GapFillerSettings, *, mode: Literal["live", "replay"]) -> GapFiller:
        """The policy of ``session.gap_filler`` settings.

        >>> from trader.config import GapFillerSettings
        >>> GapFiller.from_settings(GapFillerSettings(), mode="live").max_retries
        3
        """
        return cls(settings.max_retries, settings.retry_interval_seconds, mode=mode)

    def plan(self, gaps: Sequence[Gap], now: TimeLike) -> list[FillRequest]:
        """The requests to send at ``now`` for the gaps still missing (from :meth:`GapTracker.gaps`).

        Requests are recorded as sent; consecutive bars due together are asked for as one range. Bars no
        longer in ``gaps`` (filled) are forgotten. Always empty in replay mode.
        """
        now = to_ns(now)
        starts: list[int] = []
        for gap in gaps:
            step = (gap.end - gap.start) // gap.bars
            self._step = step
            starts.extend(range(gap.start, gap.end, step))
        self._missing = starts
        alive = set(starts)
        self._state = {k: v for k, v in self._state.items() if k in alive}
        if self.mode == "replay":
            return []
        due: list[tuple[int, int]] = []
        for s in starts:
            made, last = self._state.get(s, (0, 0))
            if made < self.max_retries and (made == 0 or now >= last + self.retry_ns):
                due.append((s, made + 1))
                self._state[s] = (made + 1, now)
        return self._group(due, now)

    def _group(self, due: list[tuple[int, int]], now: int) -> list[FillRequest]:
        out: list[FillRequest] = []
        for s, attempt in due:
            prev = out[-1] if out else None
            if prev is not None and prev.attempt == attempt and prev.end == s:
                out[-1] = FillRequest(prev.start, s + self._step, prev.bars + 1, attempt, now)
            else:
                out.append(FillRequest(s, s + self._step, 1, attempt, now))
        return out

    def next_at(self, now: TimeLike) -> int | None:
        """When (int64 ns UTC, never before ``now``) the next retry or give-up falls due; None when nothing is
        pending. An actor sets its timer to it and calls :meth:`plan` and :meth:`given_up` then."""
        if self.mode == "replay":
            return None
        now = to_ns(now)
        times: list[int] = []
        for made, last in self._state.values():
            due = last + self.retry_ns
            if made < self.max_retries:
                times.append(max(due, now))
            elif due > now:
                times.append(due)
        return min(times) if times else None

    def given_up(self, now: TimeLike) -> list[Gap]:
        """Gaps to report at ``now``: every missing bar in replay mode; in live mode those whose requests are
        used up and whose last request went unanswered for ``retry_interval_seconds``."""
        now = to_ns(now)
        if self.mode == "replay" or self.max_retries == 0:
            return runs(self._missing, self._step)
        out = [
            s
            for s in self._missing
            if (st := self._state.get(s)) is not None
            and st[0] >= self.max_retries
            and now >= st[1] + self.retry_ns
        ]
        return runs(out, self._step)
