"""The report's tables as plain data: headline metrics, failed folds, one row per fold, value formatting.

Units: returns, drawdowns, volatility, win rates and probabilities are fractions in the data and shown as
percent on the page; Sharpe-like ratios are annualised and shown with two decimals; counts are whole numbers.

Example::

    from trader.report.rundir import load_run
    from trader.report.tables import fold_rows, format_metric

    run = load_run("runs/wf-2024")
    for row in fold_rows(run):
        print(row.fold, row.status, format_metric("sharpe", row.sharpe))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import polars as pl

from trader.metrics import DEFAULT_PERIODS_PER_YEAR, SUMMARY_KEYS, sharpe
from trader.report.rundir import RunData, finite_or_none

__all__ = [
    "COUNT_KEYS",
    "PERCENT_KEYS",
    "FoldRow",
    "FoldWindow",
    "failed_fold_entries",
    "fold_rows",
    "format_metric",
    "headline_rows",
    "periods_per_year_of",
    "window_returns",
]

#: Keys whose values are fractions (or probabilities) shown as percent.
PERCENT_KEYS: Final = frozenset(
    {
        "total_return",
        "cagr",
        "volatility",
        "max_drawdown",
        "win_rate",
        "avg_trade",
        "median_trade",
        "exposure",
        "psr",
        "deflated_sharpe",
        "benchmark_return",
    }
)
#: Keys whose values are counts (of periods, trades, trials) shown as whole numbers.
COUNT_KEYS: Final = frozenset(
    {
        "n_periods",
        "n_trades",
        "max_drawdown_duration",
        "n_trials",
        "n_candidates",
        "n_obs",
        "periods_per_year",
    }
)
DASH: Final = "—"
_FOLD_METRICS: Final = ("sharpe", "total_return", "max_drawdown", "n_trades")


def format_metric(key: str, value: Any) -> str:
    """``value`` of metric ``key`` as page text: percent for fractions, whole numbers for counts, else 2-4
    significant decimals; ``None``/NaN/non-numbers as a dash.

    >>> format_metric("total_return", 0.1234), format_metric("sharpe", 1.5), format_metric("n_trades", 12.0)
    ('12.34%', '1.50', '12')
    """
    number = finite_or_none(value)
    if number is None:
        return DASH if value is None or isinstance(value, int | float) else str(value)
    if key in PERCENT_KEYS:
        return f"{number:.2%}"
    if key in COUNT_KEYS:
        return f"{number:,.0f}"
    return f"{number:.2f}" if abs(number) >= 0.01 or number == 0 else f"{number:.4g}"


def periods_per_year_of(run: RunData) -> float:
    """Bars per year the run annualised with (``summary.oos.periods_per_year``; 252 when absent)."""
    ppy = finite_or_none((run.summary.get("oos") or {}).get("periods_per_year"))
    return ppy if ppy is not None and ppy > 0 else DEFAULT_PERIODS_PER_YEAR


@dataclass(frozen=True)
class FoldWindow:
    """Inclusive date range of one train or test segment."""

    start: dt.date
    end: dt.date

    def __str__(self) -> str:
        return f"{self.start.isoformat()} .. {self.end.isoformat()}"


@dataclass(frozen=True)
class FoldRow:
    """One fold as the report shows it.

    ``sharpe`` (annualised), ``total_return`` and ``max_drawdown`` (fractions) are the fold's out-of-sample
    figures from ``summary.json``; ``benchmark_sharpe`` / ``benchmark_return`` are computed here from the
    benchmark column of ``equity.parquet`` over the same test bars. ``status`` is the summary's (``"ok"``,
    ``"partial"`` when some symbols failed, ``"failed"``), or ``"missing"`` for a planned fold without a
    result in the summary (never silently dropped).
    """

    fold: int
    status: str
    reason: str | None
    test: tuple[FoldWindow, ...] = field(default_factory=tuple)
    train: tuple[FoldWindow, ...] = field(default_factory=tuple)
    sharpe: float | None = None
    total_return: float | None = None
    max_drawdown: float | None = None
    n_trades: float | None = None
    benchmark_sharpe: float | None = None
    benchmark_return: float | None = None


def window_returns(
    ts: pl.Series | np.ndarray, values: np.ndarray, windows: Sequence[FoldWindow]
) -> np.ndarray:
    """Per-bar simple returns (fractions) of ``values`` over the bars whose UTC date lies in ``windows``.

    ``ts``: the bars' UTC timestamps, or their UTC dates as a ``datetime64[D]`` array (faster when called
    for many windows).

    Each window's first bar gets its return from the bar before it (when there is one), so a window's
    compounded return is ``values[last] / values[bar before first] - 1``. Non-finite returns become NaN.

    >>> import polars as pl, numpy as np, datetime as dt
    >>> ts = pl.Series([dt.datetime(2020, 1, d) for d in (1, 2, 3)]).dt.replace_time_zone("UTC")
    >>> window = FoldWindow(dt.date(2020, 1, 2), dt.date(2020, 1, 3))
    >>> window_returns(ts, np.array([100.0, 110.0, 121.0]), [window])
    array([0.1, 0.1])
    """
    dates = ts.dt.date().to_numpy() if isinstance(ts, pl.Series) else ts
    parts: list[np.ndarray] = []
    for win in windows:
        inside = np.flatnonzero((dates >= np.datetime64(win.start)) & (dates <= np.datetime64(win.end)))
        if inside.size == 0:
            continue
        lo = max(int(inside[0]) - 1, 0)
        seg = values[lo : int(inside[-1]) + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            parts.append(seg[1:] / seg[:-1] - 1.0)
    if not parts:
        return np.empty(0)
    out = np.concatenate(parts)
    out[~np.isfinite(out)] = np.nan
    return out


def _windows(plan: pl.DataFrame, fold: int, role: str) -> tuple[FoldWindow, ...]:
    rows = plan.filter((pl.col("fold") == fold) & (pl.col("role") == role)).sort("start")
    return tuple(
        FoldWindow(s, e) for s, e in zip(rows["start"].to_list(), rows["end"].to_list(), strict=True)
    )


def _parse_date(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def fold_rows(run: RunData) -> list[FoldRow]:
    """Every fold of the plan and of ``summary.per_fold``, sorted by fold id (see :class:`FoldRow`)."""
    per_fold = {int(e["fold"]): e for e in run.summary.get("per_fold") or [] if isinstance(e["fold"], int)}
    planned = set(run.fold_plan["fold"].unique().to_list())
    ppy = periods_per_year_of(run)
    dates = run.equity["ts"].dt.date().to_numpy()
    bench = run.equity["benchmark"].fill_null(float("nan")).to_numpy()
    rows: list[FoldRow] = []
    for fold in sorted(planned | set(per_fold)):
        entry = per_fold.get(fold)
        test = _windows(run.fold_plan, fold, "test")
        if not test and entry is not None:
            start, end = _parse_date(entry.get("test_start")), _parse_date(entry.get("test_end"))
            if start is not None and end is not None:
                test = (FoldWindow(start, end),)
        rets = window_returns(dates, bench, test) if test else np.empty(0)
        clean = rets[~np.isnan(rets)]
        bench_sharpe = finite_or_none(sharpe(clean, periods_per_year=ppy)) if clean.size else None
        bench_return = float(np.prod(1.0 + clean) - 1.0) if clean.size else None
        if entry is None:
            status, reason = "missing", "planned, but summary.json has no result for this fold"
        else:
            status = str(entry.get("status") or "ok")
            reason = entry.get("reason") if isinstance(entry.get("reason"), str) else None
        got = {k: finite_or_none(entry.get(k)) if entry else None for k in _FOLD_METRICS}
        rows.append(
            FoldRow(
                fold=fold,
                status=status,
                reason=reason,
                test=test,
                train=_windows(run.fold_plan, fold, "train"),
                sharpe=got["sharpe"],
                total_return=got["total_return"],
                max_drawdown=got["max_drawdown"],
                n_trades=got["n_trades"],
                benchmark_sharpe=bench_sharpe,
                benchmark_return=bench_return,
            )
        )
    return rows


def failed_fold_entries(run: RunData) -> list[dict[str, Any]]:
    """``summary.failed_folds`` entries, plus failed per-fold results not listed there, sorted by fold.

    Each entry has ``fold`` (int), ``symbols`` (list of str; empty when the whole fold failed or the
    symbols are unknown) and ``reason`` (str).
    """
    out: dict[tuple[int, tuple[str, ...]], dict[str, Any]] = {}
    for entry in run.summary.get("failed_folds") or []:
        symbols = entry.get("symbols") or []
        symbols = [str(s) for s in symbols] if isinstance(symbols, list) else [str(symbols)]
        reason = entry.get("reason")
        out[(int(entry["fold"]), tuple(symbols))] = {
            "fold": int(entry["fold"]),
            "symbols": symbols,
            "reason": str(reason) if reason is not None else "no reason given",
        }
    listed = {fold for fold, _ in out}
    for row in fold_rows(run):
        if row.status != "ok" and row.fold not in listed:
            out[(row.fold, ())] = {"fold": row.fold, "symbols": [], "reason": row.reason or row.status}
    return [out[k] for k in sorted(out)]


def headline_rows(summary: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(metric, OOS, benchmark, meaning)`` rows, in :data:`~trader.metrics.SUMMARY_KEYS` order then any
    other keys the summary holds, values formatted with :func:`format_metric`."""
    oos = summary.get("oos") or {}
    bench = summary.get("benchmark") or {}
    keys = [k for k in SUMMARY_KEYS if k in oos or k in bench]
    keys += sorted((set(oos) | set(bench)) - set(keys))
    return [
        (k, format_metric(k, oos.get(k)), format_metric(k, bench.get(k)), SUMMARY_KEYS.get(k, ""))
        for k in keys
    ]
