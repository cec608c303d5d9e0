"""Out-of-sample results of a walk-forward run: stitching fold sleeves into a portfolio, and its summary.

Stitching rule (stated in the README): each symbol is traded as its own sleeve in each fold's test window. The
portfolio's return at bar t is the equal-weight mean of the returns of the sleeves that have a bar at t
(capital split equally and rebalanced every bar, costs inside each sleeve); when folds overlap (stride <
test_len, or CPCV), a bar is taken from the lowest-numbered fold that tests it. The benchmark is the same
equal-weight mean of each symbol's buy-and-hold return over the same bars. Equity starts at
``engine.initial_cash``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from trader.metrics import deflated_sharpe_ratio, sample_kurtosis, sample_skewness, summarize

__all__ = ["oos_summary", "stitch_equity", "trade_returns"]


def _first_fold_per_bar(returns: pl.DataFrame) -> pl.DataFrame:
    return returns.sort("fold").unique(subset=["ts", "symbol"], keep="first", maintain_order=True).sort("ts")


def stitch_equity(returns: pl.DataFrame, initial_cash: float) -> pl.DataFrame:
    """(ts, equity, benchmark, return, benchmark_return): the stitched OOS portfolio (module docstring).

    ``returns``: oos_returns rows (ts, symbol, fold, return, benchmark_return).
    """
    if returns.is_empty():
        return pl.DataFrame(
            schema={
                "ts": pl.Datetime("ns", "UTC"),
                "equity": pl.Float64,
                "benchmark": pl.Float64,
                "return": pl.Float64,
                "benchmark_return": pl.Float64,
            }
        )
    per_bar = (
        _first_fold_per_bar(returns)
        .group_by("ts")
        .agg(pl.col("return").mean(), pl.col("benchmark_return").mean())
        .sort("ts")
    )
    return per_bar.with_columns(
        equity=initial_cash * (1.0 + pl.col("return")).cum_prod(),
        benchmark=initial_cash * (1.0 + pl.col("benchmark_return")).cum_prod(),
    ).select("ts", "equity", "benchmark", "return", "benchmark_return")


def trade_returns(trades: pl.DataFrame) -> np.ndarray:
    """Returns of closed round trips (fractions, net of commission), per symbol, fold and test window.

    Trips follow :func:`trader.backtest.run`'s rule; in (symbol, fold, window, time) order.
    """
    from trader.tuning import round_trip_returns

    if trades.is_empty():
        return np.empty(0)
    keys = ["symbol", "fold", "segment"] if "segment" in trades.columns else ["symbol", "fold"]
    # A trip never spans folds or test windows: each window is simulated from flat.
    ordered = trades.sort([*keys, "ts"], maintain_order=True)
    group = ordered.select(pl.struct(keys).rank("dense")).to_series().to_numpy().astype(np.int64)
    signed = np.where(ordered["side"].to_numpy() == "buy", 1.0, -1.0) * ordered["qty"].to_numpy()
    return round_trip_returns(group, signed, ordered["price"].to_numpy(), ordered["commission"].to_numpy())


def _window_metrics(rets: np.ndarray, interval: str, n_trades: int) -> dict[str, Any]:
    m = summarize(rets, interval=interval)
    return {
        "sharpe": m["sharpe"],
        "total_return": m["total_return"],
        "max_drawdown": m["max_drawdown"],
        "cagr": m["cagr"],
        "n_trades": n_trades,
    }


def oos_summary(
    *,
    returns: pl.DataFrame,
    trades: pl.DataFrame,
    params: pl.DataFrame,
    plan_table: pl.DataFrame,
    failures: Sequence[Mapping[str, Any]],
    interval: str,
    initial_cash: float,
    n_trials: int,
) -> dict[str, Any]:
    """The metric parts of ``summary.json``: oos, benchmark, per_fold, per_symbol, dsr, failed_folds.

    ``n_trials``: configurations tried per fold (the grid size), for the deflated Sharpe ratio; the
    variance of trial Sharpe ratios is the mean over (fold, symbol) of the candidates' per-period train Sharpe
    variance.
    """
    stitched = stitch_equity(returns, initial_cash)
    port = stitched["return"].to_numpy()
    trips = trade_returns(trades)
    oos = summarize(port, interval=interval, trades=trips, initial_equity=initial_cash) if port.size else {}
    bench = summarize(stitched["benchmark_return"].to_numpy(), interval=interval) if port.size else {}

    failed_by_fold: dict[int, list[Mapping[str, Any]]] = {}
    for f in failures:
        failed_by_fold.setdefault(int(f["fold"]), []).append(f)
    per_fold = []
    tests = (
        plan_table.filter(pl.col("role") == "test")
        .group_by("fold")
        .agg(pl.col("start").min(), pl.col("end").max())
    )
    for fold, start, end in tests.sort("fold").iter_rows():
        sub = returns.filter(pl.col("fold") == fold)
        fold_port = sub.group_by("ts").agg(pl.col("return").mean()).sort("ts")["return"].to_numpy()
        # Closed round trips, as n_trades counts them in the oos and per-symbol metrics.
        n_trades = trade_returns(trades.filter(pl.col("fold") == fold)).size if trades.height else 0
        fails = failed_by_fold.get(int(fold), [])
        row: dict[str, Any] = {"fold": int(fold), "test_start": str(start), "test_end": str(end)}
        if fold_port.size:
            row.update(_window_metrics(fold_port, interval, n_trades))
            row["status"] = "ok" if not fails else "partial"
        else:
            row.update(
                {"sharpe": None, "total_return": None, "max_drawdown": None, "cagr": None, "n_trades": 0}
            )
            row["status"] = "failed"
        row["reason"] = "; ".join(f"{f['symbol']}: {f['reason']}" for f in fails) or None
        per_fold.append(row)

    per_symbol: dict[str, Any] = {}
    # One pass over each table (not a filter per symbol: runs hold hundreds of symbols).
    by_symbol = returns.partition_by("symbol", as_dict=True) if returns.height else {}
    trades_by = trades.partition_by("symbol", as_dict=True) if trades.height else {}
    for (symbol,), rows in sorted(by_symbol.items()):
        sub = _first_fold_per_bar(rows)
        sym_trades = trades_by.get((symbol,), trades.clear())
        m = summarize(sub["return"].to_numpy(), interval=interval, trades=trade_returns(sym_trades))
        m["benchmark_total_return"] = summarize(sub["benchmark_return"].to_numpy(), interval=interval)[
            "total_return"
        ]
        per_symbol[symbol] = m

    dsr: dict[str, Any] = {"n_trials": int(n_trials)}
    var_trials = params["trial_sharpe_var"].drop_nulls().mean() if params.height else None
    clean = port[np.isfinite(port)]
    if clean.size > 2 and var_trials is not None and n_trials > 1:
        sr = float(clean.mean() / clean.std(ddof=1)) if clean.std(ddof=1) > 0 else math.nan
        skew, kurt = sample_skewness(clean), sample_kurtosis(clean)
        dsr.update(
            sharpe_per_period=sr,
            var_trials=float(var_trials),
            skewness=skew,
            kurtosis=kurt,
            n_observations=int(clean.size),
            deflated_sharpe=deflated_sharpe_ratio(
                sr, n_trials, float(var_trials), int(clean.size), skew, kurt
            ),
        )
    else:
        dsr["deflated_sharpe"] = None
        dsr["note"] = "needs more than one configuration and more than two OOS returns"
    failed_folds = [
        {
            "fold": fold,
            "symbols": [f["symbol"] for f in fs],
            "reason": "; ".join(str(f["reason"]) for f in fs),
        }
        for fold, fs in sorted(failed_by_fold.items())
    ]
    return {
        "oos": oos,
        "benchmark": bench,
        "per_fold": per_fold,
        "per_symbol": per_symbol,
        "dsr": dsr,
        "failed_folds": failed_folds,
    }
