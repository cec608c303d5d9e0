"""Bar validation and repair: the checks a bar series passes before it is stored, backtested or traded.

:func:`validate_bars` takes a frame as the CSV ingester produces it (``ts`` as a UTC or naive ``Datetime``, a
``Date`` or ISO-8601 strings; prices and volume as numbers or strings) and returns it conformed to the bar
schema (:mod:`trader.data.schema`: ``ts`` UTC nanoseconds, sorted) together with a :class:`SanityReport`.

Checks, always reported in this order (:data:`CHECKS`):

``schema``        required columns present, types castable, at least one bar.
``missing``       null, NaN, infinite or non-numeric values, and unparseable timestamps. The share of such
                  rows above ``max_na_fraction`` (a fraction, 0.01 = 1 %) is an error, at or below it a
                  warning.
``non_positive``  open/high/low/close at or below zero (zero volume is legal: thin days trade nothing).
``ohlc``          low <= open, close <= high and low <= high.
``volume``        negative volume.
``timestamps``    rows out of time order, exact duplicate rows, the same ``ts`` with different values,
                  intraday bars off the interval grid, daily bars stamped with a time of day (labelled by
                  their session date). Rows in reverse order, or in a few runs each in (reverse) time order
                  (:data:`LAYOUT_ROWS_PER_RUN`), are a file layout: a warning; interleaved rows are unsorted.
``timezone``      naive timestamps: converted to UTC only with ``source_tz``, otherwise refused ("pass
                  --source-tz"). A naive daily timestamp at midnight is a session label and needs no zone.
``sessions``      daily bars whose date is not a session; intraday bars outside [open, close) of a session
                  (``hours="regular"``) or outside 04:00-20:00 exchange-local time on a session day
                  (``hours="extended"``).
``gaps``          sessions with no bar (daily and intraday), and missing bars inside sessions (intraday), from
                  the first bar to the last. The calendar's closures are not gaps.
``outliers``      jumps in log close-to-close returns, scored against a centred rolling MAD of the returns
                  (:data:`OUTLIER_WINDOW` bars). An overnight jump near a common split ratio (2, 3, 3/2, 4,
                  5, 7, 8, 10, 20 or the reverse) is a "possible unadjusted N:1 split"; a jump that reverts
                  on the next bar is a spike (bad print); a huge jump that neither reverts nor matches a split
                  ratio is a level shift. Returns across more than :data:`MAX_GAP_SESSIONS` missing sessions
                  are not scored.
``lookahead``     bars not yet closed at ``as_of``: a bar is known at its close (``ts`` + interval, or the
                  session close for daily bars), so a daily bar labelled with the ``as_of`` date is lookahead
                  until that session has closed.

Profiles (severities and thresholds; z is the absolute return over 1.4826 x the rolling median absolute
return):

=========================================  ==========================  ==========================
finding                                    strict                      relaxed
=========================================  ==========================  ==========================
no bars                                    error                       warning
missing values (share > max_na_fraction)   error (else warning)        error (else warning)
non_positive, volume, lookahead            error                       error
ohlc                                       error, exact                error, 1 bp tolerance
reversed / run-ordered rows (a layout)     warning (sorted)            warning (sorted)
interleaved (unsorted) rows                error                       warning
duplicate rows, conflicting duplicates     error                       error
intraday bars off the interval grid        error                       error
daily bars stamped with a time of day      warning (relabelled)        warning (relabelled)
naive ts with ``source_tz``                warning (converted)         warning (converted)
naive ts without ``source_tz``, DST holes  error                       error
sessions (outside the session)             error                       warning
gaps: missing sessions                     error if a run > 5          warning
gaps: missing intraday bars                warning                     warning
outliers: possible unadjusted split        error (z >= 8)              warning (z >= 8)
outliers: spike / level shift              warning (z >= 10 / 25)      warning (z >= 15 / 40)
=========================================  ==========================  ==========================

A split also needs the overnight gap (log open over the previous close) within max(0.1, 0.06 ln N) of ln N
and the bar's own log close over open within 0.3; a spike needs a log return of at least 0.05 that the next
bar mostly takes back; a level shift needs a log return of at least 0.2. On the real corpus clean daily
series peak at z 18 (GOOG earnings days, 2008) and unadjusted splits score z 11 to 62.

Modes:

``enforce``  raise :class:`~trader.errors.SanityError` (with the report) when any error finding exists.
``warn``     report everything and return every row (cast to the schema and sorted); a frame that cannot be
             put in the schema at all (missing column, naive ts without a zone) still raises SanityError.
``repair``   sort, drop exact duplicate rows, convert naive timestamps when ``source_tz`` is known, drop rows
             that are individually invalid (missing values, non-positive prices, OHLC-inconsistent, negative
             volume, outside the session) and report each with its ``repaired`` count. Anything else
             (conflicting duplicates, naive ts without a zone, an unadjusted split in strict, a long gap in
             strict, lookahead, a repair that would drop every bar) stays an error and raises like
             ``enforce``. The output of ``repair`` passes ``enforce`` with the same arguments.
``off``      conform to the schema only, no findings (raises :class:`~trader.errors.SchemaError` when it
             cannot).

Example::

    bars, report = validate_bars(frame, symbol="SPY", interval="1d", mode="warn")
    print(report.format())   # SPY 1d ohlc error: 2 rows (low > open) first at 2015-03-05, 2015-03-30
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import zoneinfo
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

import numpy as np
import polars as pl

from trader.calendar import TradingCalendar, get_calendar
from trader.data.schema import POLARS_SCHEMA, REQUIRED_COLUMNS, check_interval, conform_bars, interval_ns
from trader.errors import ConfigError, DataError, SanityError, SchemaError

Severity = Literal["error", "warning"]

CHECKS: Final = (
    "schema",
    "missing",
    "non_positive",
    "ohlc",
    "volume",
    "timestamps",
    "timezone",
    "sessions",
    "gaps",
    "outliers",
    "lookahead",
)
MODES: Final = ("enforce", "warn", "repair", "off")
PROFILES: Final = ("strict", "relaxed")
HOURS: Final = ("regular", "extended")

# Forward split ratios (shares multiplied by N); the reverse splits are their inverses.
SPLIT_RATIOS: Final = (2.0, 3.0, 1.5, 4.0, 5.0, 7.0, 8.0, 10.0, 20.0)
# Longest run of missing sessions that strict still calls a warning; returns across longer holes are not
# scored as outliers (a year-long hole is not a one-day jump).
MAX_GAP_SESSIONS: Final = 5
# Bars in the centred window whose median absolute return scales the jumps (about a quarter of daily bars).
OUTLIER_WINDOW: Final = 63
# Fewer scored returns than this and the volatility estimate is too noisy to call anything an outlier.
MIN_OUTLIER_RETURNS: Final = 20
# Extended hours in exchange-local minutes after midnight: 04:00 to 20:00.
EXTENDED_HOURS: Final = (4 * 60, 20 * 60)
MAX_FIRST: Final = 5
# Rows out of time order are a layout (reverse-ordered files, files concatenated by period), reported as a
# warning, while they form at most one run per this many rows; more runs mean interleaved rows.
LAYOUT_ROWS_PER_RUN: Final = 50

_NS_PER_DAY: Final = 86_400 * 1_000_000_000
_NS_PER_MINUTE: Final = 60 * 1_000_000_000
_MAD_TO_SIGMA: Final = 1.4826
_MEAN_ABS_TO_SIGMA: Final = 1.2533
_NUMERIC_COLUMNS: Final = ("open", "high", "low", "close", "volume", "vwap")
_PRICES: Final = ("open", "high", "low", "close")
_CORE: Final = ("ts", *_PRICES, "volume")
# "... 09:30[:00[.123]] [Z|+05:30|-0400|+01]" at the end of an ISO string, after a time of day.
_OFFSET_RE: Final = r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:([Zz])|([+-])(\d{2}):?(\d{2})?)$"
_NAIVE_FORMATS: Final = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%d")
_NS_RANGE: Final = (dt.datetime(1677, 9, 22), dt.datetime(2262, 4, 11))


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One problem found by one check.

    ``count`` is in rows (bars) unless the message says otherwise (sessions, timestamps, columns, jumps);
    ``first_ts`` holds at most five ISO-8601 UTC instants ending in ``Z`` (dates for daily bars; naive wall
    clocks as written for timezone findings); ``repaired`` is the number of rows repair mode fixed or dropped
    for this finding.
    """

    check: str
    severity: Severity
    count: int
    first_ts: tuple[str, ...]
    message: str
    repaired: int = 0

    @property
    def resolved(self) -> bool:
        """True for a warning, or for an error whose rows were all repaired."""
        return self.severity == "warning" or (self.repaired > 0 and self.repaired >= self.count)

    def line(self, symbol: str, interval: str) -> str:
        """``"SPY 1d ohlc error: 2 rows (low > open) first at 2015-03-05, 2015-03-30"``."""
        text = f"{symbol} {interval} {self.check} {self.severity}: {self.message}"
        if self.first_ts:
            text += f" first at {', '.join(self.first_ts)}"
        if self.repaired:
            text += f" (repaired {self.repaired})"
        return text


@dataclass
class SanityReport:
    """Every finding of one :func:`validate_bars` call, in :data:`CHECKS` order."""

    symbol: str
    interval: str
    mode: str
    profile: str
    rows_in: int
    rows_out: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no error finding is left unrepaired."""
        return all(f.resolved for f in self.findings)

    def errors(self) -> list[Finding]:
        """Findings with severity ``"error"`` (repaired ones included)."""
        return [f for f in self.findings if f.severity == "error"]

    def warnings(self) -> list[Finding]:
        """Findings with severity ``"warning"``."""
        return [f for f in self.findings if f.severity == "warning"]

    def to_dict(self) -> dict:
        """Plain data (JSON-ready): the report's fields, ``ok``, and each finding as a dict."""
        out = asdict(self)
        out["ok"] = self.ok
        for finding in out["findings"]:
            finding["first_ts"] = list(finding["first_ts"])
        return out

    def format(self) -> str:
        """Human lines: a summary, then one line per finding."""
        verdict = "passed" if self.ok else "FAILED"
        head = (
            f"{self.symbol} {self.interval}: {verdict} ({self.mode}, {self.profile}), "
            f"{self.rows_in} rows in, {self.rows_out} out, {len(self.errors())} errors, "
            f"{len(self.warnings())} warnings"
        )
        return "\n".join([head, *(f.line(self.symbol, self.interval) for f in self.findings)])


@dataclass(frozen=True)
class _Rules:
    """Severities and thresholds of one profile (see the table in the module docstring)."""

    empty: Severity
    unsorted: Severity
    sessions: Severity
    split: Severity
    max_gap_sessions: int | None  # None: missing sessions are never an error
    ohlc_tolerance: float  # fraction of the price
    split_z: float
    spike_z: float
    level_z: float
    spike_min_jump: float = 0.05  # |log return|; smaller moves are never data errors worth a line
    level_min_jump: float = 0.2


_RULES: Final = {
    "strict": _Rules("error", "error", "error", "error", MAX_GAP_SESSIONS, 0.0, 8.0, 10.0, 25.0),
    "relaxed": _Rules("warning", "warning", "warning", "warning", None, 1e-4, 8.0, 15.0, 40.0),
}


@dataclass(frozen=True)
class _Ctx:
    symbol: str
    interval: str
    mode: str
    rules: _Rules
    cal: TradingCalendar
    source_tz: str | None
    as_of_ns: int | None
    max_na_fraction: float
    hours: str

    @property
    def daily(self) -> bool:
        return self.interval == "1d"

    @property
    def step(self) -> int:
        return interval_ns(self.interval)

    @property
    def where(self) -> str:
        return f"{self.symbol} {self.interval}"


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------
def validate_bars(
    frame: pl.DataFrame,
    *,
    symbol: str,
    interval: str,
    mode: str = "enforce",
    profile: str = "strict",
    calendar: TradingCalendar | None = None,
    source_tz: str | None = None,
    as_of: dt.datetime | None = None,
    max_na_fraction: float = 0.0,
    hours: Literal["regular", "extended"] = "regular",
) -> tuple[pl.DataFrame, SanityReport]:
    """Validate (and in ``repair`` mode fix) one symbol's bars; return the conformed frame and the report.

    ``interval`` is one of ``"1m" "5m" "1h" "1d"``; ``calendar`` defaults to XNYS; ``source_tz`` (an IANA
    zone such as ``"America/New_York"``) is the zone of naive timestamps; ``as_of`` (timezone-aware) is the
    instant the data must not go beyond; ``max_na_fraction`` is the share of rows (0..1) with missing values
    tolerated as a warning. Raises SanityError when error findings remain (see the module docstring for
    modes and profiles), ConfigError for bad arguments, SchemaError in ``off`` mode when the frame cannot be
    conformed.

    >>> bars, report = validate_bars(frame, symbol="SPY", interval="1d", mode="repair")  # doctest: +SKIP
    """
    ctx = _context(symbol, interval, mode, profile, calendar, source_tz, as_of, max_na_fraction, hours)
    if not isinstance(frame, pl.DataFrame):
        raise SchemaError(f"{ctx.where}: expected a polars DataFrame of bars, got {type(frame).__name__}")
    coerced = _coerce(frame, ctx)
    if mode == "off":
        if coerced.frame is None:
            raise SchemaError(f"{ctx.where}: {coerced.findings[-1].message}")
        out = coerced.frame.sort("ts", nulls_last=True, maintain_order=True)
        return out, SanityReport(symbol, interval, mode, profile, frame.height, out.height, [])
    if coerced.frame is None:
        report = SanityReport(symbol, interval, mode, profile, frame.height, 0, _ordered(coerced.findings))
        raise SanityError(_refusal(report), report)
    out, findings = _analyse(coerced, ctx)
    report = SanityReport(symbol, interval, mode, profile, frame.height, out.height, _ordered(findings))
    if mode != "warn" and not report.ok:
        raise SanityError(_refusal(report), report)
    return out, report


def regular_hours_mask(ts: pl.Series, calendar: TradingCalendar, interval: str) -> pl.Series:
    """True for bars inside regular sessions: for ``"1d"`` a session date, else a start in [open, close).

    ``ts`` must be timezone-aware (any zone; compared in UTC). Null timestamps are False.

    >>> frame.filter(regular_hours_mask(frame["ts"], get_calendar("XNYS"), "1m"))  # doctest: +SKIP
    """
    check_interval(interval)
    dtype = ts.dtype
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise SchemaError(f"regular_hours_mask: ts must be a timezone-aware Datetime, got {dtype}")
    utc = ts.dt.convert_time_zone("UTC").dt.cast_time_unit("ns")
    valid = utc.is_not_null().to_numpy()
    ns = utc.to_physical().fill_null(0).to_numpy().astype(np.int64)
    inside = np.zeros(len(ns), dtype=bool)
    if valid.any():
        bounds = _Bounds.around(calendar, ns[valid])
        inside[valid] = bounds.session_days(ns[valid]) if interval == "1d" else bounds.inside(ns[valid])
    return pl.Series("regular_hours", inside, dtype=pl.Boolean)


def check_feature_lookahead(
    compute: Callable[[pl.DataFrame], pl.DataFrame], frame: pl.DataFrame, probes: int = 5
) -> list[str]:
    """Names of the columns of ``compute(frame)`` whose value at row t changes when rows after t change.

    ``compute`` must return one row per input bar, in order. For each of ``probes`` cut rows t (spread over
    the frame) the numeric columns after t are perturbed (prices by a common random factor per row, so OHLC
    stays consistent; volume by another) and ``compute`` is run again; a column whose values in rows 0..t
    differ (beyond a 1e-9 relative tolerance) uses future bars. Deterministic: the perturbation seeds derive
    from the cut row.

    >>> check_feature_lookahead(lambda f: f.with_columns(m=pl.col("close").rolling_mean(5, center=True)),
    ...                         bars)  # doctest: +SKIP
    ['m']
    """
    if probes < 1:
        raise ConfigError(f"check_feature_lookahead: probes must be at least 1, got {probes}")
    n = frame.height
    if n < 3:
        raise DataError(f"check_feature_lookahead: need at least 3 bars to probe, got {n}")
    base = _run_feature(compute, frame)
    columns = [c for c in base.columns if c != "ts"]
    cuts = sorted({round(float(x)) for x in np.linspace(n // 4, n - 2, probes)})
    leaking: set[str] = set()
    for cut in cuts:
        changed = _run_feature(compute, _perturb_after(frame, cut))
        for name in columns:
            if name not in leaking and not _same_prefix(base[name], changed[name], cut + 1):
                leaking.add(name)
    return [c for c in columns if c in leaking]


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------
def _context(
    symbol: str,
    interval: str,
    mode: str,
    profile: str,
    calendar: TradingCalendar | None,
    source_tz: str | None,
    as_of: dt.datetime | None,
    max_na_fraction: float,
    hours: str,
) -> _Ctx:
    check_interval(interval)
    if mode not in MODES:
        raise ConfigError(f"validate_bars: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if profile not in PROFILES:
        raise ConfigError(f"validate_bars: unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    if hours not in HOURS:
        raise ConfigError(f"validate_bars: unknown hours {hours!r}; use one of {', '.join(HOURS)}")
    if not (0.0 <= max_na_fraction <= 1.0):
        raise ConfigError(
            f"validate_bars: max_na_fraction must be a fraction in [0, 1], got {max_na_fraction}"
        )
    if source_tz is not None:
        try:
            zoneinfo.ZoneInfo(source_tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"validate_bars: unknown source time zone {source_tz!r}; "
                f"use an IANA name such as America/New_York"
            ) from exc
    as_of_ns = None
    if as_of is not None:
        if as_of.tzinfo is None or as_of.utcoffset() is None:
            raise ConfigError(
                f"validate_bars: as_of {as_of.isoformat()} has no time zone; pass an aware datetime"
            )
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        as_of_ns = (as_of - epoch) // dt.timedelta(microseconds=1) * 1000
    return _Ctx(
        symbol=symbol,
        interval=interval,
        mode=mode,
        rules=_RULES[profile],
        cal=calendar or get_calendar(),
        source_tz=source_tz,
        as_of_ns=as_of_ns,
        max_na_fraction=float(max_na_fraction),
        hours=hours,
    )


# --------------------------------------------------------------------------------------------------
# Coercion: schema, non-numeric values, time zones
# --------------------------------------------------------------------------------------------------
@dataclass
class _Coerced:
    frame: pl.DataFrame | None  # None: cannot be put in the schema (the last finding says why)
    findings: list[Finding]
    bad_values: dict[str, tuple[int, str]]  # column -> (non-numeric or unparseable count, a sample token)


def _coerce(frame: pl.DataFrame, ctx: _Ctx) -> _Coerced:
    findings: list[Finding] = []
    bad: dict[str, tuple[int, str]] = {}
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        have = ", ".join(frame.columns) or "none"
        findings.append(
            _finding(
                "schema",
                "error",
                len(missing),
                (),
                f"missing required column(s) {', '.join(missing)} (have: {have})",
            )
        )
        return _Coerced(None, findings, bad)
    columns: dict[str, pl.Series] = {}
    for name in (*_NUMERIC_COLUMNS, "trades"):
        if name not in frame.columns:
            continue
        target = POLARS_SCHEMA[name]
        series, n_bad, sample = _numeric(frame[name], target)
        if series is None:
            msg = f"column {name} has type {frame.schema[name]}, which cannot be read as numbers"
            findings.append(_finding("schema", "error", 1, (), msg))
            return _Coerced(None, findings, bad)
        columns[name] = series
        if n_bad and name in _CORE:
            bad[name] = (n_bad, sample)
    ts = _coerce_ts(frame["ts"], ctx, findings, bad)
    if ts is None:
        return _Coerced(None, findings, bad)
    columns["ts"] = ts
    conformed = conform_bars(pl.DataFrame(columns), where=ctx.where)
    if conformed.height == 0:
        findings.append(_finding("schema", ctx.rules.empty, 0, (), "no bars"))
    return _Coerced(conformed, findings, bad)


def _numeric(series: pl.Series, target: pl.DataType) -> tuple[pl.Series | None, int, str]:
    """Cast to ``target``; strings are parsed and non-numeric tokens become null (counted, one sampled)."""
    dtype = series.dtype
    if dtype == pl.Null or dtype.is_numeric():
        return series.cast(target, strict=False), 0, ""
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        text = series.cast(pl.String).str.strip_chars()
        parsed = text.cast(target, strict=False)
        bad = text.is_not_null() & (text != "") & parsed.is_null()
        n_bad = int(bad.sum())
        sample = str(text.filter(bad)[0]) if n_bad else ""
        return parsed, n_bad, sample
    return None, 0, ""


def _coerce_ts(
    raw: pl.Series, ctx: _Ctx, findings: list[Finding], bad: dict[str, tuple[int, str]]
) -> pl.Series | None:
    """UTC nanosecond ``ts`` (daily: the session label at 00:00 UTC), or None when it cannot be built."""
    dtype = raw.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        aware = _fit_ns(raw, raw.cast(pl.String), bad)
        instant = aware.dt.convert_time_zone("UTC")
        if not ctx.daily:
            return instant.alias("ts")
        wall = aware.dt.replace_time_zone(None)
        return _daily_label(wall, instant, pl.Series([True] * len(raw), dtype=pl.Boolean), ctx, findings)
    if isinstance(dtype, pl.Datetime):
        wall = _fit_ns(raw, raw.cast(pl.String), bad)
        has_zone = pl.Series([False] * len(raw), dtype=pl.Boolean)
        instant = pl.Series([None] * len(raw), dtype=pl.Datetime("ns", "UTC"))
    elif dtype == pl.Date:
        if not ctx.daily:
            msg = f"column ts holds dates but the interval is {ctx.interval}; intraday bars need timestamps"
            findings.append(_finding("schema", "error", 1, (), msg))
            return None
        return _fit_ns(raw, raw.cast(pl.String), bad).dt.replace_time_zone("UTC").alias("ts")
    elif dtype in (pl.String, pl.Categorical, pl.Null):
        wall, instant, has_zone = _parse_ts_strings(raw.cast(pl.String), bad)
    else:
        msg = f"column ts has type {dtype}; expected a timestamp, a date or ISO-8601 strings"
        findings.append(_finding("schema", "error", 1, (), msg))
        return None
    if ctx.daily:
        return _daily_label(wall, instant, has_zone, ctx, findings)
    return _intraday_instant(wall, instant, has_zone, ctx, findings)


def _parse_ts_strings(
    text: pl.Series, bad: dict[str, tuple[int, str]]
) -> tuple[pl.Series, pl.Series, pl.Series]:
    """(wall clock as written, UTC instant for strings with an offset, has-offset flag) of ISO strings."""
    text = text.str.strip_chars()
    parts = text.str.extract_groups(_OFFSET_RE)
    zulu = parts.struct.field("2").is_not_null()
    sign = parts.struct.field("3")
    has_zone = (zulu | sign.is_not_null()).fill_null(False)
    # Keep the time of day (group 1), drop the offset, and read the rest as a naive wall clock.
    naive_text = pl.select(
        pl.when(has_zone).then(text.str.replace(_OFFSET_RE, "$1")).otherwise(text)
    ).to_series()
    naive_text = naive_text.str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt ]\s*", "$1 ")
    # Parse in microseconds first: nanosecond parsing silently wraps years outside 1677..2262.
    wide = pl.select(
        pl.coalesce([naive_text.str.to_datetime(f, strict=False, time_unit="us") for f in _NAIVE_FORMATS])
    ).to_series()
    fine = pl.select(
        pl.coalesce([naive_text.str.to_datetime(f, strict=False, time_unit="ns") for f in _NAIVE_FORMATS])
    ).to_series()
    in_range = _fit_ns(wide, text, bad).is_not_null()
    wall = pl.select(pl.when(in_range).then(fine)).to_series()
    hours = parts.struct.field("4").cast(pl.Int64, strict=False).fill_null(0)
    minutes = hours * 60 + parts.struct.field("5").cast(pl.Int64, strict=False).fill_null(0)
    offset = pl.select(pl.when(sign == "-").then(-minutes).otherwise(minutes).fill_null(0)).to_series()
    # An offset is local minus UTC, so UTC = wall clock - offset.
    utc_wall = wall.dt.replace_time_zone("UTC")
    instant = pl.select(
        pl.when(has_zone).then(utc_wall - pl.duration(minutes=offset, time_unit="ns"))
    ).to_series()
    _note_bad(bad, "ts", text.is_not_null() & (text != "") & wide.is_null(), text)
    return wall, instant.cast(pl.Datetime("ns", "UTC")), has_zone


def _fit_ns(series: pl.Series, text: pl.Series, bad: dict[str, tuple[int, str]]) -> pl.Series:
    """A Datetime or Date series in nanoseconds; instants outside the nanosecond range (1677-09-22 to
    2262-04-11) cannot be stored, so they become null and are counted as unparseable."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns":
        return series
    low, high = _NS_RANGE
    if dtype == pl.Date:
        low, high = low.date(), high.date()
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        low, high = low.replace(tzinfo=dt.UTC), high.replace(tzinfo=dt.UTC)
    outside = (series.is_not_null() & ((series < low) | (series >= high))).fill_null(False)
    _note_bad(bad, "ts", outside, text)
    zone = dtype.time_zone if isinstance(dtype, pl.Datetime) else None
    return pl.select(pl.when(~outside).then(series)).to_series().cast(pl.Datetime("ns", zone))


def _note_bad(bad: dict[str, tuple[int, str]], column: str, mask: pl.Series, text: pl.Series) -> None:
    """Add the rows of ``mask`` to the unreadable values of ``column``, keeping the first sample."""
    count = int(mask.sum())
    if count:
        before, sample = bad.get(column, (0, ""))
        bad[column] = (before + count, sample or str(text.filter(mask)[0]))


def _localize(wall: pl.Series, tz: str) -> pl.Series:
    """Naive wall clock in ``tz`` -> UTC; DST-ambiguous or non-existent local times become null."""
    return (
        wall.dt.replace_time_zone(tz, ambiguous="null", non_existent="null")
        .dt.convert_time_zone("UTC")
        .dt.cast_time_unit("ns")
    )


def _intraday_instant(
    wall: pl.Series, instant: pl.Series, has_zone: pl.Series, ctx: _Ctx, findings: list[Finding]
) -> pl.Series | None:
    naive = wall.is_not_null() & ~has_zone
    n_naive = int(naive.sum())
    if n_naive == 0:
        return instant.alias("ts")
    mixed = f" ({n_naive} of {int(wall.is_not_null().sum())} mixed with offsets)" if has_zone.any() else ""
    first = _iso_naive(wall.filter(naive))
    if ctx.source_tz is None:
        msg = (
            f"{n_naive} naive timestamps{mixed} and no source time zone; pass --source-tz "
            f"(e.g. --source-tz America/New_York, or UTC)"
        )
        findings.append(_finding("timezone", "error", n_naive, first, msg))
        return None
    local = _localize(wall, ctx.source_tz)
    out = pl.select(pl.when(has_zone).then(instant).otherwise(local)).to_series().alias("ts")
    repaired = n_naive if ctx.mode == "repair" else 0
    msg = f"{n_naive} naive timestamps{mixed} converted from {ctx.source_tz} to UTC"
    findings.append(_finding("timezone", "warning", n_naive, first, msg, repaired))
    _report_dst(naive & local.is_null(), wall, ctx, findings)
    return out


def _daily_label(
    wall: pl.Series, instant: pl.Series, has_zone: pl.Series, ctx: _Ctx, findings: list[Finding]
) -> pl.Series | None:
    """Daily bars are labelled by session date: midnight wall clocks by their date, other times by the
    exchange-local date of the instant (a 16:00 New York close stamp, a 21:00 UTC stamp)."""
    timed = wall.is_not_null() & (wall.dt.truncate("1d") != wall)
    naive_timed = timed & ~has_zone
    n_naive = int(naive_timed.sum())
    if n_naive:
        first = _iso_naive(wall.filter(naive_timed))
        if ctx.source_tz is None:
            msg = f"{n_naive} naive daily timestamps with a time of day and no source zone; pass --source-tz"
            findings.append(_finding("timezone", "error", n_naive, first, msg))
            return None
        local = _localize(wall, ctx.source_tz)
        instant = pl.select(pl.when(has_zone).then(instant).otherwise(local)).to_series()
        repaired = n_naive if ctx.mode == "repair" else 0
        msg = f"{n_naive} naive daily timestamps read in {ctx.source_tz}"
        findings.append(_finding("timezone", "warning", n_naive, first, msg, repaired))
        _report_dst(naive_timed & local.is_null(), wall, ctx, findings)
    exchange_date = instant.dt.convert_time_zone(ctx.cal.tz).dt.date()
    label = pl.select(pl.when(timed).then(exchange_date).otherwise(wall.dt.date())).to_series()
    n_timed = int(timed.sum())
    if n_timed:
        first = _iso_naive(wall.filter(timed))
        msg = f"{n_timed} daily bars stamped with a time of day; labelled by {ctx.cal.exchange} session date"
        repaired = n_timed if ctx.mode == "repair" else 0
        findings.append(_finding("timestamps", "warning", n_timed, first, msg, repaired))
    return label.cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts")


def _report_dst(lost: pl.Series, wall: pl.Series, ctx: _Ctx, findings: list[Finding]) -> None:
    n_lost = int(lost.sum())
    if n_lost:
        msg = (
            f"{n_lost} local times are ambiguous or do not exist in {ctx.source_tz} (DST change); "
            f"export the source in UTC"
        )
        findings.append(_finding("timezone", "error", n_lost, _iso_naive(wall.filter(lost)), msg))


# --------------------------------------------------------------------------------------------------
# Analysis on the conformed frame
# --------------------------------------------------------------------------------------------------
def _analyse(coerced: _Coerced, ctx: _Ctx) -> tuple[pl.DataFrame, list[Finding]]:
    frame = coerced.frame
    assert frame is not None  # checked by the caller
    findings = list(coerced.findings)
    flags = _row_flags(frame, ctx.rules.ohlc_tolerance)
    findings += _row_findings(frame, flags, coerced.bad_values, ctx)
    unsorted = _unsorted(frame, ctx)
    if unsorted is not None:
        findings.append(unsorted)
    ordered = (
        frame.with_columns(flags.ok().alias("_ok"))
        .with_row_index("_row")
        .sort("ts", nulls_last=True, maintain_order=True)
    )
    ns = ordered["ts"].to_physical().fill_null(0).to_numpy().astype(np.int64)
    has_ts = ordered["ts"].is_not_null().to_numpy()
    ok = ordered["_ok"].to_numpy()
    dup_extra, conflict, dup_findings = _duplicates(ordered, ok, ctx)
    findings += dup_findings
    bounds = _Bounds.around(ctx.cal, ns[has_ts]) if has_ts.any() else None
    misaligned = _misaligned(ns, has_ts, ctx, findings)
    # The hours the bars should cover: regular sessions, or 04:00-20:00 local on session days.
    hours = bounds.extended(ctx.cal) if bounds is not None and ctx.hours == "extended" else bounds
    in_session = _sessions(ns, has_ts, hours, ctx, findings)
    if ctx.as_of_ns is not None and bounds is not None:
        _lookahead(ns, has_ts, bounds, ctx, findings)
    keep = ok & ~dup_extra & in_session
    # Gaps are about bars that exist, outliers about values that can be trusted; in repair both look at the
    # rows kept, so that the repaired frame validates the same way under enforce.
    present = keep if ctx.mode == "repair" else has_ts & in_session & ~misaligned
    valid = keep & ~conflict & ~misaligned
    if bounds is not None and present.any():
        findings += _gaps(_sorted_unique(ns[present]), hours, ctx)
    if bounds is not None and valid.any():
        findings += _outliers(ordered.filter(pl.Series(valid)), bounds, ctx)
    output_cols = list(POLARS_SCHEMA)
    if ctx.mode == "repair":
        out = ordered.filter(pl.Series(keep)).select(output_cols)
        if out.height == 0 and frame.height > 0:
            findings.append(
                _finding("schema", "error", 0, (), "repair dropped every bar; fix the source data")
            )
    else:
        out = ordered.select(output_cols)
    return out, findings


@dataclass(frozen=True)
class _RowFlags:
    """Per-row problems of the row checks: one mask per check, and one boolean column per detail."""

    masks: dict[str, pl.Series]
    details: dict[str, pl.DataFrame]

    def ok(self) -> pl.Series:
        """Rows that pass every row check."""
        bad = self.masks["missing"] | self.masks["non_positive"] | self.masks["ohlc"] | self.masks["volume"]
        return ~bad


def _row_flags(frame: pl.DataFrame, tolerance: float) -> _RowFlags:
    finite = {
        c: (pl.col(c).is_not_null() & pl.col(c).is_finite()).fill_null(False) for c in (*_PRICES, "volume")
    }
    # NaN compares greater than every number in polars, so the relations only look at finite, positive rows.
    prices_ok = pl.all_horizontal(*(finite[c] & (pl.col(c) > 0) for c in _PRICES))
    up = 1.0 + tolerance
    o, h, lo, c = (pl.col(x) for x in _PRICES)
    details = {
        "missing": frame.select(
            pl.col("ts").is_null().alias("ts"), *(~finite[x].alias(x) for x in (*_PRICES, "volume"))
        ),
        "non_positive": frame.select(*((finite[x] & (pl.col(x) <= 0)).alias(f"{x} <= 0") for x in _PRICES)),
        "ohlc": frame.select(
            (prices_ok & (lo > h * up)).alias("low > high"),
            (prices_ok & (lo > o * up)).alias("low > open"),
            (prices_ok & (lo > c * up)).alias("low > close"),
            (prices_ok & (h * up < o)).alias("high < open"),
            (prices_ok & (h * up < c)).alias("high < close"),
        ),
        "volume": frame.select((finite["volume"] & (pl.col("volume") < 0)).alias("volume < 0")),
    }
    masks = {
        name: d.select(pl.any_horizontal(pl.all())).to_series().alias(name) for name, d in details.items()
    }
    return _RowFlags(masks, details)


def _row_findings(
    frame: pl.DataFrame, flags: _RowFlags, bad_values: dict[str, tuple[int, str]], ctx: _Ctx
) -> list[Finding]:
    findings: list[Finding] = []
    repair = ctx.mode == "repair"
    rows = frame.height
    for check in ("missing", "non_positive", "ohlc", "volume"):
        mask = flags.masks[check]
        count = int(mask.sum())
        if not count:
            continue
        detail = _detail_text(flags.details[check], check, bad_values)
        first = _iso(frame["ts"].filter(mask), ctx.daily)
        severity: Severity = "error"
        message = f"{_rows(count)} ({detail})"
        if check == "missing":
            share = count / rows
            severity = "error" if share > ctx.max_na_fraction else "warning"
            message += f", {share:.2%} of rows (limit {ctx.max_na_fraction:.2%})"
        findings.append(_finding(check, severity, count, first, message, count if repair else 0))
    return findings


def _detail_text(detail: pl.DataFrame, check: str, bad_values: dict[str, tuple[int, str]]) -> str:
    """``"low > open"``, or ``"low > open 2, high < close 1"`` when several relations fail."""
    counts = {name: int(detail[name].sum()) for name in detail.columns}
    hits = {name: n for name, n in counts.items() if n}
    parts = []
    for name, n in hits.items():
        text = name if len(hits) == 1 else f"{name} {n}"
        if check == "missing" and name in bad_values:
            n_bad, sample = bad_values[name]
            text += (
                f", {n_bad} non-numeric such as {sample!r}"
                if name != "ts"
                else f", {n_bad} unparseable such as {sample!r}"
            )
        parts.append(text)
    return "; ".join(parts) if check == "missing" else ", ".join(parts)


def _unsorted(frame: pl.DataFrame, ctx: _Ctx) -> Finding | None:
    ts = frame["ts"].drop_nulls()
    back = (ts.to_physical().diff() < 0).fill_null(False)
    count = int(back.sum())
    if not count:
        return None
    runs = _time_runs(ts)
    repaired = count if ctx.mode == "repair" else 0
    first = _iso(ts.filter(back), ctx.daily)
    if runs <= max(1, len(ts) // LAYOUT_ROWS_PER_RUN):
        # Descending vendor files, or yearly files concatenated: a layout, and sorting loses nothing.
        message = f"{_rows(count)} earlier than the row before, in {runs} time-ordered runs; output is sorted"
        return _finding("timestamps", "warning", count, first, message, repaired)
    message = f"{_rows(count)} earlier than the row before, rows interleaved in {runs} runs; output is sorted"
    return _finding("timestamps", ctx.rules.unsorted, count, first, message, repaired)


def _time_runs(ts: pl.Series) -> int:
    """Number of contiguous runs of rows in time order or reverse time order (1 for a sorted or a reversed
    series, about the row count for a shuffle). In a permutation of ranks a run can only turn around
    through a jump, so the runs are one more than the steps of more than one rank."""
    ranks = ts.rank("ordinal").to_numpy().astype(np.int64)
    return 1 + int(np.count_nonzero(np.abs(np.diff(ranks)) != 1))


def _duplicates(
    ordered: pl.DataFrame, ok: np.ndarray, ctx: _Ctx
) -> tuple[np.ndarray, np.ndarray, list[Finding]]:
    """Exact duplicates after the first, and rows sharing a ts with different values (among valid rows)."""
    n = ordered.height
    dup_extra = np.zeros(n, dtype=bool)
    conflict = np.zeros(n, dtype=bool)
    findings: list[Finding] = []
    candidates = ordered.filter(pl.Series(ok))
    if candidates.height < 2:
        return dup_extra, conflict, findings
    rows = candidates["_row"].to_numpy()
    position = np.full(int(ordered["_row"].max()) + 1, -1, dtype=np.int64)
    position[ordered["_row"].to_numpy()] = np.arange(n)
    values = list(POLARS_SCHEMA)
    extra = (~candidates.select(pl.struct(values).is_first_distinct()).to_series()).to_numpy()
    if extra.any():
        dup_extra[position[rows[extra]]] = True
        count = int(extra.sum())
        first = _iso(candidates["ts"].filter(pl.Series(extra)), ctx.daily)
        repaired = count if ctx.mode == "repair" else 0
        message = f"{_rows(count)} exactly duplicating an earlier row"
        findings.append(_finding("timestamps", "error", count, first, message, repaired))
    distinct = candidates.filter(pl.Series(~extra))
    clash = distinct["ts"].is_duplicated().to_numpy()
    if clash.any():
        conflict[position[distinct["_row"].to_numpy()[clash]]] = True
        stamps = distinct["ts"].filter(pl.Series(clash)).unique(maintain_order=True)
        message = (
            f"{len(stamps)} timestamps with different bars ({int(clash.sum())} rows); "
            f"not safely repairable, keep one source per symbol"
        )
        findings.append(_finding("timestamps", "error", len(stamps), _iso(stamps, ctx.daily), message))
    return dup_extra, conflict, findings


def _misaligned(ns: np.ndarray, has_ts: np.ndarray, ctx: _Ctx, findings: list[Finding]) -> np.ndarray:
    """Intraday bars whose start is off the interval grid (hourly bars: off the minute, as sessions may open
    at :30)."""
    if ctx.daily:
        return np.zeros(len(ns), dtype=bool)
    grid = ctx.step if ctx.interval in ("1m", "5m") else _NS_PER_MINUTE
    off = has_ts & (ns % grid != 0)
    if off.any():
        count = int(off.sum())
        message = f"{_rows(count)} not on the {ctx.interval} grid; resample the source to {ctx.interval} bars"
        findings.append(_finding("timestamps", "error", count, _iso_ns(ns[off], False), message))
    return off


def _sessions(
    ns: np.ndarray, has_ts: np.ndarray, bounds: _Bounds | None, ctx: _Ctx, findings: list[Finding]
) -> np.ndarray:
    inside = np.ones(len(ns), dtype=bool)
    if bounds is None:
        return inside
    if ctx.daily:
        inside[has_ts] = bounds.session_days(ns[has_ts])
        what = "on dates that are not sessions"
    else:  # ``bounds`` already holds the regular or the extended hours
        inside[has_ts] = bounds.inside(ns[has_ts])
        if ctx.hours == "regular":
            what = "outside regular session hours"
        else:
            what = "outside 04:00-20:00 exchange time on session days"
    out = ~inside
    count = int(out.sum())
    if count:
        message = f"{_bars(count)} {what} ({ctx.cal.exchange})"
        lo, hi = ctx.cal.first_session, ctx.cal.last_session
        days = ns[out] // _NS_PER_DAY
        if (days < _day_number(lo)).any() or (days > _day_number(hi)).any():
            message += f", some outside the calendar's range {lo}..{hi}"
        repaired = count if ctx.mode == "repair" else 0
        findings.append(
            _finding("sessions", ctx.rules.sessions, count, _iso_ns(ns[out], ctx.daily), message, repaired)
        )
    return inside


def _lookahead(
    ns: np.ndarray, has_ts: np.ndarray, bounds: _Bounds, ctx: _Ctx, findings: list[Finding]
) -> None:
    assert ctx.as_of_ns is not None
    stamps = ns[has_ts]
    as_of = ctx.as_of_ns
    # "closes after as_of" written as "starts after as_of - length", so 2262 stamps cannot overflow int64.
    late = stamps > as_of - (_NS_PER_DAY if ctx.daily else ctx.step)
    if ctx.daily and len(bounds.label_days):
        pos = np.minimum(
            np.searchsorted(bounds.label_days, stamps // _NS_PER_DAY), len(bounds.label_days) - 1
        )
        is_session = bounds.label_days[pos] == stamps // _NS_PER_DAY
        late = np.where(is_session, bounds.closes[pos] > as_of, late)
    count = int(late.sum())
    if count:
        shown = _iso_ns(np.array([as_of]), False)[0]
        message = f"{_rows(count)} not closed by as_of {shown} (a bar is known at its close)"
        findings.append(_finding("lookahead", "error", count, _iso_ns(stamps[late], ctx.daily), message))


# --------------------------------------------------------------------------------------------------
# Calendar arithmetic (vectorised)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Bounds:
    """Sessions around a set of instants: labels (days since epoch), opens and closes (UTC ns)."""

    label_days: np.ndarray
    opens: np.ndarray
    closes: np.ndarray

    @classmethod
    def around(cls, cal: TradingCalendar, ns: np.ndarray) -> _Bounds:
        start = _date_of(int(ns.min())) - dt.timedelta(days=1)
        end = _date_of(int(ns.max())) + dt.timedelta(days=1)
        labels = cal.sessions(start, end)
        opens, closes = cal.session_bounds(start, end)
        label_days = np.array([_day_number(d) for d in labels], dtype=np.int64)
        return cls(label_days, opens.view(np.int64), closes.view(np.int64))

    def extended(self, cal: TradingCalendar) -> _Bounds:
        """The same sessions with extended hours: 04:00 to 20:00 exchange-local time of the session date."""
        days = pl.Series(self.label_days, dtype=pl.Int64).cast(pl.Int32).cast(pl.Date).cast(pl.Datetime("ns"))

        def at(minutes: int) -> np.ndarray:
            local = (days + dt.timedelta(minutes=minutes)).dt.replace_time_zone(cal.tz, non_existent="null")
            utc = local.dt.convert_time_zone("UTC").dt.cast_time_unit("ns")
            return utc.to_physical().to_numpy().astype(np.int64)

        return _Bounds(self.label_days, at(EXTENDED_HOURS[0]), at(EXTENDED_HOURS[1]))

    def session_days(self, ns: np.ndarray) -> np.ndarray:
        """True where the UTC date of ``ns`` is a session."""
        return np.isin(ns // _NS_PER_DAY, self.label_days)

    def session_of(self, ns: np.ndarray) -> np.ndarray:
        """Index of the last session opening at or before each instant (-1 before the first)."""
        return np.searchsorted(self.opens, ns, side="right") - 1

    def inside(self, ns: np.ndarray) -> np.ndarray:
        """True where the instant lies in [open, close) of a session."""
        idx = self.session_of(ns)
        safe = np.maximum(idx, 0)
        return (idx >= 0) & (ns < self.closes[safe]) if len(self.closes) else np.zeros(len(ns), dtype=bool)


def _day_number(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def _date_of(ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=ns // _NS_PER_DAY)


# --------------------------------------------------------------------------------------------------
# Gaps
# --------------------------------------------------------------------------------------------------
def _gaps(ns: np.ndarray, bounds: _Bounds, ctx: _Ctx) -> list[Finding]:
    """``ns``: sorted starts of the valid bars."""
    if ctx.daily:
        positions = np.searchsorted(bounds.label_days, _sorted_unique(ns // _NS_PER_DAY))
        return _missing_sessions(positions, bounds, ctx)
    idx = bounds.session_of(ns)
    inside = bounds.inside(ns)
    if not inside.any():
        return []
    sessions = _sorted_unique(idx[inside])
    findings = _missing_sessions(sessions, bounds, ctx)
    minutes = _missing_bars(ns[inside], sessions, bounds, ctx)
    return findings + minutes


def _missing_sessions(present: np.ndarray, bounds: _Bounds, ctx: _Ctx) -> list[Finding]:
    """``present``: sorted, unique indices of sessions with at least one bar."""
    holes = np.diff(present) - 1
    at = np.nonzero(holes > 0)[0]
    if not len(at):
        return []
    runs = holes[at]
    starts = present[at] + 1
    total = int(runs.sum())
    longest = int(runs.max())
    k = int(np.argmax(runs))
    first_day = _date_of(int(bounds.label_days[starts[k]]) * _NS_PER_DAY)
    last_day = _date_of(int(bounds.label_days[starts[k] + longest - 1]) * _NS_PER_DAY)
    limit = ctx.rules.max_gap_sessions
    severity: Severity = "error" if limit is not None and longest > limit else "warning"
    span = f"{first_day}..{last_day}"
    if severity == "error":
        span += f"; more than {limit} in a row"
    message = (
        f"{total} missing sessions in {len(runs)} gaps, longest {longest} ({span})"
        if len(runs) > 1
        else f"{total} missing sessions ({span})"
    )
    first = tuple(str(_date_of(int(bounds.label_days[s]) * _NS_PER_DAY)) for s in starts[:MAX_FIRST])
    return [_finding("gaps", severity, total, first, message)]


def _missing_bars(present_ns: np.ndarray, sessions: np.ndarray, bounds: _Bounds, ctx: _Ctx) -> list[Finding]:
    """Bars missing inside sessions that have data, between the first and the last bar."""
    step = ctx.step
    opens = bounds.opens[sessions]
    closes = bounds.closes[sessions]
    counts = (closes - opens + step - 1) // step
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    grid = np.repeat(opens, counts) + offsets * step
    grid = grid[(grid >= present_ns[0]) & (grid <= present_ns[-1])]
    pos = np.minimum(np.searchsorted(present_ns, grid), len(present_ns) - 1)
    missing = grid[present_ns[pos] != grid]
    if not len(missing):
        return []
    share = len(missing) / max(len(grid), 1)
    message = (
        f"{len(missing)} missing {ctx.interval} bars inside {len(sessions)} sessions with data "
        f"({share:.2%} of {len(grid)} expected)"
    )
    return [_finding("gaps", "warning", len(missing), _iso_ns(missing, False), message)]


# --------------------------------------------------------------------------------------------------
# Outliers and unadjusted splits
# --------------------------------------------------------------------------------------------------
def _outliers(valid: pl.DataFrame, bounds: _Bounds, ctx: _Ctx) -> list[Finding]:
    """Jumps in log close-to-close returns of the valid bars (sorted, unique ts)."""
    ns = valid["ts"].to_physical().to_numpy().astype(np.int64)
    close = valid["close"].to_numpy()
    open_ = valid["open"].to_numpy()
    if len(close) < MIN_OUTLIER_RETURNS + 1:
        return []
    session = np.searchsorted(bounds.label_days, ns // _NS_PER_DAY) if ctx.daily else bounds.session_of(ns)
    scored = np.diff(session) <= MAX_GAP_SESSIONS + 1
    ret = np.diff(np.log(close))
    gap = np.log(open_[1:] / close[:-1])
    drift = np.log(close[1:] / open_[1:])
    r = ret[scored]
    if len(r) < MIN_OUTLIER_RETURNS:
        return []
    z = np.zeros(len(ret))
    z[scored] = _robust_z(r)
    # A spike reverts on the next bar: the two returns mostly cancel.
    nxt = np.append(ret[1:], 0.0)
    nxt_scored = np.append(scored[1:], False)
    reverts = nxt_scored & (np.sign(nxt) == -np.sign(ret)) & (np.abs(ret + nxt) <= 0.5 * np.abs(ret))
    jumps = _Jumps(ns, close, ret, gap, drift, z, reverts, ctx)
    candidates = np.nonzero(scored & (z >= min(ctx.rules.split_z, ctx.rules.spike_z, ctx.rules.level_z)))[0]
    reverted: set[int] = set()
    for i in candidates:
        if i in reverted:  # the second leg of a spike already reported
            continue
        kind = jumps.classify(int(i))
        if kind == "spike":
            reverted.add(int(i) + 1)
    findings = []
    if jumps.splits:
        findings.append(_jump_finding(jumps.splits, ctx.rules.split, ns, ctx))
    if jumps.others:
        findings.append(_jump_finding(jumps.others, "warning", ns, ctx))
    return findings


@dataclass
class _Jumps:
    """Classifies scored jumps (return i runs from bar i to bar i + 1) into splits and other outliers."""

    ns: np.ndarray
    close: np.ndarray
    ret: np.ndarray
    gap: np.ndarray
    drift: np.ndarray
    z: np.ndarray
    reverts: np.ndarray
    ctx: _Ctx
    splits: list[tuple[int, str]] = field(default_factory=list)
    others: list[tuple[int, str]] = field(default_factory=list)

    def classify(self, i: int) -> str | None:
        rules, z, bar = self.ctx.rules, float(self.z[i]), i + 1
        day = _iso_ns(self.ns[bar : bar + 1], self.ctx.daily)[0]
        move = f"close {self.close[i]:.6g} -> {self.close[bar]:.6g}"
        reverts, size = bool(self.reverts[i]), abs(float(self.ret[i]))
        label = _split_label(float(self.gap[i]), float(self.drift[i])) if not reverts else None
        if label is not None and z >= rules.split_z:
            self.splits.append((bar, f"possible unadjusted {label} on {day} ({move})"))
            return "split"
        if reverts and z >= rules.spike_z and size >= rules.spike_min_jump:
            self.others.append((bar, f"spike on {day} ({move}, reverts next bar, z {z:.0f})"))
            return "spike"
        if not reverts and z >= rules.level_z and size >= rules.level_min_jump:
            self.others.append((bar, f"level shift on {day} ({move}, z {z:.0f})"))
            return "level"
        return None


def _robust_z(r: np.ndarray) -> np.ndarray:
    """|r| over a local scale: 1.4826 x the centred rolling median of |r|, floored at half the global scale
    so that runs of flat bars (a zero median) do not turn every tick into an outlier."""
    absr = np.abs(r)
    overall = _MAD_TO_SIGMA * float(np.median(absr))
    if overall == 0.0:
        overall = _MEAN_ABS_TO_SIGMA * float(np.mean(absr))
    if overall == 0.0:
        return np.zeros(len(r))
    local = pl.Series(absr).rolling_median(OUTLIER_WINDOW, center=True, min_samples=1).to_numpy()
    scale = np.maximum(_MAD_TO_SIGMA * local, 0.5 * overall)
    return absr / scale


def _split_label(gap: float, drift: float) -> str | None:
    """``"2:1 split"`` / ``"1:20 reverse split"`` when the overnight gap matches a split ratio, else None.

    The gap (open over the previous close) carries the split; the bar's own drift (close over open) must stay
    modest, or the jump is a crash or a squeeze that happened to pass through a split ratio.
    """
    if not math.isfinite(gap) or abs(drift) > 0.3:
        return None
    size = abs(gap)
    best = min(SPLIT_RATIOS, key=lambda ratio: abs(size - math.log(ratio)))
    tolerance = max(0.1, 0.06 * math.log(best))
    if abs(size - math.log(best)) > tolerance:
        return None
    ratio = "3:2" if best == 1.5 else f"{best:g}:1"
    if gap < 0:
        return f"{ratio} split"
    reverse = "2:3" if best == 1.5 else f"1:{best:g}"
    return f"{reverse} reverse split"


def _jump_finding(jumps: list[tuple[int, str]], severity: Severity, ns: np.ndarray, ctx: _Ctx) -> Finding:
    bars = np.array([bar for bar, _ in jumps], dtype=np.int64)
    shown = "; ".join(text for _, text in jumps[:MAX_FIRST])
    more = f"; and {len(jumps) - MAX_FIRST} more" if len(jumps) > MAX_FIRST else ""
    noun = "jump" if len(jumps) == 1 else "jumps"
    message = f"{len(jumps)} {noun}: {shown}{more}"
    return _finding("outliers", severity, len(jumps), _iso_ns(ns[bars], ctx.daily), message)


# --------------------------------------------------------------------------------------------------
# Feature lookahead helpers
# --------------------------------------------------------------------------------------------------
def _run_feature(compute: Callable[[pl.DataFrame], pl.DataFrame], frame: pl.DataFrame) -> pl.DataFrame:
    out = compute(frame)
    if not isinstance(out, pl.DataFrame) or out.height != frame.height:
        got = out.height if isinstance(out, pl.DataFrame) else type(out).__name__
        raise DataError(
            f"check_feature_lookahead: compute must return one row per bar ({frame.height}), got {got}"
        )
    return out


def _perturb_after(frame: pl.DataFrame, cut: int) -> pl.DataFrame:
    """Rows after ``cut`` with numeric columns changed: floats scaled (prices share one factor per row, so
    OHLC stays consistent and positive), integers shifted."""
    seed = int.from_bytes(hashlib.sha256(f"check_feature_lookahead/{cut}".encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    n = frame.height
    after = np.arange(n) > cut
    price_factor = pl.Series(np.where(after, np.exp(rng.normal(0.0, 0.05, n)), 1.0))
    other_factor = pl.Series(np.where(after, np.exp(rng.normal(0.0, 0.5, n)), 1.0))
    shift = pl.Series(np.where(after, rng.integers(1, 10, n), 0))
    exprs = []
    for name, dtype in frame.schema.items():
        if name == "ts" or not dtype.is_numeric():
            continue
        if dtype.is_float():
            factor = price_factor if name in (*_PRICES, "vwap") else other_factor
            exprs.append((pl.col(name) * pl.lit(factor)).cast(dtype).alias(name))
        else:
            exprs.append((pl.col(name) + pl.lit(shift)).cast(dtype).alias(name))
    return frame.with_columns(exprs)


def _same_prefix(a: pl.Series, b: pl.Series, length: int) -> bool:
    left, right = a.head(length), b.head(length)
    if left.dtype.is_float() and right.dtype.is_float():
        x, y = left.to_numpy(), right.to_numpy()
        both_missing = np.isnan(x) & np.isnan(y)
        close = np.abs(x - y) <= 1e-9 * np.maximum(1.0, np.maximum(np.abs(x), np.abs(y)))
        return bool(np.all(both_missing | close))
    return left.equals(right, check_names=False, null_equal=True)


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------
def _finding(
    check: str, severity: Severity, count: int, first: tuple[str, ...], message: str, repaired: int = 0
) -> Finding:
    return Finding(check, severity, count, tuple(first[:MAX_FIRST]), message, repaired)


def _ordered(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: CHECKS.index(f.check))


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _bars(count: int) -> str:
    return f"{count} bar" if count == 1 else f"{count} bars"


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique for an already sorted array, without its sort or hash (these arrays hold ~500k minutes)."""
    if len(values) == 0:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def _iso(ts: pl.Series, daily: bool) -> tuple[str, ...]:
    stamps = ts.drop_nulls().head(MAX_FIRST)
    return _iso_ns(stamps.to_physical().to_numpy().astype(np.int64), daily)


def _iso_ns(ns: np.ndarray, daily: bool) -> tuple[str, ...]:
    values = np.asarray(ns[:MAX_FIRST], dtype=np.int64).view("datetime64[ns]")
    if daily:
        return tuple(str(v) for v in np.datetime_as_string(values, unit="D"))
    return tuple(f"{v}Z" for v in np.datetime_as_string(values, unit="s"))


def _iso_naive(wall: pl.Series) -> tuple[str, ...]:
    return tuple(v.isoformat() for v in wall.drop_nulls().head(MAX_FIRST).to_list())


_ADVICE: Final = {
    "schema": "map the bar columns in the ingester",
    "missing": "validate with mode 'repair' to drop invalid rows",
    "non_positive": "validate with mode 'repair' to drop invalid rows",
    "ohlc": "validate with mode 'repair' to drop invalid rows",
    "volume": "validate with mode 'repair' to drop invalid rows",
    "timestamps": "sort and de-duplicate the source (mode 'repair' drops exact duplicates)",
    "timezone": "pass --source-tz",
    "sessions": "filter to session hours (mode 'repair' drops the rest) or use hours='extended'",
    "gaps": "fill the hole or validate a shorter range",
    "outliers": "adjust the prices for splits (or use the source's adjusted columns)",
    "lookahead": "keep bars up to as_of only",
}


def _refusal(report: SanityReport) -> str:
    """One line: the symbol, each unresolved error with its count and first timestamps, and what to do."""
    failed = [f for f in report.findings if not f.resolved]
    parts = []
    for f in failed:
        text = f"{f.check}: {f.message}"
        if f.first_ts:
            text += f" first at {', '.join(f.first_ts)}"
        parts.append(text)
    if report.mode == "warn":
        advice = ["the frame cannot be put in the bar schema"]
    elif report.mode == "repair":
        advice = [
            "not safely repairable",
            *dict.fromkeys(_ADVICE[f.check] for f in failed if f.repaired == 0),
        ]
    else:
        advice = list(dict.fromkeys(_ADVICE[f.check] for f in failed))
    return (
        f"{report.symbol} {report.interval}: bars refused ({report.mode}, {report.profile}): "
        f"{' | '.join(parts)}; to fix: {'; '.join(advice)}"
    )
