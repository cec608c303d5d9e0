"""Benchmark the bar store: write, then read back, years of 1-minute bars for many symbols.

Bars are synthetic random walks over the XNYS session minutes (390 a regular day, 210 an early close),
generated per symbol so memory stays bounded by one symbol's bars. Prints ONE JSON object:

    python bench/store.py                          # 100 symbols x 5 years (~49M bars) to a temp folder
    python bench/store.py --symbols 10 --years 1 --store s3://bucket/bench

Figures: write_s / read_s are wall seconds over all symbols (each symbol read whole, as a backtest task
would); month_read_s is one symbol's one-month window; bytes is the store's size on storage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import tempfile
import time

import numpy as np
import polars as pl

from trader.calendar import get_calendar
from trader.data.store import BarStore

MINUTE_NS = 60_000_000_000
LAST_YEAR = 2024


def session_minutes(first_year: int, last_year: int) -> np.ndarray:
    """Start instants (int64 ns, UTC) of every XNYS session minute in years first_year..last_year."""
    opens, closes = get_calendar("XNYS").session_bounds(f"{first_year}-01-01", f"{last_year}-12-31")
    opens_ns, closes_ns = opens.astype(np.int64), closes.astype(np.int64)
    counts = (closes_ns - opens_ns) // MINUTE_NS
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(opens_ns, counts) + offsets * MINUTE_NS


def symbol_seed(seed: int, symbol: str) -> int:
    """A stable per-symbol seed (hashlib, never hash())."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{symbol}".encode()).digest()[:8], "little")


def random_walk_bars(minutes: np.ndarray, symbol: str, seed: int) -> pl.DataFrame:
    """Bar-schema frame of a log random walk, prices rounded to cents like real quotes."""
    rng = np.random.default_rng(symbol_seed(seed, symbol))
    n = len(minutes)
    start = rng.uniform(20.0, 500.0)
    close = np.round(start * np.exp(np.cumsum(rng.normal(0.0, 0.0008, n))), 2)
    open_ = np.concatenate(([np.round(start, 2)], close[:-1]))
    spread = np.round(np.abs(rng.normal(0.0, 0.0004, n)) * close, 2)
    high = np.maximum(open_, close) + spread
    low = np.maximum(np.minimum(open_, close) - spread, 0.01)
    volume = rng.integers(100, 50_000, n).astype(np.float64)
    return pl.DataFrame(
        {
            "ts": pl.Series(minutes).cast(pl.Datetime("ns", "UTC")),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "vwap": np.round((high + low + close) / 3.0, 4),
            "trades": (volume // 100).astype(np.int64) + 1,
        }
    )


def store_bytes(store: BarStore) -> int:
    listing = store.list_bars()
    return int(listing["bytes"].sum()) if listing.height else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store URI (default: a temporary local folder, removed afterwards)")
    parser.add_argument("--symbols", type=int, default=100, help="number of symbols (default 100)")
    parser.add_argument("--years", type=int, default=5, help=f"calendar years ending {LAST_YEAR} (default 5)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    args = parser.parse_args(argv)

    scratch = None if args.store else tempfile.mkdtemp(prefix="trader-bench-store-")
    store = BarStore(args.store or scratch)
    symbols = [f"SYM{i:03d}" for i in range(args.symbols)]
    minutes = session_minutes(LAST_YEAR - args.years + 1, LAST_YEAR)
    try:
        write_s = 0.0
        rows = 0
        for symbol in symbols:
            bars = random_walk_bars(minutes, symbol, args.seed)  # generation is not timed
            began = time.perf_counter()
            store.write_bars(symbol, "1m", bars)
            write_s += time.perf_counter() - began
            rows += bars.height
            del bars

        read_rows = 0
        began = time.perf_counter()
        for symbol in symbols:
            read_rows += store.read_bars([symbol], "1m").height
        read_s = time.perf_counter() - began

        month = (f"{LAST_YEAR - args.years // 2}-03-01", f"{LAST_YEAR - args.years // 2}-04-01")
        began = time.perf_counter()
        month_rows = store.read_bars([symbols[0]], "1m", start=month[0], end=month[1]).height
        month_read_s = time.perf_counter() - began

        began = time.perf_counter()
        cross_rows = store.read_bars(None, "1m", start=month[0], end=month[1], columns=["close"]).height
        cross_read_s = time.perf_counter() - began

        result = {
            "store": store.uri if args.store else "local temp folder",
            "symbols": len(symbols),
            "years": args.years,
            "rows": rows,
            "write_s": round(write_s, 2),
            "write_rows_per_s": round(rows / write_s),
            "read_s": round(read_s, 2),
            "read_rows_per_s": round(read_rows / read_s),
            "read_rows_match": read_rows == rows,
            "month_window": f"{month[0]}..{month[1]}",
            "month_read_s": round(month_read_s, 4),
            "month_rows": month_rows,
            "month_all_symbols_close_read_s": round(cross_read_s, 3),
            "month_all_symbols_rows": cross_rows,
            "bytes": store_bytes(store),
            "bytes_per_row": round(store_bytes(store) / rows, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
