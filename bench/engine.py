"""End-to-end engine figures. Prints one JSON object.

    .venv/bin/python bench/engine.py

* ``minute_1sym_s``: a 5-year 1-minute backtest of one symbol end to end (strategy features, composer blend,
  regimes, simulator, metrics) with the demo composer, wall seconds after compilation (best of 3).
* ``daily_100sym_s`` / ``peak_rss_mb``: the same for 100 symbols of 5-year daily bars, and the process's peak
  resident memory over the whole benchmark. Targets: under 1 s and under 1 GB.
* The kernel's own bar-symbol steps per second are in bench/engine_kernel.py.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("POLARS_MAX_THREADS", "1")

import polars as pl

from trader.backtest import run
from trader.config import load_settings
from trader.data.synth import synth_bars, synth_symbol_names

REPO = Path(__file__).resolve().parents[1]


def best_of(n: int, func) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    settings = load_settings([REPO / "configs" / "base.yaml", REPO / "configs" / "demo.yaml"], env={})
    minute = synth_bars("SYN000", "1m", "2020-01-01", "2024-12-31", seed=7)
    warm = minute.head(5_000)
    t0 = time.perf_counter()
    run(warm, None, None, settings, interval="1m")  # compile (or load cached) kernels
    compile_s = time.perf_counter() - t0
    minute_s = best_of(3, lambda: run(minute, None, None, settings, interval="1m"))

    daily = pl.concat(
        [
            synth_bars(s, "1d", "2020-01-01", "2024-12-31", seed=7).with_columns(symbol=pl.lit(s))
            for s in synth_symbol_names(100)
        ]
    )
    daily_s = best_of(3, lambda: run(daily, None, None, settings, interval="1d"))
    sma_s = best_of(3, lambda: run(daily, "sma_cross", {"fast": 10, "slow": 50}, settings, interval="1d"))
    print(
        json.dumps(
            {
                "minute_bars": minute.height,
                "first_call_s": round(compile_s, 3),
                "minute_1sym_s": round(minute_s, 3),
                "daily_100sym_bars": daily.height,
                "daily_100sym_composer_s": round(daily_s, 3),
                "daily_100sym_sma_cross_s": round(sma_s, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
