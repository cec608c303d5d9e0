"""A bounded rolling window of bars with O(1) append and zero-copy, time-ordered column views.

The window keeps the last ``capacity`` bars of one stream. Each column lives in a preallocated numpy array
of twice the capacity and every row is written twice, at ring position ``i`` and at ``i + capacity``. The
last ``n`` rows are then always one contiguous slice ``[next + capacity - n, next + capacity)``, so
``window.close`` and friends are plain numpy views in time order (oldest first): no copy, no concatenation,
and indicators can run on them directly.

A view shows the window as it was when it was taken; a later ``append`` may overwrite the memory under it.
Copy a view (``window.close.copy()``) to keep it across appends. Views are read-only so that a caller can
never corrupt the ring.

Timestamps are int64 nanoseconds since the epoch, UTC, the start of each bar (see trader/data/schema.py).
Prices are in currency units, volume in shares (or contracts).

Example::

    from trader.session.window import BarWindow

    w = BarWindow(3)
    for i in range(5):
        w.append(i * 60_000_000_000, 10.0 + i, 11.0 + i, 9.0 + i, 10.5 + i, 100.0)
    w.close            # array([12.5, 13.5, 14.5]): the last 3 closes, a view
    w.to_frame()       # polars frame in the bar schema
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import numpy as np
import pandas as pd
import polars as pl

from trader.data.schema import conform_bars
from trader.errors import ConfigError, DataError

FIELDS: Final = ("open", "high", "low", "close", "volume")
_NS_PER_S: Final = 1_000_000_000

TimeLike = int | np.integer | np.datetime64 | dt.datetime | pd.Timestamp | str


def to_ns(value: TimeLike) -> int:
    """An instant as int64 nanoseconds since the epoch, UTC.

    Integers are taken as nanoseconds already; naive datetimes and strings are refused (every instant in the
    project is UTC and must say so), numpy ``datetime64`` is taken as UTC.

    >>> to_ns("2019-11-29T14:30:00Z")
    1575037800000000000
    """
    if isinstance(value, bool):
        raise DataError(f"not an instant: {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[ns]").astype(np.int64))
    if isinstance(value, dt.datetime | str):
        try:
            ts = pd.Timestamp(value)
        except (ValueError, TypeError) as exc:
            raise DataError(f"not an instant: {value!r}") from exc
        if ts.tzinfo is None:
            raise DataError(f"instant {value!r} has no time zone; give UTC (e.g. '...Z' or tzinfo=UTC)")
        return int(ts.value)
    raise DataError(f"not an instant: {value!r} ({type(value).__name__})")


def ns_text(ns: int | None) -> str:
    """An int64 ns instant as ISO text in UTC, for messages (``None`` -> ``"none"``)."""
    if ns is None:
        return "none"
    return pd.Timestamp(int(ns), tz="UTC").isoformat()


class BarWindow:
    """The last ``capacity`` bars of one stream, oldest first, with O(1) append.

    ``capacity`` is a number of bars (rows). Columns are exposed as read-only numpy views in time order:
    ``ts`` (int64 ns UTC, bar start), ``open``, ``high``, ``low``, ``close``, ``volume`` (float64).
    """

    __slots__ = ("_capacity", "_cols", "_count", "_name", "_next", "_ts")

    def __init__(self, capacity: int, *, name: str = "bars") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer) or capacity < 1:
            raise ConfigError(f"window capacity must be a whole number of bars >= 1, got {capacity!r}")
        self._capacity = int(capacity)
        self._name = name
        self._count = 0
        # Ring position of the next write, 0 <= _next < capacity.
        self._next = 0
        self._ts = np.zeros(2 * self._capacity, dtype=np.int64)
        # One contiguous row per field: _cols[k] is field FIELDS[k].
        self._cols = np.full((len(FIELDS), 2 * self._capacity), np.nan, dtype=np.float64)

    # -- size -----------------------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Most bars kept."""
        return self._capacity

    def __len__(self) -> int:
        return self._count

    @property
    def last_ts(self) -> int | None:
        """Start (int64 ns UTC) of the newest bar, or None when empty."""
        if self._count == 0:
            return None
        return int(self._ts[self._next + self._capacity - 1])

    @property
    def first_ts(self) -> int | None:
        """Start (int64 ns UTC) of the oldest bar kept, or None when empty."""
        if self._count == 0:
            return None
        return int(self._ts[self._next + self._capacity - self._count])

    # -- views ----------------------------------------------------------------------------------------------
    def _span(self) -> tuple[int, int]:
        end = self._next + self._capacity
        return end - self._count, end

    def _view(self, array: np.ndarray) -> np.ndarray:
        lo, hi = self._span()
        view = array[lo:hi]
        view.flags.writeable = False
        return view

    @property
    def ts(self) -> np.ndarray:
        """Bar starts, int64 ns UTC, oldest first (a read-only view)."""
        return self._view(self._ts)

    @property
    def open(self) -> np.ndarray:
        """Opens, oldest first (a read-only view)."""
        return self._view(self._cols[0])

    @property
    def high(self) -> np.ndarray:
        """Highs, oldest first (a read-only view)."""
        return self._view(self._cols[1])

    @property
    def low(self) -> np.ndarray:
        """Lows, oldest first (a read-only view)."""
        return self._view(self._cols[2])

    @property
    def close(self) -> np.ndarray:
        """Closes, oldest first (a read-only view)."""
        return self._view(self._cols[3])

    @property
    def volume(self) -> np.ndarray:
        """Volumes, oldest first (a read-only view)."""
        return self._view(self._cols[4])

    def row(self, index: int) -> tuple[int, float, float, float, float, float]:
        """Bar ``index`` (0 = oldest, -1 = newest) as ``(ts, open, high, low, close, volume)``."""
        if not -self._count <= index < self._count:
            raise IndexError(f"{self._name}: bar {index} out of range for a window of {self._count}")
        lo, _ = self._span()
        p = lo + (index % self._count)
        c = self._cols[:, p]
        return int(self._ts[p]), float(c[0]), float(c[1]), float(c[2]), float(c[3]), float(c[4])

    # -- writes ---------------------------------------------------------------------------------------------
    def _write(self, ring: int, ts: int, o: float, h: float, lo: float, c: float, v: float) -> None:
        # Both copies, so the last n rows stay contiguous whatever the ring position.
        for p in (ring, ring + self._capacity):
            self._ts[p] = ts
            col = self._cols
            col[0, p] = o
            col[1, p] = h
            col[2, p] = lo
            col[3, p] = c
            col[4, p] = v

    def append(self, ts: int, open: float, high: float, low: float, close: float, volume: float) -> None:
        """Add the newest bar; the oldest drops out when full. ``ts`` (int64 ns UTC) must be after the last.

        Raises DataError naming both instants when ``ts`` is not strictly after the newest bar's.
        """
        ts = int(ts)
        if self._count and ts <= self._ts[self._next + self._capacity - 1]:
            last = int(self._ts[self._next + self._capacity - 1])
            raise DataError(
                f"{self._name}: bar at {ns_text(ts)} is not after the last bar at {ns_text(last)}; "
                "bars must arrive in time order without duplicates"
            )
        self._write(self._next, ts, open, high, low, close, volume)
        self._next = (self._next + 1) % self._capacity
        if self._count < self._capacity:
            self._count += 1

    def extend(self, frame: pl.DataFrame) -> None:
        """Append every row of a bar frame (columns ts, open, high, low, close, volume), in order.

        Rows must be strictly increasing in ts and after the newest bar kept; only the last ``capacity``
        rows are written. Raises DataError otherwise (nothing is written then).
        """
        if frame.height == 0:
            return
        missing = [c for c in ("ts", *FIELDS) if c not in frame.columns]
        if missing:
            raise DataError(f"{self._name}: frame lacks bar column(s) {', '.join(missing)}")
        ts = _ts_ns(frame["ts"])
        steps = np.diff(ts)
        if steps.size and (steps <= 0).any():
            bad = int(np.argmax(steps <= 0))
            raise DataError(
                f"{self._name}: frame bar at {ns_text(int(ts[bad + 1]))} is not after the bar at "
                f"{ns_text(int(ts[bad]))}; sort by ts and drop duplicates first"
            )
        last = self.last_ts
        if last is not None and ts[0] <= last:
            raise DataError(
                f"{self._name}: frame starts at {ns_text(int(ts[0]))}, "
                f"not after the last bar at {ns_text(last)}"
            )
        values = np.vstack([frame[c].cast(pl.Float64).to_numpy() for c in FIELDS])
        keep = min(len(ts), self._capacity)
        ts, values = ts[-keep:], values[:, -keep:]
        ring = (self._next + np.arange(keep)) % self._capacity
        for offset in (0, self._capacity):
            self._ts[ring + offset] = ts
            self._cols[:, ring + offset] = values
        self._next = (self._next + keep) % self._capacity
        self._count = min(self._count + keep, self._capacity)

    def index_of(self, ts: int) -> int | None:
        """Position (0 = oldest) of the bar starting at ``ts``, or None when no such bar is kept."""
        view = self.ts
        i = int(np.searchsorted(view, ts))
        if i < len(view) and view[i] == ts:
            return i
        return None

    def replace(self, ts: int, open: float, high: float, low: float, close: float, volume: float) -> None:
        """Overwrite the values of the bar starting at ``ts`` (a revised bar); DataError if it is not kept."""
        i = self.index_of(int(ts))
        if i is None:
            raise DataError(f"{self._name}: no bar at {ns_text(int(ts))} to revise in this window")
        lo, _ = self._span()
        self._write((lo + i) % self._capacity, int(ts), open, high, low, close, volume)

    def insert(self, ts: int, open: float, high: float, low: float, close: float, volume: float) -> bool:
        """Put a late bar in its time-ordered place (a filled gap); O(bars after it).

        Returns False, writing nothing, when the window is full and ``ts`` is older than every bar kept
        (it would drop out at once). Raises DataError when a bar at ``ts`` is already there.
        """
        ts = int(ts)
        last = self.last_ts
        if last is None or ts > last:
            self.append(ts, open, high, low, close, volume)
            return True
        view = self.ts
        i = int(np.searchsorted(view, ts))
        if view[i] == ts:
            raise DataError(f"{self._name}: a bar at {ns_text(ts)} is already in the window")
        if i == 0 and self._count == self._capacity:
            return False
        lo, hi = self._span()
        tail_ts = self._ts[lo + i : hi].copy()
        tail = self._cols[:, lo + i : hi].copy()
        # Rewind past the later bars, then write the late bar and the later bars again.
        k = len(tail_ts)
        self._next = (self._next - k) % self._capacity
        self._count -= k
        self.append(ts, open, high, low, close, volume)
        for j in range(k):
            c = tail[:, j]
            self.append(int(tail_ts[j]), c[0], c[1], c[2], c[3], c[4])
        return True

    def clear(self) -> None:
        """Drop every bar."""
        self._count = 0
        self._next = 0

    # -- export ---------------------------------------------------------------------------------------------
    def to_frame(self) -> pl.DataFrame:
        """The bars kept as a polars frame in the bar schema (a copy; ``vwap``/``trades`` null)."""
        data: dict[str, object] = {"ts": pl.Series("ts", self.ts.copy()).cast(pl.Datetime("ns", "UTC"))}
        for k, name in enumerate(FIELDS):
            data[name] = self._view(self._cols[k]).copy()
        return conform_bars(pl.DataFrame(data), where=self._name)

    def __repr__(self) -> str:
        return (
            f"BarWindow({self._name!r}, {self._count}/{self._capacity} bars, "
            f"{ns_text(self.first_ts)}..{ns_text(self.last_ts)})"
        )


def _ts_ns(ts: pl.Series) -> np.ndarray:
    """A ts column (Datetime of any unit, or int64 ns) as int64 ns UTC."""
    dtype = ts.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            raise DataError("bar ts column has no time zone; bars are UTC (Datetime('ns', 'UTC'))")
        return ts.dt.convert_time_zone("UTC").dt.cast_time_unit("ns").to_physical().to_numpy()
    if dtype == pl.Int64:
        return ts.to_numpy()
    raise DataError(f"bar ts column must be a UTC Datetime or int64 ns, got {dtype}")
