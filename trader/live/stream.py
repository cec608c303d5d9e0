"""A symbol's decisions in O(1) per bar, bit for bit equal to the backtest's.

:class:`trader.live.decide.Decider` re-runs the composer over every kept bar at each bar close: O(bars kept).
:class:`StreamDecider` carries each component's running state instead (moving-average totals, Wilder
averages, rolling windows as ring buffers, position latches, the composer's fixed-point t-stat sums, the
regime quantile window) and steps all of it in one compiled call per bar (:mod:`trader.live.stream_kernels`).
Every kernel does the same floating-point operations in the same order as its vectorised counterpart, so the
target at bar t equals, bit for bit, what the backtest computes at bar t over the whole history from the
stream's first bar:

* composer mode: ``Composer.from_settings(settings).target_weights(bars)[t]`` (or a given ``Composer``);
* strategy mode: ``get_strategy(name).run(bars, params)[t]``.

Only the built-in strategies (``trader.strategies.library``: sma_cross, ema_cross, donchian_breakout,
ts_momentum, vol_breakout, rsi_reversion, bollinger_reversion) and the built-in regime labels are streamed;
:func:`supports` says False for anything else (a user-registered strategy, a built-in name re-registered with
another function, unknown regime parameters), and the caller keeps recomputing with ``Decider`` then. Nothing
is approximated.

Units: target weights are fractions of equity in [-1, 1], decided at the bar's close; ``ts`` is the bar's
start in int nanoseconds UTC; periods are in bars.

Example::

    from trader.config import load_settings
    from trader.data.synth import synth_bars
    from trader.live.stream import StreamDecider, supports

    settings = load_settings(["configs/base.yaml", "configs/demo.yaml"], env={})
    bars = synth_bars("SYN000", "1m", "2021-03-01", "2021-03-03", seed=7)
    assert supports(settings)
    stream = StreamDecider("SYN000", settings)
    history = stream.warm(bars.head(700))          # targets of the history, one compiled call
    row = bars.row(700, named=True)
    target = stream.step(row["ts"], row["open"], row["high"], row["low"], row["close"], row["volume"])
"""

from __future__ import annotations

import datetime as dt
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from trader.errors import ConfigError, DataError
from trader.live import stream_kernels as sk

__all__ = ["StreamDecider", "supports"]

_COLUMNS = ("open", "high", "low", "close", "volume")
_REGIME_KEYS = ("er_n", "adx_n", "vol_n", "vol_window", "vol_pct", "er_trend", "adx_trend")
_STYLE_CODES = {"trend": sk.STYLE_TREND, "mean_reversion": sk.STYLE_MEAN_REVERSION, "other": 2}
_INPUT_BITS = {"open": 1, "high": 2, "low": 4}


class _Unsupported(Exception):
    """A component this module does not stream (the caller falls back to recomputing)."""


@dataclass(frozen=True)
class _Kind:
    code: int
    func_name: str  # the function in trader.strategies.library this kernel mirrors
    params: tuple[str, ...]  # its parameter names, in declaration order


_KINDS: Mapping[str, _Kind] = {
    "sma_cross": _Kind(sk.K_SMA_CROSS, "sma_cross", ("fast", "slow", "allow_short")),
    "ema_cross": _Kind(sk.K_EMA_CROSS, "ema_cross", ("fast", "slow", "allow_short")),
    "donchian_breakout": _Kind(
        sk.K_DONCHIAN, "donchian_breakout", ("lookback", "exit_lookback", "allow_short")
    ),
    "ts_momentum": _Kind(sk.K_TS_MOMENTUM, "ts_momentum", ("lookback", "threshold", "allow_short")),
    "vol_breakout": _Kind(sk.K_VOL_BREAKOUT, "vol_breakout", ("atr_period", "k", "hold", "allow_short")),
    "rsi_reversion": _Kind(
        sk.K_RSI_REVERSION, "rsi_reversion", ("period", "lower", "upper", "exit_at", "allow_short")
    ),
    "bollinger_reversion": _Kind(
        sk.K_BOLLINGER, "bollinger_reversion", ("period", "k", "exit_at", "allow_short")
    ),
}


# -- the plan: configuration arrays and state sizes ---------------------------------------------------------


@dataclass
class _Plan:
    ci: np.ndarray
    cf: np.ndarray
    n_float: int
    n_int: int
    n_uint: int
    nan_slots: list[int]  # float state slots that start as NaN (a "prior bar" value before any bar)
    regimes: bool
    description: dict[str, Any]


class _Allocator:
    def __init__(self) -> None:
        self.f = 0
        self.i = 1  # st[0] is the bar index
        self.u = 0
        self.nan_slots: list[int] = []

    def floats(self, n: int) -> int:
        self.f += n
        return self.f - n

    def ints(self, n: int) -> int:
        self.i += n
        return self.i - n

    def uints(self, n: int) -> int:
        self.u += n
        return self.u - n


def _builtin_kind(spec: Any) -> _Kind:
    """The kernel for a registered strategy, or _Unsupported when it is not the built-in one."""
    from trader.strategies import library

    kind = _KINDS.get(spec.name)
    if kind is None or spec.func is not getattr(library, kind.func_name, None):
        raise _Unsupported(f"strategy {spec.name!r} is not a built-in strategy with a streaming kernel")
    if tuple(spec.param_names) != kind.params:
        raise _Unsupported(f"strategy {spec.name!r} declares params {spec.param_names}, not {kind.params}")
    return kind


def _strategy_row(alloc: _Allocator, spec: Any, values: Mapping[str, Any]) -> tuple[list[int], list[float]]:
    """Allocate one strategy's state; its ci row (kind, state offsets, params, warm-up, style) and cf row."""
    kind = _builtin_kind(spec)
    short = int(bool(values["allow_short"]))
    p1 = p2 = 0
    fp = [0.0] * sk.ROW_F
    code = kind.code
    if code in (sk.K_SMA_CROSS, sk.K_EMA_CROSS):
        p1, p2 = int(values["fast"]), int(values["slow"])
        n_f = (1 + p1) + (1 + p2) if code == sk.K_SMA_CROSS else 4
        fo, io = alloc.floats(n_f), alloc.ints(2)
    elif code == sk.K_DONCHIAN:
        p1, p2 = int(values["lookback"]), int(values["exit_lookback"])
        fo, io = alloc.floats(5 + 2 * max(p1, p2)), alloc.ints(1)
        alloc.nan_slots += [fo, fo + 1, fo + 2, fo + 3]  # the channels at bar -1
    elif code == sk.K_TS_MOMENTUM:
        p1 = int(values["lookback"])
        fp[0] = float(values["threshold"])
        fo, io = alloc.floats(p1 + 1), alloc.ints(1)
    elif code == sk.K_VOL_BREAKOUT:
        p1, p2 = int(values["atr_period"]), int(values["hold"])
        fp[0] = float(values["k"])
        fo, io = alloc.floats(5), alloc.ints(2)
        alloc.nan_slots.append(fo + 3)  # the ATR at bar -1
    elif code == sk.K_RSI_REVERSION:
        p1 = int(values["period"])
        p2 = 0 if values["exit_at"] == "opposite" else 1
        fp[0], fp[1] = float(values["lower"]), float(values["upper"])
        fo, io = alloc.floats(4), alloc.ints(1)
    elif code == sk.K_BOLLINGER:
        p1 = int(values["period"])
        p2 = 0 if values["exit_at"] == "middle" else 1
        fp[0] = float(values["k"])
        fo, io = alloc.floats(2 + p1), alloc.ints(1)
    else:  # pragma: no cover - _KINDS and this function list the same kinds
        raise _Unsupported(spec.name)
    if values.get("exit_at") not in (None, "opposite", "middle"):
        raise _Unsupported(f"strategy {spec.name!r}: exit_at={values['exit_at']!r}")
    warmup = int(spec.warmup(values))
    style = _STYLE_CODES[spec.style]
    return [code, fo, io, p1, p2, short, warmup, style], fp


def _regime_params(composer: Any) -> dict[str, Any]:
    from trader.features.regimes import regime_labels

    signature = inspect.signature(regime_labels)
    keyword = {n: p.default for n, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY}
    if set(keyword) != set(_REGIME_KEYS):
        raise _Unsupported(f"regime_labels takes {sorted(keyword)}; the stream knows {sorted(_REGIME_KEYS)}")
    unknown = set(composer.regime_params) - set(_REGIME_KEYS)
    if unknown:
        raise _Unsupported(f"regime parameter(s) {sorted(unknown)} are not streamed")
    values = {**keyword, **composer.regime_params}
    # Validate exactly as the backtest would (ConfigError names the bad parameter).
    regime_labels(np.ones(3), np.ones(3), np.ones(3), **values)
    return values


def _plan(settings: Any, strategy: str | None, params: Mapping[str, Any] | None, composer: Any) -> _Plan:
    """Configuration and state sizes; ConfigError for a bad configuration, _Unsupported when not streamed."""
    from trader.composer import Composer
    from trader.features.tstat import VALUE_BITS, fixed_point_bits
    from trader.strategies import get_strategy

    if sk.VALUE_BITS != VALUE_BITS:
        raise _Unsupported("trader.features.tstat.VALUE_BITS changed; the stream's t-stat needs updating")
    alloc = _Allocator()
    ci = np.zeros(sk.HEADER_I, dtype=np.int64)
    cf = np.zeros(sk.HEADER_F, dtype=np.float64)
    rows_i: list[list[int]] = []
    rows_f: list[list[float]] = []
    regimes = False
    if strategy is None and params:
        raise ConfigError("live decisions: params need a strategy; the composer reads settings")
    if strategy is not None:
        spec = get_strategy(strategy)
        chosen = spec.validate(dict(params or {}))
        row_i, row_f = _strategy_row(alloc, spec, chosen)
        rows_i.append(row_i)
        rows_f.append(row_f)
        ci[sk.H_MODE] = sk.MODE_STRATEGY
        ci[sk.H_K] = 1
        description: dict[str, Any] = {"mode": "strategy", "strategy": spec.name, "params": chosen}
    else:
        comp = composer if composer is not None else Composer.from_settings(settings)
        if type(comp) is not Composer:  # a subclass may blend differently
            raise _Unsupported(f"composer of type {type(comp).__name__} (only trader.composer.Composer)")
        if not comp.strategies:
            raise ConfigError("live decisions: composer.strategies is empty; configure strategies")
        # The same checks blend_targets makes, so a bad composer fails here rather than mid-session.
        if not comp.temperature > 0:
            raise ConfigError(f"composer temperature must be > 0, got {comp.temperature}")
        if not 0.0 <= comp.min_confidence <= 1.0:
            raise ConfigError(f"composer min_confidence must be within 0..1, got {comp.min_confidence}")
        if int(comp.min_history_bars) < 0:
            raise ConfigError(f"composer min_history_bars must be >= 0, got {comp.min_history_bars}")
        if int(comp.lookback) < 1:
            raise ConfigError(f"composer lookback must be >= 1 bar, got {comp.lookback}")
        k = len(comp.strategies)
        bad = 0
        for spec, values in comp.strategies:
            row_i, row_f = _strategy_row(alloc, spec, spec.validate(dict(values)))
            rows_i.append(row_i)
            rows_f.append(row_f)
            for column in spec.inputs:
                bad |= _INPUT_BITS.get(column, 0)
            if "volume" in spec.inputs:
                raise _Unsupported(f"strategy {spec.name!r} reads volume")  # no built-in one does
        lookback = int(comp.lookback)
        ci[sk.H_MODE] = sk.MODE_COMPOSER
        ci[sk.H_K] = k
        ci[sk.H_LOOKBACK] = lookback
        ci[sk.H_FRAC] = fixed_point_bits(lookback)
        ci[sk.H_FIRST] = int(comp.min_history_bars)
        ci[sk.H_HOLD] = int(bool(comp.hold_on_nan))
        ci[sk.H_FLAT] = int(bool(comp.include_flat))
        ci[sk.H_BAD] = bad
        ci[sk.H_TS_F] = alloc.floats(k * lookback)
        ci[sk.H_TS_I] = alloc.ints(2 * k)
        ci[sk.H_TS_U] = alloc.uints(3 * k)
        ci[sk.H_CMP_F] = alloc.floats(2 + (k + 1) + k)
        cf[sk.C_TEMPERATURE] = float(comp.temperature)
        cf[sk.C_MIN_CONFIDENCE] = float(comp.min_confidence)
        cf[sk.C_TREND_BIAS] = float(comp.trend_bias)
        cf[sk.C_CHOP_BIAS] = float(comp.chop_bias)
        cf[sk.C_VOLATILE_BIAS] = float(comp.volatile_bias)
        regimes = comp._needs_regimes()  # the same rule Composer.blend applies
        if regimes:
            plan_regimes(ci, cf, alloc, _regime_params(comp))
        description = {
            "mode": "composer",
            "strategies": [{"name": s.name, "params": dict(p)} for s, p in comp.strategies],
        }
    ci = np.concatenate([ci, np.asarray(rows_i, dtype=np.int64).ravel()])
    cf = np.concatenate([cf, np.asarray(rows_f, dtype=np.float64).ravel()])
    return _Plan(ci, cf, max(alloc.f, 1), alloc.i, max(alloc.u, 1), alloc.nan_slots, regimes, description)


def plan_regimes(ci: np.ndarray, cf: np.ndarray, alloc: _Allocator, rp: Mapping[str, Any]) -> None:
    """Turn on the regime labels in a stream plan: their windows (``rp``: regime_labels' parameters), state
    slots and thresholds. Shared by the composer's stream and the bandit's (whose context uses them)."""
    er_n, adx_n, vol_n, window = (int(rp[n]) for n in ("er_n", "adx_n", "vol_n", "vol_window"))
    ci[sk.H_REGIMES] = 1
    ci[sk.H_ER_N], ci[sk.H_ADX_N], ci[sk.H_VOL_N], ci[sk.H_VOL_WINDOW] = er_n, adx_n, vol_n, window
    ci[sk.H_RG_F] = alloc.floats(8 + vol_n + 2 * (window + 1) + er_n + 1)
    ci[sk.H_RG_I] = alloc.ints(5)
    cf[sk.C_VOL_PCT] = float(rp["vol_pct"])
    cf[sk.C_ER_TREND] = float(rp["er_trend"])
    cf[sk.C_ADX_TREND] = float(rp["adx_trend"])
    # realized_vol's default periods_per_year, as regime_labels calls it
    cf[sk.C_SQRT_PPY] = math.sqrt(_realized_vol_ppy())


def _realized_vol_ppy() -> float:
    from trader.features.indicators import realized_vol

    return float(inspect.signature(realized_vol).parameters["periods_per_year"].default)


def supports(
    settings: Any,
    strategy: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    composer: Any = None,
) -> bool:
    """True when every component of this decider is streamed bit-exactly (see the module docstring).

    Arguments as :class:`StreamDecider`. False for a user-registered strategy, a built-in name registered
    again with another function, or regime parameters the stream does not know; also False for a
    configuration the backtest itself rejects (the recompute path then raises the clear error).

    >>> from trader.config import load_settings
    >>> supports(load_settings(["configs/base.yaml", "configs/demo.yaml"], env={}))
    True
    """
    try:
        _plan(settings, strategy, params, composer)
    except (_Unsupported, ConfigError):
        return False
    return True


def _as_ns(ts: Any) -> int:
    """A bar start as int ns UTC (int, numpy datetime64 or an aware datetime)."""
    if isinstance(ts, int | np.integer):
        return int(ts)
    if isinstance(ts, np.datetime64):
        return int(ts.astype("datetime64[ns]").astype(np.int64))
    if isinstance(ts, dt.datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.UTC)
        delta = ts - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    raise DataError(f"bar ts must be int ns UTC, numpy datetime64 or a datetime, got {type(ts).__name__}")


class StreamDecider:
    """One symbol's target weight per bar close in O(1) per bar; see the module docstring.

    ``strategy``/``params``: a built-in strategy and its parameters, or None for the configured composer
    (``Composer.from_settings(settings)``, or ``composer`` when given, e.g. one with ``include_flat=False``
    or ``regime_params``). Raises ConfigError for a configuration the backtest rejects or one that
    :func:`supports` says is not streamed.

    >>> from trader.config import load_settings
    >>> settings = load_settings(["configs/base.yaml", "configs/demo.yaml"], env={})
    >>> stream = StreamDecider("SPY", settings, strategy="sma_cross", params={"fast": 2, "slow": 5})
    >>> [stream.step(i, c, c, c, c, 0.0) for i, c in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]
    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    """

    def __init__(
        self,
        symbol: str,
        settings: Any,
        *,
        strategy: str | None = None,
        params: Mapping[str, Any] | None = None,
        composer: Any = None,
    ) -> None:
        try:
            plan = _plan(settings, strategy, params, composer)
        except _Unsupported as exc:
            raise ConfigError(f"live stream: {exc}; decide with trader.live.decide.Decider instead") from None
        self.symbol = symbol
        self.description: dict[str, Any] = plan.description
        self._plan = plan
        self._ci = np.ascontiguousarray(plan.ci)
        self._cf = np.ascontiguousarray(plan.cf)
        self._fs = np.zeros(plan.n_float, dtype=np.float64)
        self._st = np.zeros(plan.n_int, dtype=np.int64)
        self._us = np.zeros(plan.n_uint, dtype=np.uint64)
        # np.log's own kernel, on a contiguous 1-element array: numpy's SIMD log differs from libm's (numba's)
        # in the last bit for some inputs, and log_returns uses numpy's.
        self._ratio = np.zeros(1)
        self._log = np.zeros(1)
        self.reset()

    def reset(self) -> None:
        """Forget every bar: the next bar is the stream's first (as a backtest starting there)."""
        self._fs[:] = 0.0
        self._fs[self._plan.nan_slots] = np.nan
        self._st[:] = 0
        self._us[:] = 0
        self._prev_close = math.nan
        self.seen = 0  # bars stepped since the first
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.last_target = 0.0

    def _check_ts(self, ts: int) -> None:
        if self.last_ts is not None and ts <= self.last_ts:
            raise DataError(f"{self.symbol}: bar at {ts} is not after the last bar at {self.last_ts}")

    def step(self, ts: Any, open_: float, high: float, low: float, close: float, volume: float) -> float:
        """Add one closed bar (``ts`` its start, int ns UTC, after the last) and return the target weight at
        its close, a fraction of equity in [-1, 1]. ``volume`` is not read by any streamed component."""
        ts = _as_ns(ts)
        self._check_ts(ts)
        close = float(close)
        lr = math.nan
        if self._plan.regimes:
            lr = self._log_return(self._prev_close, close)
        value = sk.decide_step(
            self._ci, self._cf, self._fs, self._st, self._us, float(open_), float(high), float(low), close, lr
        )
        self._prev_close = close
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        self.seen += 1
        self.last_target = value
        return value

    def _log_return(self, prev: float, close: float) -> float:
        # trader.features.indicators.log_returns for one bar: NaN unless both closes are positive and the
        # ratio is a positive finite number (then np.log of it, never a warning).
        if not (close > 0.0 and prev > 0.0):
            return math.nan
        ratio = close / prev
        if not 0.0 < ratio < math.inf:
            return math.nan
        self._ratio[0] = ratio
        np.log(self._ratio, out=self._log)
        return float(self._log[0])

    def warm(self, bars: Any) -> np.ndarray:
        """Step through a history (one symbol, ts ascending) in one compiled call; returns the target of each
        bar. ``bars``: a polars frame or a mapping of arrays with ``open``, ``high``, ``low``, ``close``
        (``volume`` and ``ts`` optional; without ``ts`` the order is not checked and ``last_ts`` is kept).

        Continues from the current state: ``reset()`` first to rebuild from a history."""
        ts, cols = _history_arrays(bars)
        n = cols["close"].shape[0]
        if n == 0:
            return np.zeros(0)
        if ts is not None:
            if n > 1 and not bool(np.all(np.diff(ts) > 0)):
                raise DataError(f"{self.symbol}: warm-up bars must have strictly ascending ts")
            self._check_ts(int(ts[0]))
        lr = np.full(n, np.nan)
        if self._plan.regimes:
            from trader.features.indicators import log_returns

            close = cols["close"]
            if self.seen:  # the first bar's return needs the last stepped close
                lr = log_returns(np.concatenate([[self._prev_close], close]))[1:]
            else:
                lr = log_returns(close)
        out = np.empty(n)
        sk.decide_many(
            self._ci, self._cf, self._fs, self._st, self._us,
            cols["open"], cols["high"], cols["low"], cols["close"], lr, out,
        )  # fmt: skip
        self._prev_close = float(cols["close"][-1])
        if ts is not None:
            if self.first_ts is None:
                self.first_ts = int(ts[0])
            self.last_ts = int(ts[-1])
        self.seen += n
        self.last_target = float(out[-1])
        return out


def _history_arrays(bars: Any) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """(ts as int ns or None, column -> contiguous float64) from a frame or a mapping."""
    if isinstance(bars, pl.DataFrame):
        if "symbol" in bars.columns and bars.get_column("symbol").n_unique() > 1:
            raise DataError("live stream: bars of several symbols; give one symbol's bars")
        ts = None
        if "ts" in bars.columns:
            column = bars.get_column("ts")
            ts = (column.dt.epoch("ns") if column.dtype.is_temporal() else column).to_numpy().astype(np.int64)
        source: Mapping[str, Any] = {
            c: bars.get_column(c).cast(pl.Float64).to_numpy() for c in _COLUMNS if c in bars.columns
        }
    elif isinstance(bars, Mapping):
        source = {c: bars[c] for c in _COLUMNS if c in bars}
        ts = None
        if bars.get("ts") is not None:
            raw = np.asarray(bars["ts"])
            ts = (
                raw.astype("datetime64[ns]").astype(np.int64)
                if raw.dtype.kind == "M"
                else raw.astype(np.int64)
            )
    else:
        raise DataError(
            f"live stream: expected a polars DataFrame or a mapping of arrays, got {type(bars).__name__}"
        )
    missing = [c for c in ("open", "high", "low", "close") if c not in source]
    if missing:
        raise DataError(f"live stream: bars lack column(s) {', '.join(missing)}")
    cols = {c: np.ascontiguousarray(np.asarray(source[c], dtype=np.float64)) for c in source}
    n = cols["close"].shape
    if len(n) != 1 or any(a.shape != n for a in cols.values()) or (ts is not None and ts.shape != n):
        raise DataError("live stream: bar columns must be 1-d and of equal length")
    return ts, cols
