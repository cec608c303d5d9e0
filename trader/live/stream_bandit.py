"""The contextual bandit's decisions in O(1) per bar, bit for bit :func:`trader.bandit.bandit_select`.

:class:`trader.live.decide.Decider` with ``bandit.enabled`` recomputes ``bandit_select`` over every kept bar
at each bar close (O(bars), ~3 ms for 2,000 bars). :class:`StreamBandit` carries the running state instead:
each arm's strategy state and the context features' state (the kernels of
:mod:`trader.live.stream_kernels`), the running pnl and turnover sums of ``bandit._period_rewards``, the
decisions whose reward window has not ended yet, and the posteriors, updated with the same compiled
``bandit._step`` and sampled with the same draw as ``bandit._replay_kernel``
(:mod:`trader.live.stream_bandit_kernels`). For one symbol's bars, the target at every bar t equals
``bandit_select(bars[:t+1], settings.composer.strategies, settings,
start_index=settings.engine.min_history_bars, interval=interval).weights[t]``, and after the last bar
:attr:`StreamBandit.posteriors` equals that call's ``posteriors`` and :attr:`StreamBandit.arm` its last
decision's arm. The stream starts from the prior (as the Decider does); warm-started posteriors and
``learn_until`` are not streamed.

:func:`supports` says False when an arm is not a built-in strategy with a streaming kernel (see
:mod:`trader.live.stream`), when regime parameters are unknown, or for a configuration the backtest
rejects; the caller keeps recomputing then.

Units: targets are fractions of equity in [-1, 1] decided at the bar's close; ``ts`` is the bar's start
(int ns UTC); horizons and periods in bars.

Example::

    from trader.config import load_settings
    from trader.data.synth import synth_bars
    from trader.live.stream_bandit import StreamBandit, supports

    settings = load_settings(["configs/base.yaml", "configs/demo.yaml"], ["bandit.enabled=true"], env={})
    bars = synth_bars("SYN000", "1m", "2021-03-01", "2021-03-05", seed=7)
    assert supports(settings)
    stream = StreamBandit("SYN000", settings, interval="1m")
    history = stream.warm(bars.head(1500))        # one compiled call
    row = bars.row(1500, named=True)
    target = stream.step(row["ts"], row["open"], row["high"], row["low"], row["close"], row["volume"])
    stream.arm, stream.posteriors                 # last decision's arm, the PosteriorSet
"""

from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from trader.errors import ConfigError, DataError
from trader.live import stream_bandit_kernels as bk
from trader.live import stream_kernels as sk

__all__ = ["StreamBandit", "supports"]

_GROUP_CODES = {
    "regime": bk.G_REGIME,
    "volatility": bk.G_VOLATILITY,
    "efficiency_ratio": bk.G_ER,
    "trend_strength": bk.G_TREND,
    "momentum": bk.G_MOMENTUM,
}
_INPUT_BITS = {"open": 1, "high": 2, "low": 4, "close": 8}


class _Config:
    """Configuration arrays and state sizes of one StreamBandit (built once; raises on unsupported)."""

    def __init__(self, settings: Any, interval: str) -> None:
        from trader import bandit as bd
        from trader.live.stream import _Allocator, _regime_params, _strategy_row, _Unsupported, plan_regimes
        from trader.metrics import periods_per_year
        from trader.strategies import get_strategy

        section = settings.bandit
        arms = settings.composer.strategies
        if not arms:
            raise ConfigError("live bandit: bandit.enabled picks among composer.strategies, which is empty")
        self.model = bd.BanditModel.from_settings(section)
        self.spec = bd.ContextSpec.from_groups(section.context_features, arms)
        groups = tuple(section.context_features)
        for group in groups:
            if group not in _GROUP_CODES:
                raise _Unsupported(f"context feature {group!r} has no streaming kernel")
        k, d = len(self.spec.arms), self.spec.dim
        alloc = _Allocator()
        ci = np.zeros(sk.HEADER_I, dtype=np.int64)
        cf = np.zeros(sk.HEADER_F, dtype=np.float64)
        rows_i: list[list[int]] = []
        rows_f: list[list[float]] = []
        bad = 0
        for arm in arms:
            spec = get_strategy(arm.name)
            row_i, row_f = _strategy_row(alloc, spec, spec.validate(dict(arm.params)))
            rows_i.append(row_i)
            rows_f.append(row_f)
            for column in spec.inputs:
                if column not in _INPUT_BITS:  # volume: no built-in strategy reads it
                    raise _Unsupported(f"strategy {spec.name!r} reads {column}")
                bad |= _INPUT_BITS[column]
        ci[sk.H_MODE] = sk.MODE_COMPOSER
        ci[sk.H_K] = k
        if "regime" in groups:
            # bandit._context calls regime_labels with its defaults
            plan_regimes(ci, cf, alloc, _regime_params(SimpleNamespace(regime_params={})))
        every, horizon = int(section.decision_every), int(section.horizon)
        pcap = horizon // every + 2  # decisions whose reward window is open, plus the new one
        bi = np.zeros(bk.BI_SIZE, dtype=np.int64)
        bi[bk.BI_K], bi[bk.BI_D] = k, d
        bi[bk.BI_EVERY], bi[bk.BI_HORIZON] = every, horizon
        bi[bk.BI_START] = int(settings.engine.min_history_bars)
        bi[bk.BI_FULL] = int(self.model.full_information)
        bi[bk.BI_USE_WINDOW] = int(self.model.forgetting == "window")
        bi[bk.BI_WINDOW] = int(self.model.window)
        bi[bk.BI_VOL_SCALE] = int(section.reward_scale == "vol")
        bi[bk.BI_BAD] = bad
        bi[bk.BI_NG] = len(groups)
        bi[bk.BI_PCAP] = pcap
        bi[bk.BI_VOL_N], bi[bk.BI_ER_N], bi[bk.BI_ADX_N] = bd.VOL_BARS, bd.ER_BARS, bd.ADX_BARS
        bi[bk.BI_VOL_FO], bi[bk.BI_VOL_IO] = alloc.floats(bd.VOL_BARS), alloc.ints(1)
        bi[bk.BI_ER_FO], bi[bk.BI_ER_IO] = alloc.floats(bd.ER_BARS + 1), alloc.ints(1)
        bi[bk.BI_ADX_FO], bi[bk.BI_ADX_IO] = alloc.floats(8), alloc.ints(1)
        for g, group in enumerate(groups):
            bi[bk.BI_GROUPS + g] = _GROUP_CODES[group]
        bf = np.zeros(bk.BF_SIZE, dtype=np.float64)
        bf[bk.BF_COST] = (float(settings.costs.commission_bps) + float(settings.costs.slippage_bps)) / 1e4
        bf[bk.BF_SQRT_PPY] = math.sqrt(periods_per_year(interval))
        bf[bk.BF_DISCOUNT] = float(self.model.discount)
        bf[bk.BF_LAM0] = 1.0 / self.model.prior_variance
        bf[bk.BF_A0], bf[bk.BF_B0] = self.model.prior_a, self.model.prior_b
        bf[bk.BF_SQRT_H] = float(np.sqrt(horizon))
        bf[bk.BF_SQRT_MOM] = math.sqrt(bd.MOMENTUM_BARS)
        self.ci = np.concatenate([ci, np.asarray(rows_i, dtype=np.int64).ravel()])
        self.cf = np.concatenate([cf, np.asarray(rows_f, dtype=np.float64).ravel()])
        self.bi, self.bf = bi, bf
        self.n_float, self.n_int = max(alloc.f, 1), alloc.i
        self.nan_slots = list(alloc.nan_slots)
        self.k, self.d, self.pcap = k, d, pcap
        self.momentum = "momentum" in groups
        self.rng_seed = int(settings.engine.rng_seed)


def supports(settings: Any, *, interval: str | None = None) -> bool:
    """True when :class:`StreamBandit` streams this bandit configuration bit-exactly.

    False for an arm that is not a built-in strategy with a streaming kernel (a user-registered one, a
    built-in name registered again with another function), unknown regime parameters, or a configuration
    the backtest itself rejects (the recompute path then raises the clear error).

    >>> from trader.config import load_settings
    >>> supports(load_settings(["configs/base.yaml", "configs/demo.yaml"], ["bandit.enabled=true"], env={}))
    True
    """
    from trader.errors import SchemaError
    from trader.live.stream import _Unsupported

    try:
        _Config(settings, interval or settings.data.interval)
    except (_Unsupported, ConfigError, SchemaError):
        return False
    return True


class StreamBandit:
    """One symbol's bandit target per bar close in O(1) per bar; see the module docstring.

    ``settings``: a Settings (``bandit``, ``composer.strategies`` as arms, ``engine.rng_seed`` and
    ``engine.min_history_bars``, ``costs``); ``interval``: the bars' interval (annualises the volatility
    feature; default ``data.interval``). Raises ConfigError when :func:`supports` is False.

    >>> from trader.config import load_settings
    >>> s = load_settings(["configs/base.yaml", "configs/demo.yaml"], ["bandit.enabled=true"], env={})
    >>> stream = StreamBandit("SPY", s, interval="1d")
    >>> stream.step(0, 1.0, 1.0, 1.0, 1.0, 0.0), stream.arm
    (0.0, None)
    """

    def __init__(self, symbol: str, settings: Any, *, interval: str | None = None) -> None:
        from trader.live.stream import _Unsupported

        self.symbol = symbol
        self.interval = interval or settings.data.interval
        try:
            self._cfg = _Config(settings, self.interval)
        except _Unsupported as exc:
            raise ConfigError(f"live bandit stream: {exc}; decide with trader.live.decide.Decider") from None
        digest = hashlib.blake2b(f"{self._cfg.rng_seed}\0{symbol}".encode(), digest_size=8).digest()
        self._key = np.uint64(int.from_bytes(digest, "little"))  # as trader.bandit.decision_seeds
        self._ratio = np.zeros(1)  # np.log on 1-element arrays: numpy's log, as the vectorised code
        self._log = np.zeros(1)
        self.reset()

    @staticmethod
    def supports(settings: Any, *, interval: str | None = None) -> bool:
        """:func:`supports`."""
        return supports(settings, interval=interval)

    def reset(self) -> None:
        """Forget every bar and return to the prior: the next bar is the stream's first."""
        from trader.bandit import ArmPosteriors, _cholesky

        cfg = self._cfg
        k, d = cfg.k, cfg.d
        self._fs = np.zeros(cfg.n_float)
        self._fs[cfg.nan_slots] = np.nan
        self._st = np.zeros(cfg.n_int, dtype=np.int64)
        self._bs = np.zeros(bk.S_RING + 2 * cfg.pcap, dtype=np.int64)
        self._bx = np.zeros(bk.bx_size(k, d, cfg.pcap))
        self._bx[0] = np.nan
        self._rng = np.array([0, self._key], dtype=np.uint64)
        prior = ArmPosteriors.prior(k, d, cfg.model)
        self._mean, self._prec = prior.mean.copy(), prior.precision.copy()
        self._a, self._b = prior.a.copy(), prior.b.copy()
        self._count, self._last = prior.count.copy(), prior.last_update.copy()
        self._chol = np.zeros((k, d, d))
        for arm in range(k):
            _cholesky(self._prec[arm], self._chol[arm])
        cap = int(cfg.bi[bk.BI_WINDOW]) if cfg.bi[bk.BI_USE_WINDOW] else 1
        self._wx = np.zeros((k, cap, d))
        self._wy = np.zeros((k, cap))
        self._wn = np.zeros(k, dtype=np.int64)
        self._wstart = np.zeros(k, dtype=np.int64)
        self._eta = np.zeros(d)
        self._tmp = np.zeros(d)
        self._closes = np.full(21, np.nan)  # the last MOMENTUM_BARS + 1 closes, a ring by bar index
        self._prev_close = math.nan
        self._posteriors: Any = None
        self.seen = 0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.last_target = 0.0

    @property
    def decisions(self) -> int:
        """Decisions made since the first bar."""
        return int(self._bs[bk.S_DECISIONS])

    @property
    def arm(self) -> str | None:
        """The arm chosen at the last decision (None before the first)."""
        if not self._bs[bk.S_STARTED]:
            return None
        return self._cfg.spec.arms[int(self._bs[bk.S_CHOSEN])]

    @property
    def posteriors(self) -> Any:
        """The :class:`trader.bandit.PosteriorSet` after the last bar (built on demand, then cached)."""
        from trader.bandit import MODEL_VERSION, ArmPosteriors, PosteriorSet

        if self._posteriors is None:
            post = ArmPosteriors(
                self._mean.copy(), self._prec.copy(), self._a.copy(), self._b.copy(),
                self._count.copy(), self._last.copy(),
            )  # fmt: skip
            self._posteriors = PosteriorSet(self._cfg.spec, {self.symbol: post}, MODEL_VERSION)
        return self._posteriors

    def _state(self) -> tuple[Any, ...]:
        cfg = self._cfg
        return (
            cfg.ci, cfg.cf, self._fs, self._st, cfg.bi, cfg.bf, self._bs, self._bx, self._rng,
            self._mean, self._prec, self._chol, self._a, self._b, self._count, self._last,
            self._wx, self._wy, self._wn, self._wstart, self._eta, self._tmp,
        )  # fmt: skip

    def _logn(self, ratio: float) -> float:
        # np.log of one ratio, NaN unless 0 < ratio < inf (a non-finite log gives a NaN feature either way)
        if not 0.0 < ratio < math.inf:
            return math.nan
        self._ratio[0] = ratio
        np.log(self._ratio, out=self._log)
        return float(self._log[0])

    def step(self, ts: Any, open_: float, high: float, low: float, close: float, volume: float) -> float:
        """Add one closed bar (``ts`` its start, int ns UTC, after the last) and return the target weight at
        its close, a fraction of equity in [-1, 1]. ``volume`` is not read."""
        from trader.live.stream import _as_ns

        ts = _as_ns(ts)
        if self.last_ts is not None and ts <= self.last_ts:
            raise DataError(f"{self.symbol}: bar at {ts} is not after the last bar at {self.last_ts}")
        close = float(close)
        prev = self._prev_close
        # indicators.log_returns: NaN unless both closes are positive and the log is finite
        lr = self._logn(close / prev) if (close > 0.0 and prev > 0.0) else math.nan
        mlog = math.nan
        if self._cfg.momentum and self.seen >= 20:
            mlog = self._logn(close / self._closes[(self.seen - 20) % 21]) if close == close else math.nan
        self._closes[self.seen % 21] = close
        try:
            value = bk.bandit_step(*self._state(), float(open_), float(high), float(low), close, lr, mlog, ts)
        except ValueError as exc:  # a precision lost positive definiteness (as bandit_select)
            raise DataError(f"{exc}; check the contexts (scale, collinearity)") from None
        self._prev_close = close
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        self.seen += 1
        self.last_target = value
        self._posteriors = None
        return value

    def warm(self, bars: Any) -> np.ndarray:
        """Step through a history (one symbol, ts ascending) in one compiled call; returns each bar's target.

        ``bars``: a polars frame or a mapping of arrays with ``ts``, ``open``, ``high``, ``low``, ``close``.
        Continues from the current state: ``reset()`` first to rebuild from a history."""
        from trader.features.indicators import log_returns
        from trader.live.stream import _history_arrays

        ts, cols = _history_arrays(bars)
        if ts is None:
            raise DataError("live bandit stream: warm-up bars need ts (decision seeds depend on it)")
        n = cols["close"].shape[0]
        if n == 0:
            return np.zeros(0)
        if n > 1 and not bool(np.all(np.diff(ts) > 0)):
            raise DataError(f"{self.symbol}: warm-up bars must have strictly ascending ts")
        if self.last_ts is not None and int(ts[0]) <= self.last_ts:
            raise DataError(f"{self.symbol}: bar at {int(ts[0])} is not after the last bar at {self.last_ts}")
        close = cols["close"]
        # the first bar's return needs the last stepped close (NaN before any: log_returns' first row)
        lr = log_returns(np.concatenate([[self._prev_close], close]))[1:]
        mlog = np.full(n, np.nan)
        if self._cfg.momentum:
            tail = min(self.seen, 20)
            order = [(self.seen - tail + q) % 21 for q in range(tail)]
            full = np.concatenate([self._closes[order], close])
            with np.errstate(divide="ignore", invalid="ignore"):
                moved = np.log(full[20:] / full[:-20])  # as bandit._context
            mlog[n - moved.size :] = moved
        out = np.empty(n)
        try:
            bk.bandit_many(
                *self._state(), cols["open"], cols["high"], cols["low"], close, lr, mlog,
                np.ascontiguousarray(ts, dtype=np.int64), out,
            )  # fmt: skip
        except ValueError as exc:
            raise DataError(f"{exc}; check the contexts (scale, collinearity)") from None
        for q in range(max(0, n - 21), n):
            self._closes[(self.seen + q) % 21] = close[q]
        self._prev_close = float(close[-1])
        if self.first_ts is None:
            self.first_ts = int(ts[0])
        self.last_ts = int(ts[-1])
        self.seen += n
        self.last_target = float(out[-1])
        self._posteriors = None
        return out
