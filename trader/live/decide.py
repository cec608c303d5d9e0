"""A symbol's decisions, one bar at a time, exactly as the backtest makes them.

The backtest decides a symbol's target weight at bar t with the configured composer (or a named strategy)
over the whole history it was given (``trader.backtest._decider``), using rows <= t only. Some of those
inputs have memory longer than any fixed window: an RSI is exponentially smoothed, and strategies hold a
position (a latch) from an entry until an exit, however long ago. So :class:`Decider` keeps every bar since
its first (up to ``max_bars``), and its decision at bar t equals a backtest's whose bars start at the
Decider's first bar.

For the built-in strategies and regime labels the decision comes from
:class:`trader.live.stream.StreamDecider`, which carries every component's running state and decides in O(1)
per bar (about 2 us), bit for bit equal to the recomputation. For anything it does not stream (a
user-registered strategy, say) the Decider runs the same function as the backtest over the kept bars at each
bar close: O(bars kept), about 0.3 ms for 1,000 minute bars and 1.5 ms for 10,000. Beyond ``max_bars`` the
oldest half is dropped (the stream is rebuilt from the kept bars in one compiled pass), and decisions then
equal a backtest started at the new first bar (equal to the whole-history one once the latches and smoothing
forget the cut, which :func:`trader.tuning.warmup_bars` bounds for windowed inputs only).

With ``bandit.enabled`` (and no strategy named) the decision is the contextual bandit's, as in the backtest's
bandit selection from the prior. :class:`trader.live.stream_bandit.StreamBandit` carries the features, the
arms' targets, the pending rewards and the posteriors and decides in O(1) per bar (about 6 us), bit for bit
equal to :func:`trader.bandit.bandit_select` over the kept bars; where it does not apply, that function is
rerun at each bar close (O(bars kept), about 3 ms for 2,000 minute bars). :attr:`Decider.posteriors` holds
the posteriors after the last bar, so a restarted actor that rebuilds the same bars has the identical one.

Units: target weights are fractions of equity in [-1, 1]; timestamps are bar starts (int ns UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from trader.errors import ConfigError, DataError

__all__ = ["Decider"]

_COLUMNS = ("open", "high", "low", "close", "volume")


class Decider:
    """Target weight per bar close for one symbol; see the module docstring.

    ``strategy``/``params``: a registered strategy and its parameters, or None for the configured composer
    (``composer.strategies``), or with ``bandit.enabled`` the contextual bandit picking among them
    (:func:`trader.bandit.bandit_select` from the prior, exactly as the backtest's bandit selection; its
    posteriors after the last bar are :attr:`posteriors`). ``max_bars``: most bars kept (see the module
    docstring). ``stream``: decide through :class:`~trader.live.stream.StreamDecider` when it supports the
    configuration (False: always recompute; the two agree bit for bit). :attr:`streaming` says which is in
    use. ``interval``: the bars' interval (annualises the bandit's volatility feature; default
    ``data.interval``).
    """

    def __init__(
        self,
        symbol: str,
        settings: Any,
        *,
        strategy: str | None = None,
        params: Mapping[str, Any] | None = None,
        max_bars: int = 100_000,
        stream: bool = True,
        interval: str | None = None,
    ) -> None:
        from trader.composer import Composer
        from trader.live.stream import StreamDecider, supports
        from trader.strategies import get_strategy
        from trader.tuning import candidate_grid, warmup_bars

        self.symbol = symbol
        self.interval = interval or settings.data.interval
        self._posteriors: Any = None  # bandit mode, recomputing: the PosteriorSet after the last bar
        self._arm: str | None = None
        self._bandit = strategy is None and bool(settings.bandit.enabled)
        if self._bandit:
            if params:
                raise ConfigError("live decisions: params need a strategy; the bandit reads settings")
            arms = settings.composer.strategies
            if not arms:
                raise ConfigError(
                    "live decisions: bandit.enabled picks among composer.strategies, which is empty"
                )
            self._arms, self._settings = arms, settings
            self.description: dict[str, Any] = {
                "mode": "bandit",
                "strategies": [{"name": a.name, "params": dict(a.params)} for a in arms],
            }
        elif strategy is None:
            if params:
                raise ConfigError("live decisions: params need a strategy; the composer reads settings")
            composer = Composer.from_settings(settings)
            if not composer.strategies:
                raise ConfigError("live decisions: composer.strategies is empty; configure strategies")
            self._decide = composer.target_weights
            self.description = {
                "mode": "composer",
                "strategies": [{"name": s.name, "params": dict(p)} for s, p in composer.strategies],
            }
        else:
            spec = get_strategy(strategy)
            chosen = spec.validate(dict(params or {}))
            self._decide = lambda bars: spec.run(bars, chosen)
            self.description = {"mode": "strategy", "strategy": spec.name, "params": chosen}
        grid = candidate_grid(settings, strategy, params, size=1)
        self.warmup = int(warmup_bars(grid, settings))
        self.max_bars = max(int(max_bars), 2 * (self.warmup + 1))
        self._ts = np.zeros(1024, dtype=np.int64)
        self._cols = np.zeros((len(_COLUMNS), 1024))
        self._n = 0  # bars kept
        self.seen = 0  # bars appended since the start
        self.first_ts: int | None = None  # the first kept bar: decisions equal a backtest starting here
        self.last_ts: int | None = None
        self.last_target: float = 0.0
        self._stream: Any = None
        if stream and self._bandit:
            from trader.live.stream_bandit import StreamBandit
            from trader.live.stream_bandit import supports as bandit_supports

            if bandit_supports(settings, interval=self.interval):
                self._stream = StreamBandit(symbol, settings, interval=self.interval)
        elif stream and supports(settings, strategy, params):
            self._stream = StreamDecider(symbol, settings, strategy=strategy, params=params)
        self._stream_bars = 0  # kept bars the stream has stepped through, from the first kept bar

    @property
    def posteriors(self) -> Any:
        """Bandit mode: the :class:`~trader.bandit.PosteriorSet` after the last bar (None otherwise)."""
        if self._bandit and self._stream is not None:
            return self._stream.posteriors if self._stream_bars else None
        return self._posteriors

    @property
    def arm(self) -> str | None:
        """Bandit mode: the arm chosen at the last decision (None before the first, and otherwise)."""
        if self._bandit and self._stream is not None:
            return self._stream.arm
        return self._arm

    @property
    def streaming(self) -> bool:
        """True when decisions come from the O(1) stream rather than recomputation."""
        return self._stream is not None

    def __len__(self) -> int:
        return self._n

    def append(self, ts: int, open_: float, high: float, low: float, close: float, volume: float) -> None:
        """Add one closed bar (``ts`` int ns UTC, strictly after the last)."""
        if self.last_ts is not None and ts <= self.last_ts:
            raise DataError(f"{self.symbol}: bar at {ts} is not after the last bar at {self.last_ts}")
        if self._n == self._ts.shape[0]:
            if self._n >= self.max_bars:  # drop the oldest half (see the module docstring)
                keep = self._n // 2
                self._ts[:keep] = self._ts[self._n - keep : self._n]
                self._cols[:, :keep] = self._cols[:, self._n - keep : self._n]
                self._n = keep
                self._stream_bars = -1  # the first bar changed: rebuild the stream at the next decision
            else:  # grow by doubling: amortised O(1) appends
                size = min(2 * self._ts.shape[0], self.max_bars)
                self._ts = np.concatenate([self._ts, np.zeros(size - self._ts.shape[0], np.int64)])
                cols = np.zeros((len(_COLUMNS), size))
                cols[:, : self._n] = self._cols[:, : self._n]
                self._cols = cols
        self._ts[self._n] = ts
        self._cols[:, self._n] = (open_, high, low, close, volume)
        self._n += 1
        self.seen += 1
        self.first_ts = int(self._ts[0])
        self.last_ts = ts

    def warm(self, bars: pl.DataFrame) -> None:
        """Append a history frame (one symbol, ts ascending)."""
        ordered = bars.sort("ts")
        ts = ordered["ts"].dt.epoch("ns").to_numpy()
        cols = [ordered[c].cast(pl.Float64).to_numpy() for c in _COLUMNS]
        for k in range(ordered.height):
            self.append(int(ts[k]), *(float(c[k]) for c in cols))

    def window(self) -> dict[str, np.ndarray]:
        """The kept bars in time order as arrays (views, no copy)."""
        out = {c: self._cols[k, : self._n] for k, c in enumerate(_COLUMNS)}
        out["ts"] = self._ts[: self._n]
        return out

    @property
    def ready(self) -> bool:
        """At least the warm-up's worth of bars: every windowed input is defined."""
        return self._n >= self.warmup + 1

    def decide(self) -> float:
        """The target weight at the last bar's close."""
        if not self._n:
            return 0.0
        if self._stream is not None:
            if self._stream_bars == self._n - 1:  # one new bar: a single O(1) step
                k = self._n - 1
                o, h, lo, c, v = (float(x) for x in self._cols[:, k])
                value = self._stream.step(int(self._ts[k]), o, h, lo, c, v)
            elif self._stream_bars != self._n:  # warmed, trimmed or new: rebuild over the kept bars
                self._stream.reset()
                value = float(self._stream.warm(self.window())[-1])
            else:
                value = self._stream.last_target
            self._stream_bars = self._n
        elif self._bandit:
            value = self._bandit_decide()
        else:
            window = self.window()
            value = float(np.asarray(self._decide({c: window[c] for c in _COLUMNS}))[-1])
        self.last_target = value
        return value

    def _bandit_decide(self) -> float:
        # The backtest's bandit selection over the kept bars (from the prior, first decision at
        # engine.min_history_bars), as trader.backtest runs it per symbol: the seeds of its draws depend on
        # the symbol and the decision bar's ts, so the choice at each bar is the backtest's.
        from trader.bandit import bandit_select

        window = self.window()
        frame = pl.DataFrame(
            {
                "symbol": pl.Series([self.symbol] * self._n, dtype=pl.String),
                "ts": pl.Series(window["ts"]).cast(pl.Datetime("ns", "UTC")),
                **{c: window[c] for c in _COLUMNS},
            }
        )
        start = int(self._settings.engine.min_history_bars)
        res = bandit_select(frame, self._arms, self._settings, start_index=start, interval=self.interval)
        self._posteriors = res.posteriors
        if res.decisions.height:
            self._arm = res.decisions["arm"][-1]
        return float(res.weights[-1])

    def on_bar(self, ts: int, open_: float, high: float, low: float, close: float, volume: float) -> float:
        """Append a closed bar and decide at its close."""
        self.append(ts, open_, high, low, close, volume)
        return self.decide()
