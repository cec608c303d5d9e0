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
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from trader.errors import ConfigError
from trader.features.regimes import REGIMES
from trader.metrics import periods_per_year
from trader.risk import RiskLimits
from trader.sim import SimConfig, session_index_from_ts, simulate_many
from trader.tuning import Candidate, candidate_signals, score_runs

__all__ = ["FoldBatch", "FoldOutcome", "run_fold", "run_folds", "session_dates", "sleeve_rules"]

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
    "segment": pl.Int64,
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


def _session_index(ts: pl.Series, tz: str, days: np.ndarray | None) -> np.ndarray:
    """:func:`trader.sim.session_index_from_ts`, from the bars' session dates when they are already known
    and in order (a running count of date changes is their dense rank then)."""
    if days is None or days.size < 2 or not bool(np.all(days[1:] >= days[:-1])):
        return session_index_from_ts(ts, tz)
    out = np.zeros(days.size, dtype=np.int64)
    np.cumsum(days[1:] != days[:-1], out=out[1:])
    return out


def _in_ranges(days: np.ndarray, ranges: Sequence[tuple[dt.date, dt.date]]) -> np.ndarray:
    mask = np.zeros(days.shape, dtype=bool)
    for start, end in ranges:
        mask |= (days >= np.datetime64(start, "D")) & (days <= np.datetime64(end, "D"))
    return mask


def _segments(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index pairs of the runs of True in ``mask``."""
    where = np.flatnonzero(mask)
    if where.size == 0:
        return []
    # Only the True rows are scanned: a fold's window is a small part of a symbol's span.
    breaks = np.flatnonzero(np.diff(where) != 1)
    starts = np.concatenate(([where[0]], where[breaks + 1]))
    stops = np.concatenate((where[breaks] + 1, [where[-1] + 1]))
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _span(bars: pl.DataFrame) -> str:
    if bars.height == 0:
        return "the requested window (none loaded)"
    return f"{bars['ts'].min()} to {bars['ts'].max()} loaded for the batch"


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
    selection: str = "composer",
) -> FoldOutcome:
    """Tune on ``fold``'s train window(s) and trade its test window(s) for every symbol in ``bars``.

    ``bars``: the batch's bars (ts, open, high, low, close, volume, symbol) from the warm-up start to the
    fold's last test session; ``fold``: a :class:`trader.walkforward.Fold` (``fold``, ``train`` and ``test``
    as inclusive date ranges); ``candidates``: from :func:`trader.tuning.candidate_grid`; ``interval``: the
    bar interval; ``tz``: the exchange time zone (session dates of intraday bars); ``symbols``: the batch (a
    symbol with no bars at all is reported as a failure); ``selection``: ``"composer"`` (tune the candidates)
    or ``"bandit"`` (no grid: the Thompson-sampling bandit over ``composer.strategies`` learns on the train
    window and keeps learning, causally, while it trades the test window).
    """
    return run_folds(
        bars, [fold], candidates, settings, interval=interval, tz=tz, symbols=symbols, selection=selection
    )[0]


def run_folds(
    bars: pl.DataFrame,
    folds: Sequence[Any],
    candidates: Sequence[Candidate],
    settings: Any,
    *,
    interval: str,
    tz: str = "America/New_York",
    symbols: Sequence[str] | None = None,
    selection: str = "composer",
) -> list[FoldOutcome]:
    """:func:`run_fold` for several folds at once, one :class:`FoldOutcome` per fold (same order).

    Each symbol's candidate weights are computed once over the whole span the folds need and shared by the
    folds: a weight at bar t depends on rows <= t only, so every fold sees exactly what it would alone
    (a test checks this), while overlapping train windows and warm-ups are not recomputed.
    """
    batch = FoldBatch(folds, candidates, settings, interval=interval, tz=tz, selection=selection)
    wanted = list(symbols) if symbols is not None else sorted(bars["symbol"].unique().to_list())
    batch.add(bars, wanted)
    return batch.outcomes(wanted)


def sleeve_rules(settings: Any, ppy: float, sleeves: int = 1) -> tuple[SimConfig, RiskLimits]:
    """Simulator settings and risk limits for one symbol's sleeve of a portfolio of ``sleeves`` symbols.

    A sleeve holds ``initial_cash / sleeves`` (so fill sizes, minimum commissions and currency caps are those
    of the real portfolio), and ``max_position_pct``, a fraction of the *portfolio's* equity, becomes
    ``min(1, max_position_pct * sleeves)`` of the sleeve's. Other fractions (stop loss, daily loss, drawdown,
    vol target, gross leverage) apply to each sleeve as they stand: an approximation of account-level rules
    stated in the README. Decisions are valid from a window's first bar (warm-up bars were loaded before it).
    """
    n = max(1, int(sleeves))
    base = SimConfig.from_settings(settings)
    config = dataclasses.replace(base, min_history_bars=0, initial_cash=base.initial_cash / n)
    limits = RiskLimits.from_settings(settings, periods_per_year=ppy)
    if limits.max_position_pct is not None:
        limits = dataclasses.replace(limits, max_position_pct=min(1.0, limits.max_position_pct * n))
    return config, limits


class FoldBatch:
    """Folds run symbol by symbol into shared tables: add each symbol's bars, then take the outcomes.

    A fan-out task reads and adds one symbol at a time (its memory is one symbol's span) and concatenates the
    tables once at the end. ``sleeves``: how many symbols the whole run trades (see :func:`sleeve_rules`).
    """

    def __init__(
        self,
        folds: Sequence[Any],
        candidates: Sequence[Candidate],
        settings: Any,
        *,
        interval: str,
        tz: str = "America/New_York",
        selection: str = "composer",
        sleeves: int = 1,
    ) -> None:
        if selection not in ("composer", "bandit"):
            raise ConfigError(f"walk-forward selection must be 'composer' or 'bandit', got {selection!r}")
        self.folds, self.candidates, self.settings = list(folds), candidates, settings
        self.interval, self.tz, self.selection = interval, tz, selection
        self.started = time.perf_counter()
        self.ppy = periods_per_year(interval)
        # Warm-up bars were loaded before the windows, so decisions are valid from a window's first bar.
        self.config, self.limits = sleeve_rules(settings, self.ppy, sleeves)
        self.parts: list[dict[str, list[pl.DataFrame]]] = [
            {k: [] for k in ("returns", "trades", "events", "selection", "params")} for _ in self.folds
        ]
        self.failures: list[list[dict[str, Any]]] = [[] for _ in self.folds]

    def fail(self, symbol: str, reason: str) -> None:
        """Record ``symbol`` as failed in every fold, for ``reason``."""
        for k, fold in enumerate(self.folds):
            self.failures[k].append({"fold": int(fold.fold), "symbol": symbol, "reason": reason})

    def add(self, bars: pl.DataFrame, symbols: Sequence[str]) -> None:
        """Run every fold for ``symbols`` on ``bars`` (a symbol without bars is recorded as failed)."""
        if not bars.height:
            groups: dict[str, pl.DataFrame] = {}
        elif bars["symbol"].n_unique() == 1 and bars["ts"].is_sorted():
            groups = {bars["symbol"][0]: bars}  # one symbol as the store returns it: no sort, no copy
        else:
            ordered = bars.sort("symbol", "ts").partition_by("symbol", maintain_order=True)
            groups = {g["symbol"][0]: g for g in ordered}
        for symbol in symbols:
            group = groups.get(symbol)
            if group is None or group.is_empty():
                self.fail(symbol, f"no bars in the store from {_span(bars)}")
                continue
            self._add_symbol(symbol, group)

    def _add_symbol(self, symbol: str, group: pl.DataFrame) -> None:
        days = session_dates(group["ts"], self.interval, self.tz)
        ready: list[tuple[int, np.ndarray, np.ndarray]] = []
        for k, fold in enumerate(self.folds):
            train_mask = _in_ranges(days, fold.train)
            test_mask = _in_ranges(days, fold.test)
            reason = None
            if train_mask.sum() < MIN_WINDOW_BARS:
                reason = f"{int(train_mask.sum())} bars in the train window {_fmt(fold.train)}"
            elif test_mask.sum() < MIN_WINDOW_BARS:
                reason = f"{int(test_mask.sum())} bars in the test window {_fmt(fold.test)}"
            if reason is not None:
                self.failures[k].append({"fold": int(fold.fold), "symbol": symbol, "reason": reason})
            else:
                ready.append((k, train_mask, test_mask))
        if not ready:
            return
        sym = _SymbolRun(
            symbol, group, self.interval, self.tz, self.config, self.limits, self.ppy, self.settings,
            self.candidates, self.selection, days,
        )  # fmt: skip
        for k, train_mask, test_mask in ready:
            sym.run(int(self.folds[k].fold), train_mask, test_mask, self.parts[k])

    def outcomes(self, symbols: Sequence[str]) -> list[FoldOutcome]:
        """One :class:`FoldOutcome` per fold, tables concatenated once."""
        elapsed = time.perf_counter() - self.started
        return [
            FoldOutcome(
                fold=int(fold.fold),
                symbols=list(symbols),
                returns=_concat(self.parts[k]["returns"], _RETURN_SCHEMA),
                trades=_concat(self.parts[k]["trades"], _TRADE_SCHEMA),
                risk_events=_concat(self.parts[k]["events"], _EVENT_SCHEMA),
                selection=_concat(self.parts[k]["selection"], _SELECTION_SCHEMA),
                params=_concat(self.parts[k]["params"], _PARAMS_SCHEMA),
                failures=self.failures[k],
                seconds=elapsed / max(1, len(self.folds)),
            )
            for k, fold in enumerate(self.folds)
        ]


def _concat(frames: list[pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame:
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="diagonal_relaxed").select(list(schema)).cast(schema)


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
    for segment, (start, stop) in enumerate(segments):
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
        # Eager column swaps, not expressions: this runs for every fold, symbol and window.
        t = result.trades
        t.replace_column(1, t["bar"] + start)
        # Each window starts flat: a position open at a window's end is not netted against the next one.
        trades.append(t.hstack([pl.Series("segment", np.full(t.height, segment, np.int64))]))
        e = result.events
        e.replace_column(1, e["bar"] + start)
        events.append(e)
        bars.append(np.arange(start, stop))
    trade_frame = trades[0] if len(trades) == 1 else pl.concat(trades)
    if len(trades) > 1:
        trade_frame = trade_frame.sort("run", "bar", maintain_order=True)
    event_frame = events[0] if len(events) == 1 else pl.concat(events)
    return np.vstack(rets), trade_frame, event_frame, np.concatenate(bars)


class _SymbolRun:
    """One symbol's span: candidate weights computed once, then each fold tuned and tested on its windows."""

    def __init__(
        self,
        symbol: str,
        group: pl.DataFrame,
        interval: str,
        tz: str,
        config: SimConfig,
        limits: RiskLimits,
        ppy: float,
        settings: Any,
        candidates: Sequence[Candidate],
        selection: str,
        days: np.ndarray | None = None,
    ) -> None:
        self.symbol, self.group, self.settings, self.candidates = symbol, group, settings, candidates
        self.config, self.limits, self.ppy, self.selection = config, limits, ppy, selection
        self.ts = group["ts"]
        self.open = group["open"].to_numpy().astype(np.float64)
        self.close = group["close"].to_numpy().astype(np.float64)
        self.session = None if interval == "1d" else _session_index(self.ts, tz, days)
        self.interval = interval
        self.signals = candidate_signals(group, candidates, settings) if selection == "composer" else None
        self.weights = None if self.signals is None else self.signals.weights

    def run(
        self, fold_id: int, train_mask: np.ndarray, test_mask: np.ndarray, parts: dict[str, list]
    ) -> None:
        if self.selection == "bandit":
            chosen, selection_rows, param_row = self._bandit(fold_id, train_mask, test_mask)
        else:
            chosen, selection_rows, param_row = self._tune(fold_id, train_mask, test_mask)
        self._trade(fold_id, test_mask, chosen, parts)
        parts["selection"].append(selection_rows)
        parts["params"].append(pl.DataFrame([param_row], schema=_PARAMS_SCHEMA, orient="row"))

    # 1-2: score every candidate on the train window(s) only; the best one's weights trade the test.
    def _tune(
        self, fold_id: int, train_mask: np.ndarray, test_mask: np.ndarray
    ) -> tuple[np.ndarray, pl.DataFrame, tuple[Any, ...]]:
        assert self.weights is not None
        train_rets, train_trades, _, _ = _simulate_windows(
            self.open, self.close, self.weights, _segments(train_mask), self.session, self.config, self.limits
        )
        scores, metrics = score_runs(
            train_rets,
            train_trades,
            periods_per_year=self.ppy,
            score_weights=self.settings.composer.score_weights,
        )
        finite = np.where(np.isfinite(scores), scores, -np.inf)
        best = int(np.argmax(finite)) if np.isfinite(finite).any() else 0
        winner = self.candidates[best]
        regimes, leaders, names = self._regimes_and_arms(best)
        row = (
            fold_id, self.symbol, winner.strategy, winner.to_json(), winner.index,
            float(scores[best]) if math.isfinite(scores[best]) else None, metrics[best]["sharpe"],
            len(self.candidates), _per_period_var([m["sharpe"] for m in metrics], self.ppy),
        )  # fmt: skip
        selection = self._selection_rows(test_mask, regimes, leaders, names, fold_id)
        return self.weights[:, [best]], selection, row

    def _bandit(
        self, fold_id: int, train_mask: np.ndarray, test_mask: np.ndarray
    ) -> tuple[np.ndarray, pl.DataFrame, tuple[Any, ...]]:
        from trader.bandit import bandit_select

        arms = self.settings.composer.strategies
        train_idx, test_idx = np.flatnonzero(train_mask), np.flatnonzero(test_mask)
        last_train = int(train_idx[-1])
        # Learn on the train window only (bars after it are not even given), then trade the test window
        # from those posteriors, learning online from rewards as they become known.
        trained = bandit_select(
            self.group[: last_train + 1], arms, self.settings, start_index=int(train_idx[0]),
            learn_until=last_train, interval=self.interval,
        )  # fmt: skip
        tested = bandit_select(
            self.group[: int(test_idx[-1]) + 1], arms, self.settings, posteriors=trained.posteriors,
            start_index=int(test_idx[0]), interval=self.interval,
        )  # fmt: skip
        weights = np.zeros((self.group.height, 1))
        weights[: tested.weights.size, 0] = tested.weights
        decisions = tested.decisions
        regime_codes = np.full(self.group.height, -1)
        arm_names = np.full(self.group.height, None, dtype=object)
        if decisions.height:
            rows = self.ts.search_sorted(decisions["ts"]).to_numpy()
            code = {name: i for i, name in enumerate(REGIMES)}
            regime_codes[rows] = [
                code.get(r, -1) if r is not None else -1 for r in decisions["regime"].to_list()
            ]
            arm_names[rows] = decisions["arm"].to_list()
            # A choice holds until the next decision.
            filled = pl.Series(arm_names.tolist(), dtype=pl.String).forward_fill().to_numpy()
            codes = pl.Series(np.where(arm_names == None, None, regime_codes).tolist(), dtype=pl.Int64)  # noqa: E711
            regime_codes = codes.forward_fill().fill_null(-1).to_numpy()
            arm_names = filled
        names = [a.name for a in arms]
        row = (
            fold_id, self.symbol, "bandit", json.dumps({"arms": names}), 0, None, None, len(names), None,
        )  # fmt: skip
        arm_index = {name: i for i, name in enumerate(names)}
        arm_codes = np.array([arm_index.get(a, -1) for a in arm_names.tolist()], dtype=np.int64)
        return weights, self._selection_rows(test_mask, regime_codes, arm_codes, names, fold_id), row

    def _trade(self, fold_id: int, test_mask: np.ndarray, chosen: np.ndarray, parts: dict[str, list]) -> None:
        test_rets, test_trades, test_events, test_bars = _simulate_windows(
            self.open, self.close, np.ascontiguousarray(chosen), _segments(test_mask), self.session,
            self.config, self.limits,
        )  # fmt: skip
        bench = np.empty(test_bars.size)
        pos = 0
        for start, stop in _segments(test_mask):
            px = np.concatenate(([self.open[start]], self.close[start:stop]))
            bench[pos : pos + stop - start] = px[1:] / px[:-1] - 1.0
            pos += stop - start
        ts = self.ts
        n = test_bars.size
        parts["returns"].append(
            pl.DataFrame(
                {
                    "ts": ts.gather(test_bars),
                    "symbol": pl.Series([self.symbol] * n, dtype=pl.String),
                    "fold": np.full(n, fold_id, np.int64),
                    "return": test_rets[:, 0],
                    "benchmark_return": np.nan_to_num(bench),
                }
            )
        )
        if test_trades.height:
            m = test_trades.height
            bars = test_trades["bar"]
            parts["trades"].append(
                test_trades.drop("run", "bar", "symbol").hstack(
                    [
                        ts.gather(bars).alias("ts"),
                        pl.Series("symbol", [self.symbol] * m, dtype=pl.String),
                        pl.Series("fold", np.full(m, fold_id, np.int64)),
                    ]
                )
            )
        if test_events.height:
            m = test_events.height
            account = test_events["symbol"].to_numpy() < 0
            parts["events"].append(
                test_events.drop("run", "bar", "symbol").hstack(
                    [
                        ts.gather(test_events["bar"]).alias("ts"),
                        pl.Series("symbol", np.where(account, "", self.symbol).tolist(), dtype=pl.String),
                        pl.Series("fold", np.full(m, fold_id, np.int64)),
                    ]
                )
            )

    def _regimes_and_arms(self, best: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Regime code and driving strategy (index into the names, -1 none) per bar for candidate ``best``."""
        assert self.signals is not None
        return self.signals.regimes, self.signals.leaders[:, best], self.signals.arms[best]

    def _selection_rows(
        self,
        test_mask: np.ndarray,
        regimes: np.ndarray,
        arm_codes: np.ndarray,
        arm_names: Sequence[str],
        fold_id: int,
    ) -> pl.DataFrame:
        """Runs of test bars with the same (regime, driving strategy); see :class:`FoldOutcome`.

        ``regimes``: code per bar (-1 none); ``arm_codes``: index into ``arm_names`` per bar (-1 none).
        """
        idx = np.flatnonzero(test_mask)
        codes = np.asarray(regimes)[idx].astype(np.int64)
        arm_at = np.asarray(arm_codes)[idx].astype(np.int64)
        # Run-length encode (regime, arm) over the test bars in numpy: one row per run.
        change = np.ones(idx.size, dtype=bool)
        change[1:] = (codes[1:] != codes[:-1]) | (arm_at[1:] != arm_at[:-1])
        starts = np.flatnonzero(change)
        lengths = np.diff(np.append(starts, idx.size))
        regime_names = np.array([*REGIMES, None], dtype=object)
        first = codes[starts]
        labels = regime_names[np.where(first >= 0, first, len(REGIMES))]
        names = np.array([*arm_names, None], dtype=object)  # code -1 picks the trailing None
        n = starts.size
        return pl.DataFrame(
            {
                "ts": self.ts.gather(idx[starts]),
                "symbol": pl.Series([self.symbol] * n, dtype=pl.String),
                "fold": np.full(n, fold_id, np.int64),
                "regime": pl.Series(labels.tolist(), dtype=pl.String),
                "arm": pl.Series(names[arm_at[starts]].tolist(), dtype=pl.String),
                "bars": lengths.astype(np.int64),
            }
        )


def _per_period_var(annual_sharpes: list[float], ppy: float) -> float | None:
    """Variance across candidates of their per-period train Sharpe ratios (the DSR's ``var_trials``)."""
    values = np.asarray(annual_sharpes, dtype=np.float64)
    values = values[np.isfinite(values)] / math.sqrt(ppy)
    return float(values.var(ddof=1)) if values.size > 1 else None
