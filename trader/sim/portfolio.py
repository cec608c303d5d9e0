"""The portfolio simulator's Python face: settings, input checks, results.

The contract of :func:`simulate` (every rule below holds to the cent; tests check each one):

* Inputs are aligned bars x symbols arrays: ``open_``, ``close`` (account currency; NaN = the symbol does not
  trade that bar) and ``weights``: the target weight of each symbol (signed fraction of equity, 1.0 = 100 %
  long) decided at bar t's *close*. A NaN weight means "no new decision": the symbol keeps its last target.
* No decision is made before ``min_history_bars``: the first decision is at the bar whose index (from 0)
  equals it; the target is 0 before that.
* A decision at bar t is filled at bar t+1's *open*, never earlier: at that open the portfolio value is
  ``V = cash + sum(shares * open[t+1])`` (a symbol without an open is valued at its last price) and the
  target position is ``target_weight * V / open[t+1]`` shares (after risk rules). Buys fill at
  ``open * (1 + slippage_bps / 1e4)``, sells at ``open * (1 - slippage_bps / 1e4)``.
* A symbol trades only when its target weight (after risk rules) changes from the last decision; with
  ``rebalance_threshold`` set it also trades when, at a close, ``|held weight - target| > threshold``
  (held weight = shares * close / equity). A target that could not be filled (no open price, or a trade cut
  by ``max_per_trade``) stays pending and is filled at the next usable open, sized at that open.
* ``fractional_shares=False`` rounds the target position toward zero to whole shares (long and short).
* Commission per fill = ``max(min_commission, commission_bps / 1e4 * |qty * fill price| +
  commission_per_share * |qty|)``, taken from cash at the fill; a zero trade pays nothing. Cash may go
  negative (margin): leverage is bounded by the risk rules, not by cash.
* Equity at bar t = ``cash + sum(shares * close[t])`` (last price where the close is NaN).

Risk rules (``limits``) are those of :mod:`trader.risk`; each that fires is recorded in
:attr:`SimResult.events`. Limits that shape weights are recorded on the decision bar where they start binding
(once per episode, not on every bar they keep binding); fill caps on the fill bar each time they cut a fill;
stop loss, daily loss and drawdown on the bar whose close breached them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from trader.errors import ConfigError, DataError
from trader.risk import RULES, RiskLimits, trailing_vol
from trader.sim import kernel
from trader.sim.kernel import TRADE_REASONS, simulate_batch_kernel, simulate_kernel

__all__ = [
    "BatchResult",
    "SimConfig",
    "SimResult",
    "align_bars",
    "session_index_from_ts",
    "simulate",
    "simulate_many",
]


def _number(
    name: str, value: object, *, low: float, high: float | None = None, inclusive: bool = True
) -> None:
    """Raise ConfigError unless ``value`` is a finite number in [low, high), or (low, high) if exclusive."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"sim {name}={value!r} is not a finite number")
    if value < low or (not inclusive and value == low) or (high is not None and value >= high):
        bound = f"{'>=' if inclusive else '>'} {low:g}" + (f" and < {high:g}" if high is not None else "")
        raise ConfigError(f"sim {name}={value!r} is out of range (allowed: {bound})")


@dataclass(frozen=True)
class SimConfig:
    """Account and cost settings of a simulation.

    ``initial_cash`` is account currency; ``commission_bps`` and ``slippage_bps`` are basis points
    (1/10000) of notional; ``commission_per_share`` and ``min_commission`` are account currency;
    ``min_history_bars`` is the index (bars, from 0) of the first decision; ``rebalance_threshold`` is a
    weight difference (fraction of equity) that triggers a drift rebalance, None = only on target changes.

    >>> SimConfig(commission_bps=1.0, slippage_bps=2.0).min_commission
    0.0
    """

    initial_cash: float = 100_000.0
    fractional_shares: bool = True
    commission_bps: float = 0.0
    commission_per_share: float = 0.0
    min_commission: float = 0.0
    slippage_bps: float = 0.0
    min_history_bars: int = 0
    rebalance_threshold: float | None = None

    def __post_init__(self) -> None:
        _number("initial_cash", self.initial_cash, low=0.0, inclusive=False)
        for name in ("commission_bps", "commission_per_share", "min_commission"):
            _number(name, getattr(self, name), low=0.0)
        _number("slippage_bps", self.slippage_bps, low=0.0, high=1e4)  # 1e4 bps would sell at 0
        if not isinstance(self.fractional_shares, bool):
            raise ConfigError(f"sim fractional_shares={self.fractional_shares!r} must be true or false")
        bars = self.min_history_bars
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 0:
            raise ConfigError(f"sim min_history_bars={bars!r} must be an integer >= 0")
        if self.rebalance_threshold is not None:
            _number("rebalance_threshold", self.rebalance_threshold, low=0.0, inclusive=False)

    @classmethod
    def from_settings(cls, settings: Any, *, rebalance_threshold: float | None = None) -> SimConfig:
        """The account (``engine``) and cost (``costs``) sections of :class:`trader.config.Settings`.

        >>> from trader.config import Settings
        >>> SimConfig.from_settings(Settings()).slippage_bps
        5.0
        """
        engine, costs = settings.engine, settings.costs
        return cls(
            initial_cash=float(engine.initial_cash),
            fractional_shares=bool(engine.fractional_shares),
            commission_bps=float(costs.commission_bps),
            commission_per_share=float(costs.commission_per_share),
            min_commission=float(costs.min_commission),
            slippage_bps=float(costs.slippage_bps),
            min_history_bars=int(engine.min_history_bars),
            rebalance_threshold=rebalance_threshold,
        )


@dataclass(frozen=True)
class SimResult:
    """What a simulation produced; T bars, N symbols.

    * ``equity``, ``cash``: (T,) account currency at each bar's close.
    * ``positions``: (T, N) signed shares held at each bar's close.
    * ``targets``: (T, N) target weights (after risk rules) in force after each bar's decision.
    * ``trades``: one row per fill: ``bar`` (fill bar index), ``symbol`` (index), ``side`` ("buy"/"sell"),
      ``qty`` (shares, > 0), ``price`` (fill price, slippage included), ``commission``, ``reason`` (one of
      :data:`trader.sim.kernel.TRADE_REASONS`).
    * ``events``: one row per risk rule firing: ``bar``, ``symbol`` (index, -1 = the account), ``rule``
      (a :data:`trader.risk.RULES` name), ``detail`` (the rule's value: weight, notional, loss fraction, ...).
    * ``initial_cash``: the starting cash, account currency.
    """

    equity: np.ndarray
    cash: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    trades: pl.DataFrame
    events: pl.DataFrame
    initial_cash: float

    @property
    def returns(self) -> np.ndarray:
        """(T,) per-bar simple returns of equity, close to close (fraction); bar 0 is against initial cash."""
        prev = np.concatenate(([self.initial_cash], self.equity[:-1]))
        return self.equity / prev - 1.0


def _matrix(name: str, value: Any, shape: tuple[int, int] | None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"simulate: {name} must be bars x symbols (2-D), got {arr.ndim}-D")
    if shape is not None and arr.shape != shape:
        raise DataError(f"simulate: {name} has shape {arr.shape}, expected {shape} like open_")
    return np.ascontiguousarray(arr)


def _where(mask: np.ndarray) -> str:
    t, j = np.argwhere(mask)[0]
    return f"bar {t}, symbol {j}"


def _check_inputs(open_: Any, close: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = _matrix("open_", open_, None)
    if o.shape[0] == 0 or o.shape[1] == 0:
        raise DataError(f"simulate: no bars or no symbols (open_ shape {o.shape})")
    c = _matrix("close", close, o.shape)
    w = _matrix("weights", weights, o.shape)
    for name, arr in (("open_", o), ("close", c)):
        # NaN compares False both ways, so it passes: it means "not trading".
        if (arr <= 0).any() or np.isinf(arr).any():
            raise DataError(
                f"simulate: {name} holds a non-positive or infinite price at "
                f"{_where((arr <= 0) | np.isinf(arr))}; use NaN for a symbol that does not trade"
            )
    if np.isinf(w).any():
        raise DataError(f"simulate: weights hold an infinite value at {_where(np.isinf(w))}")
    return o, c, w


def _session_array(session_index: Any, n_bars: int) -> np.ndarray:
    if session_index is None:
        # Each bar its own session: right for daily bars; intraday bars need session_index_from_ts.
        return np.arange(n_bars, dtype=np.int64)
    arr = np.asarray(session_index)
    if arr.shape != (n_bars,) or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"simulate: session_index must be {n_bars} integers (one per bar), got {arr.dtype} {arr.shape}"
        )
    return np.ascontiguousarray(arr, dtype=np.int64)


def _vol_array(vol: Any, close: np.ndarray, limits: RiskLimits | None) -> np.ndarray:
    if limits is None or limits.pos_size_method != "vol_target":
        return np.zeros((1, 1))  # not read by the kernel
    if vol is None:
        return trailing_vol(close, limits.vol_lookback, limits.periods_per_year)
    arr = _matrix("vol", vol, close.shape)
    if (arr < 0).any() or np.isinf(arr).any():
        raise DataError("simulate: vol must be annualised volatilities >= 0 (NaN = unknown)")
    return arr


def _off(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _params(config: SimConfig, limits: RiskLimits | None) -> np.ndarray:
    """The kernel's parameter vector (see the ``P_*`` indices of trader.sim.kernel); NaN = off."""
    lim = limits if limits is not None else RiskLimits()
    p = np.full(kernel.N_PARAMS, np.nan)
    p[kernel.P_INITIAL_CASH] = config.initial_cash
    p[kernel.P_FRACTIONAL] = 1.0 if config.fractional_shares else 0.0
    p[kernel.P_COMMISSION_BPS] = config.commission_bps
    p[kernel.P_COMMISSION_PER_SHARE] = config.commission_per_share
    p[kernel.P_MIN_COMMISSION] = config.min_commission
    p[kernel.P_SLIPPAGE_BPS] = config.slippage_bps
    p[kernel.P_MIN_HISTORY] = config.min_history_bars
    p[kernel.P_REBALANCE_THRESHOLD] = _off(config.rebalance_threshold)
    p[kernel.P_RISK_ON] = 1.0 if lim.active else 0.0
    p[kernel.P_VOL_TARGET] = _off(lim.vol_target) if lim.pos_size_method == "vol_target" else math.nan
    p[kernel.P_MAX_POSITION] = _off(lim.max_position_pct)
    p[kernel.P_MAX_OPEN] = float(lim.max_open_positions or 0)
    p[kernel.P_MAX_GROSS] = _off(lim.max_gross_leverage)
    p[kernel.P_MAX_BUYING_POWER] = _off(lim.max_buying_power)
    p[kernel.P_MAX_PER_TRADE] = _off(lim.max_per_trade)
    p[kernel.P_MAX_PER_SYMBOL] = _off(lim.max_per_symbol)
    p[kernel.P_STOP_LOSS] = _off(lim.stop_loss_pct)
    p[kernel.P_DAILY_LOSS] = _off(lim.daily_loss_limit)
    p[kernel.P_MAX_DRAWDOWN] = _off(lim.max_drawdown)
    return p


def simulate(
    open_: Any,
    close: Any,
    weights: Any,
    *,
    config: SimConfig,
    limits: RiskLimits | None = None,
    session_index: Any = None,
    vol: Any = None,
) -> SimResult:
    """Turn target weights into fills, cash, positions and equity (see the module docstring for the rules).

    ``open_``, ``close``, ``weights``: bars x symbols (1-D = one symbol); ``limits``: risk rules, None = none;
    ``session_index``: one integer per bar, a change marks a new session for the daily loss limit (default:
    every bar is its own session, right for daily bars; use :func:`session_index_from_ts` for intraday);
    ``vol``: bars x symbols trailing annualised volatility from rows <= t for vol targeting (default: computed
    from ``close`` with ``limits.vol_lookback`` and ``limits.periods_per_year``). Raises DataError for
    misshapen or impossible inputs.

    >>> import numpy as np
    >>> px = np.array([100.0, 101.0, 102.0, 103.0])
    >>> res = simulate(px, px, np.ones(4), config=SimConfig(initial_cash=1000.0))
    >>> res.trades["price"].to_list(), round(float(res.equity[-1]), 2)   # bought at bar 1's open
    ([101.0], 1019.8)
    """
    o, c, w = _check_inputs(open_, close, weights)
    n_bars, n_symbols = o.shape
    session = _session_array(session_index, n_bars)
    vol_arr = _vol_array(vol, c, limits)
    equity = np.empty(n_bars)
    cash = np.empty(n_bars)
    positions = np.empty((n_bars, n_symbols))
    targets = np.empty((n_bars, n_symbols))
    trades, events = simulate_kernel(
        o, c, w, session, vol_arr, _params(config, limits), equity, cash, positions, targets
    )
    return SimResult(
        equity, cash, positions, targets, _trades_frame(trades), _events_frame(events), config.initial_cash
    )


@dataclass(frozen=True)
class BatchResult:
    """What :func:`simulate_many` produced; T bars, R independent runs (each one symbol, its own cash).

    * ``equity``: (T, R) account currency at each bar's close, per run.
    * ``positions``: (T, R) signed shares held at each bar's close, per run.
    * ``columns``: (R,) the price column (symbol index) each run traded.
    * ``trades``: one row per fill, as :attr:`SimResult.trades` plus ``run`` (the run index); ``symbol`` is
      the run's price column.
    * ``events``: risk rule firings, as :attr:`SimResult.events` plus ``run``; ``symbol`` is the run's price
      column, or -1 for the run's account.
    * ``initial_cash``: each run's starting cash, account currency.
    """

    equity: np.ndarray
    positions: np.ndarray
    columns: np.ndarray
    trades: pl.DataFrame
    events: pl.DataFrame
    initial_cash: float

    @property
    def returns(self) -> np.ndarray:
        """(T, R) per-bar simple returns of each run's equity (fraction); bar 0 is against initial cash."""
        # Runs x bars, the kernel's own layout (equity is its transposed view): contiguous passes.
        by_run = self.equity.T
        out = np.empty(by_run.shape)
        if by_run.shape[1]:
            np.divide(by_run[:, :1], self.initial_cash, out=out[:, :1])
            np.divide(by_run[:, 1:], by_run[:, :-1], out=out[:, 1:])
            out -= 1.0
        return out.T


def simulate_many(
    open_: Any,
    close: Any,
    weights: Any,
    *,
    columns: Any = None,
    config: SimConfig,
    limits: RiskLimits | None = None,
    session_index: Any = None,
    vol: Any = None,
) -> BatchResult:
    """Simulate R independent single-symbol portfolios in one compiled call (a parameter grid, say).

    Run ``r`` trades price column ``columns[r]`` of ``open_``/``close`` (T x N; 1-D = one symbol) with the
    weights ``weights[:, r]`` (T x R), starting from ``config.initial_cash`` of its own: it is exactly
    ``simulate(open_[:, [c]], close[:, [c]], weights[:, [r]], ...)`` (same fills, costs, risk rules and
    events), without the per-call overhead. ``columns`` defaults to ``0..R-1`` when R == N, and to all zeros
    when N == 1. ``session_index`` and ``vol`` are as in :func:`simulate` (``vol`` is T x N).

    >>> import numpy as np
    >>> px = np.array([100.0, 101.0, 102.0, 103.0])
    >>> grid = np.column_stack([np.ones(4), np.full(4, 0.5)])        # two runs on one symbol
    >>> res = simulate_many(px, px, grid, config=SimConfig(initial_cash=1000.0))
    >>> np.round(res.equity[-1], 2).tolist()
    [1019.8, 1009.9]
    """
    o = _matrix("open_", open_, None)
    if o.shape[0] == 0 or o.shape[1] == 0:
        raise DataError(f"simulate_many: no bars or no symbols (open_ shape {o.shape})")
    c = _matrix("close", close, o.shape)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[:, None]
    if w.ndim != 2 or w.shape[0] != o.shape[0] or w.shape[1] == 0:
        raise DataError(f"simulate_many: weights must be bars x runs with {o.shape[0]} bars, got {w.shape}")
    n_bars, n_symbols = o.shape
    n_runs = w.shape[1]
    cols = _batch_columns(columns, n_runs, n_symbols)
    for name, arr in (("open_", o), ("close", c)):
        if (arr <= 0).any() or np.isinf(arr).any():
            raise DataError(
                f"simulate_many: {name} holds a non-positive or infinite price at "
                f"{_where((arr <= 0) | np.isinf(arr))}; use NaN for a symbol that does not trade"
            )
    if np.isinf(w).any():
        raise DataError(f"simulate_many: weights hold an infinite value at {_where(np.isinf(w))} (bar, run)")
    session = _session_array(session_index, n_bars)
    vol_arr = _vol_array(vol, c, limits)
    vol_t = np.ascontiguousarray(vol_arr.T) if vol_arr.shape == c.shape else vol_arr
    equity = np.empty((n_runs, n_bars))
    positions = np.empty((n_runs, n_bars))
    trades, events = simulate_batch_kernel(
        np.ascontiguousarray(o.T),
        np.ascontiguousarray(c.T),
        np.ascontiguousarray(w.T),
        cols,
        session,
        vol_t,
        _params(config, limits),
        equity,
        positions,
    )
    # Frames built column by column without expressions: grids call this thousands of times.
    trade_runs = trades[:, 0].astype(np.int64)
    trade_frame = _trades_frame(trades[:, 1:])
    trade_frame.replace_column(1, pl.Series("symbol", cols[trade_runs]))
    trade_frame.insert_column(0, pl.Series("run", trade_runs))
    event_runs = events[:, 0].astype(np.int64)
    event_frame = _events_frame(events[:, 1:])
    account = events[:, 2] < 0
    event_frame.replace_column(1, pl.Series("symbol", np.where(account, -1, cols[event_runs])))
    event_frame.insert_column(0, pl.Series("run", event_runs))
    return BatchResult(equity.T, positions.T, cols, trade_frame, event_frame, config.initial_cash)


def _batch_columns(columns: Any, n_runs: int, n_symbols: int) -> np.ndarray:
    if columns is None:
        if n_runs == n_symbols:
            return np.arange(n_runs, dtype=np.int64)
        if n_symbols == 1:
            return np.zeros(n_runs, dtype=np.int64)
        raise DataError(
            f"simulate_many: {n_runs} runs over {n_symbols} symbols; pass columns= (the symbol of each run)"
        )
    cols = np.asarray(columns)
    if cols.shape != (n_runs,) or not np.issubdtype(cols.dtype, np.integer):
        raise DataError(f"simulate_many: columns must be {n_runs} integers (one per run), got {cols.shape}")
    if n_runs and (cols.min() < 0 or cols.max() >= n_symbols):
        raise DataError(f"simulate_many: columns must index the {n_symbols} price columns, got {cols.max()}")
    return np.ascontiguousarray(cols, dtype=np.int64)


# Code -> name lookups done by polars' gather: converting numpy string arrays costs ~1 us a row.
_SIDE_NAMES = pl.Series(["sell", "buy"], dtype=pl.String)
_TRADE_REASON_NAMES = pl.Series(list(TRADE_REASONS), dtype=pl.String)
_RULE_NAMES = pl.Series(list(RULES), dtype=pl.String)


def _trades_frame(trades: np.ndarray) -> pl.DataFrame:
    # Built column by column from numpy: a row-oriented frame plus expressions costs ~4x more per call,
    # which dominates when a grid simulates thousands of small runs.
    qty = trades[:, 2]
    return pl.DataFrame(
        {
            "bar": trades[:, 0].astype(np.int64),
            "symbol": trades[:, 1].astype(np.int64),
            "side": _SIDE_NAMES.gather((qty > 0).astype(np.int64)),
            "qty": np.abs(qty),
            "price": trades[:, 3],
            "commission": trades[:, 4],
            "reason": _TRADE_REASON_NAMES.gather(trades[:, 5].astype(np.int64)),
        }
    )


def _events_frame(events: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "bar": events[:, 0].astype(np.int64),
            "symbol": events[:, 1].astype(np.int64),
            "rule": _RULE_NAMES.gather(events[:, 2].astype(np.int64)),
            "detail": events[:, 3].astype(np.float64),
        }
    )


def session_index_from_ts(ts: Any, tz: str = "America/New_York") -> np.ndarray:
    """One int64 per bar numbering its session: the bar's local date in ``tz``, densely ranked from 0.

    ``ts`` is a polars Datetime series (or anything ``pl.Series`` accepts as datetimes, e.g. numpy
    ``datetime64[ns]``), bar start times in UTC. For intraday bars of an exchange in ``tz`` each trading day
    is one session; daily bars get one session each.

    >>> import polars as pl, datetime as dt
    >>> ts = pl.Series([dt.datetime(2024, 1, 2, 14, 30), dt.datetime(2024, 1, 2, 20, 59),
    ...                 dt.datetime(2024, 1, 3, 14, 30)]).dt.replace_time_zone("UTC")
    >>> session_index_from_ts(ts).tolist()
    [0, 0, 1]
    """
    series = ts if isinstance(ts, pl.Series) else pl.Series("ts", ts)
    if series.dtype == pl.Datetime and series.dtype.time_zone is None:  # type: ignore[union-attr]
        series = series.dt.replace_time_zone("UTC")
    if not isinstance(series.dtype, pl.Datetime):
        raise DataError(f"session_index_from_ts: expected datetimes, got {series.dtype}")
    local = series.dt.convert_time_zone(tz).dt.date()
    return (local.rank("dense") - 1).cast(pl.Int64).to_numpy()


def align_bars(
    frames: pl.DataFrame | dict[str, pl.DataFrame], symbols: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """Bars of several symbols as the simulator's aligned arrays: ``(ts, symbols, open_, close)``.

    ``frames`` is one frame with a ``symbol`` column, or a dict symbol -> bar frame. Rows are the union of
    every symbol's ``ts`` (sorted); a symbol without a bar at a ts gets NaN (does not trade). ``ts`` is
    int64 ns UTC; ``open_``/``close`` are (T, N) float64 in ``symbols`` order (default: sorted names).

    >>> ts, names, open_, close = align_bars({"SPY": spy_bars, "QQQ": qqq_bars})  # doctest: +SKIP
    """
    if isinstance(frames, dict):
        long = pl.concat(
            [
                f.select("ts", "open", "close").with_columns(pl.lit(s).alias("symbol"))
                for s, f in frames.items()
            ]
        )
    else:
        if "symbol" not in frames.columns:
            raise DataError("align_bars: a single frame needs a 'symbol' column; or pass {symbol: frame}")
        long = frames.select("ts", "symbol", "open", "close")
    names = sorted(long["symbol"].unique().to_list()) if symbols is None else list(symbols)
    if long.select(pl.struct("ts", "symbol").is_duplicated().any()).item():
        raise DataError("align_bars: duplicate (ts, symbol) rows; validate the bars first")
    ts = long["ts"].unique().sort()
    out = []
    for field in ("open", "close"):
        wide = long.pivot(on="symbol", index="ts", values=field)
        wide = pl.DataFrame({"ts": ts}).join(wide, on="ts", how="left")
        missing = [s for s in names if s not in wide.columns]
        if missing:
            raise DataError(f"align_bars: no bars for {missing}")
        out.append(np.ascontiguousarray(wide.select(names).to_numpy().astype(np.float64)))
    ts_ns = ts.dt.cast_time_unit("ns").dt.epoch("ns").to_numpy() if ts.dtype == pl.Datetime else ts.to_numpy()
    return ts_ns, names, out[0], out[1]
