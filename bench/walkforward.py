"""Walk-forward backtests on Ray at scale. Prints one JSON object.

    .venv/bin/python bench/walkforward.py --interval 1m --symbols 100 --cpus 1,2
    .venv/bin/python bench/walkforward.py --interval 1d --symbols 500 --cpus 1,2

Workload (issue #5): 5 years (2020-2024) of synthetic bars (``trader.data.synth``, seed 7) written once to a
local store under ``--store`` (reused when present), train 252 / test 63 / stride 63 / purge 5 sessions, the
demo composer with a 20-point parameter grid tuned on every train window. For each CPU count it runs the whole
job on a fresh embedded Ray cluster and reports: wall seconds (driver start to summary written, Ray start-up
included), task seconds (sum over tasks), peak RSS of any worker process and of the driver, and parallel
efficiency ``wall(1 cpu) / (n * wall(n cpus))``. Targets: 1m x 100 symbols under 120 s, 1d x 500 symbols
under 30 s (on 2 cores), worker RSS under 2 GB, efficiency above 75 % at 16 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_store(uri: str, interval: str, n_symbols: int) -> dict[str, Any]:
    """The 5-year synthetic store (seed 7), written once and reused."""
    from trader.data.synth import fill_synth_store

    return fill_synth_store(uri, interval, n_symbols, "2020-01-01", "2024-12-31", seed=7)


def run_once(store: str, interval: str, symbols: list[str], cpus: int, grid: int) -> dict[str, float]:
    from cluster.fanout import WalkForwardRequest, run_walkforward
    from trader.config import load_settings
    from trader.rundir import RunDir

    settings = load_settings(
        [REPO / "configs/base.yaml", REPO / "configs/demo.yaml"],
        [
            "walkforward.train_len=252",
            "walkforward.test_len=63",
            "walkforward.stride=63",
            "walkforward.purge=5",
            f"walkforward.grid_size={grid}",
            f"ray.num_cpus={cpus}",
        ],
        env={},
    )
    out = tempfile.mkdtemp(prefix=f"wf-bench-{interval}-{cpus}cpu-")
    try:
        t0 = time.perf_counter()
        summary = run_walkforward(
            WalkForwardRequest(tuple(symbols), None, None, None, {}, store, interval, out),
            settings,
            progress=False,
        )
        wall = time.perf_counter() - t0
        run = RunDir(out)
        outcomes = [run.read_json(p) for p in run.list("folds") if p.endswith("outcome.json")]
        return {
            "cpus": cpus,
            "wall_s": round(wall, 2),
            # setup (Ray start, planning), tasks, driver outputs; the report is the rest of wall_s
            "phases_s": summary["phases"],
            "task_s_sum": round(sum(o["seconds"] for o in outcomes), 2),
            "tasks": len(outcomes),
            "symbols_per_task": len(outcomes[0]["symbols"]) if outcomes else 0,
            "folds": summary["n_folds"],
            "worker_peak_rss_mb": max((o["worker_max_rss_mb"] for o in outcomes), default=0.0),
            "workers": len({o["worker_pid"] for o in outcomes}),
            "failed_folds": len(summary["failed_folds"]),
            "oos_sharpe": summary["oos"].get("sharpe"),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", default="1m", choices=["1m", "1d"])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--cpus", default="1,2", help="comma-separated CPU counts to run with")
    parser.add_argument("--grid", type=int, default=20, help="candidates tuned per fold")
    parser.add_argument("--store", default=str(REPO / "bench/.store-walkforward"), help="store folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache/bench"))

    built = build_store(args.store, args.interval, args.symbols)
    runs = [
        run_once(args.store, args.interval, built["symbols"], int(c), args.grid) for c in args.cpus.split(",")
    ]
    base = next((r for r in runs if r["cpus"] == 1), None)
    for r in runs:
        r["parallel_efficiency"] = round(base["wall_s"] / (r["cpus"] * r["wall_s"]), 3) if base else None
    report = {
        "interval": args.interval,
        "symbols": args.symbols,
        "grid": args.grid,
        "store_build_s": built["store_build_s"],
        "bars_written": built["bars_written"],
        "runs": runs,
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
