"""Parameter candidates for per-fold tuning, their target weights, and scoring many runs at once.

A walk-forward fold is tuned on its train window by trying a small, deterministic set of *candidates* and
keeping the one with the best level-2 composite score (:func:`trader.composer.composite_score`):

* single-strategy mode (``strategy="sma_cross"``): candidate 0 is the given (or default) parameters, the
  others are drawn without replacement from the strategy's grid (:meth:`StrategyDef.grid`);
* composer mode (``strategy=None``): candidate 0 is the configured composer; each other candidate keeps the
  composer's blend settings and draws every strategy's parameters from that strategy's grid.

Draws come from ``numpy.random.default_rng`` seeded by ``engine.rng_seed``: the same settings give the same
candidates on every worker. ``grid_size`` candidates are tried (fewer when the grid is smaller).

Scoring (:func:`score_runs`) reads the per-bar returns and fills of a :class:`trader.sim.BatchResult` (one
run per candidate, each with its own cash) over a window of bars and computes, per run, exactly the metrics
the composite score needs: CAGR, annualised Sharpe, max drawdown, and win rate and average return of closed
round trips (net of commission, as :func:`trader.backtest.run` counts them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from trader.composer import Composer, _weights_mapping, strategy_scores
from trader.errors import ConfigError
from trader.strategies import get_strategy
from trader.strategies.base import StrategyDef, as_bar_arrays

__all__ = [
    "Candidate",
    "CandidateSignals",
    "candidate_grid",
    "candidate_signals",
    "candidate_weights",
    "round_trip_stats",
    "score_runs",
    "warmup_bars",
]

# Bars of history the regime labels need before they are defined (vol window + its own lookback), so that a
# window's first decision sees the same regimes a whole-history run would.
_REGIME_WARMUP = 252 + 20


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: ``strategy`` is a registered name or ``"composer"``.

    ``params``: the strategy's parameters, or for the composer ``{strategy name: params}`` (names made unique
    with ``#2``... when a strategy appears twice). ``index`` is its position in the grid (0 = configured).
    """

    index: int
    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The parameters as a JSON object with sorted keys (what ``params.parquet`` stores)."""
        return json.dumps(self.params, sort_keys=True, default=float)


def _unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def _draw(pool: list[dict[str, Any]], taken: set[str], rng: np.random.Generator) -> dict[str, Any]:
    """A grid point not yet used when possible (so candidates differ), else any."""
    order = rng.permutation(len(pool))
    for i in order:
        key = json.dumps(pool[i], sort_keys=True, default=float)
        if key not in taken:
            return pool[i]
    return pool[int(order[0])]


def candidate_grid(
    settings: Any,
    strategy: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    size: int = 20,
    points_per_param: int = 5,
) -> list[Candidate]:
    """The ``size`` candidates tuned per fold (see the module docstring); candidate 0 is the configuration.

    ``points_per_param``: values per tunable parameter in each strategy's grid. ``size=1`` means no tuning.

    >>> from trader.config import load_settings
    >>> s = load_settings(["configs/demo.yaml"], env={})
    >>> grid = candidate_grid(s, size=4)
    >>> [c.index for c in grid], sorted(grid[0].params)
    ([0, 1, 2, 3], ['donchian_breakout', 'rsi_reversion', 'sma_cross'])
    """
    if size < 1:
        raise ConfigError(f"tuning grid size must be >= 1, got {size}")
    rng = np.random.default_rng([int(settings.engine.rng_seed), 0x7475_6E65])  # "tune"
    if strategy is not None:
        spec = get_strategy(strategy)
        base = spec.validate(dict(params or {}))
        out = [Candidate(0, spec.name, base)]
        taken = {json.dumps(base, sort_keys=True, default=float)}
        pool = spec.grid(points_per_param)
        while len(out) < size and len(taken) < len(pool) + 1:
            point = _draw(pool, taken, rng)
            key = json.dumps(point, sort_keys=True, default=float)
            if key in taken:
                break
            taken.add(key)
            out.append(Candidate(len(out), spec.name, point))
        return out
    if params:
        raise ConfigError(
            "tuning: parameters need a strategy; the composer takes its parameters from settings"
        )
    composer = Composer.from_settings(settings)
    if not composer.strategies:
        raise ConfigError("tuning: composer.strategies is empty; configure strategies or name one")
    names = _unique_names([spec.name for spec, _ in composer.strategies])
    base = {name: dict(p) for name, (_, p) in zip(names, composer.strategies, strict=True)}
    out = [Candidate(0, "composer", base)]
    pools = [spec.grid(points_per_param) for spec, _ in composer.strategies]
    seen = {json.dumps(base, sort_keys=True, default=float)}
    attempts = 0
    while len(out) < size and attempts < 20 * size:
        attempts += 1
        point = {
            name: dict(pool[int(rng.integers(len(pool)))]) for name, pool in zip(names, pools, strict=True)
        }
        key = json.dumps(point, sort_keys=True, default=float)
        if key in seen:
            continue
        seen.add(key)
        out.append(Candidate(len(out), "composer", point))
    return out


def _strategy_specs(candidate: Candidate) -> list[tuple[StrategyDef, dict[str, Any]]]:
    if candidate.strategy != "composer":
        spec = get_strategy(candidate.strategy)
        return [(spec, spec.validate(dict(candidate.params)))]
    out = []
    for name, p in candidate.params.items():
        spec = get_strategy(name.split("#", 1)[0])
        out.append((spec, spec.validate(dict(p))))
    return out


def warmup_bars(candidates: Sequence[Candidate], settings: Any) -> int:
    """Bars of history before a window that make its first decision equal to a whole-history run's.

    The largest of: every candidate strategy's own warm-up, the composer's scoring lookback plus
    ``engine.min_history_bars``, and (when a regime bias is set) the regime labels' warm-up.
    """
    need = int(settings.engine.min_history_bars)
    composer_used = any(c.strategy == "composer" for c in candidates)
    for candidate in candidates:
        for spec, p in _strategy_specs(candidate):
            need = max(need, int(spec.warmup(p)) + 1)
    if composer_used:
        section = settings.composer
        need = max(need, int(section.lookback) + int(settings.engine.min_history_bars))
        # The composer scores each strategy on its last `lookback` targets: those must be past warm-up too.
        for candidate in candidates:
            if candidate.strategy == "composer":
                longest = max(int(spec.warmup(p)) for spec, p in _strategy_specs(candidate))
                need = max(need, longest + int(section.lookback))
        if any(b != 0.0 for b in (section.trend_bias, section.chop_bias, section.volatile_bias)):
            need = max(need, _REGIME_WARMUP)
    return need


@dataclass(frozen=True)
class CandidateSignals:
    """Every candidate's decisions on one symbol's bars.

    ``weights``: target weight per bar and candidate (bars x candidates), decided at each bar's close.
    ``leaders``: per bar and candidate, the index into ``arms[c]`` of the strategy driving the decision (the
    largest composer weight; -1 when none). ``arms``: per candidate, its strategies' names. ``regimes``:
    regime code per bar (0 trend, 1 chop, 2 volatile, -1 warm-up or not computed).
    """

    weights: np.ndarray
    leaders: np.ndarray
    arms: list[list[str]]
    regimes: np.ndarray


def candidate_weights(bars: Any, candidates: Sequence[Candidate], settings: Any) -> np.ndarray:
    """Target weights of every candidate on one symbol's bars: shape (bars, candidates), decided at closes.

    Each distinct (strategy, params) signal, its composer score and the regime labels are computed once and
    shared between candidates. ``engine.min_history_bars`` counts from the first bar given.
    """
    return candidate_signals(bars, candidates, settings, label_regimes=False).weights


def candidate_signals(
    bars: Any, candidates: Sequence[Candidate], settings: Any, *, label_regimes: bool = True
) -> CandidateSignals:
    """:func:`candidate_weights` plus which strategy leads each decision and the regimes (for reports).

    ``label_regimes``: label regimes even when no candidate's blend reads them (a regime bias of 0).
    """
    need = ("open", "high", "low", "close", "volume")
    arrays = as_bar_arrays(bars, need, where="tuning")
    n = len(arrays)
    # Column-major: each candidate's column is written whole, and simulate_many reads runs x bars.
    out = np.empty((n, len(candidates)), order="F")
    leaders = np.zeros((n, len(candidates)), dtype=np.int16, order="F")
    arms: list[list[str]] = []
    base = Composer.from_settings(settings) if any(c.strategy == "composer" for c in candidates) else None
    needs_regimes = base is not None and base._needs_regimes()
    labels = None
    if needs_regimes or label_regimes:
        labels = (base or Composer.from_settings(settings)).regimes(arrays)
    regimes = labels if needs_regimes else None
    returns = np.full(n, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        returns[1:] = arrays.close[1:] / arrays.close[:-1] - 1.0
    # key -> (targets, composer score): a strategy's score depends only on its own targets and the lookback.
    # An entry lives until its last candidate has used it: on five years of minute bars each one is 8 MB.
    signal_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    uses: dict[str, int] = {}
    for candidate in candidates:
        if candidate.strategy == "composer":
            for spec, p in _strategy_specs(candidate):
                key = spec.name + json.dumps(p, sort_keys=True, default=float)
                uses[key] = uses.get(key, 0) + 1
    for j, candidate in enumerate(candidates):
        if candidate.strategy != "composer":
            spec, p = _strategy_specs(candidate)[0]
            w = spec.run(arrays, p)
            w[: int(settings.engine.min_history_bars)] = 0.0
            out[:, j] = w
            arms.append([candidate.strategy])
            continue
        assert base is not None
        specs = _strategy_specs(candidate)
        targets = np.empty((n, len(specs)), order="F")
        scores = np.empty((n, len(specs)), order="F")
        for k, (spec, p) in enumerate(specs):
            key = spec.name + json.dumps(p, sort_keys=True, default=float)
            if key not in signal_cache:
                signal = _composer_signal(base, spec, p, arrays)
                signal_cache[key] = (signal, strategy_scores(signal[:, None], returns, base.lookback)[:, 0])
            targets[:, k], scores[:, k] = signal_cache[key]
            uses[key] -= 1
            if uses[key] == 0:
                del signal_cache[key]
        composer = Composer(
            strategies=tuple(specs),
            lookback=base.lookback,
            temperature=base.temperature,
            trend_bias=base.trend_bias,
            chop_bias=base.chop_bias,
            volatile_bias=base.volatile_bias,
            min_confidence=base.min_confidence,
            min_history_bars=base.min_history_bars,
            hold_on_nan=base.hold_on_nan,
            score_weights=base.score_weights,
        )
        blend = composer.blend_from(targets, arrays.close, regimes, scores=scores, keep_weights=False)
        out[:, j] = blend.target
        leaders[:, j] = blend.leader
        arms.append(list(candidate.params))
    codes = np.full(n, -1, dtype=np.int8) if labels is None else np.asarray(labels, dtype=np.int8)
    return CandidateSignals(weights=out, leaders=leaders, arms=arms, regimes=codes)


def _composer_signal(base: Composer, spec: StrategyDef, params: dict[str, Any], arrays: Any) -> np.ndarray:
    """One strategy's targets as Composer.strategy_targets makes them (NaN where an input is missing)."""
    single = Composer(strategies=((spec, params),), min_history_bars=base.min_history_bars)
    return single.strategy_targets(arrays)[:, 0]


@njit(cache=True)
def _trips(
    group: np.ndarray, qty: np.ndarray, price: np.ndarray, fee: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closed round trips: (return of each, index of the fill that closed it); see round_trip_returns."""
    out = np.empty(group.shape[0])
    closed_at = np.empty(group.shape[0], np.int64)
    n_out = 0
    current = -1
    pos = cost = pnl = entry = 0.0
    for i in range(group.shape[0]):
        if i == 0 or group[i] != current:
            current = group[i]
            pos = cost = pnl = entry = 0.0
        signed = qty[i]
        px = price[i]
        pnl -= fee[i]
        while signed != 0.0:
            if pos == 0.0 or (signed > 0.0) == (pos > 0.0):
                cost += signed * px
                entry += abs(signed) * px
                pos += signed
                signed = 0.0
                continue
            closing = math.copysign(min(abs(signed), abs(pos)), signed)
            avg = cost / pos
            pnl += -closing * (px - avg)
            cost -= -closing * avg
            pos += closing
            signed -= closing
            # Float rounding can leave a sliver (1e-15 shares) on either side of an exact close; a sliver
            # is no position, or it would open a "trip" of ~1e-13 notional with a huge return.
            tol = 1e-9 * abs(qty[i])
            if abs(signed) <= tol:
                signed = 0.0
            if abs(pos) <= max(1e-12, tol):
                out[n_out] = pnl / entry if entry > 0.0 else 0.0
                closed_at[n_out] = i
                n_out += 1
                pos = cost = pnl = entry = 0.0
    return out[:n_out], closed_at[:n_out]


def round_trip_returns(group: np.ndarray, qty: np.ndarray, price: np.ndarray, fee: np.ndarray) -> np.ndarray:
    """Every closed round trip's return (fraction, net of commission), in input order.

    Fills (signed ``qty`` in shares, ``price`` the fill price, ``fee`` the commission) must be grouped by
    ``group`` (an integer id: a symbol, or a symbol's fold and window) and in time order within a group; a
    group starts flat. Fills are accumulated at their average cost; when the position returns to zero (or
    flips), the trip's P&L over its gross entry notional is one trip return. An open position at the end of a
    group is no trip.
    """
    return _trips(
        np.ascontiguousarray(group, dtype=np.int64),
        np.ascontiguousarray(qty, dtype=np.float64),
        np.ascontiguousarray(price, dtype=np.float64),
        np.ascontiguousarray(fee, dtype=np.float64),
    )[0]


def round_trip_stats(
    run: np.ndarray, segment: np.ndarray, qty: np.ndarray, price: np.ndarray, fee: np.ndarray, n_runs: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run: (closed round trips, winning trips, sum of trip returns), trips as :func:`round_trip_returns`.

    Fills must be grouped by run and in time order within each run; ``segment`` numbers the separately
    simulated windows, each starting flat, so a position still open when one window ends is dropped, never
    netted against the next.
    """
    run = np.asarray(run, dtype=np.int64)
    segment = np.asarray(segment, dtype=np.int64)
    group = np.zeros(run.shape[0], np.int64)
    if run.size > 1:
        group[1:] = np.cumsum((run[1:] != run[:-1]) | (segment[1:] != segment[:-1]))
    returns, closed_at = _trips(
        group,
        np.ascontiguousarray(qty, dtype=np.float64),
        np.ascontiguousarray(price, dtype=np.float64),
        np.ascontiguousarray(fee, dtype=np.float64),
    )
    owner = run[closed_at]
    trips = np.bincount(owner, minlength=n_runs).astype(np.int64)
    wins = np.bincount(owner, weights=(returns > 0.0).astype(np.float64), minlength=n_runs).astype(np.int64)
    total = np.bincount(owner, weights=returns, minlength=n_runs)
    return trips, wins, total


@njit(cache=True)
def _bar_metrics(rets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Per run (column): growth of 1 (product of 1 + r), mean, sample stdev (two passes: no cancellation on
    # quiet runs) and max drawdown of the compounded equity starting at 1. Rows outer, runs inner: the
    # matrix is (bars, runs) in C order, so every pass reads memory in order.
    n, k = rets.shape
    growth = np.ones(k)
    peak = np.ones(k)
    drawdown = np.zeros(k)
    total = np.zeros(k)
    for t in range(n):
        for r in range(k):
            x = rets[t, r]
            total[r] += x
            growth[r] *= 1.0 + x
            if growth[r] > peak[r]:
                peak[r] = growth[r]
            dd = 1.0 - growth[r] / peak[r]
            if dd > drawdown[r]:
                drawdown[r] = dd
    mean = total / max(n, 1)
    std = np.full(k, np.nan)
    if n > 1:
        ss = np.zeros(k)
        for t in range(n):
            for r in range(k):
                d = rets[t, r] - mean[r]
                ss[r] += d * d
        std = np.sqrt(ss / (n - 1))
    return growth, mean, std, drawdown


def score_runs(
    returns: np.ndarray,
    trades: Any,
    *,
    periods_per_year: float,
    score_weights: Any,
) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Composite scores and their metrics for each run (column) of a (bars, runs) ``returns`` matrix.

    ``returns``: per-bar simple returns of each run's equity (fractions; several windows may be stacked).
    ``trades``: the batch's trade frame (``run``, ``side``, ``qty``, ``price``, ``commission``; in time order
    within each run). Metrics (fractions; Sharpe annualised with ``periods_per_year``): ``cagr``, ``sharpe``,
    ``max_drawdown`` (positive), ``win_rate`` and ``avg_trade`` (NaN without closed trips; the composite score
    is then NaN when those weights are positive, which ranks the run last), ``n_trips``.
    """
    rets = np.ascontiguousarray(returns, dtype=np.float64)
    n_bars, n_runs = rets.shape
    growth, mean, std, drawdown = _bar_metrics(rets)
    with np.errstate(invalid="ignore", divide="ignore"):
        cagr = np.where(growth > 0, growth ** (periods_per_year / max(n_bars, 1)) - 1.0, -1.0)
        sharpe = np.where(std > 0, mean / std * math.sqrt(periods_per_year), np.nan)
    # Trips are counted per run (and per window when several are stacked): group fills, keep time order.
    runs = trades["run"].to_numpy()
    if runs.size > 1 and (np.diff(runs) < 0).any():
        trades = trades.sort("run", maintain_order=True)
    signed = np.where(trades["side"].to_numpy() == "buy", 1.0, -1.0) * trades["qty"].to_numpy()
    segment = (
        trades["segment"].to_numpy().astype(np.int64)
        if "segment" in trades.columns
        else np.zeros(trades.height, np.int64)
    )
    trips, wins, total = round_trip_stats(
        trades["run"].to_numpy().astype(np.int64),
        segment,
        np.ascontiguousarray(signed, dtype=np.float64),
        trades["price"].to_numpy().astype(np.float64),
        trades["commission"].to_numpy().astype(np.float64),
        n_runs,
    )
    n = np.maximum(trips, 1)
    win_rate = np.where(trips > 0, wins / n, np.nan)
    avg_trade = np.where(trips > 0, total / n, np.nan)
    columns = {
        "cagr": cagr,
        "sharpe": sharpe,
        "max_drawdown": drawdown,
        "win_rate": win_rate,
        "avg_trade": avg_trade,
    }
    # composite_score, vectorised over runs: a NaN metric with a positive weight makes the score NaN.
    scores = np.zeros(n_runs)
    for name, weight in _weights_mapping(score_weights).items():
        if weight == 0.0:
            continue
        key = "max_drawdown" if name == "max_drawdown_penalty" else name
        values = columns[key]
        scores = (
            scores - weight * np.abs(values) if name == "max_drawdown_penalty" else scores + weight * values
        )
    metrics = [
        {
            "cagr": float(cagr[r]),
            "sharpe": float(sharpe[r]),
            "max_drawdown": float(drawdown[r]),
            "win_rate": float(win_rate[r]),
            "avg_trade": float(avg_trade[r]),
            "n_trips": float(trips[r]),
        }
        for r in range(n_runs)
    ]
    return scores, metrics
