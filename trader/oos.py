"""Out-of-sample results of a walk-forward run: stitching fold sleeves into a portfolio, and its summary.

Stitching rule (stated in the README): each symbol is traded as its own sleeve in each fold's test window. The
portfolio's return at bar t is the equal-weight mean of the returns of the sleeves that have a bar at t
(capital split equally and rebalanced every bar, costs inside each sleeve); when folds overlap (stride <
test_len, or CPCV), a bar is taken from the lowest-numbered fold that tests it (the mean over that fold's
sleeves). The benchmark is the same equal-weight mean of each symbol's buy-and-hold return over the same bars.
Equity starts at ``engine.initial_cash``.

CPCV paths (:func:`cpcv_paths`): the stitched history above is one path-agnostic series. Combinatorial purged
CV instead yields ``C(N-1, k-1)`` backtest paths (AFML ch. 12), each a full out-of-sample history: path ``j``
takes, for every group ``g``, the portfolio returns of the fold the plan assigns to ``(j, g)``, restricted to
that group's sessions. Each path gets its own metrics, and the spread of path Sharpe ratios is the
distribution of out-of-sample performance that CPCV is for.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from trader.errors import DataError, SchemaError
from trader.metrics import deflated_sharpe_ratio, sample_kurtosis, sample_skewness, summarize, total_return

__all__ = [
    "PATH_PERCENTILES",
    "CPCVPaths",
    "cpcv_paths",
    "distribution",
    "fold_means",
    "oos_summary",
    "stitch_equity",
    "trade_returns",
]


Frame = pl.DataFrame | pl.LazyFrame
# Per-symbol metrics read a source of at most this many rows whole (then split it), else filter per symbol.
# A walk-forward task holds at most cluster.fanout.MAX_TASK_BARS (5 M) bars, and its OOS rows are fewer, so
# a task batch's rows (about 40 bytes each, twice while split) are read once rather than once per symbol;
# only the batch being summarised is held.
_LOAD_WHOLE_ROWS = 5_000_000


def _lazy(frame: Frame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


_STITCHED_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "equity": pl.Float64,
    "benchmark": pl.Float64,
    "return": pl.Float64,
    "benchmark_return": pl.Float64,
}


def fold_means(returns: Frame) -> pl.DataFrame:
    """(ts, fold, return, benchmark_return) sorted by ts then fold: per bar and fold, the mean over the
    sleeves. One row per bar and fold whatever the number of symbols; the stitched portfolio and the per-fold
    metrics both derive from it, so a run's returns are aggregated once."""
    return (
        _lazy(returns)
        .group_by("ts", "fold")
        .agg(pl.col("return").mean(), pl.col("benchmark_return").mean())
        .sort("ts", "fold")
        .collect(engine="streaming")
    )


def _per_bar_means(returns: Frame, means: pl.DataFrame | None = None) -> pl.DataFrame:
    """(ts, return, benchmark_return): per bar, the mean over the sleeves of the lowest fold testing it."""
    means = fold_means(returns) if means is None else means
    return means.group_by("ts", maintain_order=True).first().select("ts", "return", "benchmark_return")


def _symbol_series(rows: Frame) -> pl.DataFrame:
    """(ts, return, benchmark_return) of one symbol: per bar, the row of the lowest fold testing it.

    A symbol has one row per bar and fold, so this is :func:`_per_bar_means` without the aggregation: a sort
    and a first-row mask, about 10x cheaper on a symbol's five years of minute bars.
    """
    ordered = _lazy(rows).select("ts", "fold", "return", "benchmark_return").sort("ts", "fold").collect()
    ts = ordered["ts"].to_physical().to_numpy()
    if ts.size > 1 and not bool(np.all(ts[1:] != ts[:-1])):  # overlapping test windows (CPCV)
        ordered = ordered.filter(pl.Series(np.r_[True, ts[1:] != ts[:-1]]))
    return ordered.select("ts", "return", "benchmark_return")


def stitch_equity(
    returns: Frame | None, initial_cash: float, *, means: pl.DataFrame | None = None
) -> pl.DataFrame:
    """(ts, equity, benchmark, return, benchmark_return): the stitched OOS portfolio (module docstring).

    ``returns``: oos_returns rows (ts, symbol, fold, return, benchmark_return), a DataFrame or a LazyFrame
    (e.g. a scan of every task's file; it is aggregated without being loaded whole); or ``means``, their
    :func:`fold_means` when the caller has them.
    """
    if means is None and returns is None:
        raise ValueError("stitch_equity needs returns or their fold_means")
    per_bar = _per_bar_means(returns if returns is not None else pl.DataFrame(), means)
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


# -- CPCV paths ----------------------------------------------------------------------------------------------

#: Percentiles of the path metrics reported in ``summary["paths"]`` (linear interpolation, numpy's default).
PATH_PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)
# Per-path metrics kept from trader.metrics.summarize (trade statistics need trips per path: not computed).
_PATH_METRICS = (
    "n_periods",
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "psr",
)
# Metrics whose spread across paths is summarised (mean, std, min, max, percentiles).
_DISTRIBUTION_METRICS = ("sharpe", "cagr", "max_drawdown")
_PATH_SERIES_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "path": pl.Int64,
    "group": pl.Int64,
    "fold": pl.Int64,
    "return": pl.Float64,
    "equity": pl.Float64,
}
_PATHS_TABLE_COLUMNS = ("path", "group", "fold", "start", "end")


@dataclass(frozen=True)
class CPCVPaths:
    """The backtest paths of a CPCV run: ``summary`` (JSON-ready, ``summary.json["paths"]``) and ``series``.

    ``series``: one row per (path, bar), sorted by path then ts: ``ts`` (UTC), ``path``, ``group``, ``fold``
    (the split whose test returns the path takes for that group), ``return`` (per-bar portfolio return,
    fraction) and ``equity`` (account currency, from ``initial_cash``). :attr:`equity` is what the run writes
    as ``paths_equity.parquet``.
    """

    summary: dict[str, Any]
    series: pl.DataFrame

    @property
    def equity(self) -> pl.DataFrame:
        """(ts, path, equity): each path's equity curve, sorted by path then ts."""
        return self.series.select("ts", "path", "equity")


def _session_day(interval: str, tz: str) -> pl.Expr:
    # The rule of trader.walkforward.session_dates: daily bars carry their session date at 00:00 UTC,
    # intraday bars belong to the session of their local date in the exchange time zone.
    if interval == "1d":
        return pl.col("ts").dt.convert_time_zone("UTC").dt.date()
    return pl.col("ts").dt.convert_time_zone(tz).dt.date()


def distribution(values: np.ndarray) -> dict[str, float | int]:
    """Mean, sample std (ddof=1), min, max and :data:`PATH_PERCENTILES` of the finite ``values``."""
    finite = values[np.isfinite(values)]
    out: dict[str, float | int] = {"n": int(finite.size)}
    if finite.size == 0:
        out.update(mean=math.nan, std=math.nan, min=math.nan, max=math.nan)
        out.update({f"p{q}": math.nan for q in PATH_PERCENTILES})
        return out
    out.update(
        mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
        min=float(finite.min()),
        max=float(finite.max()),
    )
    for q, v in zip(PATH_PERCENTILES, np.percentile(finite, PATH_PERCENTILES), strict=True):
        out[f"p{q}"] = float(v)
    return out


def cpcv_paths(
    returns: Frame,
    paths_table: pl.DataFrame,
    *,
    interval: str,
    initial_cash: float,
    tz: str = "America/New_York",
) -> CPCVPaths | None:
    """Each CPCV backtest path's OOS portfolio series and metrics, and their distribution; None without paths.

    ``returns``: oos_returns rows (ts, symbol, fold, return; a DataFrame or a LazyFrame over many files: it
    is reduced per (bar, fold) while streaming, so memory is one row per bar and path whatever the number
    of symbols). ``paths_table``: :attr:`trader.walkforward.FoldPlan.paths_table` (path, group, fold,
    segment, start, end; inclusive session dates). A walk-forward plan has an empty paths table: ``None``.

    Path ``j``'s return at bar t, for t in group g's sessions, is the equal-weight mean over the sleeves of
    fold ``paths[j][g]`` that have a bar at t (the stitching rule of the module docstring, with the fold
    fixed by the path instead of "lowest fold wins"). Bars are assigned to sessions as
    :func:`trader.walkforward.session_dates` does (``tz``: the exchange time zone, intraday bars only).

    ``summary`` holds ``n_paths``, ``n_groups``, ``per_path`` (one dict per path: ``path``, ``start``/``end``
    (first/last bar, UTC ISO), ``folds`` (fold per group), ``missing_groups`` (groups without any return,
    e.g. a failed fold), and metrics from :func:`trader.metrics.summarize` at ``interval``: Sharpe and
    Sortino annualised, returns and drawdowns as fractions, ``n_periods`` in bars), the distribution of
    ``sharpe``, ``cagr`` and ``max_drawdown`` across paths (``n``, ``mean``, ``std`` (sample, ddof=1),
    ``min``, ``max``, ``p5``..``p95``; non-finite path values left out), ``frac_sharpe_le_0`` (share of
    paths with a finite Sharpe <= 0) and ``median_path`` (the path whose Sharpe is the median; the lower
    one for an even count).

    Example::

        import polars as pl
        from trader.oos import cpcv_paths
        from trader.walkforward import FoldPlan

        plan = FoldPlan.from_table(pl.read_parquet("runs/cv/fold_plan.parquet"))
        res = cpcv_paths(pl.scan_parquet("runs/cv/oos_returns.parquet"), plan.paths_table,
                         interval="1d", initial_cash=100_000.0)
        print(res.summary["sharpe"]["p50"], res.summary["frac_sharpe_le_0"])
    """
    if paths_table.is_empty():
        return None
    absent = [c for c in _PATHS_TABLE_COLUMNS if c not in paths_table.columns]
    if absent:
        raise SchemaError(
            f"cpcv_paths: paths_table lacks column(s) {', '.join(absent)}; pass plan.paths_table"
        )
    assign = paths_table.select(
        pl.col("path", "group", "fold").cast(pl.Int64), pl.col("start", "end").cast(pl.Date)
    )
    series = (
        _lazy(returns)
        .group_by("ts", "fold")
        .agg(pl.col("return").mean())
        .with_columns(_session_day(interval, tz).alias("_day"))
        # A fold tests k groups, so a (bar, fold) row meets k (path, group) rows; the dates keep one.
        .join(assign.lazy(), on="fold", how="inner")
        .filter(pl.col("_day").is_between(pl.col("start"), pl.col("end")))
        .select("ts", "path", "group", "fold", "return")
        .sort("path", "ts")
        .collect(engine="streaming")
    )
    if series.select(pl.struct("path", "ts").is_duplicated().any()).item():
        raise DataError(
            "cpcv_paths: a path takes two returns for one bar; its groups overlap (not a CPCV plan)"
        )
    # A NaN return is a bar without a return: it neither compounds nor counts (summarize drops it too).
    series = series.with_columns(
        equity=initial_cash * (1.0 + pl.col("return").fill_nan(0.0)).cum_prod().over("path")
    ).select(list(_PATH_SERIES_SCHEMA))

    paths = sorted(assign["path"].unique().to_list())
    groups = sorted(assign["group"].unique().to_list())
    folds_of = {
        p: dict(zip(rows["group"].to_list(), rows["fold"].to_list(), strict=True))
        for (p,), rows in assign.partition_by("path", as_dict=True).items()
    }
    by_path = series.partition_by("path", as_dict=True) if series.height else {}
    per_path = []
    for j in paths:
        rows = by_path.get((j,))
        rets = rows["return"].to_numpy() if rows is not None else np.empty(0)
        covered = set(rows["group"].unique().to_list()) if rows is not None else set()
        m = summarize(rets, interval=interval, initial_equity=initial_cash)
        per_path.append(
            {
                "path": int(j),
                "start": rows["ts"][0].isoformat() if rows is not None else None,
                "end": rows["ts"][-1].isoformat() if rows is not None else None,
                "folds": [int(folds_of[j][g]) for g in groups if g in folds_of[j]],
                "missing_groups": [int(g) for g in groups if g not in covered],
                **{k: m[k] for k in _PATH_METRICS},
            }
        )
    sharpes = np.array([p["sharpe"] for p in per_path], dtype=np.float64)
    finite = np.isfinite(sharpes)
    median_path = None
    if finite.any():
        ranked = sorted((float(sharpes[i]), per_path[i]["path"]) for i in np.flatnonzero(finite))
        median_path = ranked[(len(ranked) - 1) // 2][1]
    summary: dict[str, Any] = {
        "n_paths": len(paths),
        "n_groups": len(groups),
        **{
            key: distribution(np.array([p[key] for p in per_path], dtype=np.float64))
            for key in _DISTRIBUTION_METRICS
        },
        "frac_sharpe_le_0": float(np.mean(sharpes[finite] <= 0.0)) if finite.any() else math.nan,
        "median_path": median_path,
        "per_path": per_path,
    }
    return CPCVPaths(summary=summary, series=series)


def _window_metrics(rets: np.ndarray, interval: str, n_trades: int) -> dict[str, Any]:
    m = summarize(rets, interval=interval)
    return {
        "sharpe": m["sharpe"],
        "total_return": m["total_return"],
        "max_drawdown": m["max_drawdown"],
        "cagr": m["cagr"],
        "n_trades": n_trades,
    }


def _symbol_jobs(
    source: tuple[Frame, Frame] | None, names: list[str], returns: pl.LazyFrame, trades: pl.LazyFrame,
    trip_cols: list[str],
) -> list[tuple[Frame, Frame]]:  # fmt: skip
    """(returns, fills) of each of ``names`` from one source (or the whole run's tables)."""
    sym_returns, sym_trades = (_lazy(x) for x in source) if source else (returns, trades)
    # A small source (a task batch) is read once and split; a large one is filtered per symbol.
    if sym_returns.select(pl.len()).collect().item() > _LOAD_WHOLE_ROWS:
        return [
            (
                sym_returns.filter(pl.col("symbol") == s),
                sym_trades.filter(pl.col("symbol") == s).select(trip_cols),
            )
            for s in names
        ]
    split = sym_returns.collect().partition_by("symbol", as_dict=True)
    fills = sym_trades.select(trip_cols).collect().partition_by("symbol", as_dict=True)
    empty_rows = pl.DataFrame(schema=sym_returns.collect_schema())
    empty_fills = pl.DataFrame(schema=trades.collect_schema())
    return [(split.get((s,), empty_rows), fills.get((s,), empty_fills)) for s in names]


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
    paths: CPCVPaths | None = None,
    means: pl.DataFrame | None = None,
    trades_by_fold: Mapping[int, Frame] | None = None,
) -> dict[str, Any]:
    """The metric parts of ``summary.json``: oos, benchmark, per_fold, per_symbol, dsr, failed_folds, paths.

    ``returns`` and ``trades`` may be LazyFrames over many files: only per-bar aggregates, one fold's trades
    and one symbol's rows are in memory at a time. ``by_symbol`` optionally maps each symbol to cheaper
    (returns, trades) sources of its own rows (default: filters of ``returns`` and ``trades``).
    ``n_trials``: configurations tried per fold (the grid size), for the deflated Sharpe ratio; the
    variance of trial Sharpe ratios is the mean over (fold, symbol) of the candidates' per-period train Sharpe
    variance. ``paths``: the run's CPCV paths from :func:`cpcv_paths` (computed once by the caller, which
    also writes their equity curves); ``summary["paths"]`` is its summary, ``None`` for walk-forward runs.
    ``means``: the returns' :func:`fold_means`, when the caller has them (computed here otherwise).
    ``trades_by_fold``: optionally, each fold's trades as a cheaper source than filtering ``trades`` (a scan
    of that fold's files only).
    """
    returns, trades = _lazy(returns), _lazy(trades)
    means = fold_means(returns) if means is None else means
    stitched = stitch_equity(None, initial_cash, means=means)
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
    by_fold = means.sort("fold", "ts")
    fold_rows = by_fold.partition_by("fold", as_dict=True) if by_fold.height else {}
    fold_trips: list[np.ndarray] = []
    for fold, start, end in tests.sort("fold").iter_rows():
        rows = fold_rows.get((fold,))
        fold_port = rows["return"].to_numpy() if rows is not None else np.empty(0)
        # One fold's fills at a time; closed round trips, as n_trades counts them in the other metrics.
        source = trades_by_fold.get(int(fold)) if trades_by_fold is not None else None
        fold_fills = _lazy(source).select(trip_cols) if source is not None else trades
        fold_trips.append(trade_returns(fold_fills.filter(pl.col("fold") == fold)))
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

    symbols = sorted(returns.select(pl.col("symbol").unique()).collect()["symbol"].to_list())
    # Source by source (a task batch, read once), symbols in order within one.
    groups: dict[int, tuple[Any, list[str]]] = {}
    for symbol in symbols:
        source = by_symbol.get(symbol) if by_symbol is not None else None
        groups.setdefault(id(source) if source else 0, (source, []))[1].append(symbol)

    def symbol_metrics(rows_in: Frame, fills: Frame) -> dict[str, float]:
        rows = _symbol_series(rows_in)
        m = summarize(rows["return"].to_numpy(), interval=interval, trades=trade_returns(fills))
        m["benchmark_total_return"] = total_return(rows["benchmark_return"].to_numpy())
        return m

    per_symbol: dict[str, Any] = {}
    # numpy and polars release the GIL on a symbol's long arrays: a few threads use the cores the finished
    # tasks left idle. Only one source's rows are held at a time: memory stays flat in the number of symbols.
    with concurrent.futures.ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
        for source, names in groups.values():
            work = _symbol_jobs(source, names, returns, trades, trip_cols)
            for symbol, m in zip(names, pool.map(lambda job: symbol_metrics(*job), work), strict=True):
                per_symbol[symbol] = m
            del work
    per_symbol = dict(sorted(per_symbol.items()))

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
        "paths": paths.summary if paths is not None else None,
    }
