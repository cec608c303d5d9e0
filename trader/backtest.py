"""One backtest, start to finish: bars -> target weights -> simulator -> metrics -> files.

:func:`run` takes bars of one or several symbols (a polars frame with a ``symbol`` column), a strategy
name and its parameters (or ``None`` for the configured composer) and the settings, and returns a
:class:`BacktestResult`. Per symbol, the strategy (or the composer's blend) turns that symbol's own bars into
a target weight per bar, decided at the bar's close; the numba simulator (:mod:`trader.sim`) fills each
decision at the next bar's open with the configured costs and the risk rules of :mod:`trader.risk`; the
metrics come from :mod:`trader.metrics`.

Selection modes when no strategy is named: ``"composer"`` (the regime-weighted blend) or ``"bandit"``
(:func:`trader.bandit.bandit_select` picks one of ``composer.strategies`` per symbol and decision period);
``bandit.enabled: true`` in the settings, or ``run(..., selection="bandit")``, chooses the bandit. The
result then carries the ``decisions`` table and the final ``posteriors``, and the summary a ``bandit``
section (arm shares by regime, cumulative reward per arm, policy and best arm in hindsight).

>>> from trader.config import Settings
>>> from trader.data.synth import synth_bars
>>> bars = synth_bars("SYN000", "1d", "2020-01-01", "2022-12-31", seed=1)
>>> result = run(bars, "sma_cross", {"fast": 10, "slow": 50}, Settings())
>>> sorted(result.summary["metrics"])[:3]
['avg_trade', 'cagr', 'calmar']
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trader.bandit import PosteriorSet, bandit_report, bandit_select
from trader.composer import Composer
from trader.errors import ConfigError, DataError
from trader.metrics import periods_per_year, summarize
from trader.risk import RiskLimits
from trader.sim.portfolio import SimConfig, SimResult, session_index_from_ts, simulate
from trader.strategies import get_strategy

DEFAULT_SYMBOL = "ASSET"
SELECTIONS = ("composer", "bandit")
_PACKAGES = ("trader", "numpy", "numba", "polars", "pyarrow", "exchange_calendars")


@dataclass(frozen=True)
class BacktestResult:
    """A finished backtest. Frames are in account currency and UTC bar-start timestamps.

    * ``equity``: ``ts, equity, cash`` at each bar's close.
    * ``positions``: ``ts, symbol, shares, weight`` at every bar where a symbol's position changed (the
      position holds until its next row); ``weight`` is ``shares * close / equity`` at that close.
    * ``trades``: ``ts, symbol, side, qty, price, commission, reason`` per fill (``ts`` is the fill bar).
    * ``risk_events``: ``ts, symbol, rule, detail`` per risk rule that fired (``symbol`` null = the account).
    * ``targets``: ``ts, symbol, target`` decided weights before risk rules, at every bar where they changed.
    * ``summary``: metrics, per-symbol figures, strategy and parameters, settings, data fingerprint, versions.
    * ``decisions`` (bandit selection only): one row per symbol and decision, see
      :func:`trader.bandit.bandit_select`; ``posteriors``: the bandit's :class:`~trader.bandit.PosteriorSet`
      after the run (every symbol), for a warm start.
    """

    equity: pl.DataFrame
    positions: pl.DataFrame
    trades: pl.DataFrame
    risk_events: pl.DataFrame
    targets: pl.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    decisions: pl.DataFrame | None = None
    posteriors: PosteriorSet | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """The headline metrics of the run (see :data:`trader.metrics.SUMMARY_KEYS`)."""
        return self.summary["metrics"]

    def write(self, out_dir: str | Path) -> Path:
        """Write ``equity/positions/trades/risk_events.parquet`` and ``summary.json`` into ``out_dir``, and
        with bandit selection ``decisions.parquet`` and ``posteriors.parquet``.

        All files are written into a temporary sibling folder first, then moved into place, so a crash never
        leaves a half-written run; an existing ``out_dir`` is replaced only once the new one is complete.
        """
        target = Path(out_dir).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            self.equity.write_parquet(staging / "equity.parquet")
            self.positions.write_parquet(staging / "positions.parquet")
            self.trades.write_parquet(staging / "trades.parquet")
            self.risk_events.write_parquet(staging / "risk_events.parquet")
            (staging / "summary.json").write_text(json.dumps(self.summary, indent=2, default=_json_default))
            if self.decisions is not None:
                self.decisions.write_parquet(staging / "decisions.parquet")
            if self.posteriors is not None:
                self.posteriors.write(staging / "posteriors.parquet")
            if target.exists():
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(old)
                staging.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target


def run(
    bars: pl.DataFrame,
    strategy: str | None,
    params: Mapping[str, Any] | None,
    settings: Any,
    *,
    interval: str | None = None,
    selection: str | None = None,
    posteriors: PosteriorSet | None = None,
) -> BacktestResult:
    """Backtest ``strategy`` (a registered name, or None for the configured composer or bandit) on ``bars``.

    ``bars``: a bar frame (``ts, open, high, low, close, volume``) with a ``symbol`` column for several
    symbols; ``params``: the strategy's parameters (defaults fill the rest; validated); ``settings``: a
    :class:`trader.config.Settings`; ``interval``: the bar interval (default ``settings.data.interval``),
    which sets annualisation and, for intraday bars, the session boundaries of the daily loss limit.
    ``selection``: ``"composer"`` or ``"bandit"`` when no strategy is named (default: ``"bandit"`` if
    ``bandit.enabled``, else ``"composer"``); ``posteriors``: the bandit's starting posteriors (a warm
    start; default the prior).

    >>> from trader.config import load_settings
    >>> from trader.data.synth import synth_bars
    >>> settings = load_settings(["configs/demo.yaml"], env={})
    >>> result = run(synth_bars("SYN000", "1d", "2020-01-01", "2022-12-31", seed=1), None, {}, settings,
    ...              selection="bandit")
    >>> sorted(result.summary["bandit"]["cumulative_reward"])[:2]
    ['best_arm', 'best_arm_hindsight']
    """
    started = time.perf_counter()
    interval = interval or settings.data.interval
    frame = _prepare(bars)
    symbols = sorted(frame["symbol"].unique().to_list())
    ts = frame["ts"].unique().sort()
    mode = _selection(strategy, params, settings, selection, posteriors)
    bandit_runs: list[Any] = []
    if mode == "bandit":
        decide, described = _bandit_decider(settings, posteriors, interval, bandit_runs)
    else:
        decide, described = _decider(strategy, params, settings)

    n_bars, n_symbols = ts.len(), len(symbols)
    open_ = np.full((n_bars, n_symbols), np.nan)
    close = np.full((n_bars, n_symbols), np.nan)
    weights = np.full((n_bars, n_symbols), np.nan)
    for group in frame.partition_by("symbol", maintain_order=True):
        j = symbols.index(group["symbol"][0])
        rows = ts.search_sorted(group["ts"]).to_numpy()
        open_[rows, j] = group["open"].to_numpy()
        close[rows, j] = group["close"].to_numpy()
        weights[rows, j] = decide(group)

    ppy = periods_per_year(interval)
    config = SimConfig.from_settings(settings)
    limits = RiskLimits.from_settings(settings, periods_per_year=ppy)
    session = None if interval == "1d" else session_index_from_ts(ts, _exchange_tz(settings))
    sim = simulate(open_, close, weights, config=config, limits=limits, session_index=session)
    result = _result(frame, ts, symbols, weights, close, sim, settings, interval, described, started)
    if mode == "bandit":
        result = _with_bandit(result, bandit_runs, settings)
    return result


# -- inputs ----------------------------------------------------------------------------------------------
def _prepare(bars: pl.DataFrame) -> pl.DataFrame:
    if not isinstance(bars, pl.DataFrame):
        raise DataError(f"backtest: bars must be a polars DataFrame, got {type(bars).__name__}")
    missing = [c for c in ("ts", "open", "high", "low", "close", "volume") if c not in bars.columns]
    if missing:
        raise DataError(f"backtest: bars lack column(s) {', '.join(missing)}")
    if bars.is_empty():
        raise DataError("backtest: no bars in the requested range; check the symbols, dates and store")
    frame = bars if "symbol" in bars.columns else bars.with_columns(pl.lit(DEFAULT_SYMBOL).alias("symbol"))
    frame = frame.sort("symbol", "ts")
    if frame.select(pl.struct("symbol", "ts").is_duplicated().any()).item():
        raise DataError("backtest: duplicate (symbol, ts) bars; validate the bars first")
    return frame


def _decider(
    strategy: str | None, params: Mapping[str, Any] | None, settings: Any
) -> tuple[Any, dict[str, Any]]:
    """A function from one symbol's bars to its target weights, and how to describe it in the summary."""
    if strategy is None:
        if params:
            raise ConfigError(
                "backtest: --param needs --strategy; the composer takes its parameters from settings"
            )
        composer = Composer.from_settings(settings)
        if not composer.strategies:
            raise ConfigError(
                "backtest: no --strategy given and composer.strategies is empty; name a strategy or "
                "configure the composer (see configs/demo.yaml)"
            )
        described = {
            "mode": "composer",
            "strategies": [{"name": spec.name, "params": dict(p)} for spec, p in composer.strategies],
        }
        return (lambda group: composer.target_weights(group)), described
    spec = get_strategy(strategy)
    chosen = spec.validate(dict(params or {}))
    return (lambda group: spec.run(group, chosen)), {
        "mode": "strategy",
        "strategy": spec.name,
        "params": chosen,
    }


def _selection(
    strategy: str | None,
    params: Mapping[str, Any] | None,
    settings: Any,
    selection: str | None,
    posteriors: PosteriorSet | None,
) -> str:
    """``"strategy"``, ``"composer"`` or ``"bandit"``: what decides the target weights."""
    if selection is not None and selection not in SELECTIONS:
        raise ConfigError(f"backtest: selection {selection!r} is not one of {', '.join(SELECTIONS)}")
    if strategy is not None:
        if selection is not None:
            raise ConfigError(
                f"backtest: --selection {selection} chooses among composer.strategies; drop --strategy "
                "(or drop --selection to backtest the one strategy)"
            )
        mode = "strategy"
    elif selection is not None:
        mode = selection
    else:
        mode = "bandit" if settings.bandit.enabled else "composer"
    if posteriors is not None and mode != "bandit":
        raise ConfigError("backtest: posteriors (--posteriors-in) need bandit selection (--selection bandit)")
    if mode == "bandit" and params:
        raise ConfigError(
            "backtest: --param needs --strategy; the bandit takes its arms from composer settings"
        )
    return mode


def _bandit_decider(
    settings: Any, posteriors: PosteriorSet | None, interval: str, runs: list[Any]
) -> tuple[Any, dict[str, Any]]:
    """Per symbol :func:`trader.bandit.bandit_select` over ``composer.strategies``; results go to ``runs``."""
    arms = settings.composer.strategies
    if not arms:
        raise ConfigError(
            "backtest: bandit selection picks among composer.strategies, which is empty; configure the "
            "composer (see configs/demo.yaml)"
        )
    start = settings.engine.min_history_bars  # the simulator's first trading bar

    def decide(group: pl.DataFrame) -> np.ndarray:
        res = bandit_select(group, arms, settings, posteriors, start_index=start, interval=interval)
        runs.append(res)
        return res.weights

    described = {
        "mode": "bandit",
        "strategies": [{"name": spec.name, "params": dict(spec.params)} for spec in arms],
        "warm_start": posteriors is not None,
    }
    return decide, described


def _with_bandit(result: BacktestResult, runs: list[Any], settings: Any) -> BacktestResult:
    """Attach the decisions, the merged posteriors and the bandit report to ``result``."""
    arms = runs[0].arms
    decisions = pl.concat([r.decisions for r in runs], how="vertical")
    merged = runs[0].posteriors
    for r in runs[1:]:
        merged = merged.merge(PosteriorSet(r.posteriors.context, {r.symbol: r.posteriors.symbols[r.symbol]}))
    report = bandit_report(decisions, arms)
    report["reward_units"] = (
        "per-period return / (per-bar volatility * sqrt(horizon))"
        if settings.bandit.reward_scale == "vol"
        else "per-period return, fraction"
    )
    report["context_features"] = list(merged.context.features)
    summary = {**result.summary, "bandit": report}
    return replace(result, summary=summary, decisions=decisions, posteriors=merged)


def _exchange_tz(settings: Any) -> str:
    from trader.calendar import get_calendar

    return get_calendar(settings.data.exchange).tz


# -- outputs ---------------------------------------------------------------------------------------------
def _result(
    frame: pl.DataFrame,
    ts: pl.Series,
    symbols: list[str],
    weights: np.ndarray,
    close: np.ndarray,
    sim: SimResult,
    settings: Any,
    interval: str,
    described: dict[str, Any],
    started: float,
) -> BacktestResult:
    names = pl.Series("symbol", symbols, dtype=pl.String)
    equity = pl.DataFrame({"ts": ts, "equity": sim.equity, "cash": sim.cash})

    trades = sim.trades.with_columns(
        ts=ts.gather(sim.trades["bar"]), symbol=names.gather(sim.trades["symbol"])
    ).select("ts", "symbol", "side", "qty", "price", "commission", "reason")
    events = sim.events.with_columns(
        ts=ts.gather(sim.events["bar"]),
        symbol=pl.when(pl.col("symbol") >= 0).then(names.gather(sim.events["symbol"].clip(0))),
    ).select("ts", "symbol", "rule", "detail")

    last_close = _forward_fill(close)
    held_value = sim.positions * np.nan_to_num(last_close)
    weight = held_value / sim.equity[:, None]
    positions = _changes(ts, symbols, sim.positions, {"shares": sim.positions, "weight": weight})
    decided = _forward_fill(weights)
    targets = _changes(ts, symbols, np.nan_to_num(decided), {"target": np.nan_to_num(decided)})

    round_trips = _round_trip_returns(trades)
    traded = np.zeros(ts.len())
    if trades.height:
        notional = (trades["qty"] * trades["price"]).to_numpy()
        np.add.at(traded, sim.trades["bar"].to_numpy(), notional)
    metrics = summarize(
        sim.returns,
        interval=interval,
        trades=round_trips,
        exposure=np.abs(sim.positions).sum(axis=1),
        turnover_notional=traded,
        initial_equity=sim.initial_cash,
    )
    per_symbol = {
        s: {
            "trades": int((trades["symbol"] == s).sum()),
            "commission": float(trades.filter(pl.col("symbol") == s)["commission"].sum()),
            "final_shares": float(sim.positions[-1, j]),
        }
        for j, s in enumerate(symbols)
    }
    summary = {
        "run": {**described, "interval": interval, "symbols": symbols, "bars": int(ts.len())},
        "period": {"start": str(ts[0]), "end": str(ts[-1])},
        "metrics": {k: _finite_or_none(v) for k, v in metrics.items()},
        "final_equity": float(sim.equity[-1]),
        "initial_cash": float(sim.initial_cash),
        "trades": trades.height,
        "commission": float(trades["commission"].sum()) if trades.height else 0.0,
        "risk_events": events.group_by("rule").len().sort("rule").rows() if events.height else [],
        "per_symbol": per_symbol,
        "settings": json.loads(settings.model_dump_json()),
        "data_fingerprint": data_fingerprint(frame),
        "versions": versions(),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    return BacktestResult(equity, positions, trades, events, targets, summary)


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value of each column forward (rows are bars)."""
    out = np.array(values, dtype=np.float64, copy=True)
    for j in range(out.shape[1]):
        col = out[:, j]
        idx = np.where(np.isnan(col), 0, np.arange(col.size))
        np.maximum.accumulate(idx, out=idx)
        filled = col[idx]
        filled[np.isnan(col[0]) & (idx == 0)] = np.nan
        out[:, j] = filled
    return out


def _changes(
    ts: pl.Series, symbols: list[str], key: np.ndarray, columns: dict[str, np.ndarray]
) -> pl.DataFrame:
    """Long rows (ts, symbol, columns...) where ``key`` changes from the previous bar (from 0 at first)."""
    prev = np.vstack([np.zeros((1, key.shape[1])), key[:-1]])
    rows, cols = np.nonzero(key != prev)
    order = np.lexsort((rows, cols))
    rows, cols = rows[order], cols[order]
    data: dict[str, Any] = {
        "ts": ts.gather(rows),
        "symbol": pl.Series(symbols, dtype=pl.String).gather(cols),
    }
    for name, values in columns.items():
        data[name] = values[rows, cols]
    return pl.DataFrame(data)


def _round_trip_returns(trades: pl.DataFrame) -> np.ndarray:
    """Return of each closed round trip (flat -> position -> flat or flip), net of commission, as a fraction.

    Per symbol (in order of first fill), fills are accumulated at their average cost; when the position
    returns to zero (or flips), the trip's P&L over its gross entry notional is one trade return. An open
    position at the end is no trip (:func:`trader.tuning.round_trip_returns`).
    """
    from trader.tuning import round_trip_returns

    if trades.is_empty():
        return np.empty(0)
    first_seen = {s: i for i, s in enumerate(trades["symbol"].unique(maintain_order=True).to_list())}
    ordered = trades.with_columns(
        _group=pl.col("symbol").replace_strict(first_seen, return_dtype=pl.Int64)
    ).sort("_group", maintain_order=True)
    signed = np.where(ordered["side"].to_numpy() == "buy", 1.0, -1.0) * ordered["qty"].to_numpy()
    return round_trip_returns(
        ordered["_group"].to_numpy(), signed, ordered["price"].to_numpy(), ordered["commission"].to_numpy()
    )


def data_fingerprint(frame: pl.DataFrame) -> str:
    """sha256 of the bars a run saw (symbol, ts, OHLCV in symbol/ts order): same data, same fingerprint."""
    digest = hashlib.sha256()
    single = frame["symbol"].n_unique() == 1 and frame["ts"].is_sorted()
    ordered = frame if single else frame.sort("symbol", "ts")
    # The same bytes as joining every row's symbol, without building a Python string per row.
    symbols = ordered["symbol"]
    if single:
        digest.update("\0".join([symbols[0]] * ordered.height).encode())
    else:
        digest.update("\0".join(symbols.to_list()).encode())
    digest.update(ordered["ts"].dt.epoch("ns").to_numpy().tobytes())
    for name in ("open", "high", "low", "close", "volume"):
        digest.update(ordered[name].cast(pl.Float64).to_numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide a run's numbers."""
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
