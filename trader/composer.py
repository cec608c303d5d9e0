"""The two-level composer: a regime-weighted softmax blend of strategies, and composite scoring.

Level 1 (per bar, from rows <= t only):

* each strategy's **score** at bar t is the t-statistic of its own recent per-bar returns: with
  ``s[u] = target[u-1] * r[u]`` (``r[u] = close[u] / close[u-1] - 1``, a simple per-bar return), the
  mean of the finite ``s`` over the last ``lookback`` bars divided by their sample stdev, times the square
  root of their count (per-bar Sharpe x sqrt(bars)). Fewer than 2 finite values, or zero spread, score 0
  (no evidence);
* its **regime bias** is added to the score: ``trend_bias`` to ``"trend"``-style strategies on bars labelled
  trend, ``chop_bias`` to ``"mean_reversion"``-style strategies on chop bars, ``volatile_bias`` to every
  strategy on volatile bars (warm-up bars, code -1, get none). Styles: sma_cross, ema_cross,
  donchian_breakout, ts_momentum, vol_breakout are trend; rsi_reversion, bollinger_reversion are
  mean_reversion; each strategy declares its own (:attr:`trader.strategies.StrategyDef.style`);
* **weights** are ``softmax(logits / temperature)`` over the strategies plus, by default, a *flat* arm whose
  logit is always 0 and whose target is 0 (holding cash: its score is exactly 0 and it gets no bias). The
  flat arm is what lets a negative ``volatile_bias`` de-risk and lets a losing strategy lose weight to cash;
* the **blended target** is the weighted sum of the strategies' targets, in [-1, 1]; when ``|blended|`` is
  below ``min_confidence`` it is 0 (flat);
* no decision is made before ``min_history_bars`` bars of history: the first decision is at the bar whose
  index (from 0) equals ``min_history_bars``, the same rule as the simulator; earlier targets are 0;
* a bar with a NaN input (any strategy's target NaN, e.g. the bar's close is missing) holds the previous
  blended target when ``hold_on_nan`` is true, else goes flat.

Level 2: :func:`composite_score` folds a metrics mapping (CAGR, Sharpe, win rate, average trade return, max
drawdown) into one number with configurable weights; :func:`rank_candidates` orders parameter sets or
strategies by it.

Example::

    from trader.config import load_settings
    from trader.composer import Composer
    from trader.data.synth import synth_bars

    settings = load_settings(["configs/base.yaml", "configs/demo.yaml"], env={})
    composer = Composer.from_settings(settings)
    bars = synth_bars("SYN000", "1d", "2020-01-01", "2024-12-31", seed=7)
    target = composer.target_weights(bars)     # one weight in [-1, 1] per bar
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit

from trader.errors import ConfigError, DataError
from trader.features.tstat import rolling_tstat
from trader.strategies import STYLES, StrategyDef, as_bar_arrays, get_strategy

__all__ = [
    "REGIME_CHOP",
    "REGIME_TREND",
    "REGIME_VOLATILE",
    "SCORE_METRIC_KEYS",
    "Blend",
    "Composer",
    "RankedCandidate",
    "blend_targets",
    "composite_score",
    "rank_candidates",
    "regime_bias",
    "softmax_weights",
    "strategy_returns",
    "strategy_scores",
]

# Codes of trader.features.regimes.regime_labels (REGIMES = ("trend", "chop", "volatile"); -1 = warm-up).
REGIME_TREND, REGIME_CHOP, REGIME_VOLATILE = 0, 1, 2

# ScoreWeights field -> metric keys accepted for it, first match wins (the first is the name
# trader.metrics.summarize() uses; "avg_trade_return" is the name of the function computing it).
SCORE_METRIC_KEYS: Mapping[str, tuple[str, ...]] = {
    "cagr": ("cagr",),
    "sharpe": ("sharpe",),
    "win_rate": ("win_rate",),
    "avg_trade": ("avg_trade", "avg_trade_return"),
    "max_drawdown_penalty": ("max_drawdown",),
}


# -- level 1: pure functions over arrays ------------------------------------------------------------------


def _as_targets(targets: Any) -> np.ndarray:
    arr = np.asarray(targets, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"targets must be (bars, strategies), got shape {arr.shape}")
    return arr if arr.flags.f_contiguous else np.ascontiguousarray(arr)  # either order; never strided


def _as_returns(returns: Any, n: int) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(returns, dtype=np.float64))
    if arr.shape != (n,):
        raise DataError(f"returns must have one value per bar ({n}), got shape {arr.shape}")
    return arr


def strategy_returns(targets: Any, returns: Any) -> np.ndarray:
    """Each strategy's per-bar return ``targets[t-1] * returns[t]`` (row 0 is NaN), shape (bars, strategies).

    ``returns`` are simple per-bar returns (fractions), ``close[t] / close[t-1] - 1``.

    >>> strategy_returns([[1.0], [1.0], [0.0]], [np.nan, 0.02, -0.01])[:, 0]
    array([  nan,  0.02, -0.01])
    """
    tg = _as_targets(targets)
    r = _as_returns(returns, tg.shape[0])
    out = np.full(tg.shape, np.nan)
    out[1:] = tg[:-1] * r[1:, None]
    return out


def strategy_scores(targets: Any, returns: Any, lookback: int) -> np.ndarray:
    """Per-bar score of each strategy: the t-statistic of its last ``lookback`` bars of strategy returns.

    Score at t = mean / sample-stdev x sqrt(count) over the finite values of :func:`strategy_returns` in
    rows ``t - lookback + 1 .. t`` (dimensionless; per-bar Sharpe x sqrt(bars)). Fewer than 2 values or no
    spread give 0. Uses rows <= t only. Shape (bars, strategies).

    >>> s = strategy_scores(np.ones((4, 1)), [np.nan, 0.01, 0.03, 0.02], lookback=3)
    >>> round(float(s[3, 0]), 6)  # mean 0.02, stdev 0.01, 3 values
    3.464102
    """
    if int(lookback) < 1:
        raise ConfigError(f"composer lookback must be >= 1 bar, got {lookback}")  # 1: every score is 0
    per_bar = np.ascontiguousarray(strategy_returns(targets, returns).T)
    # O(bars), and each score depends only on its window's values (trader.features.tstat), so a window
    # loaded with warm-up scores every bar exactly as the whole history does.
    return np.ascontiguousarray(rolling_tstat(per_bar, int(lookback)).T)


def regime_bias(
    regimes: Any,
    styles: Sequence[str],
    *,
    trend_bias: float = 0.0,
    chop_bias: float = 0.0,
    volatile_bias: float = 0.0,
) -> np.ndarray:
    """Logit bias per bar and strategy from regime codes (0 trend, 1 chop, 2 volatile, -1 warm-up).

    ``trend_bias`` goes to ``"trend"`` strategies on trend bars, ``chop_bias`` to ``"mean_reversion"``
    strategies on chop bars, ``volatile_bias`` to every strategy on volatile bars. Shape (bars, strategies).

    >>> regime_bias([0, 1, 2, -1], ["trend", "mean_reversion"], trend_bias=1.0, chop_bias=2.0,
    ...             volatile_bias=-1.0).tolist()
    [[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [0.0, 0.0]]
    """
    codes = np.asarray(regimes)
    if codes.ndim != 1:
        raise DataError(f"regimes must be one code per bar, got shape {codes.shape}")
    is_trend = np.array([s == "trend" for s in styles], dtype=bool)
    is_mr = np.array([s == "mean_reversion" for s in styles], dtype=bool)
    out = np.zeros((codes.shape[0], len(styles)), dtype=np.float64)
    out += np.where((codes == REGIME_TREND)[:, None] & is_trend[None, :], float(trend_bias), 0.0)
    out += np.where((codes == REGIME_CHOP)[:, None] & is_mr[None, :], float(chop_bias), 0.0)
    out += np.where((codes == REGIME_VOLATILE)[:, None], float(volatile_bias), 0.0)
    return out


def softmax_weights(logits: Any, temperature: float = 1.0, *, include_flat: bool = True) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)``; ``include_flat`` appends the flat arm's column (logit 0).

    Shape (bars, strategies [+ 1]); each row sums to 1. Lower temperature = sharper weights.

    >>> softmax_weights([[0.0, math.log(3.0)]], 1.0, include_flat=False).round(3).tolist()
    [[0.25, 0.75]]
    """
    if not temperature > 0:
        raise ConfigError(f"composer temperature must be > 0, got {temperature}")
    z = _as_targets(logits) / float(temperature)
    if include_flat:
        z = np.concatenate([z, np.zeros((z.shape[0], 1))], axis=1)
    if z.shape[1] == 0:
        return z
    z = z - z.max(axis=1, keepdims=True)  # shift for overflow safety; softmax is shift-invariant
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@njit(cache=True)
def _blend_kernel(
    tg: np.ndarray,
    logits: np.ndarray,
    temperature: float,
    include_flat: bool,
    min_confidence: float,
    first: int,
    hold: bool,
    keep_weights: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # One pass per bar: softmax over the logits (plus the flat arm at logit 0), the weighted sum of the
    # targets, the confidence floor and the warm-up / NaN rules. Fused because tuning blends every
    # candidate over every minute bar: numpy's temporaries cost more than the arithmetic.
    n, k = tg.shape
    width = k + 1 if include_flat else k
    # Tuning never reads the weights: not writing them saves a bars x arms array per candidate.
    weights = np.empty((n if keep_weights else 0, width), dtype=np.float64)
    target = np.zeros(n, dtype=np.float64)
    leader = np.full(n, -1, dtype=np.int16)
    e = np.empty(width, dtype=np.float64)
    z = np.empty(k, dtype=np.float64)
    # The last bar's scaled logits and shift: a strategy whose score did not move (a flat stretch) keeps
    # its exponential, which is most of a bar's cost. Reuse gives the identical value, so results are the
    # same bit for bit.
    z_prev = np.full(k, np.nan)
    top_prev = np.nan
    prev = 0.0
    for t in range(n):
        top = 0.0 if include_flat else -np.inf
        for j in range(k):
            z[j] = logits[t, j] / temperature
            if z[j] > top:
                top = z[j]
        same_top = top == top_prev
        total = 0.0
        for j in range(k):
            if not (same_top and z[j] == z_prev[j]):
                e[j] = math.exp(z[j] - top)
                z_prev[j] = z[j]
            total += e[j]
        if include_flat:
            if not same_top:
                e[k] = math.exp(0.0 - top)
            total += e[k]
        top_prev = top
        blended = 0.0
        nan_row = False
        best = -1
        best_w = -1.0
        for j in range(width):
            w = e[j] / total
            if keep_weights:
                weights[t, j] = w
            if j < k:
                v = tg[t, j]
                if np.isnan(v):
                    nan_row = True
                else:
                    blended += v * w
                if w > best_w:  # the first largest weight, as np.argmax picks it
                    best, best_w = j, w
        leader[t] = best
        blended = min(1.0, max(-1.0, blended))
        if t < first:
            value = 0.0
        elif nan_row:
            value = prev if hold else 0.0
        else:
            value = blended if abs(blended) >= min_confidence else 0.0
        target[t] = value
        prev = value
    return target, weights, leader


@dataclass(frozen=True)
class Blend:
    """The composer's output for one symbol.

    ``target``: blended target weight per bar in [-1, 1] (what to hold after the bar's close).
    ``weights``: softmax weight per bar and strategy (last column = the flat arm when it is included).
    ``scores``: each strategy's trailing-performance score per bar (before the regime bias).
    ``logits``: scores plus regime bias.
    ``leader``: per bar, the index of the strategy with the largest weight (-1 when there are none).
    """

    target: np.ndarray
    weights: np.ndarray
    scores: np.ndarray
    logits: np.ndarray
    leader: np.ndarray


def blend_targets(
    targets: Any,
    returns: Any,
    regimes: Any | None = None,
    styles: Sequence[str] | None = None,
    *,
    lookback: int = 50,
    temperature: float = 1.0,
    trend_bias: float = 0.0,
    chop_bias: float = 0.0,
    volatile_bias: float = 0.0,
    min_confidence: float = 0.1,
    min_history_bars: int = 50,
    hold_on_nan: bool = False,
    include_flat: bool = True,
    scores: np.ndarray | None = None,
    keep_weights: bool = True,
) -> Blend:
    """Blend strategies' target weights (bars x strategies) into one target per bar; see the module doc.

    ``targets``: each in [-1, 1], NaN = no input that bar. ``returns``: simple per-bar returns of the
    traded symbol (``close[t] / close[t-1] - 1``). ``regimes``: int codes per bar (None = no regime bias).
    ``styles``: one per strategy (``"trend"``, ``"mean_reversion"``, ``"other"``). ``min_confidence`` is
    compared with ``|blended target|``. ``min_history_bars`` is the index (from 0) of the first deciding bar.
    Everything at bar t uses rows <= t only. ``scores``: the strategies' :func:`strategy_scores`, when the
    caller already has them (tuning shares them between candidates); computed here when None.
    ``keep_weights=False`` leaves ``Blend.weights`` empty (0 rows), for callers that need only the targets.

    >>> import numpy as np
    >>> tg = np.column_stack([np.ones(60), -np.ones(60)])
    >>> r = np.r_[np.nan, 0.001 + 0.002 * np.sin(np.arange(59))]  # drifting up: the long one wins
    >>> blend = blend_targets(tg, r, styles=["trend", "trend"], lookback=20, min_history_bars=30)
    >>> float(blend.target[-1]) > 0
    True
    """
    tg = _as_targets(targets)
    n, k = tg.shape
    r = _as_returns(returns, n)
    styles = list(styles) if styles is not None else ["other"] * k
    if len(styles) != k:
        raise ConfigError(f"composer: {len(styles)} styles given for {k} strategies")
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise ConfigError(f"composer: unknown strategy style {unknown[0]!r} (styles: {', '.join(STYLES)})")
    if not 0.0 <= min_confidence <= 1.0:
        raise ConfigError(f"composer min_confidence must be within 0..1, got {min_confidence}")
    if int(min_history_bars) < 0:
        raise ConfigError(f"composer min_history_bars must be >= 0, got {min_history_bars}")
    if not temperature > 0:
        raise ConfigError(f"composer temperature must be > 0, got {temperature}")
    if scores is None:
        scores = strategy_scores(tg, r, lookback)
    elif scores.shape != (n, k):
        raise DataError(f"composer: scores must be (bars, strategies) = {(n, k)}, got {scores.shape}")
    logits = np.array(scores, dtype=np.float64, copy=True)
    if regimes is not None:
        codes = np.asarray(regimes)
        if codes.shape != (n,):
            raise DataError(f"regimes must have one code per bar ({n}), got shape {codes.shape}")
        logits += regime_bias(
            codes, styles, trend_bias=trend_bias, chop_bias=chop_bias, volatile_bias=volatile_bias
        )
    # The flat arm's target is 0, so it only dilutes.
    # C (bars x strategies) or F order (tuning's column-per-strategy arrays): the kernel reads either.
    target, weights, leader = _blend_kernel(
        tg if tg.flags.f_contiguous else np.ascontiguousarray(tg),
        logits if logits.flags.f_contiguous else np.ascontiguousarray(logits),
        float(temperature),
        bool(include_flat),
        float(min_confidence),
        int(min_history_bars),
        bool(hold_on_nan),
        bool(keep_weights),
    )
    return Blend(target=target, weights=weights, scores=scores, logits=logits, leader=leader)


# -- level 1: the configured composer ---------------------------------------------------------------------


@dataclass(frozen=True)
class Composer:
    """The configured level-1 composer: strategies with their parameters, and the blend settings.

    Build it with :meth:`from_settings`; call :meth:`blend` or :meth:`target_weights` with one symbol's bars.
    ``lookback`` is the scoring window in bars; regimes come from
    :func:`trader.features.regimes.regime_labels` with its own defaults (about a year of warm-up on daily
    bars, during which no bias applies), or with ``regime_params`` as its keyword arguments.
    """

    strategies: tuple[tuple[StrategyDef, Mapping[str, Any]], ...] = ()
    lookback: int = 50
    temperature: float = 1.0
    trend_bias: float = 0.0
    chop_bias: float = 0.0
    volatile_bias: float = 0.0
    min_confidence: float = 0.1
    min_history_bars: int = 50
    hold_on_nan: bool = False
    include_flat: bool = True
    score_weights: Mapping[str, float] = field(default_factory=dict)
    regime_params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any, *, min_history_bars: int | None = None) -> Composer:
        """A composer from :class:`~trader.config.Settings` (or its ``composer`` section alone).

        Each ``composer.strategies`` entry is looked up in the registry and its params validated (ConfigError
        names the strategy and param). ``min_history_bars`` comes from ``engine.min_history_bars`` when the
        whole Settings is given; pass it explicitly with a bare ComposerSettings (default 50).

        >>> from trader.config import load_settings
        >>> c = Composer.from_settings(load_settings(["configs/demo.yaml"], env={}))
        >>> [spec.name for spec, _ in c.strategies]
        ['sma_cross', 'rsi_reversion', 'donchian_breakout']
        """
        section = getattr(settings, "composer", settings)
        if min_history_bars is None:
            engine = getattr(settings, "engine", None)
            min_history_bars = engine.min_history_bars if engine is not None else 50
        strategies = []
        for entry in section.strategies:
            spec = get_strategy(entry.name)
            strategies.append((spec, spec.validate(entry.params)))
        weights = section.score_weights
        return cls(
            strategies=tuple(strategies),
            lookback=section.lookback,
            temperature=section.temperature,
            trend_bias=section.trend_bias,
            chop_bias=section.chop_bias,
            volatile_bias=section.volatile_bias,
            min_confidence=section.min_confidence,
            min_history_bars=int(min_history_bars),
            hold_on_nan=section.hold_on_nan,
            score_weights={name: float(getattr(weights, name)) for name in SCORE_METRIC_KEYS},
        )

    @property
    def styles(self) -> list[str]:
        return [spec.style for spec, _ in self.strategies]

    def _needs_regimes(self) -> bool:
        return any(b != 0.0 for b in (self.trend_bias, self.chop_bias, self.volatile_bias))

    def strategy_targets(self, bars: Any) -> np.ndarray:
        """Each strategy's target weights, shape (bars, strategies); NaN on bars with a non-finite input."""
        need = sorted({c for spec, _ in self.strategies for c in spec.inputs} | {"close"})
        arrays = as_bar_arrays(bars, need, where="composer")
        out = np.empty((len(arrays), len(self.strategies)))
        bad = np.zeros(len(arrays), dtype=bool)
        for j, (spec, params) in enumerate(self.strategies):
            out[:, j] = spec.run(arrays, params)
            for c in spec.inputs:
                bad |= ~np.isfinite(arrays.column(c))
        # A missing bar is a NaN input: the blend holds or flattens there (hold_on_nan).
        out[bad, :] = np.nan
        return out

    def regimes(self, bars: Any) -> np.ndarray:
        """Regime codes per bar (0 trend, 1 chop, 2 volatile, -1 warm-up) from trader.features.regimes."""
        from trader.features.regimes import regime_labels

        arrays = as_bar_arrays(bars, ("high", "low", "close"), where="composer regimes")
        return np.asarray(regime_labels(arrays.high, arrays.low, arrays.close, **self.regime_params))

    def blend(self, bars: Any, regimes: Any | None = None) -> Blend:
        """The full level-1 blend for one symbol's bars (see :func:`blend_targets`).

        ``regimes`` overrides the labels computed from the bars; without any bias set, none are computed.
        """
        arrays = as_bar_arrays(bars, ("close",), where="composer")
        if regimes is None and self._needs_regimes():
            regimes = self.regimes(bars)
        return self.blend_from(self.strategy_targets(bars), arrays.close, regimes)

    def blend_from(
        self,
        targets: Any,
        close: Any,
        regimes: Any | None = None,
        scores: np.ndarray | None = None,
        *,
        keep_weights: bool = True,
    ) -> Blend:
        """The level-1 blend of precomputed strategy ``targets`` (bars x strategies) on ``close`` prices.

        For callers that share strategy signals between many composers (parameter grids); ``regimes`` as in
        :meth:`blend` (None = no regime bias); ``scores`` and ``keep_weights`` as in :func:`blend_targets`.
        """
        close = np.asarray(close, dtype=np.float64)
        returns = np.full(close.shape, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            returns[1:] = close[1:] / close[:-1] - 1.0
        return blend_targets(
            targets,
            returns,
            regimes,
            self.styles,
            lookback=self.lookback,
            temperature=self.temperature,
            trend_bias=self.trend_bias,
            chop_bias=self.chop_bias,
            volatile_bias=self.volatile_bias,
            min_confidence=self.min_confidence,
            min_history_bars=self.min_history_bars,
            hold_on_nan=self.hold_on_nan,
            include_flat=self.include_flat,
            scores=scores,
            keep_weights=keep_weights,
        )

    def target_weights(self, bars: Any, regimes: Any | None = None) -> np.ndarray:
        """Blended target weight per bar in [-1, 1], decided at each bar's close (no strategies: all 0)."""
        return self.blend(bars, regimes).target

    def score(self, metrics: Mapping[str, float]) -> float:
        """:func:`composite_score` with this composer's score weights."""
        return composite_score(metrics, self.score_weights or None)


# -- level 2: composite scoring ---------------------------------------------------------------------------


def _weights_mapping(weights: Any) -> dict[str, float]:
    if weights is None:
        from trader.config import ScoreWeights

        weights = ScoreWeights()
    if not isinstance(weights, Mapping):
        if hasattr(weights, "score_weights"):  # ComposerSettings
            weights = weights.score_weights
        weights = {name: getattr(weights, name) for name in SCORE_METRIC_KEYS}
    unknown = [k for k in weights if k not in SCORE_METRIC_KEYS]
    if unknown:
        raise ConfigError(f"unknown score weight {unknown[0]!r} (known: {', '.join(SCORE_METRIC_KEYS)})")
    out = {}
    for name in SCORE_METRIC_KEYS:
        value = weights.get(name, 0.0)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(f"score weight {name}={value!r} must be a finite number >= 0")
        out[name] = float(value)
    return out


def composite_score(metrics: Mapping[str, float], weights: Any = None) -> float:
    """One number to rank by: ``w_cagr*cagr + w_sharpe*sharpe + w_win*win_rate + w_avg*avg_trade
    - w_dd*|max_drawdown|``.

    Keys as :func:`trader.metrics.summarize` gives them (``avg_trade``; ``avg_trade_return`` is accepted
    too). Units: cagr, win_rate, the average trade return and max_drawdown are fractions (0.1 = 10 %;
    max_drawdown may be signed either way, its magnitude is used); sharpe is annualised. ``weights`` is a
    :class:`~trader.config.ScoreWeights`, a ComposerSettings, or a mapping with its field names (missing =
    0); None = the ScoreWeights defaults. A metric whose weight is 0 is not read. A NaN metric with a
    positive weight makes the score NaN (ranked last); a missing one raises ConfigError.

    >>> composite_score({"cagr": 0.1, "sharpe": 1.0, "win_rate": 0.5, "avg_trade_return": 0.01,
    ...                  "max_drawdown": -0.2}, {"cagr": 1, "sharpe": 1, "max_drawdown_penalty": 1})
    0.9000000000000001
    """
    w = _weights_mapping(weights)
    total = 0.0
    for name, weight in w.items():
        if weight == 0.0:
            continue
        keys = SCORE_METRIC_KEYS[name]
        key = next((k for k in keys if k in metrics), None)
        if key is None:
            raise ConfigError(
                f"composite score: metrics lack {keys[0]!r} (weight {name}={weight}); "
                f"give it or set composer.score_weights.{name}=0"
            )
        value = float(metrics[key])
        if name == "max_drawdown_penalty":
            total -= weight * abs(value)
        else:
            total += weight * value
    return total


@dataclass(frozen=True)
class RankedCandidate:
    """A ranked candidate: 1-based ``rank``, its ``key`` (a name or parameter set), ``score``, ``metrics``."""

    rank: int
    key: Any
    score: float
    metrics: Mapping[str, float]


def rank_candidates(
    candidates: Mapping[Any, Mapping[str, float]] | Iterable[tuple[Any, Mapping[str, float]]],
    weights: Any = None,
) -> list[RankedCandidate]:
    """Candidates (strategies or parameter sets with their metrics) best first by :func:`composite_score`.

    ``candidates`` is a mapping key -> metrics, or an iterable of ``(key, metrics)`` pairs (keys need not be
    hashable, e.g. parameter dicts). NaN scores come last; ties keep the input order.

    >>> ranked = rank_candidates({"a": {"sharpe": 0.5}, "b": {"sharpe": 1.5}}, {"sharpe": 1.0})
    >>> [c.key for c in ranked]
    ['b', 'a']
    """
    pairs = list(candidates.items()) if isinstance(candidates, Mapping) else list(candidates)
    w = _weights_mapping(weights)
    scored = [(composite_score(m, w), i, key, m) for i, (key, m) in enumerate(pairs)]
    scored.sort(key=lambda s: (math.isnan(s[0]), -s[0] if not math.isnan(s[0]) else 0.0, s[1]))
    return [RankedCandidate(rank, key, score, m) for rank, (score, _, key, m) in enumerate(scored, start=1)]
