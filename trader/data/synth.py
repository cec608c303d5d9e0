"""Deterministic synthetic bars over real exchange sessions.

Every symbol gets a price path with regime switches (``trend``: persistent drift, low volatility; ``chop``:
mean-reverting, no drift; ``volatile``: high volatility, Student-t shocks), overnight gaps, a U-shaped
intraday volume profile, and the holidays and early closes of its trading calendar. Same ``seed``, symbol and
sessions give the same bars, byte for byte, in any process (no Python ``hash()``, no global state). Across
machines the bytes match as long as numpy's ``exp``/``log`` do: numpy picks SIMD kernels by CPU (AVX-512 vs
AVX2), which may differ in the last bit of a price, never in the shape of a path.

How the draws are laid out, so that any sub-range and either interval agree:

* Session level (regimes, daily drift and volatility, overnight gap, daily open/high/low/close/volume) comes
  from one per-symbol generator (PCG64 seeded with ``blake2b(f"{seed}:{symbol}")``), split into one child
  stream per quantity. The path is always generated from a fixed epoch (:data:`SYNTH_EPOCH`, or the
  calendar's first session if later) up to ``end`` and then sliced, and every stream is consumed in session
  order, so a session's values never depend on where the requested range starts or ends.
* Minute level comes from a separate PCG64 stream per session whose state and increment are the two halves
  of ``blake2b(f"{seed}:{symbol}:{session date}")``, so any session's minutes can be generated alone. The
  minute path is a Brownian bridge from the session's open to its close, scaled into the session's high and
  low, so the minute bars of a session aggregate *exactly* (bit for bit) to its daily bar: first open, max
  high, min low, last close, sum of volume. Volumes are whole shares, so their sum is exact in any order.

Example::

    from trader.data.synth import synth_bars, synth_symbol_names

    for symbol in synth_symbol_names(3):
        daily = synth_bars(symbol, "1d", "2019-01-01", "2019-12-31", seed=7)
        minutes = synth_bars(symbol, "1m", "2019-11-25", "2019-11-29", seed=7)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import numpy as np
import polars as pl

from trader.calendar import TradingCalendar, get_calendar
from trader.data.schema import check_interval, conform_bars, empty_bars
from trader.errors import CalendarError, ConfigError, SchemaError

# The session-level path starts here whatever range is asked for; moving it changes every synthetic bar.
SYNTH_EPOCH: Final = dt.date(1990, 1, 1)
REGIMES: Final = ("trend", "chop", "volatile")
SYNTH_INTERVALS: Final = ("1m", "1d")

_TREND, _CHOP, _VOLATILE = 0, 1, 2
_MINUTE_NS: Final = 60_000_000_000
_REGULAR_MINUTES: Final = 390
# Sessions per vectorised minute batch: bounds temporary memory (~40 arrays x 256 x 390 float64) and keeps it
# in cache, while the per-batch Python overhead stays negligible.
_BATCH_SESSIONS: Final = 256
# Block length of the blockwise AR(1) filter; short enough that phi**-block stays well conditioned.
_AR_BLOCK: Final = 256

# Regime Markov chain over sessions (rows: from, columns: to). Mean run lengths: trend 40 sessions,
# chop ~29, volatile 12.5.
_TRANSITIONS: Final = np.array(
    [
        [0.975, 0.018, 0.007],
        [0.020, 0.965, 0.015],
        [0.030, 0.050, 0.920],
    ]
)
_INITIAL: Final = np.array([0.45, 0.35, 0.20])
_VOL_FACTOR: Final = np.array([0.70, 0.75, 2.20])  # daily volatility multiple of the symbol's base volatility
_VOLUME_FACTOR: Final = np.array([1.00, 0.85, 1.60])  # daily volume multiple of the symbol's base volume
_CHOP_THETA: Final = 0.5  # MA(1) coefficient of chop shocks: today's move partly undoes yesterday's
_STUDENT_DF: Final = 5.0
_SHOCK_CAP: Final = 8.0  # Student-t shocks are clipped to +-8 standard deviations
_GAP_SHARE: Final = 0.50  # overnight gap volatility as a fraction of the session's daily volatility
# Weak pull of the log price toward the base price (half-life 750 sessions) keeps 35-year paths in a sane
# band.
_REVERSION: Final = math.log(2.0) / 750.0


@dataclass(frozen=True)
class _SymbolProfile:
    base_price: float  # currency units
    base_vol: float  # daily log-return standard deviation (fraction, not percent)
    base_volume: float  # shares per regular session


@dataclass(frozen=True)
class _SessionTable:
    dates: np.ndarray  # datetime64[D], every session from the epoch
    opens: np.ndarray  # datetime64[ns] UTC
    minutes: np.ndarray  # int64 minutes per session (390 regular, 210 early close on XNYS)


@dataclass(frozen=True)
class _DailyPath:
    regime: np.ndarray  # int8 codes into REGIMES
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # whole shares, as float64


# -- public API --------------------------------------------------------------------------------------------


def synth_symbol_names(n: int, prefix: str = "SYN") -> list[str]:
    """The first ``n`` synthetic symbol names: ``SYN000, SYN001, ...``.

    Names are stable: the i-th name never depends on ``n`` (``SYN999`` is followed by ``SYN1000``).

    >>> synth_symbol_names(3)
    ['SYN000', 'SYN001', 'SYN002']
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"synthetic symbol count must be a whole number >= 0, got {n!r}")
    if not prefix or not prefix.isalnum():
        raise ConfigError(f"synthetic symbol prefix must be non-empty letters/digits, got {prefix!r}")
    return [f"{prefix}{i:03d}" for i in range(n)]


def fill_synth_store(
    uri: str, interval: str, n_symbols: int, start: str, end: str, *, seed: int = 7
) -> dict[str, Any]:
    """Write ``n_symbols`` synthetic symbols' (``SYN000..``) ``interval`` bars over ``start..end`` to the
    store at ``uri``, skipping symbols it already holds; returns ``symbols``, ``bars_written`` and
    ``store_build_s`` (seconds).

    The benchmarks' datasets: built once, then reused.
    """
    import time
    from pathlib import Path

    from trader.data.store import BarStore

    store = BarStore(uri)
    names = synth_symbol_names(n_symbols)
    have = set(store.symbols(interval)) if uri.startswith("s3://") or Path(uri).exists() else set()
    started = time.perf_counter()
    written = 0
    for name in names:
        if name in have:
            continue
        frame = synth_bars(name, interval, start, end, seed=seed)
        store.write_bars(name, interval, frame)
        written += frame.height
    return {
        "store_build_s": round(time.perf_counter() - started, 2),
        "bars_written": written,
        "symbols": names,
    }


def synth_bars(
    symbol: str,
    interval: str,
    start: dt.date | str,
    end: dt.date | str,
    *,
    seed: int,
    calendar: TradingCalendar | None = None,
) -> pl.DataFrame:
    """Synthetic bars of ``symbol`` for every session from ``start`` to ``end`` (both inclusive).

    ``interval`` is ``"1d"`` (one bar per session, labelled with the session date at 00:00 UTC) or ``"1m"``
    (one bar per session minute, labelled with the minute's UTC start). ``calendar`` defaults to XNYS.
    Returns a frame in the bar schema (``vwap``/``trades`` null), sorted by ``ts``; empty when the range holds
    no session. Prices are in currency units, volume in shares.

    >>> bars = synth_bars("SYN000", "1m", "2019-11-29", "2019-11-29", seed=1)
    >>> bars.height  # the day after Thanksgiving closes at 13:00 New York time
    210
    """
    _check_interval(interval)
    cal, table, lo, hi = _resolve(symbol, start, end, seed, calendar)
    if lo >= hi:
        return empty_bars()
    path = _daily_path(seed, symbol, table, hi)
    if interval == "1d":
        ts = table.dates[lo:hi].astype("datetime64[ns]").view(np.int64)
        columns = {
            "open": path.open[lo:hi],
            "high": path.high[lo:hi],
            "low": path.low[lo:hi],
            "close": path.close[lo:hi],
            "volume": path.volume[lo:hi],
        }
    else:
        ts, columns = _minute_bars(seed, symbol, table, path, lo, hi)
    return _frame(ts, columns, where=f"synthetic {symbol} {interval} ({cal.exchange})")


def synth_regimes(
    symbol: str,
    start: dt.date | str,
    end: dt.date | str,
    *,
    seed: int,
    calendar: TradingCalendar | None = None,
) -> pl.DataFrame:
    """The regime of every session from ``start`` to ``end`` (inclusive) behind :func:`synth_bars`.

    Columns: ``session`` (``pl.Date``, the session label) and ``regime`` (one of :data:`REGIMES`). Uses the
    same draws as :func:`synth_bars` with the same ``seed`` and ``calendar``, so the labels are the ground
    truth for those bars.
    """
    _, table, lo, hi = _resolve(symbol, start, end, seed, calendar)
    codes = _daily_path(seed, symbol, table, hi).regime[lo:hi] if lo < hi else np.array([], np.int8)
    labels = np.array(REGIMES, dtype=object)[codes.astype(np.int64)]
    return pl.DataFrame(
        {
            "session": pl.Series("session", table.dates[lo:hi], dtype=pl.Date),
            "regime": pl.Series("regime", labels.tolist(), dtype=pl.String),
        }
    )


# -- arguments and sessions -------------------------------------------------------------------------------


def _check_interval(interval: str) -> None:
    check_interval(interval)
    if interval not in SYNTH_INTERVALS:
        raise SchemaError(
            f"synthetic bars come as {' or '.join(SYNTH_INTERVALS)}, not {interval!r}; "
            "generate 1m and resample for other intervals"
        )


def _as_date(value: dt.date | str, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(
        f"synthetic bars: {name} must be a date or an ISO date string YYYY-MM-DD, got {value!r}"
    )


def _resolve(
    symbol: str,
    start: dt.date | str,
    end: dt.date | str,
    seed: int,
    calendar: TradingCalendar | None,
) -> tuple[TradingCalendar, _SessionTable, int, int]:
    """Validate the arguments; return the calendar, its session table up to ``end`` and the slice [lo, hi)."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise ConfigError(f"synthetic bars: symbol must be a non-empty string, got {symbol!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ConfigError(f"synthetic bars: seed must be an integer, got {seed!r}")
    first, last = _as_date(start, "start"), _as_date(end, "end")
    if first > last:
        raise ConfigError(f"synthetic bars: start {first} is after end {last}; swap them")
    cal = calendar if calendar is not None else get_calendar()
    epoch = max(SYNTH_EPOCH, cal.first_session)
    if first < SYNTH_EPOCH or last > cal.last_session:
        raise CalendarError(
            f"synthetic bars for {first}..{last} fall outside {SYNTH_EPOCH}..{cal.last_session}, the range "
            f"the synthetic epoch and the {cal.exchange} calendar cover; ask for dates inside it"
        )
    table = _session_table(cal, epoch, last)
    lo = int(np.searchsorted(table.dates, np.datetime64(first, "D"), side="left"))
    return cal, table, lo, len(table.dates)


@lru_cache(maxsize=64)
def _session_table(cal: TradingCalendar, epoch: dt.date, end: dt.date) -> _SessionTable:
    """Every session of ``cal`` from ``epoch`` to ``end``, with open instants and minute counts."""
    opens, closes = cal.session_bounds(epoch, end)
    dates = np.array(cal.sessions(epoch, end), dtype="datetime64[D]")
    minutes = (closes.view(np.int64) - opens.view(np.int64)) // _MINUTE_NS
    for array in (dates, minutes):
        array.setflags(write=False)
    return _SessionTable(dates=dates, opens=opens, minutes=minutes)


# -- seeds ------------------------------------------------------------------------------------------------


def _seed_int(*parts: object) -> int:
    """A 128-bit seed from stable identifiers (never Python's hash(), which varies between processes)."""
    key = ":".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "little")


def _symbol_rng(seed: int, symbol: str) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(_seed_int(seed, symbol)))


def _reseed_for_session(bits: np.random.PCG64, seed: int, symbol: str, session: np.datetime64) -> None:
    """Point ``bits`` at the minute stream of one session: PCG64 state and increment are the two halves of
    ``blake2b(f"{seed}:{symbol}:{session}")``. Setting the state directly costs ~2 us against ~10 us for a
    new seeded generator, which matters at one stream per session."""
    digest = hashlib.blake2b(f"{seed}:{symbol}:{session}".encode(), digest_size=32).digest()
    bits.state = {
        "bit_generator": "PCG64",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,  # PCG needs an odd increment
        },
        "has_uint32": 0,
        "uinteger": 0,
    }


# -- session level ----------------------------------------------------------------------------------------


def _daily_path(seed: int, symbol: str, table: _SessionTable, n: int) -> _DailyPath:
    """Regimes and daily OHLCV of the first ``n`` sessions of ``table`` (from the epoch).

    Each quantity has its own child stream, drawn in session order, so session i's values are the same for
    every n > i.
    """
    streams = _symbol_rng(seed, symbol).spawn(7)
    profile_rng, regime_rng, normal_rng, student_rng, gap_rng, range_rng, volume_rng = streams
    profile = _symbol_profile(profile_rng)
    regime, drift = _regime_chain(regime_rng, n, profile.base_vol)
    vol = profile.base_vol * _VOL_FACTOR[regime]

    normal = normal_rng.standard_normal(n)
    student = student_rng.standard_t(_STUDENT_DF, n) / math.sqrt(_STUDENT_DF / (_STUDENT_DF - 2.0))
    # Fat tails, but not a one-in-a-billion 40-sigma day that would turn a 35-year path into a lottery ticket.
    student = np.clip(student, -_SHOCK_CAP, _SHOCK_CAP)
    shock = np.where(regime == _VOLATILE, student, normal)
    previous = np.concatenate(([0.0], shock[:-1]))
    chop = regime == _CHOP
    shock[chop] = (shock[chop] - _CHOP_THETA * previous[chop]) / math.sqrt(1.0 + _CHOP_THETA**2)

    gap = vol * _GAP_SHARE * gap_rng.standard_normal(n)
    intraday = drift + vol * math.sqrt(1.0 - _GAP_SHARE**2) * shock
    # log close relative to the base price follows an AR(1) with a slow pull back to 0.
    log_close = _ar1(gap + intraday, 1.0 - _REVERSION) + math.log(profile.base_price)
    log_open = np.concatenate(([math.log(profile.base_price)], log_close[:-1])) + gap

    # Shape (n, 2), not (2, n): session i's pair must not depend on n.
    wicks = range_rng.standard_exponential((n, 2))
    log_high = np.maximum(log_open, log_close) + vol * (0.02 + 0.35 * wicks[:, 0])
    log_low = np.minimum(log_open, log_close) - vol * (0.02 + 0.35 * wicks[:, 1])
    open_, close = np.exp(log_open), np.exp(log_close)
    high = np.maximum(np.exp(log_high), np.maximum(open_, close))
    low = np.minimum(np.exp(log_low), np.minimum(open_, close))

    minutes = table.minutes[:n]
    noise = np.exp(0.25 * volume_rng.standard_normal(n))
    move = 1.0 + 10.0 * np.abs(log_close - log_open)  # busier on big-move days
    shares = profile.base_volume * (minutes / _REGULAR_MINUTES) * _VOLUME_FACTOR[regime] * noise * move
    # At least 20 shares a minute so every minute bar gets positive volume.
    volume = np.maximum(np.round(shares), 20.0 * minutes).astype(np.float64)
    return _DailyPath(regime=regime, open=open_, high=high, low=low, close=close, volume=volume)


def _symbol_profile(rng: np.random.Generator) -> _SymbolProfile:
    u = rng.random(3)
    return _SymbolProfile(
        base_price=float(np.exp(np.log(20.0) + u[0] * (np.log(500.0) - np.log(20.0)))),
        base_vol=float(0.010 + 0.015 * u[1]),
        base_volume=float(np.exp(np.log(3e5) + u[2] * (np.log(2e7) - np.log(3e5)))),
    )


def _regime_chain(rng: np.random.Generator, n: int, base_vol: float) -> tuple[np.ndarray, np.ndarray]:
    """Regime codes and daily drift (log return per session) of ``n`` sessions.

    The chain is drawn run by run (geometric run lengths, then a jump to another state), which is the same
    Markov chain as drawing session by session but loops over ~n/25 runs instead of n sessions.
    """
    regime = np.empty(n, dtype=np.int8)
    drift = np.zeros(n)
    state = int(np.searchsorted(np.cumsum(_INITIAL), rng.random(), side="right"))
    pos = 0
    while pos < n:
        u_length, u_next, u_sign, u_size = rng.random(4)
        stay = _TRANSITIONS[state, state]
        length = 1 + int(math.log(1.0 - u_length) / math.log(stay))
        stop = min(n, pos + length)
        regime[pos:stop] = state
        if state == _TREND:
            sign = 1.0 if u_sign < 0.6 else -1.0
            drift[pos:stop] = sign * base_vol * (0.15 + 0.20 * u_size)
        elif state == _VOLATILE:
            drift[pos:stop] = -0.05 * base_vol
        pos = stop
        leave = _TRANSITIONS[state].copy()
        leave[state] = 0.0
        state = int(np.searchsorted(np.cumsum(leave / leave.sum()), u_next, side="right"))
    return regime, drift


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """``y[t] = phi * y[t-1] + shocks[t]`` with ``y[-1] = 0``, vectorised in fixed blocks from index 0.

    Within a block y = phi**k * (y0 + cumsum(shocks * phi**-k)); blocks keep phi**-k near 1. Blocks start at
    fixed indices, so a prefix of ``shocks`` gives a bit-identical prefix of ``y``.
    """
    out = np.empty_like(shocks)
    powers = phi ** np.arange(1, _AR_BLOCK + 1, dtype=np.float64)
    carry = 0.0
    for begin in range(0, len(shocks), _AR_BLOCK):
        block = shocks[begin : begin + _AR_BLOCK]
        p = powers[: len(block)]
        out[begin : begin + len(block)] = p * (carry + np.cumsum(block / p))
        carry = float(out[begin + len(block) - 1])
    return out


# -- minute level -----------------------------------------------------------------------------------------


def _minute_bars(
    seed: int, symbol: str, table: _SessionTable, path: _DailyPath, lo: int, hi: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Minute bars of sessions [lo, hi): UTC start instants (int64 ns) and OHLCV columns, in time order."""
    minutes = table.minutes[lo:hi]
    offsets = np.concatenate(([0], np.cumsum(minutes)))
    total = int(offsets[-1])
    ts = np.empty(total, dtype=np.int64)
    columns = {name: np.empty(total) for name in ("open", "high", "low", "close", "volume")}
    bits = np.random.PCG64(0)
    rng = np.random.Generator(bits)
    # Batches are runs of consecutive sessions with the same length, so each fills one contiguous slice and
    # the vectorised maths writes straight into the output columns.
    for first, last in _equal_length_batches(minutes):
        m = int(minutes[first])
        sessions = np.arange(first + lo, last + lo)
        normals = np.empty((last - first, m))
        uniforms = np.empty((last - first, 3 * m + 2), dtype=np.float32)
        for row, day in enumerate(table.dates[sessions]):
            _reseed_for_session(bits, seed, symbol, day)
            rng.standard_normal(out=normals[row])
            rng.random(out=uniforms[row], dtype=np.float32)
        span = slice(int(offsets[first]), int(offsets[last]))
        out = {name: column[span].reshape(-1, m) for name, column in columns.items()}
        _session_minutes(normals, uniforms, path, sessions, out)
        np.add(
            table.opens[sessions].view(np.int64)[:, None],
            _MINUTE_NS * np.arange(m, dtype=np.int64),
            out=ts[span].reshape(-1, m),
        )
    return ts, columns


def _equal_length_batches(minutes: np.ndarray) -> list[tuple[int, int]]:
    """[first, last) index pairs of consecutive sessions with equal minute counts, at most a batch long."""
    breaks = np.flatnonzero(np.diff(minutes)) + 1
    edges = [0, *breaks.tolist(), len(minutes)]
    return [
        (begin, min(begin + _BATCH_SESSIONS, stop))
        for start, stop in itertools.pairwise(edges)
        for begin in range(start, stop, _BATCH_SESSIONS)
    ]


@lru_cache(maxsize=32)
def _intraday_profile(m: int) -> np.ndarray:
    """U-shaped activity over a session of ``m`` minutes, mean 1: busy open, quiet midday, busy close."""
    tau = (np.arange(m) + 0.5) / m
    shape = 0.55 + 1.6 * np.exp(-tau / 0.07) + 1.0 * np.exp(-(1.0 - tau) / 0.04)
    shape = shape / shape.mean()
    shape.setflags(write=False)
    return shape


def _session_minutes(
    normals: np.ndarray,
    uniforms: np.ndarray,
    path: _DailyPath,
    sessions: np.ndarray,
    out: dict[str, np.ndarray],
) -> None:
    """Fill ``out`` (OHLCV arrays of shape (sessions, m)) so each session aggregates exactly to its daily bar.

    ``normals`` (sessions, m) drive the price walk; ``uniforms`` (sessions, 3m+2) drive wicks, volume noise
    and how close the walk comes to the daily high and low.
    """
    m = normals.shape[1]
    u_high, u_low, u_volume = uniforms[:, :m], uniforms[:, m : 2 * m], uniforms[:, 2 * m : 3 * m]
    u_reach = uniforms[:, 3 * m :].astype(np.float64)
    day_open, day_close = path.open[sessions], path.close[sessions]
    day_high, day_low = path.high[sessions][:, None], path.low[sessions][:, None]
    profile = _intraday_profile(m)

    closes, opens = out["close"], out["open"]
    _bridge_closes(normals * np.sqrt(profile), day_open, day_close, day_high, day_low, u_reach, closes)
    opens[:, 0] = day_open
    opens[:, 1:] = closes[:, :-1]

    # Minute wicks scale with the session's range per sqrt(minute) and stay inside the daily range; the
    # extreme minute is then pinned to the daily high/low so the session aggregates exactly. For wicks this
    # small, 1 + x stands in for exp(x).
    scale = 0.15 * np.log(day_high / day_low) / math.sqrt(m)
    every = np.arange(len(sessions))
    high = out["high"]
    np.multiply(scale, np.square(u_high), out=high)
    high += 1.0
    high *= np.maximum(opens, closes)
    np.minimum(high, day_high, out=high)
    high[every, np.argmax(high, axis=1)] = day_high[:, 0]
    low = out["low"]
    np.multiply(-scale, np.square(u_low), out=low)
    low += 1.0
    low *= np.minimum(opens, closes)
    np.maximum(low, day_low, out=low)
    low[every, np.argmin(low, axis=1)] = day_low[:, 0]

    weights = np.abs(normals)
    weights *= 0.5
    weights += 1.0
    weights *= profile
    weights *= u_volume + np.float32(0.5)
    _split_volume(path.volume[sessions], weights, out["volume"])


def _bridge_closes(
    steps: np.ndarray,
    day_open: np.ndarray,
    day_close: np.ndarray,
    day_high: np.ndarray,
    day_low: np.ndarray,
    u_reach: np.ndarray,
    out: np.ndarray,
) -> None:
    """Minute closes into ``out``: a random walk pinned to open and close, scaled to stay inside the range.

    The excursion above the open-to-close line (in log price) is scaled so its peak reaches 85-99% of the
    way to the daily high, likewise below toward the low; the rest of the way is one minute's wick.
    ``day_high``/``day_low`` are columns of shape (sessions, 1).
    """
    m = steps.shape[1]
    frac = np.arange(1, m + 1) / m
    excursion = np.cumsum(steps, axis=1)
    excursion -= frac * excursion[:, -1:]
    log_open, log_close = np.log(day_open)[:, None], np.log(day_close)[:, None]
    line = frac * (log_close - log_open)
    line += log_open
    # Daily high/low lie strictly outside open and close, so both rooms are positive everywhere.
    reach_up = np.max(excursion / (np.log(day_high) - line), axis=1, keepdims=True)
    reach_down = -np.min(excursion / (line - np.log(day_low)), axis=1, keepdims=True)
    gain_up = np.divide(
        0.85 + 0.14 * u_reach[:, :1], reach_up, out=np.zeros_like(reach_up), where=reach_up > 0
    )
    gain_down = np.divide(
        0.85 + 0.14 * u_reach[:, 1:2], reach_down, out=np.zeros_like(reach_down), where=reach_down > 0
    )
    excursion *= np.where(excursion > 0, gain_up, gain_down)
    excursion += line
    np.exp(excursion, out=out)
    out[:, -1] = day_close
    # Rounding in exp must never step outside the session's range.
    np.clip(out, day_low, day_high, out=out)


def _split_volume(day_volume: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """Split whole-share daily volumes over minutes by ``weights`` into ``out``; every minute gets >= 1 share.

    All values are whole numbers below 2**53, so float64 sums are exact in any order.
    """
    m = weights.shape[1]
    per_weight = (day_volume - m) / weights.sum(axis=1)
    np.multiply(weights, per_weight[:, None], out=out)
    np.floor(out, out=out)
    out += 1.0
    # The floor leaves a few shares over; the busiest minute takes them so the row sum is exact.
    out[np.arange(len(day_volume)), np.argmax(out, axis=1)] += day_volume - out.sum(axis=1)


# -- output -----------------------------------------------------------------------------------------------


def _frame(ts: np.ndarray, columns: dict[str, np.ndarray], *, where: str) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "ts": pl.Series("ts", ts, dtype=pl.Int64).cast(pl.Datetime("ns", "UTC")),
            **{name: pl.Series(name, values, dtype=pl.Float64) for name, values in columns.items()},
        }
    )
    return conform_bars(frame, where=where)
