"""Out-of-sample results of a walk-forward run: stitching fold sleeves into a portfolio, and its summary.

Stitching rule (stated in the README): each symbol is traded as its own sleeve in each fold's test window. The
portfolio's return at bar t is the equal-weight mean of the returns of the sleeves that have a bar at t
(capital split equally and rebalanced every bar, costs inside each sleeve); when folds overlap (stride <
test_len, or CPCV), a bar is taken from the lowest-numbered fold that tests it (the mean over that fold's
sleeves). The benchmark is the same equal-weight mean of each symbol's buy-and-hold return over the same bars.
Equity starts at ``engine.initial_cash``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from trader.metrics import deflated_sharpe_ratio, sample_kurtosis, sample_skewness, summarize

__all__ = ["oos_summary", "stitch_equity", "trade_returns"]


Frame = pl.DataFrame | pl.LazyFrame
# Per-symbol metrics read a source of at most this many rows whole (then split it), else filter per symbol.
_LOAD_WHOLE_ROWS = 2_000_000


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


_STITCHED_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "equity": pl.Float64,
    "benchmark": pl.Float64,
    "return": pl.Float64,
    "benchmark_return": pl.Float64,
}


def _per_bar_means(returns: Frame) -> pl.DataFrame:
    """(ts, return, benchmark_return): per bar, the mean over the sleeves of the lowest fold testing it.

    Aggregates per (ts, fold) first, so memory is one row per bar and fold whatever the number of symbols.
    """
    return (
        _lazy(returns)
        .group_by("ts", "fold")
        .agg(pl.col("return").mean(), pl.col("benchmark_return").mean())
        .sort("ts", "fold")
        .group_by("ts", maintain_order=True)
        .first()
        .select("ts", "return", "benchmark_return")
        .collect(engine="streaming")
    )


def stitch_equity(returns: Frame, initial_cash: float) -> pl.DataFrame:
    """(ts, equity, benchmark, return, benchmark_return): the stitched OOS portfolio (module docstring).

    ``returns``: oos_returns rows (ts, symbol, fold, return, benchmark_return), a DataFrame or a LazyFrame
    (e.g. a scan of every task's file; it is aggregated without being loaded whole).
    """
    per_bar = _per_bar_means(returns)
    if per_bar.is_empty():
        return pl.DataFrame(schema=_STITCHED_SCHEMA)
    return per_bar.with_columns(
        equity=initial_cash * (1.0 + pl.col("return")).cum_prod(),
        benchmark=initial_cash * (1.0 + pl.col("benchmark_return")).cum_prod(),
    ).select(list(_STITCHED_SCHEMA))


def trade_returns(trades: Frame) -> np.ndarray:
    """Returns of closed round trips (fractions, net of commission), per symbol, fold and test window.

    Trips follow :func:`trader.backtest.run`'s rule; in (symbol, fold, window, time) order.
    """
    from trader.tuning import round_trip_returns

    trades = trades.collect() if isinstance(trades, pl.LazyFrame) else trades
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
    returns: Frame,
    trades: Frame,
    params: pl.DataFrame,
    plan_table: pl.DataFrame,
    failures: Sequence[Mapping[str, Any]],
    interval: str,
    initial_cash: float,
    n_trials: int,
    by_symbol: Mapping[str, tuple[Frame, Frame]] | None = None,
) -> dict[str, Any]:
    """The metric parts of ``summary.json``: oos, benchmark, per_fold, per_symbol, dsr, failed_folds.

    ``returns`` and ``trades`` may be LazyFrames over many files: only per-bar aggregates, one fold's trades
    and one symbol's rows are in memory at a time. ``by_symbol`` optionally maps each symbol to cheaper
    (returns, trades) sources of its own rows (default: filters of ``returns`` and ``trades``).
    ``n_trials``: configurations tried per fold (the grid size), for the deflated Sharpe ratio; the
    variance of trial Sharpe ratios is the mean over (fold, symbol) of the candidates' per-period train Sharpe
    variance.
    """
    returns, trades = _lazy(returns), _lazy(trades)
    stitched = stitch_equity(returns, initial_cash)
    port = stitched["return"].to_numpy()
    trip_cols = ["ts", "symbol", "fold", "side", "qty", "price", "commission"]
    if "segment" in trades.collect_schema().names():
        trip_cols.append("segment")
    trades = trades.select(trip_cols)
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
    fold_means = (
        returns.group_by("fold", "ts")
        .agg(pl.col("return").mean())
        .sort("fold", "ts")
        .collect(engine="streaming")
    )
    fold_rows = fold_means.partition_by("fold", as_dict=True) if fold_means.height else {}
    fold_trips: list[np.ndarray] = []
    for fold, start, end in tests.sort("fold").iter_rows():
        rows = fold_rows.get((fold,))
        fold_port = rows["return"].to_numpy() if rows is not None else np.empty(0)
        # One fold's fills at a time; closed round trips, as n_trades counts them in the other metrics.
        fold_trips.append(trade_returns(trades.filter(pl.col("fold") == fold)))
        n_trades = fold_trips[-1].size
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

    trips = np.concatenate(fold_trips) if fold_trips else np.empty(0)
    oos = summarize(port, interval=interval, trades=trips, initial_equity=initial_cash) if port.size else {}

    per_symbol: dict[str, Any] = {}
    symbols = sorted(returns.select(pl.col("symbol").unique()).collect()["symbol"].to_list())
    loaded: dict[int, tuple[dict[Any, pl.DataFrame], dict[Any, pl.DataFrame]] | None] = {}
    for symbol in symbols:
        source = by_symbol.get(symbol) if by_symbol is not None else None
        sym_returns, sym_trades = (_lazy(x) for x in source) if source else (returns, trades)
        # A small source (a daily batch) is read once and split by symbol; a large one is filtered per symbol.
        key = id(source) if source else 0
        if key not in loaded:
            small = sym_returns.select(pl.len()).collect().item() <= _LOAD_WHOLE_ROWS
            loaded[key] = (
                (
                    sym_returns.collect().partition_by("symbol", as_dict=True),
                    sym_trades.select(trip_cols).collect().partition_by("symbol", as_dict=True),
                )
                if small
                else None
            )
        parts = loaded[key]
        if parts is not None:
            rows_in = parts[0].get((symbol,), pl.DataFrame(schema=sym_returns.collect_schema()))
            fills = parts[1].get((symbol,), pl.DataFrame(schema=trades.collect_schema()))
        else:
            rows_in = sym_returns.filter(pl.col("symbol") == symbol)
            fills = sym_trades.filter(pl.col("symbol") == symbol).select(trip_cols)
        rows = _per_bar_means(rows_in)
        m = summarize(rows["return"].to_numpy(), interval=interval, trades=trade_returns(fills))
        m["benchmark_total_return"] = summarize(rows["benchmark_return"].to_numpy(), interval=interval)[
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
