"""Our portfolio simulator against vectorbt's ``Portfolio.from_signals``: same signals, same fills, timed.

Runs in its own virtual environment (never the project's ``.venv``), from the repository root::

    python3.11 -m venv bench/.venv-vbt
    bench/.venv-vbt/bin/pip install -r bench/requirements-vectorbt.txt -e .
    bench/.venv-vbt/bin/python bench/vs_vectorbt.py            # --repeats N, --commission-bps X

Workload: the ``sma_cross`` strategy over a grid of 100 (fast, slow) pairs on 20 symbols of 5-year daily
synthetic bars (``synth_bars("SYN000".."SYN019", "1d", "2020-01-01", "2024-12-31", seed=7)``), i.e. 2,000
independent single-symbol, all-in/all-out long-only backtests. The strategy's weights are computed ONCE
(not timed); both simulators get the same decisions.

Semantics and how vectorbt is made to follow ours:

* Ours: a target weight decided at bar t's close fills at bar t+1's open; fractional shares; commission
  ``bps/1e4 * |notional|`` taken from cash (which may go negative); equity = cash + shares * close.
* vectorbt executes an order at ``price`` on the bar of the signal, so the entry/exit signals (edges of the
  0/1 weights, decided at t's close) are shifted one bar forward (the ``signals.vbt.fshift(1)`` advice in
  ``from_signals``' docstring) and ``price=open``: the order decided at t executes at t+1's open, and its
  portfolio value at every close is cash + shares * close, as ours. ``size=inf`` (all cash),
  ``size_type="amount"``, ``fees=bps/1e4``, ``direction="longonly"``, ``accumulate=False``,
  ``init_cash=100_000``, no stops, ``engine="numba"``.
* Sizing: vectorbt's all-cash buy spends exactly its cash, fee included: ``shares = cash / (open * (1 +
  fees))``. Our weight 1.0 buys ``shares = equity / open`` and pays the fee on margin (cash ends at
  ``-fees * notional``): an exposure of (1 + fees), so final equities differ by O(fees) per round trip. A
  long weight of ``1 / (1 + fees)`` reproduces vectorbt's size exactly (every entry starts flat, all cash),
  so the headline ``max_rel_diff_final_equity`` uses that weight; the weight-1.0 figure is reported too.

Our engine, two ways (both exact, both public API):

* ``batch`` (used for ``ours_s``): ONE ``trader.sim.simulate_many`` call; each of the 2,000 columns is an
  independent single-symbol portfolio with its own cash, exactly as if simulated alone.
* ``loop``: one ``trader.sim.simulate`` call per (symbol, pair) column, 2,000 calls (per-call overhead shown).

Prints ONE JSON object: runs, bars, vectorbt_s, ours_s, speed_ratio (vectorbt_s / ours_s),
max_rel_diff_final_equity, versions, plus the loop timing, a per-call profile of ``simulate`` and the
other agreement figures. Times are best of ``--repeats`` after a JIT warm-up of both engines; vectorbt's
time covers ``from_signals`` and ``final_value()``, ours every ``simulate`` call and the equity read-out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
import vectorbt as vbt

from trader.data.synth import synth_bars
from trader.sim import SimConfig, simulate, simulate_many
from trader.sim import portfolio as sim_portfolio
from trader.sim.kernel import simulate_kernel
from trader.strategies import get_strategy

SYMBOLS = [f"SYN{i:03d}" for i in range(20)]
START, END, SEED = "2020-01-01", "2024-12-31", 7
PAIRS = [(fast, slow) for fast in range(5, 55, 5) for slow in range(60, 260, 20)]  # 10 x 10 = 100
INITIAL_CASH = 100_000.0


def load_bars() -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """``(index, open, close)``: (T, symbols) float64 of every symbol, on one shared session index."""
    frames = [synth_bars(s, "1d", START, END, seed=SEED) for s in SYMBOLS]
    ts = frames[0]["ts"]
    if any(not f["ts"].equals(ts) for f in frames):
        raise SystemExit("synthetic symbols do not share sessions; the bench assumes aligned bars")
    open_ = np.column_stack([f["open"].to_numpy() for f in frames]).astype(np.float64)
    close = np.column_stack([f["close"].to_numpy() for f in frames]).astype(np.float64)
    index = pd.DatetimeIndex(ts.dt.replace_time_zone(None).to_numpy())
    return index, open_, close


def signals(close: np.ndarray) -> np.ndarray:
    """sma_cross weights (0/1), (T, symbols * pairs); column ``s * len(PAIRS) + p`` = symbol s, pair p."""
    spec = get_strategy("sma_cross")
    cols = [
        spec.run({"close": close[:, s]}, fast=fast, slow=slow)
        for s in range(close.shape[1])
        for fast, slow in PAIRS
    ]
    return np.column_stack(cols)


def best_of(repeats: int, fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    """Best wall time of ``repeats`` calls of ``fn`` and the last result."""
    best, out = float("inf"), np.empty(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# -- vectorbt -------------------------------------------------------------------------------------------


def vbt_inputs(
    index: pd.DatetimeIndex, open_: np.ndarray, close: np.ndarray, weights: np.ndarray
) -> dict[str, pd.DataFrame]:
    """Column-tiled prices and the signals shifted one bar forward (decided at t's close, done at t+1)."""
    n_pairs = len(PAIRS)
    columns = pd.MultiIndex.from_tuples(
        [(sym, fast, slow) for sym in SYMBOLS for fast, slow in PAIRS], names=["symbol", "fast", "slow"]
    )
    long = weights > 0.0
    before = np.vstack([np.zeros((1, long.shape[1]), dtype=bool), long[:-1]])
    decide_entry, decide_exit = long & ~before, ~long & before
    # fshift(1): the decision at row t becomes an order at row t+1; the last row's decision is dropped.
    entries = np.zeros_like(long)
    exits = np.zeros_like(long)
    entries[1:], exits[1:] = decide_entry[:-1], decide_exit[:-1]

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=index, columns=columns)

    return {
        "close": frame(np.repeat(close, n_pairs, axis=1)),
        "open": frame(np.repeat(open_, n_pairs, axis=1)),
        "entries": frame(entries),
        "exits": frame(exits),
    }


def run_vbt(inputs: dict[str, pd.DataFrame], fees: float) -> np.ndarray:
    """Final portfolio value of every column through ``Portfolio.from_signals``."""
    pf = vbt.Portfolio.from_signals(
        inputs["close"],
        entries=inputs["entries"],
        exits=inputs["exits"],
        price=inputs["open"],  # the (shifted) order executes at this bar's open
        size=np.inf,  # all available cash
        size_type="amount",
        fees=fees,  # fraction of the traded value
        fixed_fees=0.0,
        slippage=0.0,
        direction="longonly",
        accumulate=False,
        init_cash=INITIAL_CASH,
        cash_sharing=False,
        use_stops=False,
        freq="1D",
        engine="numba",
    )
    return np.asarray(pf.final_value(), dtype=np.float64)


# -- ours -----------------------------------------------------------------------------------------------


def run_loop(open_t: np.ndarray, close_t: np.ndarray, weights_t: np.ndarray, config: SimConfig) -> np.ndarray:
    """One ``simulate`` call per column; ``*_t`` are transposed (columns as contiguous rows)."""
    n_pairs = len(PAIRS)
    out = np.empty(weights_t.shape[0])
    for col in range(weights_t.shape[0]):
        s = col // n_pairs
        out[col] = simulate(open_t[s], close_t[s], weights_t[col], config=config).equity[-1]
    return out


def run_batch(open_: np.ndarray, close: np.ndarray, weights: np.ndarray, config: SimConfig) -> np.ndarray:
    """One ``simulate_many`` call: column ``s * len(PAIRS) + p`` trades symbol ``s`` with its own cash."""
    columns = np.arange(weights.shape[1]) // len(PAIRS)
    return simulate_many(open_, close, weights, columns=columns, config=config).equity[-1]


def profile_simulate(
    open_t: np.ndarray, close_t: np.ndarray, weights_t: np.ndarray, config: SimConfig
) -> dict[str, float]:
    """Mean microseconds per ``simulate`` call of the loop, by stage (the stages simulate() runs)."""
    n_pairs = len(PAIRS)
    stages = dict.fromkeys(
        ("check_inputs", "params_and_buffers", "kernel", "trades_frame", "events_frame"), 0.0
    )
    n = weights_t.shape[0]
    for col in range(n):
        s = col // n_pairs
        t0 = time.perf_counter()
        o, c, w = sim_portfolio._check_inputs(open_t[s], close_t[s], weights_t[col])
        t1 = time.perf_counter()
        n_bars, n_symbols = o.shape
        session = sim_portfolio._session_array(None, n_bars)
        vol = sim_portfolio._vol_array(None, c, None)
        params = sim_portfolio._params(config, None)
        equity, cash = np.empty(n_bars), np.empty(n_bars)
        positions, targets = np.empty((n_bars, n_symbols)), np.empty((n_bars, n_symbols))
        t2 = time.perf_counter()
        trades, events = simulate_kernel(o, c, w, session, vol, params, equity, cash, positions, targets)
        t3 = time.perf_counter()
        sim_portfolio._trades_frame(trades)
        t4 = time.perf_counter()
        sim_portfolio._events_frame(events)
        t5 = time.perf_counter()
        for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            stages[key] += dt
    per_call = {k: round(v / n * 1e6, 1) for k, v in stages.items()}
    per_call["total"] = round(sum(stages.values()) / n * 1e6, 1)
    return per_call


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per engine (best is kept)")
    parser.add_argument("--commission-bps", type=float, default=10.0, help="commission, basis points")
    args = parser.parse_args(argv)

    index, open_, close = load_bars()
    weights = signals(close)
    n_bars, n_runs = weights.shape
    fees = args.commission_bps / 1e4
    config = SimConfig(initial_cash=INITIAL_CASH, fractional_shares=True, commission_bps=args.commission_bps)

    inputs = vbt_inputs(index, open_, close, weights)
    open_t, close_t = np.ascontiguousarray(open_.T), np.ascontiguousarray(close.T)
    # vectorbt's all-cash buy pays its fee out of the cash: the equivalent target weight is 1 / (1 + fees).
    matched = weights / (1.0 + fees)
    matched_t = np.ascontiguousarray(matched.T)
    unit_t = np.ascontiguousarray(weights.T)

    # JIT warm-up of both engines (compilation or cache load), not timed.
    run_vbt(inputs, fees)
    run_batch(open_, close, matched[:, : len(PAIRS)], config)
    simulate(open_t[0], close_t[0], matched_t[0], config=config)

    vbt_s, vbt_final = best_of(args.repeats, lambda: run_vbt(inputs, fees))
    batch_s, batch_final = best_of(args.repeats, lambda: run_batch(open_, close, matched, config))
    loop_s, loop_final = best_of(args.repeats, lambda: run_loop(open_t, close_t, matched_t, config))
    unit_final = run_loop(open_t, close_t, unit_t, config)
    profile = profile_simulate(open_t, close_t, matched_t, config)
    kernel_only_s = profile["kernel"] * n_runs / 1e6

    versions = {
        name: metadata.version(name) for name in ("vectorbt", "trader", "numba", "numpy", "pandas", "polars")
    }
    versions["python"] = platform.python_version()
    report = {
        "runs": n_runs,
        "bars": n_bars,
        "vectorbt_s": round(vbt_s, 4),
        "ours_s": round(batch_s, 4),
        "speed_ratio": round(vbt_s / batch_s, 2),
        "max_rel_diff_final_equity": max_rel_diff(batch_final, vbt_final),
        "versions": versions,
        "ours_method": "batch: one simulate_many() call over the 2,000 columns, each with its own cash",
        "ours_loop_s": round(loop_s, 4),
        "speed_ratio_loop": round(vbt_s / loop_s, 2),
        "max_rel_diff_loop_vs_vectorbt": max_rel_diff(loop_final, vbt_final),
        "max_rel_diff_batch_vs_loop": max_rel_diff(batch_final, loop_final),
        "max_rel_diff_weight_1_vs_vectorbt": max_rel_diff(unit_final, vbt_final),
        "commission_bps": args.commission_bps,
        "loop_profile_us_per_call": profile,
        "loop_kernel_only_s": round(kernel_only_s, 4),
        "vectorbt_final_value_mean": round(float(vbt_final.mean()), 2),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
