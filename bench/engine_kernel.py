"""Benchmark the portfolio kernel: bar-symbol steps per second on one core, after compilation.

Prints ONE JSON object:

    NUMBA_CACHE_DIR=.numba_cache python bench/engine_kernel.py            # default shapes
    python bench/engine_kernel.py --repeats 7 --skip-cache-check

Cases (all on the plain path: no risk limits, so no rule fires; fractional shares, costs on):

* ``static_*``: weights set once (equal weight from the first decision) - the loop marks to market and
  checks targets every bar, trading once.
* ``rebalance_*``: every weight moves a little (+-1 %) on every bar - every symbol trades every bar, the
  worst case for the fill path.
* ``risk_*``: the same rebalancing weights with every limit of the default settings switched on (not the
  plain path; shown for the price of the rules).

Shapes: 1,260 bars x 500 symbols (5 years of daily bars for an index) and 490,000 bars x 1 symbol (about
5 years of 1-minute bars). ``kernel_steps_per_s`` is bars x symbols / best wall time of the compiled kernel
over ``--repeats`` runs; ``simulate_steps_per_s`` is the same for the whole ``simulate`` call (input checks,
output frames).

The cache check runs two fresh Python processes against an empty temporary ``NUMBA_CACHE_DIR``: the
first compiles and writes the cache, the second must load it (``cache_misses == 0``); each reports the
seconds of its first ``simulate`` call (import excluded).
"""

from __future__ import annotations

import os

os.environ["NUMBA_NUM_THREADS"] = "1"  # one core: set before numba is imported

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from trader.config import Settings
from trader.risk import RiskLimits, trailing_vol
from trader.sim import SimConfig, simulate
from trader.sim.kernel import simulate_kernel
from trader.sim.portfolio import _params

REPO = Path(__file__).resolve().parents[1]
CONFIG = SimConfig(
    initial_cash=1e7, commission_bps=1.0, commission_per_share=0.005, min_commission=1.0, slippage_bps=5.0
)

_FIRST_CALL = """
import json, time
import numpy as np
from trader.sim import SimConfig, simulate
from trader.sim.kernel import simulate_kernel
px = np.linspace(100.0, 110.0, 50)
t0 = time.perf_counter()
simulate(px, px, np.ones(50), config=SimConfig())
first = time.perf_counter() - t0
stats = simulate_kernel.stats
print(json.dumps({"first_call_s": round(first, 4), "cache_hits": sum(stats.cache_hits.values()),
                  "cache_misses": sum(stats.cache_misses.values())}))
"""


def prices(n_bars: int, n_symbols: int, seed: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Random-walk opens and closes, (n_bars, n_symbols) float64; ``sigma`` is the per-bar log-return sd."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, (n_bars, n_symbols)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.002, (n_bars, n_symbols)))
    return np.ascontiguousarray(open_), np.ascontiguousarray(close)


def timed(
    open_: np.ndarray, close: np.ndarray, weights: np.ndarray, limits: RiskLimits | None, repeats: int
) -> dict:
    """Best-of-``repeats`` seconds of the compiled kernel alone and of the whole ``simulate`` call."""
    result = simulate(open_, close, weights, config=CONFIG, limits=limits)  # compile (or load the cache)
    n_bars, n_symbols = weights.shape
    session = np.arange(n_bars, dtype=np.int64)
    vol = trailing_vol(close, 20, 252.0) if limits is not None else np.zeros((1, 1))
    outs = (np.empty(n_bars), np.empty(n_bars), np.empty((n_bars, n_symbols)), np.empty((n_bars, n_symbols)))
    params = _params(CONFIG, limits)
    best_kernel = best_call = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        simulate_kernel(open_, close, weights, session, vol, params, *outs)
        best_kernel = min(best_kernel, time.perf_counter() - t0)
        t0 = time.perf_counter()
        simulate(open_, close, weights, config=CONFIG, limits=limits)
        best_call = min(best_call, time.perf_counter() - t0)
    return {
        "bars": n_bars,
        "symbols": n_symbols,
        "kernel_s": round(best_kernel, 5),
        "kernel_steps_per_s": round(weights.size / best_kernel),
        "simulate_s": round(best_call, 5),
        "simulate_steps_per_s": round(weights.size / best_call),
        "trades": result.trades.height,
        "events": result.events.height,
    }


def cases(repeats: int) -> dict:
    out = {}
    # Every default limit on; drawdown and daily loss made unreachable so the run keeps trading.
    risk = Settings().risk.model_copy(update={"max_drawdown": 1.0, "daily_loss_limit": 1.0})
    limits = RiskLimits.from_settings(risk)
    for n_bars, n_symbols in ((1_260, 500), (490_000, 1)):
        open_, close = prices(n_bars, n_symbols, seed=n_symbols, sigma=0.01 if n_bars < 10_000 else 0.0005)
        static = np.full((n_bars, n_symbols), 1.0 / n_symbols)
        rng = np.random.default_rng(7)
        # A small fresh move of every weight on every bar: every symbol trades every bar.
        moving = (1.0 + rng.uniform(-0.01, 0.01, (n_bars, n_symbols))) / n_symbols
        shape = f"{n_bars}x{n_symbols}"
        out[f"static_{shape}"] = timed(open_, close, static, None, repeats)
        out[f"rebalance_{shape}"] = timed(open_, close, moving, None, repeats)
        out[f"risk_{shape}"] = timed(open_, close, moving, limits, repeats)
    return out


def cache_check() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "NUMBA_NUM_THREADS": "1"}
        runs = []
        for _ in range(2):
            proc = subprocess.run(
                [sys.executable, "-c", _FIRST_CALL],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {"cold_process": runs[0], "warm_process": runs[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case; the best is kept")
    parser.add_argument("--skip-cache-check", action="store_true", help="skip the two fresh-process runs")
    args = parser.parse_args()
    report = {"numba_num_threads": int(os.environ["NUMBA_NUM_THREADS"]), "cases": cases(args.repeats)}
    if not args.skip_cache_check:
        report["cache"] = cache_check()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
