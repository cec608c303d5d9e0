"""Data-path throughput: synthetic generation, validation and CSV ingest. Prints one JSON object.

    .venv/bin/python bench/data.py [--symbols 20] [--years 5]

Figures: synthetic minute bars per second (one process), validation of one symbol's 5 years of minute bars,
and parsing + validating the whole real daily corpus in ../shared/data (skipped when it is absent).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from trader.calendar import get_calendar
from trader.data.ingest import read_source
from trader.data.sanity import validate_bars
from trader.data.synth import synth_bars, synth_symbol_names

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--years", type=int, default=5)
    args = parser.parse_args()
    cal = get_calendar()
    start, end = f"{2024 - args.years + 1}-01-01", "2024-12-31"
    synth_bars("WARM", "1m", "2024-01-02", "2024-01-31", seed=1, calendar=cal)  # calendar caches, imports

    t0, cpu0 = time.perf_counter(), time.process_time()
    rows = 0
    last = None
    for symbol in synth_symbol_names(args.symbols):
        last = synth_bars(symbol, "1m", start, end, seed=7, calendar=cal)
        rows += last.height
    synth_s, synth_cpu = time.perf_counter() - t0, time.process_time() - cpu0

    t0 = time.perf_counter()
    validate_bars(last, symbol="SYN", interval="1m", calendar=cal)
    validate_s = time.perf_counter() - t0

    corpus = {}
    daily = sorted(p for p in CORPUS.rglob("*yahoofinance*.csv")) if CORPUS.is_dir() else []
    if daily:
        t0 = time.perf_counter()
        bars = 0
        for path in daily:
            frame, _ = validate_bars(
                read_source(path, interval="1d").frame, symbol="X", interval="1d", mode="warn", calendar=cal
            )
            bars += frame.height
        corpus = {
            "corpus_files": len(daily),
            "corpus_bars": bars,
            "corpus_parse_validate_s": time.perf_counter() - t0,
        }

    print(
        json.dumps(
            {
                "synth_symbols": args.symbols,
                "synth_minute_bars": rows,
                "synth_wall_s": round(synth_s, 3),
                "synth_cpu_s": round(synth_cpu, 3),
                "synth_bars_per_cpu_s": round(rows / synth_cpu),
                "validate_minute_bars": last.height if last is not None else 0,
                "validate_s": round(validate_s, 3),
                **{k: round(v, 3) if isinstance(v, float) else v for k, v in corpus.items()},
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
