"""Fold plans for out-of-sample backtests: rolling and anchored walk-forward, and combinatorial purged CV.

Every length here is in **sessions** (exchange trading days from :mod:`trader.calendar`), whatever the bar
interval: a fold of 1-minute bars holds every bar of its sessions. A plan is plain data, a
:class:`FoldPlan` of :class:`Fold` objects whose train and test sets are inclusive ``(start, end)`` date
ranges; :attr:`FoldPlan.table` is the same plan as a polars table (written as ``fold_plan.parquet`` with
every run) and :meth:`FoldPlan.from_table` reads it back.

Walk-forward (:func:`walk_forward_plan`)
----------------------------------------
With ``n`` sessions (index 0 = first), ``L = train_len``, ``T = test_len``, ``S = stride``, ``P = purge``::

    R = n - L - P - T            # must be >= 0, else ConfigError (the plan needs L + P + T sessions)
    F = floor(R / S) + 1         # folds with a full test window
    r = R mod S
    folds = F + 1  if allow_truncated_final_fold and r > 0 and S - r < T
            F      otherwise

    fold i (0-based): test  = sessions[L + P + i*S ... L + P + i*S + T - 1]
                      train = sessions[i*S ... i*S + L - 1]           (rolling)
                              sessions[0   ... i*S + L - 1]           (anchored: training grows)

The ``P`` purged sessions sit between each training window and its test window. The truncated final fold
(when allowed) has the same train rule and a test window from ``L + P + F*S`` to the last session, i.e.
``T - (S - r)`` sessions: it covers the tail that no full test window reaches. With ``S = T`` the test
windows tile the data without gaps or overlap, so their returns can be stitched into one out-of-sample series.

``embargo`` is accepted for symmetry but has no effect on walk-forward folds: a fold's training data always
ends before its test window, and the embargo only drops training data that comes *after* a test window
(which happens in CPCV). Later folds training on an earlier fold's test window is not leakage: their own test
window is later still.

Combinatorial purged cross-validation (:func:`cpcv_plan`; López de Prado, AFML ch. 12)
--------------------------------------------------------------------------------------
The ``n`` sessions are cut, without shuffling, into ``N = n_groups`` contiguous groups: groups ``0 .. N-2``
hold ``floor(n / N)`` sessions each and the last group the rest (AFML 12.4). With ``k = k_test_groups``:

* there are ``C(N, k)`` splits, one fold each, in lexicographic order of their test groups (fold 0 tests
  groups ``(0, 1, .., k-1)``); a fold's test segments are its test groups, one segment per group, in time
  order (adjacent test groups stay separate segments);
* its training set is every other session, minus the ``purge`` sessions just before each test group and the
  ``embargo`` sessions just after each test group, merged into contiguous segments;
* the splits form ``C(N-1, k-1) = k/N * C(N, k)`` backtest paths. Each group is tested in exactly
  ``C(N-1, k-1)`` splits; path ``j`` takes, for every group, the ``j``-th split (in fold order) that tests it
  (the assignment of AFML figure 12.2). So every path covers every group exactly once, in time order.

For both kinds no training session of a fold lies within ``[test start - purge, test end + embargo]`` of any
of its test segments (counted in sessions); for walk-forward the embargo side is vacuous, as said above.

Example::

    from trader.calendar import get_calendar
    from trader.walkforward import walk_forward_plan, cpcv_plan

    sessions = get_calendar("XNYS").sessions("2019-01-01", "2023-12-31")   # 1258 sessions
    plan = walk_forward_plan(sessions, train_len=252, test_len=63, stride=63, purge=5)
    print(plan.n_folds, plan.folds[0].test)     # 15; fold 0 tests 2020-01-09 .. 2020-04-08
    cv = cpcv_plan(sessions, n_groups=6, k_test_groups=2, purge=5, embargo=5)
    print(cv.n_folds, len(cv.paths))            # 15 splits, 5 paths
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from numba import njit

from trader.data.schema import check_interval
from trader.errors import ConfigError, DataError, SchemaError

__all__ = [
    "MAX_CPCV_SPLITS",
    "PATHS_SCHEMA",
    "TABLE_SCHEMA",
    "Fold",
    "FoldPlan",
    "cpcv_plan",
    "plan_from_settings",
    "session_dates",
    "walk_forward_fold_count",
    "walk_forward_plan",
]

PlanKind = Literal["walk_forward", "cpcv"]
DateRange = tuple[dt.date, dt.date]

#: The schema of :attr:`FoldPlan.table` and of ``fold_plan.parquet``; ``end`` is inclusive.
TABLE_SCHEMA: dict[str, pl.DataType] = {
    "fold": pl.Int64(),
    "role": pl.String(),
    "segment": pl.Int64(),
    "start": pl.Date(),
    "end": pl.Date(),
}
#: The schema of :attr:`FoldPlan.paths_table`.
PATHS_SCHEMA: dict[str, pl.DataType] = {
    "path": pl.Int64(),
    "group": pl.Int64(),
    "fold": pl.Int64(),
    "segment": pl.Int64(),
    "start": pl.Date(),
    "end": pl.Date(),
}
#: Largest C(n_groups, k_test_groups) accepted: each split is a full backtest, and C(N, k) explodes quickly.
MAX_CPCV_SPLITS = 10_000

_EPOCH = dt.date(1970, 1, 1)


# -- dates ------------------------------------------------------------------------------------------------


def _as_days(values: Any, what: str = "sessions") -> np.ndarray:
    """Dates as int64 days since 1970-01-01 (numpy ``datetime64[D]`` underneath)."""
    if hasattr(values, "to_numpy"):  # polars or pandas
        values = values.to_numpy()
    try:
        arr = np.asarray(values)
        if arr.dtype.kind in "biufc" and arr.size:
            # Numbers would silently read as days since 1970; a session is a date.
            raise TypeError("numbers are not dates")
        if arr.dtype.kind != "M":
            # Python dates (object arrays) and ISO strings; datetimes are cut to their date.
            arr = np.array(list(arr.ravel()) if arr.ndim else [arr.item()], dtype="datetime64[D]")
        # A view when the dates are already days: no copy of a per-bar array of millions of dates.
        days = arr.astype("datetime64[D]", copy=False).view(np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what}: expected dates (datetime.date or datetime64), got {type(values).__name__}"
        ) from exc
    if days.ndim != 1:
        raise DataError(f"{what}: expected a 1-D array of dates, got shape {days.shape}")
    if arr.dtype.kind == "M" and np.isnat(arr).any():
        raise DataError(
            f"{what}: contains a missing date (NaT) at index {int(np.flatnonzero(np.isnat(arr))[0])}"
        )
    return days


def _to_date(day: int) -> dt.date:
    return _EPOCH + dt.timedelta(days=int(day))


def _session_days(sessions: Any) -> np.ndarray:
    """Validated sessions of a plan: a strictly increasing array of days."""
    days = _as_days(sessions)
    if days.size > 1:
        bad = np.flatnonzero(np.diff(days) <= 0)
        if bad.size:
            i = int(bad[0])
            raise DataError(
                f"sessions must be strictly increasing (sorted, no duplicates): session {i + 1} "
                f"({_to_date(days[i + 1])}) follows {_to_date(days[i])}"
            )
    return days


def session_dates(ts: Any, interval: str, tz: str = "America/New_York") -> pl.Series:
    """The session date of each bar (a polars Date series), to slice bars with :meth:`Fold.train_mask` etc.

    ``ts`` is a polars Datetime series of bar starts (UTC; naive is read as UTC). Daily bars (``"1d"``) are
    labelled with their session date at 00:00 UTC, so their date is the UTC date; intraday bars belong to the
    session of their local date in the exchange time zone ``tz`` (for XNYS that is also the UTC date, not
    so for every exchange).

    >>> import datetime as dt, polars as pl
    >>> ts = pl.Series([dt.datetime(2024, 1, 2, 14, 30), dt.datetime(2024, 1, 2, 20, 59)])
    >>> session_dates(ts, "1m").to_list()
    [datetime.date(2024, 1, 2), datetime.date(2024, 1, 2)]
    """
    check_interval(interval)
    series = ts if isinstance(ts, pl.Series) else pl.Series("ts", ts)
    if not isinstance(series.dtype, pl.Datetime):
        raise DataError(f"session_dates: expected bar timestamps (Datetime), got {series.dtype}")
    if series.dtype.time_zone is None:
        series = series.dt.replace_time_zone("UTC")
    if interval == "1d":
        return series.dt.convert_time_zone("UTC").dt.date()
    return series.dt.convert_time_zone(tz).dt.date()


@njit(cache=True)
def _in_ranges_kernel(days: np.ndarray, bounds: np.ndarray, out: np.ndarray) -> None:
    """out[i] = days[i] lies in one of the ranges whose sorted boundaries are ``s0, e0+1, s1, e1+1, ...``.

    A day is inside a range exactly when an odd number of boundaries are <= it (binary search), so
    unsorted days (bars of many symbols) work; one pass, no temporaries beside the bool output.
    """
    n_bounds = bounds.size
    for i in range(days.size):
        day = days[i]
        lo, hi = 0, n_bounds
        while lo < hi:
            mid = (lo + hi) >> 1
            if bounds[mid] <= day:
                lo = mid + 1
            else:
                hi = mid
        out[i] = (lo & 1) == 1


def _range_mask(ranges: Sequence[DateRange], days: np.ndarray) -> np.ndarray:
    """True where a day (int64 days since 1970) lies in one of the disjoint, sorted inclusive ``ranges``."""
    out = np.zeros(days.shape, dtype=np.bool_)
    if ranges and days.size:
        bounds = np.array(
            [b for start, end in ranges for b in ((start - _EPOCH).days, (end - _EPOCH).days + 1)],
            dtype=np.int64,
        )
        _in_ranges_kernel(np.ascontiguousarray(days), bounds, out)
    return out


# -- the plan ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fold:
    """One fold: inclusive session-date ranges to train on and to test on, each sorted and disjoint.

    ``fold`` is the fold id (0-based; in CPCV the split index). ``train`` and ``test`` are tuples of
    ``(start, end)`` dates, both ends inclusive; a walk-forward fold has one of each, a CPCV fold one test
    segment per test group and as many training segments as the purge and embargo cut the rest into.

    >>> import datetime as dt
    >>> f = Fold(0, train=((dt.date(2024, 1, 2), dt.date(2024, 1, 5)),),
    ...          test=((dt.date(2024, 1, 9), dt.date(2024, 1, 10)),))
    >>> f.test_mask([dt.date(2024, 1, 8), dt.date(2024, 1, 9)]).tolist()
    [False, True]
    """

    fold: int
    train: tuple[DateRange, ...]
    test: tuple[DateRange, ...]

    @property
    def first_session(self) -> dt.date:
        """The earliest session the fold uses (train or test); add feature warm-up before it."""
        return min(r[0] for r in (*self.train, *self.test))

    @property
    def last_session(self) -> dt.date:
        """The latest session the fold uses (train or test)."""
        return max(r[1] for r in (*self.train, *self.test))

    def train_mask(self, sessions: Any) -> np.ndarray:
        """Numpy bool mask: which of ``sessions`` (dates, any order, repeats allowed) are training sessions.

        ``sessions`` may be a list of ``datetime.date``, a numpy ``datetime64`` array or a polars Date
        series, e.g. one session date per bar from :func:`session_dates`.
        """
        return _range_mask(self.train, _as_days(sessions))

    def test_mask(self, sessions: Any) -> np.ndarray:
        """Numpy bool mask: which of ``sessions`` (dates, any order) are test (out-of-sample) sessions."""
        return _range_mask(self.test, _as_days(sessions))

    def train_sessions(self, sessions: Any) -> list[dt.date]:
        """The training sessions among ``sessions``, as dates in the given order."""
        days = _as_days(sessions)
        return [_to_date(d) for d in days[_range_mask(self.train, days)]]

    def test_sessions(self, sessions: Any) -> list[dt.date]:
        """The test sessions among ``sessions``, as dates in the given order (to slice: :meth:`test_mask`)."""
        days = _as_days(sessions)
        return [_to_date(d) for d in days[_range_mask(self.test, days)]]


@dataclass(frozen=True)
class FoldPlan:
    """A fold plan: its kind, its folds (ids 0..n-1 in order) and, for CPCV, its backtest paths.

    ``paths`` (CPCV only, empty for walk-forward): ``paths[j][g] = (fold, segment)`` says that backtest path
    ``j`` takes group ``g``'s out-of-sample returns from test segment ``segment`` of fold ``fold``; groups are
    in time order, so concatenating a path's segments gives one full out-of-sample history.
    :attr:`paths_table` is the same as a table with dates.

    Plans compare equal when kind, folds and paths do; build them with :func:`walk_forward_plan`,
    :func:`cpcv_plan`, :func:`plan_from_settings` or :meth:`from_table` (which validate), not by hand.
    """

    kind: PlanKind
    folds: tuple[Fold, ...]
    paths: tuple[tuple[tuple[int, int], ...], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("walk_forward", "cpcv"):
            raise ConfigError(f"fold plan kind={self.kind!r} is not one of 'walk_forward', 'cpcv'")

    @property
    def n_folds(self) -> int:
        """Number of folds (CPCV: splits)."""
        return len(self.folds)

    @property
    def groups(self) -> tuple[DateRange, ...]:
        """CPCV groups as inclusive date ranges in time order (empty for walk-forward)."""
        if self.kind != "cpcv":
            return ()
        return tuple(sorted({seg for f in self.folds for seg in f.test}))

    @property
    def table(self) -> pl.DataFrame:
        """The plan as a table: ``fold, role ("train"|"test"), segment, start, end`` (inclusive).

        One row per segment, ordered by fold, then train before test, then segment. Written with every
        run as ``fold_plan.parquet``: ``plan.table.write_parquet(path)``.
        """
        rows: dict[str, list[Any]] = {name: [] for name in TABLE_SCHEMA}
        for f in self.folds:
            for role, segments in (("train", f.train), ("test", f.test)):
                for i, (start, end) in enumerate(segments):
                    rows["fold"].append(f.fold)
                    rows["role"].append(role)
                    rows["segment"].append(i)
                    rows["start"].append(start)
                    rows["end"].append(end)
        return pl.DataFrame(rows, schema=TABLE_SCHEMA)

    @property
    def paths_table(self) -> pl.DataFrame:
        """CPCV paths as a table: ``path, group, fold, segment, start, end`` (empty for walk-forward)."""
        rows: dict[str, list[Any]] = {k: [] for k in ("path", "group", "fold", "segment", "start", "end")}
        for j, path in enumerate(self.paths):
            for g, (fold, segment) in enumerate(path):
                start, end = self.folds[fold].test[segment]
                for key, value in zip(rows, (j, g, fold, segment, start, end), strict=True):
                    rows[key].append(value)
        return pl.DataFrame(rows, schema=PATHS_SCHEMA)

    @classmethod
    def from_table(cls, table: pl.DataFrame) -> FoldPlan:
        """Rebuild a plan from :attr:`table` (e.g. ``pl.read_parquet("fold_plan.parquet")``), validated.

        The kind is read from the shape: a plan where some fold trains on sessions after its test window
        is CPCV (every valid CPCV plan has one: the splits testing group 0), otherwise walk-forward. CPCV
        paths are recomputed. Raises :class:`~trader.errors.DataError` (a ``SchemaError`` for wrong columns
        or types) naming the first problem.

        >>> import datetime as dt
        >>> sessions = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(40)]
        >>> plan = walk_forward_plan(sessions, train_len=20, test_len=5, stride=5, purge=2)
        >>> FoldPlan.from_table(plan.table) == plan
        True
        """
        return _plan_from_table(table)


# -- walk-forward -----------------------------------------------------------------------------------------


def _whole(name: str, value: Any, minimum: int) -> int:
    """A validated whole number of sessions (bools and floats are refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name}={value!r} must be a whole number of sessions")
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return int(value)


def walk_forward_fold_count(
    n_sessions: int,
    *,
    train_len: int,
    test_len: int,
    stride: int,
    purge: int = 0,
    allow_truncated_final_fold: bool = False,
) -> int:
    """Folds a walk-forward plan over ``n_sessions`` sessions has (the formula in the module docstring).

    Returns 0 when ``n_sessions < train_len + purge + test_len`` (:func:`walk_forward_plan` raises then).
    Anchoring does not change the count.

    >>> walk_forward_fold_count(1258, train_len=252, test_len=63, stride=63, purge=5)
    15
    >>> walk_forward_fold_count(1258, train_len=252, test_len=63, stride=63, purge=5,
    ...                         allow_truncated_final_fold=True)
    16
    """
    spare = n_sessions - train_len - purge - test_len  # R in the docstring
    if spare < 0:
        return 0
    full, rest = divmod(spare, stride)
    truncated = allow_truncated_final_fold and rest > 0 and stride - rest < test_len
    return full + 1 + int(truncated)


def walk_forward_plan(
    sessions: Sequence[dt.date] | Any,
    *,
    train_len: int,
    test_len: int,
    stride: int | None = None,
    purge: int = 0,
    embargo: int = 0,
    anchored: bool = False,
    allow_truncated_final_fold: bool = False,
) -> FoldPlan:
    """Rolling (or anchored) walk-forward folds over ``sessions``; all lengths in sessions.

    ``sessions`` are the trading sessions of the data range, sorted (e.g. ``calendar.sessions(start,
    end)``). ``stride`` defaults to ``test_len`` (test windows tile). ``purge`` sessions are left out between
    each training window and its test window; ``embargo`` has no effect on walk-forward folds (see the module
    docstring). The fold count is :func:`walk_forward_fold_count`.

    Raises :class:`~trader.errors.ConfigError` when a length is not a positive whole number or the sessions
    cannot hold one fold; :class:`~trader.errors.DataError` when ``sessions`` are not strictly increasing.

    >>> import datetime as dt
    >>> days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(30)]
    >>> plan = walk_forward_plan(days, train_len=10, test_len=5, purge=2)
    >>> plan.n_folds, [str(d) for d in plan.folds[0].train[0] + plan.folds[0].test[0]]
    (3, ['2024-01-01', '2024-01-10', '2024-01-13', '2024-01-17'])
    """
    train_len = _whole("train_len", train_len, 1)
    test_len = _whole("test_len", test_len, 1)
    stride = test_len if stride is None else _whole("stride", stride, 1)
    purge = _whole("purge", purge, 0)
    _whole("embargo", embargo, 0)
    days = _session_days(sessions)
    n = int(days.size)
    needed = train_len + purge + test_len
    if n < needed:
        span = f" ({_to_date(days[0])}..{_to_date(days[-1])})" if n else ""
        raise ConfigError(
            f"walk-forward needs train_len + purge + test_len = {train_len} + {purge} + {test_len} = "
            f"{needed} sessions but the data range has {n}{span}; shorten the windows or widen the date range"
        )
    count = walk_forward_fold_count(
        n,
        train_len=train_len,
        test_len=test_len,
        stride=stride,
        purge=purge,
        allow_truncated_final_fold=allow_truncated_final_fold,
    )
    folds = []
    for i in range(count):
        test_start = train_len + purge + i * stride
        test_end = min(test_start + test_len, n) - 1  # only the truncated final fold is cut at the end
        train_end = i * stride + train_len - 1
        train_start = 0 if anchored else i * stride
        folds.append(
            Fold(
                i,
                train=((_to_date(days[train_start]), _to_date(days[train_end])),),
                test=((_to_date(days[test_start]), _to_date(days[test_end])),),
            )
        )
    return FoldPlan("walk_forward", tuple(folds))


# -- combinatorial purged cross-validation ----------------------------------------------------------------


def _segments(index: np.ndarray) -> list[tuple[int, int]]:
    """Sorted session indices -> inclusive ``(first, last)`` runs of consecutive indices."""
    if index.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) > 1)
    starts = np.concatenate(([index[0]], index[breaks + 1]))
    ends = np.concatenate((index[breaks], [index[-1]]))
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _cpcv_paths(n_groups: int, splits: Sequence[tuple[int, ...]]) -> tuple[tuple[tuple[int, int], ...], ...]:
    """AFML fig. 12.2: path j takes, for each group, the j-th split (in split order) that tests it."""
    tested_in: list[list[tuple[int, int]]] = [[] for _ in range(n_groups)]
    for fold, groups in enumerate(splits):
        for segment, g in enumerate(groups):
            tested_in[g].append((fold, segment))
    n_paths = len(tested_in[0])
    return tuple(tuple(tested_in[g][j] for g in range(n_groups)) for j in range(n_paths))


def cpcv_plan(
    sessions: Sequence[dt.date] | Any,
    *,
    n_groups: int,
    k_test_groups: int,
    purge: int = 0,
    embargo: int = 0,
) -> FoldPlan:
    """Combinatorial purged cross-validation (AFML ch. 12): ``C(N, k)`` folds and ``C(N-1, k-1)`` paths.

    ``sessions`` (sorted) are cut into ``n_groups`` contiguous groups (the last one takes the remainder);
    each fold tests one combination of ``k_test_groups`` groups and trains on the rest, minus ``purge``
    sessions before and ``embargo`` sessions after every test group. See the module docstring.

    Raises :class:`~trader.errors.ConfigError` when ``n_groups < 2``, ``k_test_groups`` is not in
    ``1 .. n_groups - 1``, a group would be empty, ``C(N, k)`` exceeds :data:`MAX_CPCV_SPLITS`, or a fold
    is left without training sessions.

    >>> import datetime as dt
    >>> days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(60)]
    >>> plan = cpcv_plan(days, n_groups=6, k_test_groups=2, purge=1, embargo=1)
    >>> plan.n_folds, len(plan.paths), plan.paths[0]
    (15, 5, ((0, 0), (0, 1), (1, 1), (2, 1), (3, 1), (4, 1)))
    """
    n_groups = _whole("n_groups", n_groups, 2)
    k_test_groups = _whole("k_test_groups", k_test_groups, 1)
    if k_test_groups >= n_groups:
        raise ConfigError(
            f"k_test_groups={k_test_groups} must be less than n_groups={n_groups} (some group must train)"
        )
    purge = _whole("purge", purge, 0)
    embargo = _whole("embargo", embargo, 0)
    n_splits = math.comb(n_groups, k_test_groups)
    if n_splits > MAX_CPCV_SPLITS:
        raise ConfigError(
            f"n_groups={n_groups}, k_test_groups={k_test_groups} give C({n_groups}, {k_test_groups}) = "
            f"{n_splits} splits, more than {MAX_CPCV_SPLITS}; use fewer groups"
        )
    days = _session_days(sessions)
    n = int(days.size)
    size = n // n_groups
    if size < 1:
        raise ConfigError(f"n_groups={n_groups} exceeds the {n} sessions of the data range; use fewer groups")
    # Group g = sessions [first[g], last[g]]; the last group takes the remainder (AFML 12.4).
    first = np.arange(n_groups, dtype=np.int64) * size
    last = np.append(first[1:] - 1, n - 1)
    index = np.arange(n, dtype=np.int64)
    group_of = np.minimum(index // size, n_groups - 1)

    splits = list(itertools.combinations(range(n_groups), k_test_groups))
    folds = []
    for fold, test_groups in enumerate(splits):
        train = ~np.isin(group_of, test_groups)
        for g in test_groups:
            train[max(first[g] - purge, 0) : first[g]] = False
            train[last[g] + 1 : last[g] + 1 + embargo] = False
        runs = _segments(index[train])
        if not runs:
            raise ConfigError(
                f"cpcv fold {fold} (test groups {test_groups}) has no training sessions left with "
                f"purge={purge} and embargo={embargo} over {n} sessions in {n_groups} groups; lower purge, "
                "embargo or k_test_groups"
            )
        folds.append(
            Fold(
                fold,
                train=tuple((_to_date(days[s]), _to_date(days[e])) for s, e in runs),
                test=tuple((_to_date(days[first[g]]), _to_date(days[last[g]])) for g in test_groups),
            )
        )
    return FoldPlan("cpcv", tuple(folds), _cpcv_paths(n_groups, splits))


# -- from settings ----------------------------------------------------------------------------------------


def plan_from_settings(
    sessions: Sequence[dt.date] | Any,
    settings: Any,
    *,
    scheme: str | None = None,
    n_groups: int | None = None,
    k_test_groups: int | None = None,
) -> FoldPlan:
    """The plan ``settings`` (a :class:`~trader.config.WalkForwardSettings`) asks for over ``sessions``.

    The scheme is ``scheme`` if given, else ``settings.scheme`` (``"walk_forward"`` for a settings object
    without that field). For ``"cpcv"`` the group counts come from the arguments if given, else
    ``settings.n_groups`` / ``settings.k_test_groups``; purge and embargo always come from the settings.
    Error messages start with ``walkforward:`` and name the field and its value.

    >>> from trader.config import Settings
    >>> from trader.calendar import get_calendar
    >>> sessions = get_calendar("XNYS").sessions("2015-01-01", "2019-12-31")
    >>> plan_from_settings(sessions, Settings().walkforward).n_folds  # 504 train, 126 test, stride 126
    5
    """
    scheme = scheme if scheme is not None else getattr(settings, "scheme", "walk_forward")
    try:
        if scheme == "walk_forward":
            return walk_forward_plan(
                sessions,
                train_len=settings.train_len,
                test_len=settings.test_len,
                stride=settings.stride,
                purge=settings.purge,
                embargo=settings.embargo,
                anchored=settings.anchored,
                allow_truncated_final_fold=settings.allow_truncated_final_fold,
            )
        if scheme == "cpcv":
            groups = n_groups if n_groups is not None else getattr(settings, "n_groups", None)
            k = k_test_groups if k_test_groups is not None else getattr(settings, "k_test_groups", None)
            if groups is None or k is None:
                raise ConfigError("scheme='cpcv' needs n_groups and k_test_groups; set both")
            return cpcv_plan(
                sessions, n_groups=groups, k_test_groups=k, purge=settings.purge, embargo=settings.embargo
            )
    except ConfigError as exc:
        raise ConfigError(f"walkforward: {exc}") from None
    raise ConfigError(f"walkforward.scheme={scheme!r} is not one of 'walk_forward', 'cpcv'")


# -- reading a table back ---------------------------------------------------------------------------------


def _bad(message: str) -> DataError:
    return DataError(f"fold plan table: {message}")


def _check_schema(table: Any) -> None:
    if not isinstance(table, pl.DataFrame):
        raise SchemaError(f"fold plan table: expected a polars DataFrame, got {type(table).__name__}")
    missing = [c for c in TABLE_SCHEMA if c not in table.columns]
    extra = [c for c in table.columns if c not in TABLE_SCHEMA]
    if missing or extra:
        raise SchemaError(
            f"fold plan table: columns must be exactly {list(TABLE_SCHEMA)}; "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    for name, dtype in TABLE_SCHEMA.items():
        if table.schema[name] != dtype:
            raise SchemaError(f"fold plan table: column {name!r} is {table.schema[name]}, expected {dtype}")


def _sorted_disjoint(ranges: Iterable[DateRange], where: str) -> None:
    previous: DateRange | None = None
    for start, end in ranges:
        if previous is not None and start <= previous[1]:
            raise _bad(f"{where}: segment {start}..{end} overlaps or precedes {previous[0]}..{previous[1]}")
        previous = (start, end)


def _plan_from_table(table: Any) -> FoldPlan:
    _check_schema(table)
    if table.height == 0:
        raise _bad("no rows (a plan has at least one fold)")
    nulls = [c for c in table.columns if table[c].null_count()]
    if nulls:
        raise _bad(f"missing values in column {nulls[0]!r}")
    roles = set(table["role"].unique().to_list()) - {"train", "test"}
    if roles:
        raise _bad(f"role must be 'train' or 'test', found {sorted(roles)[0]!r}")
    inverted = table.filter(pl.col("start") > pl.col("end"))
    if inverted.height:
        row = inverted.row(0, named=True)
        raise _bad(
            f"fold {row['fold']} {row['role']} segment {row['segment']}: "
            f"start {row['start']} is after end {row['end']}"
        )
    fold_ids = sorted(table["fold"].unique().to_list())
    if fold_ids != list(range(len(fold_ids))):
        raise _bad(f"fold ids must be 0..{len(fold_ids) - 1} without gaps, found {fold_ids[:10]}")

    folds = []
    for part in table.sort("fold", "segment").partition_by("fold", maintain_order=True):
        rows = part.rows(named=True)
        fold = int(rows[0]["fold"])
        segments: dict[str, list[DateRange]] = {"train": [], "test": []}
        for role in ("train", "test"):
            numbers = [r["segment"] for r in rows if r["role"] == role]
            if not numbers:
                raise _bad(f"fold {fold} has no {role} segment")
            if numbers != list(range(len(numbers))):
                raise _bad(
                    f"fold {fold} {role} segments must be numbered 0..{len(numbers) - 1}, found {numbers}"
                )
            segments[role] = [(r["start"], r["end"]) for r in rows if r["role"] == role]
            _sorted_disjoint(segments[role], f"fold {fold} {role}")
        for a, b in itertools.product(segments["train"], segments["test"]):
            if a[0] <= b[1] and b[0] <= a[1]:
                raise _bad(f"fold {fold}: train {a[0]}..{a[1]} overlaps test {b[0]}..{b[1]}")
        folds.append(Fold(fold, train=tuple(segments["train"]), test=tuple(segments["test"])))

    # Walk-forward folds never train after their test window; every CPCV plan has a fold that does.
    cpcv = any(len(f.test) > 1 or f.train[-1][1] > f.test[0][0] for f in folds)
    return _cpcv_from_folds(folds) if cpcv else _walk_forward_from_folds(folds)


def _walk_forward_from_folds(folds: list[Fold]) -> FoldPlan:
    for f in folds:
        if len(f.train) != 1:
            raise _bad(f"walk-forward fold {f.fold} has {len(f.train)} train segments, expected 1")
    for a, b in itertools.pairwise(folds):
        if b.test[0][0] <= a.test[0][0]:
            raise _bad(f"walk-forward fold {b.fold} tests from {b.test[0][0]}, not after fold {a.fold}")
    return FoldPlan("walk_forward", tuple(folds))


def _cpcv_from_folds(folds: list[Fold]) -> FoldPlan:
    groups = sorted({seg for f in folds for seg in f.test})
    _sorted_disjoint(groups, "cpcv groups (distinct test segments)")
    number = {seg: g for g, seg in enumerate(groups)}
    k = len(folds[0].test)
    expected = list(itertools.combinations(range(len(groups)), k))
    found = [tuple(number[seg] for seg in f.test) for f in folds]
    if len(groups) < 2 or found != expected:
        raise _bad(
            "not a walk-forward plan (some fold trains after its test) and not a CPCV plan: its "
            f"{len(folds)} folds do not test every combination of {k} of its {len(groups)} groups in order"
        )
    return FoldPlan("cpcv", tuple(folds), _cpcv_paths(len(groups), expected))
