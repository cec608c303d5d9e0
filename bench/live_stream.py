"""Streaming decisions (trader.live.stream) against recomputing over kept bars (trader.live.decide). Prints
one JSON object.

    .venv/bin/python bench/live_stream.py

* ``step_us``: per-bar cost of ``StreamDecider.step`` measured from Python (call overhead included), p50 and
  p99 in microseconds over ``--steps`` synthetic 1-minute bars, after a warm-up of ``--history`` bars: the
  demo composer (configs/demo.yaml), the demo composer with regime biases (regime labels streamed too), and
  each built-in strategy alone at its default parameters. Target: under 30 us for the demo composer.
* ``warm_s``: ``StreamDecider.warm`` over 30,000 bars (one compiled call), seconds, best of 3.
* ``recompute_ms``: ``Decider.decide`` (the demo composer over every kept bar) with 1,000 and 10,000 bars
  kept, milliseconds per decision (median of 20); what each bar costs without the stream.
* ``bit_exact``: the streamed targets of the whole 30,000-bar run equal the backtest's (composer, demo).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("POLARS_MAX_THREADS", "1")

import numpy as np
import polars as pl

from trader.composer import Composer
from trader.config import load_settings
from trader.data.synth import synth_bars
from trader.live.decide import Decider
from trader.live.stream import StreamDecider
from trader.strategies import get_strategy

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("open", "high", "low", "close", "volume")
BUILTIN = (
    "sma_cross",
    "ema_cross",
    "donchian_breakout",
    "ts_momentum",
    "vol_breakout",
    "rsi_reversion",
    "bollinger_reversion",
)


def _rows(bars: pl.DataFrame) -> list[tuple[int, float, float, float, float, float]]:
    ts = bars["ts"].dt.epoch("ns").to_numpy()
    cols = [bars[c].to_numpy() for c in COLUMNS]
    return [(int(ts[k]), *(float(c[k]) for c in cols)) for k in range(bars.height)]  # type: ignore[misc]


def _step_us(stream: StreamDecider, history: pl.DataFrame, live: pl.DataFrame) -> dict[str, float]:
    stream.reset()
    stream.warm(history)
    rows = _rows(live)
    lat = np.empty(len(rows))
    clock = time.perf_counter_ns
    for k, row in enumerate(rows):
        t0 = clock()
        stream.step(*row)
        lat[k] = clock() - t0
    us = lat / 1000.0
    return {"p50": round(float(np.percentile(us, 50)), 2), "p99": round(float(np.percentile(us, 99)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, default=2_000, help="bars warmed before timing steps")
    parser.add_argument("--steps", type=int, default=5_000, help="bars stepped and timed")
    args = parser.parse_args()

    settings = load_settings([REPO / "configs/base.yaml", REPO / "configs/demo.yaml"], env={})
    regimes = load_settings(
        [REPO / "configs/base.yaml", REPO / "configs/demo.yaml"],
        ["composer.trend_bias=0.5", "composer.chop_bias=0.5", "composer.volatile_bias=-0.5"],
        env={},
    )
    bars = synth_bars("SYN000", "1m", "2021-01-04", "2021-05-28", seed=7)  # ~40,000 bars
    n_warm = 30_000
    history = bars.slice(0, args.history)
    live = bars.slice(args.history, args.steps)

    # compile (or load the cache) before timing anything
    for s in (settings, regimes):
        StreamDecider("SYN000", s).warm(bars.head(50))
        StreamDecider("SYN000", s).step(0, 1.0, 1.0, 1.0, 1.0, 1.0)

    step_us = {
        "composer_demo": _step_us(StreamDecider("SYN000", settings), history, live),
        "composer_demo_regimes": _step_us(StreamDecider("SYN000", regimes), history, live),
    }
    for name in BUILTIN:
        step_us[name] = _step_us(StreamDecider("SYN000", settings, strategy=name), history, live)

    warm_bars = bars.head(n_warm)
    warm_s: dict[str, float] = {}
    targets = np.zeros(0)
    for key, s in (("composer_demo", settings), ("composer_demo_regimes", regimes)):
        best = np.inf
        for _ in range(3):
            stream = StreamDecider("SYN000", s)
            t0 = time.perf_counter()
            out = stream.warm(warm_bars)
            best = min(best, time.perf_counter() - t0)
            if key == "composer_demo":
                targets = out
        warm_s[key] = round(best, 4)
    whole = Composer.from_settings(settings).target_weights(warm_bars)
    bit_exact = bool(np.array_equal(targets.view(np.int64), whole.view(np.int64)))

    recompute_ms: dict[str, float] = {}
    for kept in (1_000, 10_000):
        decider = Decider("SYN000", settings)
        decider.warm(bars.head(kept))
        decider.decide()
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            decider.decide()
            times.append(time.perf_counter() - t0)
        recompute_ms[str(kept)] = round(1000.0 * float(np.median(times)), 3)

    strategies = [
        {"name": spec.name, "params": dict(p)} for spec, p in Composer.from_settings(settings).strategies
    ]
    print(
        json.dumps(
            {
                "bars": {"history": args.history, "steps": args.steps, "warm": n_warm},
                "demo_strategies": strategies,
                "default_params": {n: get_strategy(n).defaults() for n in BUILTIN},
                "step_us": step_us,
                "warm_s": {f"{k}_{n_warm}": v for k, v in warm_s.items()},
                "recompute_ms": recompute_ms,
                "bit_exact": bit_exact,
                "target_step_us": 30,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
