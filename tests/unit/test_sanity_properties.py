"""Property tests for bar validation: random malformed frames never crash it with anything but a DataError,
an injected defect never slips through enforce, and repaired output always passes enforce."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trader.calendar import get_calendar
from trader.data.sanity import MODES, PROFILES, validate_bars
from trader.errors import DataError, SanityError

CAL = get_calendar("XNYS")
DAYS = CAL.sessions("2018-01-02", "2019-12-31")
MINUTES = np.concatenate([CAL.session_minutes(d) for d in CAL.sessions("2019-11-25", "2019-11-29")])
PRICES = ("open", "high", "low", "close")
CORE = (*PRICES, "volume")
GARBAGE = ["-", "n/a", "", "abc", "1.2.3", "1,5", "$12", "nan", "inf", "--5", "null", "#N/A"]

FAST = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ----------------------------------------------------------------------------------------------------------
# Clean frames and defects
# ----------------------------------------------------------------------------------------------------------
@st.composite
def clean_frames(draw, min_rows: int = 1) -> tuple[pl.DataFrame, str]:
    """Consecutive sessions (daily) or consecutive regular minutes (1m) of a gentle random walk."""
    interval = draw(st.sampled_from(["1d", "1m"]))
    pool = np.array(DAYS, dtype="datetime64[ns]") if interval == "1d" else MINUTES
    n = draw(st.integers(min_rows, 45))
    start = draw(st.integers(0, len(pool) - n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    open_ = np.concatenate(([20.0], close[:-1]))
    frame = pl.DataFrame(
        {
            "ts": pl.Series(pool[start : start + n]).dt.replace_time_zone("UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * (1.0 + 1e-4 + rng.uniform(0.0, 2e-3, n)),
            "low": np.minimum(open_, close) * (1.0 - 1e-4 - rng.uniform(0.0, 2e-3, n)),
            "close": close,
            "volume": rng.integers(0, 10_000, n).astype(float),
        }
    )
    return frame, interval


def _set(frame: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    mask = pl.int_range(pl.len()) == row
    return frame.with_columns(pl.when(mask).then(pl.lit(value)).otherwise(pl.col(column)).alias(column))


def _missing(draw, frame, interval):
    row, column = draw(st.integers(0, frame.height - 1)), draw(st.sampled_from(CORE))
    return _set(frame, row, column, draw(st.sampled_from([None, float("nan"), float("inf")])))


def _non_positive(draw, frame, interval):
    row, column = draw(st.integers(0, frame.height - 1)), draw(st.sampled_from(PRICES))
    return _set(frame, row, column, draw(st.sampled_from([0.0, -0.01, -(frame[column][row] or 1.0)])))


def _swap_high_low(draw, frame, interval):
    row = draw(st.integers(0, frame.height - 1))
    high, low = frame["high"][row], frame["low"][row]
    return _set(_set(frame, row, "high", low), row, "low", high)


def _negative_volume(draw, frame, interval):
    row = draw(st.integers(0, frame.height - 1))
    return _set(frame, row, "volume", -draw(st.floats(1.0, 1e6)))


def _shuffle(draw, frame, interval):
    """Interleaved rows; a plain reversal is a file layout (a warning), so it is turned into a rotation."""
    if frame.height < 3:
        return None
    order = draw(st.permutations(range(frame.height)))
    if order in (sorted(order), sorted(order, reverse=True)):
        order = order[1:] + order[:1]
    return frame[list(order)]


def _duplicate_row(draw, frame, interval):
    row = draw(st.integers(0, frame.height - 1))
    copy = frame.slice(row, 1)
    if draw(st.booleans()):  # same ts, different values
        copy = copy.with_columns(pl.col("volume") + 1.0)
    return pl.concat([frame, copy]).sort("ts", maintain_order=True)


def _naive_ts(draw, frame, interval):
    if interval == "1d":  # a naive midnight is a session label, not a defect
        return None
    return frame.with_columns(pl.col("ts").dt.replace_time_zone(None))


def _garbage(draw, frame, interval):
    column = draw(st.sampled_from(CORE))
    token = draw(st.sampled_from(GARBAGE))
    text = frame.with_columns(pl.col(column).cast(pl.String))
    return _set(text, draw(st.integers(0, frame.height - 1)), column, token)


def _drop_column(draw, frame, interval):
    return frame.drop(draw(st.sampled_from(("ts", *CORE))))


def _empty(draw, frame, interval):
    return frame.head(0)


def _off_session(draw, frame, interval):
    row = draw(st.integers(0, frame.height - 1))
    ts = frame["ts"][row]
    if interval == "1d":  # the Saturday or Sunday after the session
        weekend_day = draw(st.sampled_from([5, 6]))
        moved = ts + dt.timedelta(days=weekend_day - ts.weekday())
    else:  # 14:30-21:00 UTC + 8 h is after 20:00 New York time
        moved = ts + dt.timedelta(hours=8)
    return _set(frame, row, "ts", moved).sort("ts")


DEFECTS = {
    "missing": _missing,
    "non_positive": _non_positive,
    "swap_high_low": _swap_high_low,
    "negative_volume": _negative_volume,
    "shuffle": _shuffle,
    "duplicate_row": _duplicate_row,
    "naive_ts": _naive_ts,
    "garbage": _garbage,
    "drop_column": _drop_column,
    "empty": _empty,
    "off_session": _off_session,
}


@st.composite
def defective_frames(draw) -> tuple[pl.DataFrame, str, str]:
    """A clean frame with exactly one defect injected: (frame, interval, defect name)."""
    frame, interval = draw(clean_frames())
    while True:
        name = draw(st.sampled_from(sorted(DEFECTS)))
        broken = DEFECTS[name](draw, frame, interval)
        if broken is not None:
            return broken, interval, name


def _weird_types(draw, frame: pl.DataFrame) -> pl.DataFrame:
    """Columns in types an ingester might hand over, or should not: strings, ints, booleans, odd ts."""
    kinds = ["none", "strings", "ints", "bool", "ts_text", "ts_int", "ts_date", "ts_far", "huge", "extra"]
    kind = draw(st.sampled_from(kinds))
    if kind == "strings" and frame.width:
        return frame.with_columns(pl.col(c).cast(pl.String) for c in frame.columns if c in CORE)
    if kind == "ints":
        floats = [c for c in frame.columns if c in CORE and frame.schema[c] == pl.Float64]
        return frame.with_columns(pl.col(c).fill_nan(None).cast(pl.Int64, strict=False) for c in floats)
    if kind == "bool" and "open" in frame.columns:
        return frame.with_columns(pl.col("open").is_not_null())
    utc = "ts" in frame.columns and frame.schema["ts"] == pl.Datetime("ns", "UTC")
    if kind == "ts_text" and utc:
        fmt = draw(st.sampled_from(["%Y-%m-%dT%H:%M:%S%:z", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y", "%Y-%m-%d"]))
        return frame.with_columns(pl.col("ts").dt.strftime(fmt))
    if kind == "ts_int" and "ts" in frame.columns:
        return frame.with_columns(pl.int_range(pl.len()).alias("ts"))
    if kind == "ts_date" and utc:
        return frame.with_columns(pl.col("ts").dt.date())
    if kind == "ts_far" and utc and frame.height:  # beyond what nanoseconds can hold
        far = dt.datetime(draw(st.sampled_from([1, 1600, 2300, 9999])), 1, 3, tzinfo=dt.UTC)
        return _set(frame.with_columns(pl.col("ts").dt.cast_time_unit("us")), 0, "ts", far)
    if kind == "huge" and frame.height and frame.schema.get("close") == pl.Float64:
        return _set(frame, 0, "close", draw(st.sampled_from([1e308, 5e-324, 1e-300])))
    if kind == "extra":
        return frame.with_columns(pl.lit("x").alias("comment"), pl.lit(1).alias("trades"))
    return frame


@st.composite
def malformed_frames(draw) -> tuple[pl.DataFrame, str]:
    """A clean frame with zero to four random defects, then possibly odd column types."""
    frame, interval = draw(clean_frames())
    for name in draw(st.lists(st.sampled_from(sorted(DEFECTS)), max_size=4)):
        if frame.height == 0 or any(c not in frame.columns for c in ("ts", *CORE)):
            break
        if frame.schema["ts"] != pl.Datetime("ns", "UTC") or any(frame.schema[c] != pl.Float64 for c in CORE):
            break
        broken = DEFECTS[name](draw, frame, interval)
        frame = frame if broken is None else broken
    return _weird_types(draw, frame), interval


# ----------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------
@FAST
@given(clean_frames())
def test_clean_frames_pass_enforce(case):
    frame, interval = case
    out, report = validate_bars(frame, symbol="P", interval=interval)
    assert report.errors() == [] and out.height == frame.height


@FAST
@given(
    malformed_frames(),
    st.sampled_from(MODES),
    st.sampled_from(PROFILES),
    st.sampled_from([None, "UTC", "America/New_York"]),
    st.sampled_from([0.0, 0.05, 1.0]),
)
def test_malformed_frames_only_raise_data_errors(case, mode, profile, source_tz, max_na):
    frame, interval = case
    try:
        out, report = validate_bars(
            frame,
            symbol="P",
            interval=interval,
            mode=mode,
            profile=profile,
            source_tz=source_tz,
            max_na_fraction=max_na,
        )
    except DataError:
        return
    assert out.schema["ts"] == pl.Datetime("ns", "UTC")
    assert out["ts"].drop_nulls().is_sorted()
    if mode in ("enforce", "repair"):
        assert report.ok


@FAST
@given(defective_frames(), st.sampled_from(PROFILES))
def test_injected_defect_always_raises_in_enforce(case, profile):
    frame, interval, defect = case
    strict_only = {"shuffle", "off_session", "empty"}  # relaxed reports these as warnings by design
    if profile == "relaxed" and defect in strict_only:
        profile = "strict"
    with pytest.raises(SanityError) as caught:
        validate_bars(frame, symbol="P", interval=interval, profile=profile)
    assert caught.value.report is not None and not caught.value.report.ok


@FAST
@given(malformed_frames(), st.sampled_from(PROFILES), st.sampled_from([None, "America/New_York"]))
def test_repaired_output_passes_a_second_enforce(case, profile, source_tz):
    frame, interval = case
    try:
        out, report = validate_bars(
            frame, symbol="P", interval=interval, mode="repair", profile=profile, source_tz=source_tz
        )
    except DataError:
        return
    assert report.ok
    again, second = validate_bars(out, symbol="P", interval=interval, profile=profile)
    assert second.errors() == []
    assert again.equals(out)
