"""simulate_many: R independent single-symbol runs in one call equal R separate simulate() calls exactly."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trader.errors import DataError
from trader.risk import RiskLimits
from trader.sim import SimConfig, simulate, simulate_many

CONFIG = SimConfig(
    initial_cash=50_000.0,
    commission_bps=2.0,
    commission_per_share=0.005,
    min_commission=1.0,
    slippage_bps=3.0,
    min_history_bars=3,
)


def _market(seed: int, n_bars: int, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_symbols)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.005, (n_bars, n_symbols)))
    open_[5, 0] = np.nan  # a halted bar: fills wait for the next usable open
    close[7, n_symbols - 1] = np.nan
    return open_, close


def _grid(seed: int, n_bars: int, n_runs: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0, np.nan], size=(n_bars, n_runs))
    # Hold each decision for a few bars, as strategies do, so positions live long enough to hit stops.
    return np.repeat(weights[::4], 4, axis=0)[:n_bars]


def _one_by_one(open_, close, weights, columns, limits, **kw):
    return [
        simulate(open_[:, [c]], close[:, [c]], weights[:, [r]], config=CONFIG, limits=limits, **kw)
        for r, c in enumerate(columns)
    ]


@pytest.mark.parametrize(
    "limits",
    [
        None,
        RiskLimits(max_position_pct=0.6, stop_loss_pct=0.03, daily_loss_limit=0.02, max_drawdown=0.25),
        RiskLimits(pos_size_method="vol_target", vol_target=0.15, vol_lookback=10, max_per_trade=20_000.0),
    ],
    ids=["no-limits", "caps-stops-halts", "vol-target"],
)
def test_batch_equals_separate_runs(limits: RiskLimits | None) -> None:
    n_bars, n_symbols, n_runs = 120, 3, 9
    open_, close = _market(1, n_bars, n_symbols)
    weights = _grid(2, n_bars, n_runs)
    columns = np.arange(n_runs) % n_symbols
    batch = simulate_many(open_, close, weights, columns=columns, config=CONFIG, limits=limits)
    singles = _one_by_one(open_, close, weights, columns, limits)
    assert batch.equity.shape == (n_bars, n_runs)
    for r, (single, c) in enumerate(zip(singles, columns, strict=True)):
        np.testing.assert_array_equal(batch.equity[:, r], single.equity)
        np.testing.assert_array_equal(batch.positions[:, r], single.positions[:, 0])
        np.testing.assert_array_equal(batch.returns[:, r], single.returns)
        trades = batch.trades.filter(pl.col("run") == r).drop("run")
        expected = single.trades.with_columns(pl.lit(c, dtype=pl.Int64).alias("symbol"))
        assert_frame_equal(trades, expected)
        events = batch.events.filter(pl.col("run") == r).drop("run")
        expected_events = single.events.with_columns(
            pl.when(pl.col("symbol") < 0).then(-1).otherwise(c).cast(pl.Int64).alias("symbol")
        )
        assert_frame_equal(events, expected_events)
    if limits is not None and limits.stop_loss_pct is not None:
        assert batch.events.height > 0, "the constructed case should make some rules fire"


def test_intraday_sessions_reach_every_run() -> None:
    n_bars, n_runs = 60, 4
    open_, close = _market(3, n_bars, 1)
    weights = _grid(4, n_bars, n_runs)
    session = np.repeat(np.arange(6), 10)
    limits = RiskLimits(daily_loss_limit=0.01)
    batch = simulate_many(open_, close, weights, config=CONFIG, limits=limits, session_index=session)
    singles = _one_by_one(open_, close, weights, [0] * n_runs, limits, session_index=session)
    for r, single in enumerate(singles):
        np.testing.assert_array_equal(batch.equity[:, r], single.equity)


def test_many_trades_grow_the_buffers() -> None:
    # Every bar flips every run: far more fills than the initial buffer holds.
    n_bars, n_runs = 400, 40
    open_, close = _market(5, n_bars, 1)
    weights = np.tile(np.where(np.arange(n_bars) % 2 == 0, 1.0, -1.0)[:, None], (1, n_runs))
    batch = simulate_many(open_, close, weights, config=CONFIG)
    single = simulate(open_, close, weights[:, 0], config=CONFIG)
    assert batch.trades.height == n_runs * single.trades.height > 1024
    assert np.all(batch.equity == single.equity[:, None])


def test_bad_inputs_name_what_is_wrong() -> None:
    px = np.full((10, 2), 100.0)
    with pytest.raises(DataError, match="pass columns="):
        simulate_many(px, px, np.zeros((10, 3)), config=CONFIG)
    with pytest.raises(DataError, match="index the 2 price columns"):
        simulate_many(px, px, np.zeros((10, 3)), columns=[0, 1, 2], config=CONFIG)
    with pytest.raises(DataError, match="bars x runs with 10 bars"):
        simulate_many(px, px, np.zeros((9, 2)), config=CONFIG)
    bad = px.copy()
    bad[3, 1] = -1.0
    with pytest.raises(DataError, match="bar 3, symbol 1"):
        simulate_many(bad, px, np.zeros((10, 2)), config=CONFIG)
