"""One walk-forward fold on a batch of symbols: tune on the train window, trade the unseen test window.

This is the work of one fan-out task (:mod:`cluster.fanout` runs it on a Ray worker; it runs the same in a
plain process). For each symbol of the batch, on bars that start ``warmup`` bars before the fold's first
session (so indicators are warm when training begins):

1. every tuning candidate's target weights are computed once over the whole loaded span (features use rows
   <= t only, so a weight at t is the same whether or not later bars were loaded);
2. each candidate is simulated on the train window(s) alone, as an independent portfolio with its own cash
   (:func:`trader.sim.simulate_many`), and scored with the level-2 composite score; the best one wins (ties
   and all-NaN scores go to the lower index, i.e. the configuration);
3. the winner is simulated on the test window(s), starting flat with ``engine.initial_cash``, under the risk
   rules. The test window is never seen by step 2.

Each symbol is traded as its own sleeve; the driver stitches sleeves into an equal-weight portfolio. A symbol
without enough bars in a window is reported as a failure with the reason, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from trader.composer import Composer
from trader.features.regimes import REGIMES
from trader.metrics import periods_per_year
from trader.risk import RiskLimits
from trader.sim import SimConfig, session_index_from_ts, simulate_many
from trader.tuning import Candidate, candidate_weights, score_runs

__all__ = ["FoldOutcome", "run_fold", "session_dates"]

# Fewest bars a window must hold for a symbol to be tuned or traded in it.
MIN_WINDOW_BARS = 2

_RETURN_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "symbol": pl.String,
    "fold": pl.Int64,
    "return": pl.Float64,
    "benchmark_return": pl.Float64,
}
_TRADE_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "symbol": pl.String,
    "fold": pl.Int64,
    "side": pl.String,
    "qty": pl.Float64,
    "price": pl.Float64,
    "commission": pl.Float64,
    "reason": pl.String,
}
_EVENT_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "symbol": pl.String,
    "fold": pl.Int64,
    "rule": pl.String,
    "detail": pl.Float64,
}
_SELECTION_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "symbol": pl.String,
    "fold": pl.Int64,
    "regime": pl.String,
    "arm": pl.String,
    "bars": pl.Int64,
}
_PARAMS_SCHEMA = {
    "fold": pl.Int64,
    "symbol": pl.String,
    "strategy": pl.String,
    "params": pl.String,
    "candidate": pl.Int64,
    "train_score": pl.Float64,
    "train_sharpe": pl.Float64,
    "n_candidates": pl.Int64,
    "trial_sharpe_var": pl.Float64,
}


@dataclass
class FoldOutcome:
    """What one (fold, symbol batch) task returns: small tables, never bars.

    ``returns``: ts, symbol, fold, return (the sleeve's per-bar return, fraction), benchmark_return (buy and
    hold of the symbol from the test window's first open). ``trades``, ``risk_events``: the test window's
    fills and rule firings. ``selection``: runs of consecutive test bars with the same regime and driving
    strategy (``bars`` counts them). ``params``: the winner per symbol with its train score, and the
    variance of the candidates' per-period train Sharpe ratios (``trial_sharpe_var``, for the deflated
    Sharpe ratio). ``failures``: ``{"fold", "symbol", "reason"}`` for every symbol that could not be run.
    ``seconds``: wall time.
    """

    fold: int
    symbols: list[str]
    returns: pl.DataFrame
    trades: pl.DataFrame
    risk_events: pl.DataFrame
    selection: pl.DataFrame
    params: pl.DataFrame
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def session_dates(ts: pl.Series, interval: str, tz: str) -> np.ndarray:
    """The exchange session date (numpy datetime64[D]) of each bar: its UTC date for daily bars (whose ts is
    the session date at 00:00 UTC), else its date in the exchange time zone ``tz``."""
    if interval == "1d":
        return ts.dt.date().to_numpy().astype("datetime64[D]")
    return ts.dt.convert_time_zone(tz).dt.date().to_numpy().astype("datetime64[D]")


def _in_ranges(days: np.ndarray, ranges: Sequence[tuple[dt.date, dt.date]]) -> np.ndarray:
    mask = np.zeros(days.shape, dtype=bool)
    for start, end in ranges:
        mask |= (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D"))
    return mask


def _segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _fmt(ranges: Sequence[tuple[dt.date, dt.date]]) -> str:
    return ", ".join(f"{a}..{b}" for a, b in ranges)


def run_fold(
    bars: pl.DataFrame,
    fold: Any,
    candidates: Sequence[Candidate],
    settings: Any,
    *,
    interval: str,
    tz: str = "America/New_York",
    symbols: Sequence[str] | None = None,
) -> FoldOutcome:
    """Tune on ``fold``'s train window(s) and trade its test window(s) for every symbol in ``bars``.

    ``bars``: the batch's bars (ts, open, high, low, close, volume, symbol) from the warm-up start to the
    fold's last test session; ``fold``: a :class:`trader.walkforward.Fold` (``fold``, ``train`` and ``test``
    as inclusive date ranges); ``candidates``: from :func:`trader.tuning.candidate_grid`; ``interval``: the
    bar interval; ``tz``: the exchange time zone (session dates of intraday bars); ``symbols``: the batch (a
    symbol with no bars at all is reported as a failure).
    """
    started = time.perf_counter()
    fold_id = int(fold.fold)
    ppy = periods_per_year(interval)
    base_config = SimConfig.from_settings(settings)
    # Warm-up bars were loaded before the windows, so decisions are valid from a window's first bar.
    config = dataclasses.replace(base_config, min_history_bars=0)
    limits = RiskLimits.from_settings(settings, periods_per_year=ppy)
    score_weights = settings.composer.score_weights
    wanted = list(symbols) if symbols is not None else sorted(bars["symbol"].unique().to_list())
    groups = {
        g["symbol"][0]: g for g in bars.sort("symbol", "ts").partition_by("symbol", maintain_order=True)
    }
    parts: dict[str, list[pl.DataFrame]] = {
        k: [] for k in ("returns", "trades", "events", "selection", "params")
    }
    failures: list[dict[str, Any]] = []
    for symbol in wanted:
        group = groups.get(symbol)
        if group is None or group.is_empty():
            failures.append(
                {"fold": fold_id, "symbol": symbol, "reason": "no bars in the store for this span"}
            )
            continue
        days = session_dates(group["ts"], interval, tz)
        train_mask = _in_ranges(days, fold.train)
        test_mask = _in_ranges(days, fold.test)
        reason = None
        if train_mask.sum() < MIN_WINDOW_BARS:
            reason = f"{int(train_mask.sum())} bars in the train window {_fmt(fold.train)}"
        elif test_mask.sum() < MIN_WINDOW_BARS:
            reason = f"{int(test_mask.sum())} bars in the test window {_fmt(fold.test)}"
        if reason is not None:
            failures.append({"fold": fold_id, "symbol": symbol, "reason": reason})
            continue
        _run_symbol(
            symbol, group, days, train_mask, test_mask, fold_id, candidates, settings, interval, tz,
            config, limits, ppy, score_weights, parts,
        )  # fmt: skip
    return FoldOutcome(
        fold=fold_id,
        symbols=wanted,
        returns=_concat(parts["returns"], _RETURN_SCHEMA),
        trades=_concat(parts["trades"], _TRADE_SCHEMA),
        risk_events=_concat(parts["events"], _EVENT_SCHEMA),
        selection=_concat(parts["selection"], _SELECTION_SCHEMA),
        params=_concat(parts["params"], _PARAMS_SCHEMA),
        failures=failures,
        seconds=time.perf_counter() - started,
    )


def _concat(frames: list[pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat([f.select(list(schema)).cast(schema) for f in frames])


def _simulate_windows(
    open_: np.ndarray,
    close: np.ndarray,
    weights: np.ndarray,
    segments: list[tuple[int, int]],
    session: np.ndarray | None,
    config: SimConfig,
    limits: RiskLimits,
) -> tuple[np.ndarray, pl.DataFrame, pl.DataFrame, np.ndarray]:
    """Simulate every weight column on each [start, stop) window, flat at each window's start.

    Returns the stacked per-bar returns (bars x runs), the trades and events (``bar`` = index into the
    loaded span, time ordered per run), and the bar indices the returns stand for.
    """
    rets, trades, events, bars = [], [], [], []
    for start, stop in segments:
        sl = slice(start, stop)
        result = simulate_many(
            open_[sl],
            close[sl],
            weights[sl],
            config=config,
            limits=limits,
            session_index=None if session is None else session[sl],
        )
        rets.append(result.returns)
        trades.append(result.trades.with_columns(pl.col("bar") + start))
        events.append(result.events.with_columns(pl.col("bar") + start))
        bars.append(np.arange(start, stop))
    trade_frame = pl.concat(trades).sort("run", "bar", maintain_order=True)
    return np.vstack(rets), trade_frame, pl.concat(events), np.concatenate(bars)


def _run_symbol(
    symbol: str,
    group: pl.DataFrame,
    days: np.ndarray,
    train_mask: np.ndarray,
    test_mask: np.ndarray,
    fold_id: int,
    candidates: Sequence[Candidate],
    settings: Any,
    interval: str,
    tz: str,
    config: SimConfig,
    limits: RiskLimits,
    ppy: float,
    score_weights: Any,
    parts: dict[str, list[pl.DataFrame]],
) -> None:
    ts = group["ts"]
    open_ = group["open"].to_numpy().astype(np.float64)
    close = group["close"].to_numpy().astype(np.float64)
    session = None if interval == "1d" else session_index_from_ts(ts, tz)
    weights = candidate_weights(group, candidates, settings)

    # 1-2: score every candidate on the train window(s) only.
    train_rets, train_trades, _, _ = _simulate_windows(
        open_, close, weights, _segments(train_mask), session, config, limits
    )
    scores, metrics = score_runs(train_rets, train_trades, periods_per_year=ppy, score_weights=score_weights)
    finite = np.where(np.isfinite(scores), scores, -np.inf)
    best = int(np.argmax(finite)) if np.isfinite(finite).any() else 0
    winner = candidates[best]

    # 3: trade the test window(s) with the winner.
    chosen = np.ascontiguousarray(weights[:, [best]])
    test_rets, test_trades, test_events, test_bars = _simulate_windows(
        open_, close, chosen, _segments(test_mask), session, config, limits
    )
    bench = np.empty(test_bars.size)
    for start, stop in _segments(test_mask):
        idx = np.arange(start, stop)
        px = np.concatenate(([open_[start]], close[idx]))
        seg = px[1:] / px[:-1] - 1.0
        bench[np.searchsorted(test_bars, start) : np.searchsorted(test_bars, start) + seg.size] = seg
    sym = pl.lit(symbol, dtype=pl.String)
    parts["returns"].append(
        pl.DataFrame(
            {"ts": ts.gather(test_bars), "return": test_rets[:, 0], "benchmark_return": np.nan_to_num(bench)}
        ).with_columns(symbol=sym, fold=pl.lit(fold_id, dtype=pl.Int64))
    )
    if test_trades.height:
        parts["trades"].append(
            test_trades.with_columns(ts=ts.gather(test_trades["bar"]), symbol=sym, fold=pl.lit(fold_id))
        )
    if test_events.height:
        parts["events"].append(
            test_events.with_columns(
                ts=ts.gather(test_events["bar"]),
                symbol=pl.when(pl.col("symbol") >= 0).then(sym).otherwise(pl.lit("")),
                fold=pl.lit(fold_id),
            )
        )
    parts["selection"].append(_selection(group, test_mask, winner, settings, symbol, fold_id))
    parts["params"].append(
        pl.DataFrame(
            {
                "fold": [fold_id],
                "symbol": [symbol],
                "strategy": [winner.strategy],
                "params": [winner.to_json()],
                "candidate": [winner.index],
                "train_score": [float(scores[best]) if math.isfinite(scores[best]) else None],
                "train_sharpe": [metrics[best]["sharpe"]],
                "n_candidates": [len(candidates)],
                "trial_sharpe_var": [_per_period_var([m["sharpe"] for m in metrics], ppy)],
            }
        )
    )


def _per_period_var(annual_sharpes: list[float], ppy: float) -> float | None:
    """Variance across candidates of their per-period train Sharpe ratios (the DSR's ``var_trials``)."""
    values = np.asarray(annual_sharpes, dtype=np.float64)
    values = values[np.isfinite(values)] / math.sqrt(ppy)
    return float(values.var(ddof=1)) if values.size > 1 else None


def _selection(
    group: pl.DataFrame, test_mask: np.ndarray, winner: Candidate, settings: Any, symbol: str, fold_id: int
) -> pl.DataFrame:
    """Runs of test bars with the same (regime, driving strategy); see :class:`FoldOutcome`."""
    from trader.tuning import _strategy_specs

    arrays = group.select("open", "high", "low", "close", "volume")
    base = Composer.from_settings(settings) if winner.strategy == "composer" else None
    specs = _strategy_specs(winner)
    names = list(winner.params) if winner.strategy == "composer" else [winner.strategy]
    composer = Composer(
        strategies=tuple(specs),
        lookback=base.lookback if base else 50,
        temperature=base.temperature if base else 1.0,
        trend_bias=base.trend_bias if base else 0.0,
        chop_bias=base.chop_bias if base else 0.0,
        volatile_bias=base.volatile_bias if base else 0.0,
        min_confidence=base.min_confidence if base else 0.0,
        min_history_bars=int(settings.engine.min_history_bars),
    )
    regimes = composer.regimes(arrays)
    if winner.strategy == "composer":
        weights = composer.blend(arrays, regimes).weights[:, : len(names)]
        top = np.argmax(np.nan_to_num(weights, nan=-1.0), axis=1)
        arm = np.array(names, dtype=object)[top]
    else:
        arm = np.full(group.height, winner.strategy, dtype=object)
    idx = np.flatnonzero(test_mask)
    regime_names = np.array([*REGIMES, None], dtype=object)
    codes = np.asarray(regimes)[idx]
    labels = regime_names[np.where(codes >= 0, codes, len(REGIMES))]
    frame = pl.DataFrame(
        {
            "ts": group["ts"].gather(idx),
            "regime": pl.Series(labels.tolist(), dtype=pl.String),
            "arm": pl.Series(arm[idx].tolist(), dtype=pl.String),
        }
    )
    run_id = (
        (pl.col("regime").ne_missing(pl.col("regime").shift(1)) | pl.col("arm").ne(pl.col("arm").shift(1)))
        .fill_null(True)
        .cum_sum()
    )
    return (
        frame.with_columns(run=run_id)
        .group_by("run", maintain_order=True)
        .agg(pl.col("ts").first(), pl.col("regime").first(), pl.col("arm").first(), pl.len().alias("bars"))
        .with_columns(symbol=pl.lit(symbol), fold=pl.lit(fold_id, dtype=pl.Int64))
        .drop("run")
    )
