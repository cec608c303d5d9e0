"""The one Arrow schema for bars, and the bar intervals.

A bar's ``ts`` is the UTC start of its interval with nanosecond precision. Daily bars are labelled with the
session date at 00:00 UTC (the exchange-calendar session label), not the open time, so a daily bar of
2025-07-07 has ``ts == 2025-07-07T00:00:00Z`` whatever the exchange's time zone.
"""

from __future__ import annotations

from typing import Final

import polars as pl
import pyarrow as pa

from trader.errors import SchemaError

TS_TYPE: Final = pa.timestamp("ns", tz="UTC")

BAR_SCHEMA: Final = pa.schema(
    [
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("vwap", pa.float64(), nullable=True),
        pa.field("trades", pa.int64(), nullable=True),
    ]
)

REQUIRED_COLUMNS: Final = ("ts", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: Final = ("vwap", "trades")
PRICE_COLUMNS: Final = ("open", "high", "low", "close")

POLARS_SCHEMA: Final = {
    "ts": pl.Datetime("ns", "UTC"),
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "vwap": pl.Float64,
    "trades": pl.Int64,
}

# Interval name -> length in nanoseconds. "1d" is one exchange session, whatever its length in clock time.
INTERVALS: Final = {
    "1m": 60 * 1_000_000_000,
    "5m": 5 * 60 * 1_000_000_000,
    "1h": 60 * 60 * 1_000_000_000,
    "1d": 24 * 60 * 60 * 1_000_000_000,
}


def check_interval(interval: str) -> str:
    """Return ``interval`` if it is a known bar interval, else raise SchemaError naming the valid ones."""
    if interval not in INTERVALS:
        raise SchemaError(f"unknown bar interval {interval!r}; use one of {', '.join(INTERVALS)}")
    return interval


def interval_ns(interval: str) -> int:
    """Length of one bar of ``interval`` in nanoseconds (a session counts as 24 h for "1d")."""
    return INTERVALS[check_interval(interval)]


def conform_bars(frame: pl.DataFrame, *, where: str = "bars") -> pl.DataFrame:
    """Cast ``frame`` to the bar schema: required columns present, types exact, column order fixed.

    Extra columns are dropped; missing optional columns are added as nulls. ``where`` names the frame in
    errors (a file or symbol). Raises SchemaError when a required column is missing or cannot be cast.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        have = ", ".join(frame.columns)
        raise SchemaError(f"{where}: missing bar column(s) {', '.join(missing)}; have {have}")
    ts_dtype = frame.schema["ts"]
    if not isinstance(ts_dtype, pl.Datetime) or ts_dtype.time_zone is None:
        raise SchemaError(f"{where}: column ts must be a UTC timestamp, got {ts_dtype}")
    exprs = []
    for name, dtype in POLARS_SCHEMA.items():
        if name in frame.columns:
            col = pl.col(name)
            if name == "ts":
                col = col.dt.convert_time_zone("UTC").dt.cast_time_unit("ns")
            exprs.append(col.cast(dtype, strict=True).alias(name))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    try:
        return frame.select(exprs)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise SchemaError(f"{where}: cannot cast to the bar schema: {exc}".splitlines()[0]) from exc


def empty_bars() -> pl.DataFrame:
    """An empty frame with the bar schema."""
    return pl.DataFrame(schema=POLARS_SCHEMA)
