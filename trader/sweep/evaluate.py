"""One sweep trial's walk-forward evaluation, in pieces that fan out and add up.

A trial is a settings variant (:func:`trader.sweep.space.trial_settings`). Its evaluation is the walk-forward
run of those settings: every fold tuned on its train window (``walkforward.grid_size`` candidates around
the trial's configuration; 1 = the configuration as is) and traded on its test window, each symbol a sleeve
of ``initial_cash / N``, exactly as ``trader backtest`` does. To fan out, a (fold group, symbol batch) piece
returns :class:`FoldPartial` sums per fold (never bars); the driver adds the pieces of a fold up with
:func:`merge_partials`, scores the folds finished so far with :func:`score_folds` (the running value the
pruner sees) and the whole trial at the end.

The portfolio's OOS return at a bar is the equal-weight mean over the sleeves that have the bar, and where
folds overlap the lowest fold wins, as in :func:`trader.oos.stitch_equity`; so a trial's score equals the
score ``trader backtest`` reports for the same settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from trader.composer import composite_score
from trader.metrics import summarize

__all__ = [
    "FoldPartial",
    "evaluate_pieces",
    "merge_partials",
    "path_sharpes",
    "score_folds",
    "stitch_partials",
]


@dataclass
class FoldPartial:
    """One fold's out-of-sample sums over some sleeves (a symbol batch, or every batch once merged).

    ``ts``: bar times (int64 ns UTC, ascending) with at least one sleeve; ``ret_sum``/``bench_sum``: the
    sleeves' per-bar returns (fractions) and buy-and-hold returns added up; ``count``: sleeves per bar;
    ``trips``: closed round-trip returns (fractions, net of commission); ``failures``: symbols that could not
    run (``{"fold", "symbol", "reason"}``); ``symbols``: how many symbols these sums cover.
    """

    fold: int
    ts: np.ndarray
    ret_sum: np.ndarray
    bench_sum: np.ndarray
    count: np.ndarray
    trips: np.ndarray
    failures: list[dict[str, Any]] = field(default_factory=list)
    symbols: int = 0


def evaluate_pieces(
    bars: pl.DataFrame,
    symbols: Sequence[str],
    folds: Sequence[Any],
    settings: Any,
    *,
    interval: str,
    tz: str,
    sleeves: int,
) -> list[FoldPartial]:
    """Run ``folds`` for ``symbols`` on ``bars`` (their span plus warm-up) with ``settings``; one partial per
    fold. ``sleeves``: symbols in the whole sweep (the capital split)."""
    from trader.foldrun import FoldBatch
    from trader.oos import trade_returns
    from trader.tuning import candidate_grid

    candidates = candidate_grid(
        settings,
        size=settings.walkforward.grid_size,
        points_per_param=settings.walkforward.grid_points_per_param,
    )
    batch = FoldBatch(folds, candidates, settings, interval=interval, tz=tz, sleeves=sleeves)
    groups = (
        {g["symbol"][0]: g for g in bars.partition_by("symbol", maintain_order=True)} if bars.height else {}
    )
    for symbol in symbols:
        group = groups.get(symbol)
        if group is None:
            batch.fail(symbol, "no bars in the store for the sweep's span")
            continue
        batch.add(group, [symbol])
    out = []
    for outcome in batch.outcomes(list(symbols)):
        per_bar = (
            outcome.returns.group_by("ts")
            .agg(
                pl.col("return").sum().alias("ret_sum"),
                pl.col("benchmark_return").sum().alias("bench_sum"),
                pl.len().alias("count"),
            )
            .sort("ts")
        )
        out.append(
            FoldPartial(
                fold=outcome.fold,
                ts=per_bar["ts"].dt.epoch("ns").to_numpy(),
                ret_sum=per_bar["ret_sum"].to_numpy(),
                bench_sum=per_bar["bench_sum"].to_numpy(),
                count=per_bar["count"].to_numpy().astype(np.int64),
                trips=trade_returns(outcome.trades),
                failures=list(outcome.failures),
                symbols=len(symbols),
            )
        )
    return out


def merge_partials(parts: Sequence[FoldPartial]) -> FoldPartial:
    """Add up one fold's partials from several symbol batches (bars aligned by time)."""
    if not parts:
        raise ValueError("merge_partials needs at least one partial")
    fold = parts[0].fold
    if any(p.fold != fold for p in parts):
        raise ValueError(f"merge_partials: partials of several folds {sorted({p.fold for p in parts})}")
    ts = np.unique(np.concatenate([p.ts for p in parts]))
    ret_sum, bench_sum = np.zeros(ts.size), np.zeros(ts.size)
    count = np.zeros(ts.size, dtype=np.int64)
    for p in parts:
        at = np.searchsorted(ts, p.ts)
        ret_sum[at] += p.ret_sum
        bench_sum[at] += p.bench_sum
        count[at] += p.count
    return FoldPartial(
        fold=fold,
        ts=ts,
        ret_sum=ret_sum,
        bench_sum=bench_sum,
        count=count,
        trips=np.concatenate([p.trips for p in parts]),
        failures=[f for p in parts for f in p.failures],
        symbols=sum(p.symbols for p in parts),
    )


def stitch_partials(folds: Sequence[FoldPartial]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ts, portfolio return, benchmark return) per bar over whole folds, the lowest fold winning overlaps."""
    ts_all, ret_all, bench_all = [], [], []
    taken: np.ndarray = np.empty(0, dtype=np.int64)
    for part in sorted(folds, key=lambda p: p.fold):
        keep = ~np.isin(part.ts, taken) & (part.count > 0)
        n = np.maximum(part.count[keep], 1)
        ts_all.append(part.ts[keep])
        ret_all.append(part.ret_sum[keep] / n)
        bench_all.append(part.bench_sum[keep] / n)
        taken = np.union1d(taken, part.ts[keep])
    if not ts_all:
        return np.empty(0, dtype=np.int64), np.empty(0), np.empty(0)
    ts = np.concatenate(ts_all)
    order = np.argsort(ts, kind="stable")
    return ts[order], np.concatenate(ret_all)[order], np.concatenate(bench_all)[order]


def score_folds(folds: Sequence[FoldPartial], settings: Any, *, interval: str) -> dict[str, Any]:
    """Metrics of the stitched OOS portfolio over ``folds`` (:func:`trader.metrics.summarize`) plus
    ``score``, the level-2 composite score with ``composer.score_weights`` (NaN when undefined)."""
    _, port, _ = stitch_partials(folds)
    trips = np.concatenate([f.trips for f in folds]) if folds else np.empty(0)
    if port.size < 2:
        return {"score": float("nan"), "n_bars": int(port.size)}
    metrics = summarize(
        port, interval=interval, trades=trips, initial_equity=float(settings.engine.initial_cash)
    )
    metrics["score"] = composite_score(metrics, settings.composer.score_weights)
    metrics["n_bars"] = int(port.size)
    return metrics


def path_sharpes(
    folds: dict[int, FoldPartial], paths_table: pl.DataFrame, *, interval: str, tz: str
) -> list[float | None]:
    """CPCV: the annualised Sharpe ratio of each backtest path's portfolio (``paths_table`` as
    :attr:`trader.walkforward.FoldPlan.paths_table`: for each path and group, the fold whose test window
    supplies that group's sessions). None for a path with fewer than two bars."""
    out: list[float | None] = []
    for rows in paths_table.sort("path", "group").partition_by("path", maintain_order=True):
        parts = []
        for fold, start, end in rows.select("fold", "start", "end").iter_rows():
            part = folds.get(int(fold))
            if part is None:
                continue
            stamps = pl.Series(part.ts).cast(pl.Datetime("ns", "UTC"))
            days = (
                stamps.dt.date() if interval == "1d" else stamps.dt.convert_time_zone(tz).dt.date()
            ).to_numpy()
            keep = (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D")) & (part.count > 0)
            parts.append(part.ret_sum[keep] / part.count[keep])
        series = np.concatenate(parts) if parts else np.empty(0)
        sharpe = summarize(series, interval=interval).get("sharpe") if series.size > 1 else None
        out.append(None if sharpe is None or not np.isfinite(sharpe) else float(sharpe))
    return out
