"""Bandit replay figures. Prints one JSON object.

    .venv/bin/python bench/bandit.py [--symbols 500] [--start 2020-01-01] [--end 2024-12-31]

* ``replay_s``: :func:`trader.bandit.bandit_select` over every symbol of 5-year daily synthetic bars with the
  7 registered strategies as arms (default parameters), one core, after compilation: strategy targets,
  context features, rewards, the Thompson-sampling kernel and the decisions table. Target: under 10 s for
  500 symbols.
* ``decisions_per_s``: decisions made in that replay per wall second (``decision_every`` = 5 bars, the
  default; ``every_bar_*`` repeats it with a decision on every bar).
* ``kernel_us_per_decision``: the kernel alone (:func:`trader.bandit.thompson_replay`: one posterior draw
  per arm, then the conjugate update of every arm), microseconds per decision, for 7 arms and the default
  7-dimensional context; ``update_us_per_decision`` the same with draws over no arms' updates subtracted.
* ``setup_share``: the share of ``replay_s`` spent outside the kernel (strategies, features, frames).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("POLARS_MAX_THREADS", "1")

import numpy as np

from trader.bandit import BanditModel, bandit_select, decision_seeds, thompson_replay
from trader.config import StrategySpec, load_settings
from trader.data.synth import synth_bars, synth_symbol_names
from trader.strategies import STRATEGIES


def _replay(bars: list, arms: tuple, settings) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    decisions = 0
    for frame in bars:
        decisions += bandit_select(frame, arms, settings, start_index=50).decisions.height
    return time.perf_counter() - t0, decisions


def _kernel_us(rounds: int, arms: int, dim: int, *, learn: bool) -> float:
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(rounds), rng.uniform(0, 1, size=(rounds, dim - 1))])
    rewards = rng.normal(size=(rounds, arms))
    ready = np.arange(1, rounds + 1) if learn else np.full(rounds, rounds + 1)
    seeds = decision_seeds(0, "BENCH", np.arange(rounds))
    model = BanditModel(discount=0.99)
    thompson_replay(x[:10], rewards[:10], ready=ready[:10].clip(max=10), seeds=seeds[:10], model=model)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        thompson_replay(x, rewards, ready=ready, seeds=seeds, model=model)
        best = min(best, time.perf_counter() - t0)
    return best / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--start", default="2020-01-01")
    parser.add_argument("--end", default="2024-12-31")
    args = parser.parse_args()

    arms = tuple(StrategySpec(name=name) for name in sorted(STRATEGIES))
    settings = load_settings([], ["engine.rng_seed=1"], env={})
    every_bar = load_settings([], ["engine.rng_seed=1", "bandit.decision_every=1"], env={})
    t0 = time.perf_counter()
    bars = [synth_bars(s, "1d", args.start, args.end, seed=7) for s in synth_symbol_names(args.symbols)]
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bandit_select(bars[0], arms, settings, start_index=50)  # compile or load the cached kernels
    warm_s = time.perf_counter() - t0

    replay_s, decisions = _replay(bars, arms, settings)
    every_s, every_decisions = _replay(bars, arms, every_bar)
    kernel_us = _kernel_us(decisions, len(arms), 7, learn=True)
    draw_us = _kernel_us(decisions, len(arms), 7, learn=False)
    print(
        json.dumps(
            {
                "symbols": args.symbols,
                "arms": len(arms),
                "bars_per_symbol": bars[0].height,
                "decisions": decisions,
                "replay_s": round(replay_s, 3),
                "decisions_per_s": round(decisions / replay_s),
                "target_s": 10.0,
                "every_bar_decisions": every_decisions,
                "every_bar_replay_s": round(every_s, 3),
                "every_bar_decisions_per_s": round(every_decisions / every_s),
                "kernel_us_per_decision": round(kernel_us, 3),
                "draw_us_per_decision": round(draw_us, 3),
                "update_us_per_decision": round(kernel_us - draw_us, 3),
                "setup_share": round(1.0 - kernel_us * decisions / 1e6 / replay_s, 3),
                "first_call_s": round(warm_s, 3),
                "synth_s": round(synth_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
