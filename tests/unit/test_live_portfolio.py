"""The live portfolio stepper equals the backtest bar for bar: the oracle is trader.sim.simulate itself.

Each run drives a PortfolioStepper through the bars (on_open -> every plan filled at its planned price with
the kernel's commission -> on_close) and compares trades, events, equity, cash, positions and targets with
simulate() on the same arrays, exactly (assert_array_equal / exact frame equality).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trader.config import Settings
from trader.data.synth import synth_bars
from trader.errors import DataError
from trader.live import OrderPlan, PortfolioStepper
from trader.risk import RULES, RiskLimits
from trader.sim import (
    TRADE_REASONS,
    SimConfig,
    SimResult,
    align_bars,
    commission,
    session_index_from_ts,
    simulate,
)


@dataclass
class Case:
    open_: np.ndarray
    close: np.ndarray
    weights: np.ndarray
    session: np.ndarray | None
    vol: np.ndarray | None
    config: SimConfig
    limits: RiskLimits | None


@dataclass
class Run:
    equity: np.ndarray
    cash: np.ndarray
    positions: np.ndarray
    targets: np.ndarray
    stepper: PortfolioStepper


def _maybe(rng: np.random.Generator, value: Any, p_on: float = 0.5) -> Any:
    return value if rng.random() < p_on else None


def random_case(seed: int) -> Case:
    """Random bars, weights, costs and limits; every rule is switched on in about half of the cases."""
    rng = np.random.default_rng(seed)
    n_bars = int(rng.integers(60, 200))
    n_sym = int(rng.integers(1, 6))
    sigma = rng.uniform(0.005, 0.05)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, sigma, (n_bars, n_sym)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0.0, sigma / 2, (n_bars, n_sym)))
    p_gap = rng.choice([0.0, 0.05, 0.2])
    open_[rng.random(open_.shape) < p_gap] = np.nan
    close[rng.random(close.shape) < p_gap] = np.nan
    # Piecewise-constant signals with NaN (no decision), shorts and oversized weights.
    weights = np.full((n_bars, n_sym), np.nan)
    level = np.zeros(n_sym)
    for t in range(n_bars):
        change = rng.random(n_sym) < 0.15
        level = np.where(change, rng.choice([0.0, 1.0, -1.0, 0.3, -0.6, 1.5], n_sym), level)
        level = np.where(rng.random(n_sym) < 0.05, level + rng.normal(0.0, 0.05, n_sym), level)
        weights[t] = np.where(rng.random(n_sym) < 0.2, np.nan, level)
    session = (np.arange(n_bars) // int(rng.integers(2, 12))).astype(np.int64) if rng.random() < 0.5 else None
    cash = float(rng.choice([10_000.0, 100_000.0, 1_000_000.0]))
    config = SimConfig(
        initial_cash=cash,
        fractional_shares=bool(rng.random() < 0.5),
        commission_bps=float(rng.choice([0.0, 1.0, 5.0])),
        commission_per_share=float(rng.choice([0.0, 0.005])),
        min_commission=float(rng.choice([0.0, 1.0, 25.0])),
        slippage_bps=float(rng.choice([0.0, 2.0, 10.0])),
        min_history_bars=int(rng.integers(0, 12)),
        rebalance_threshold=_maybe(rng, float(rng.uniform(0.01, 0.1))),
    )
    vol_target = bool(rng.random() < 0.4)
    limits = None
    if rng.random() < 0.85:
        limits = RiskLimits(
            pos_size_method="vol_target" if vol_target else "fixed",
            vol_target=float(rng.uniform(0.05, 0.6)) if vol_target else None,
            max_position_pct=_maybe(rng, float(rng.uniform(0.1, 1.0))),
            max_open_positions=_maybe(rng, int(rng.integers(1, n_sym + 1))),
            max_gross_leverage=_maybe(rng, float(rng.uniform(0.3, 2.0))),
            max_buying_power=_maybe(rng, float(cash * rng.uniform(0.3, 2.0))),
            max_per_trade=_maybe(rng, float(cash * rng.uniform(0.02, 0.5))),
            max_per_symbol=_maybe(rng, float(cash * rng.uniform(0.1, 1.0))),
            stop_loss_pct=_maybe(rng, float(rng.uniform(0.01, 0.1))),
            daily_loss_limit=_maybe(rng, float(rng.uniform(0.005, 0.05))),
            max_drawdown=_maybe(rng, float(rng.uniform(0.05, 0.4)), p_on=0.4),
            vol_lookback=int(rng.integers(2, 10)),
        )
    vol = None
    if vol_target and rng.random() < 0.5:  # else both sides compute the trailing volatility themselves
        vol = rng.uniform(0.0, 0.8, (n_bars, n_sym))
        vol[rng.random(vol.shape) < 0.1] = np.nan
    return Case(open_, close, weights, session, vol, config, limits)


def fill_every_plan(stepper: PortfolioStepper, t: int, plans: list[OrderPlan], config: SimConfig) -> None:
    """A broker that fills every plan completely at its planned price, charging the kernel's commission."""
    for plan in plans:
        fee = commission(
            plan.qty, plan.price, config.commission_bps, config.commission_per_share, config.min_commission
        )
        assert fee == plan.commission
        stepper.apply_fill(plan.symbol, plan.qty, plan.price, fee)


Broker = Callable[[PortfolioStepper, int, list[OrderPlan], SimConfig], None]
Hook = Callable[[PortfolioStepper, int, str], PortfolioStepper]


def drive(
    case: Case,
    broker: Broker = fill_every_plan,
    hook: Hook | None = None,
    limits: RiskLimits | str | None = "case",
) -> Run:
    """Step the case bar by bar; ``hook(stepper, t, phase)`` may swap the stepper (checkpoint/restore)."""
    n_bars, n_sym = case.open_.shape
    lim = case.limits if limits == "case" else limits
    stepper = PortfolioStepper([f"S{j}" for j in range(n_sym)], case.config, lim)  # type: ignore[arg-type]
    equity, cash = np.empty(n_bars), np.empty(n_bars)
    positions, targets = np.empty((n_bars, n_sym)), np.empty((n_bars, n_sym))
    for t in range(n_bars):
        plans = stepper.on_open(t, case.open_[t])
        if hook is not None:
            stepper = hook(stepper, t, "open")
        broker(stepper, t, plans, case.config)
        if hook is not None:
            stepper = hook(stepper, t, "filled")
        report = stepper.on_close(
            t,
            case.close[t],
            case.weights[t],
            None if case.session is None else int(case.session[t]),
            None if case.vol is None else case.vol[t],
        )
        if hook is not None:
            stepper = hook(stepper, t, "close")
        equity[t], cash[t] = report.equity, report.cash
        positions[t], targets[t] = report.positions, report.targets
        assert report.equity == stepper.equity  # the property marks as the kernel does
    return Run(equity, cash, positions, targets, stepper)


def backtest(case: Case) -> SimResult:
    return simulate(
        case.open_,
        case.close,
        case.weights,
        config=case.config,
        limits=case.limits,
        session_index=case.session,
        vol=case.vol,
    )


def assert_same(run: Run, res: SimResult) -> None:
    np.testing.assert_array_equal(run.equity, res.equity)
    np.testing.assert_array_equal(run.cash, res.cash)
    np.testing.assert_array_equal(run.positions, res.positions)
    np.testing.assert_array_equal(run.targets, res.targets)
    assert_frame_equal(run.stepper.trades, res.trades, check_exact=True)
    assert_frame_equal(run.stepper.events, res.events, check_exact=True)


SEEDS = range(60)


def test_parity_with_simulate_on_random_inputs() -> None:
    rules_seen: set[str] = set()
    reasons_seen: set[str] = set()
    n_trades = 0
    for seed in SEEDS:
        case = random_case(seed)
        res = backtest(case)
        run = drive(case)
        try:
            assert_same(run, res)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc
        rules_seen |= set(res.events["rule"].to_list())
        reasons_seen |= set(res.trades["reason"].to_list())
        n_trades += res.trades.height
    # The random cases really exercise every rule and every trade reason (else parity proves little).
    assert rules_seen == set(RULES)
    assert reasons_seen == set(TRADE_REASONS)
    assert n_trades > 2_000


def test_kill_switch_and_halt_flags_follow_the_kernel() -> None:
    # Fully invested in one symbol: a 3 % loss halts for the session (exit at the next open, back in after
    # the next session's close), then a crash kills for good.
    price = np.array([[100.0], [100.0], [100.0], [97.0], [99.0], [90.0], [91.0], [75.0], [82.0], [85.0]])
    limits = RiskLimits(daily_loss_limit=0.02, max_drawdown=0.15)
    case = Case(price, price, np.ones((10, 1)), None, None, SimConfig(initial_cash=10_000.0), limits)
    flags = []

    def watch(stepper: PortfolioStepper, t: int, phase: str) -> PortfolioStepper:
        if phase == "close":
            flags.append((stepper.halted, stepper.killed))
        return stepper

    run = drive(case, hook=watch)
    res = backtest(case)
    assert_same(run, res)
    events = [(e.bar, e.rule) for e in run.stepper.risk_events]
    assert events == list(res.events.select("bar", "rule").iter_rows())
    assert ("daily_loss_limit" in {r for _, r in events}) and ("max_drawdown" in {r for _, r in events})
    # Halted from the daily-loss bar until the next session's close, killed for good after the drawdown.
    halt_bar = next(b for b, r in events if r == "daily_loss_limit")
    kill_bar = next(b for b, r in events if r == "max_drawdown")
    assert flags[halt_bar][0] and not flags[halt_bar + 1][0]
    assert all(k for _, k in flags[kill_bar:]) and not any(k for _, k in flags[:kill_bar])


def _checkpoint(stepper: PortfolioStepper) -> PortfolioStepper:
    text = json.dumps(stepper.state(), allow_nan=False)  # strictly JSON: no NaN or inf tokens
    restored = PortfolioStepper.from_state(json.loads(text))
    assert restored.state() == stepper.state()
    return restored


@pytest.mark.parametrize("phase", ["open", "filled", "close"])
def test_checkpoint_mid_run_gives_the_same_rest_of_the_run(phase: str) -> None:
    for seed in range(12):
        case = random_case(100 + seed)
        at = {int(k) for k in np.random.default_rng(seed).integers(0, case.open_.shape[0], 3)}

        def restore(stepper: PortfolioStepper, t: int, now: str, at: set[int] = at) -> PortfolioStepper:
            return _checkpoint(stepper) if now == phase and t in at else stepper

        assert_same(drive(case, hook=restore), backtest(case))


def test_checkpoint_between_partial_fills() -> None:
    config = SimConfig(initial_cash=10_000.0, commission_bps=2.0)
    stepper = PortfolioStepper(["A", "B"], config)
    stepper.on_open(0, [10.0, 20.0])
    stepper.on_close(0, [10.0, 20.0], [0.5, -0.25])
    plans = stepper.on_open(1, [11.0, 19.0])
    half = plans[0].qty / 2
    stepper.apply_fill(0, half, plans[0].price, 1.0)
    restored = _checkpoint(stepper)
    for s in (stepper, restored):
        s.apply_fill(0, plans[0].qty - half, plans[0].price, 1.0)
        s.apply_fill(1, plans[1].qty, plans[1].price, 1.0)
        s.on_close(1, [12.0, 18.0], [0.5, np.nan])
    assert restored.state() == stepper.state()
    assert not restored.pending.any()  # the pieces completed both plans


def test_checkpoint_rejects_garbage() -> None:
    with pytest.raises(DataError, match="checkpoint"):
        PortfolioStepper.from_state({"version": 1, "symbols": ["A"]})
    good = PortfolioStepper(["A"], SimConfig()).state()
    with pytest.raises(DataError, match="version"):
        PortfolioStepper.from_state({**good, "version": 99})
    with pytest.raises(DataError, match="pending has shape"):
        PortfolioStepper.from_state({**good, "pending": [True, False]})  # one symbol, two flags


def capping_broker(open_: np.ndarray, cap: float, fractional: bool) -> Broker:
    """A broker that fills at most ``cap`` notional (valued at the open) of each order; the rest is lost."""

    def fill(stepper: PortfolioStepper, t: int, plans: list[OrderPlan], config: SimConfig) -> None:
        for plan in plans:
            o = open_[t, plan.symbol]
            qty = plan.qty
            if abs(qty) * o > cap * (1.0 + 1e-9):  # the cap as risk.py states it, tolerance included
                qty = math.copysign(cap / o, qty)
                qty = qty if fractional else float(math.trunc(qty))
            if qty == 0.0:
                continue
            fee = commission(
                qty, plan.price, config.commission_bps, config.commission_per_share, config.min_commission
            )
            stepper.apply_fill(plan.symbol, qty, plan.price, fee)

    return fill


def test_broker_capping_fills_like_max_per_trade_matches_the_kernels_cap() -> None:
    """A broker that fills at most `cap` notional per order (the rest unfilled) leaves the rest pending,
    re-sized at the next open: the same run as the kernel's own max_per_trade rule."""
    checked = 0
    for seed in range(200, 240):
        case = random_case(seed)
        if case.limits is None or case.limits.max_per_trade is None:
            continue

        capped = capping_broker(case.open_, case.limits.max_per_trade, case.config.fractional_shares)
        res = backtest(case)
        # The stepper does not know the cap; the rest of its limits are the case's (still "active").
        other = replace(case.limits, max_per_trade=None, max_drawdown=case.limits.max_drawdown or 1.0)
        run = drive(case, broker=capped, limits=other)
        np.testing.assert_array_equal(run.equity, res.equity)
        np.testing.assert_array_equal(run.cash, res.cash)
        np.testing.assert_array_equal(run.positions, res.positions)
        assert_frame_equal(run.stepper.trades, res.trades, check_exact=True)
        kernel_events = res.events.filter(pl.col("rule") != "max_per_trade")
        assert_frame_equal(run.stepper.events, kernel_events, check_exact=True)
        checked += res.events.filter(pl.col("rule") == "max_per_trade").height
    assert checked > 50  # the cap really cut orders


def test_partial_fill_leaves_the_rest_pending_resized_at_the_next_open() -> None:
    config = SimConfig(initial_cash=10_000.0)
    stepper = PortfolioStepper(["A"], config)
    stepper.on_open(0, [100.0])
    stepper.on_close(0, [100.0], [0.8])
    (plan,) = stepper.on_open(1, [100.0])
    assert plan.qty == 80.0 and plan.final and plan.reason_name == "signal"
    stepper.apply_fill("A", 30.0, 100.0, 0.0)
    assert not stepper.pending[0]  # pending again only when the bar closes with the plan unfilled
    report = stepper.on_close(1, [110.0], [np.nan])
    assert report.pending[0] and report.positions[0] == 30.0
    (rest,) = stepper.on_open(2, [120.0])
    value = 10_000.0 - 30.0 * 100.0 + 30.0 * 120.0  # cash + shares at this open
    assert rest.qty == pytest.approx(0.8 * value / 120.0 - 30.0, rel=1e-12)
    assert rest.reason_name == "signal"
    stepper.apply_fill("A", rest.qty, rest.price, 0.0)
    stepper.on_close(2, [120.0], [np.nan])
    assert not stepper.pending[0]
    assert stepper.shares[0] == pytest.approx(0.8 * value / 120.0, rel=1e-12)
    # The entry price is the average of the two fills, weighted by shares.
    expected_entry = (30.0 * 100.0 + rest.qty * 120.0) / (30.0 + rest.qty)
    assert stepper.entry_prices[0] == pytest.approx(expected_entry, rel=1e-12)
    assert stepper.trades["qty"].to_list() == [30.0, rest.qty]


def test_unfilled_plan_is_retried_and_pieces_complete_a_plan() -> None:
    stepper = PortfolioStepper(["A"], SimConfig(initial_cash=1_000.0, fractional_shares=False))
    stepper.on_open(0, [10.0])
    stepper.on_close(0, [10.0], [1.0])
    (plan,) = stepper.on_open(1, [10.0])
    stepper.on_close(1, [10.0], [np.nan])  # the broker rejected it: nothing filled
    assert stepper.pending[0]
    (again,) = stepper.on_open(2, [8.0])
    assert again.qty == 125.0 and plan.qty == 100.0  # re-sized at the new open
    for piece in (50.0, 25.0, 50.0):
        stepper.apply_fill(0, piece, 8.0, 0.0)
    stepper.on_close(2, [8.0], [np.nan])
    assert not stepper.pending[0] and stepper.shares[0] == 125.0 and stepper.cash == 0.0


def test_sync_sizes_the_next_orders_from_the_brokers_positions() -> None:
    config = SimConfig(initial_cash=100_000.0)
    stepper = PortfolioStepper(["A", "B", "C"], config)
    stepper.on_open(0, [10.0, 20.0, 40.0])
    stepper.on_close(0, [10.0, 20.0, 40.0], [0.3, 0.3, 0.3])
    fill_every_plan(stepper, 1, stepper.on_open(1, [10.0, 20.0, 40.0]), config)
    stepper.on_close(1, [11.0, 21.0, 41.0], [0.3, 0.5, np.nan])  # B's target changes: B is pending
    held = stepper.shares
    broker_shares = {"A": held[0] * 1.25, "B": held[1] - 100.0, "C": held[2]}  # A drifted, B partly missing
    broker_cash = stepper.cash - 500.0
    changed = stepper.sync(broker_cash, broker_shares, rebalance=False)
    assert changed == [0, 1] and stepper.cash == broker_cash
    open_ = np.array([12.0, 22.0, 42.0])
    planned = stepper.on_open(2, open_)
    plans = {p.name: p for p in planned}
    synced = np.array([broker_shares[s] for s in "ABC"])
    value = broker_cash + float(synced @ open_)
    assert set(plans) == {"B"}  # without rebalance only the pending symbol trades
    assert plans["B"].qty == pytest.approx(0.5 * value / 22.0 - synced[1], rel=1e-12)

    # With rebalance, every drifted symbol goes back to its target at the next open.
    fill_every_plan(stepper, 2, planned, config)
    stepper.on_close(2, open_, [np.nan] * 3)
    shares = stepper.shares
    shares[2] *= 0.5
    assert stepper.sync(stepper.cash, shares) == [2]
    open3 = np.array([12.5, 22.5, 40.0])
    (plan,) = stepper.on_open(3, open3)
    value = stepper.cash + float(shares @ open3)
    assert plan.name == "C" and plan.reason_name == "rebalance"
    assert plan.qty == pytest.approx(0.3 * value / 40.0 - shares[2], rel=1e-12)


def test_sync_entry_prices_drive_the_stop_loss() -> None:
    stepper = PortfolioStepper(["A"], SimConfig(initial_cash=10_000.0), RiskLimits(stop_loss_pct=0.1))
    stepper.on_open(0, [100.0])
    stepper.sync(0.0, [100.0], entry_prices=[120.0], rebalance=False)  # bought elsewhere at 120
    report = stepper.on_close(0, [107.0], [1.0])  # 107 <= 120 * 0.9: the stop fires
    assert [e.rule for e in report.events] == ["stop_loss_pct"]
    assert report.targets[0] == 0.0 and report.pending[0]


def test_intraday_parity_with_settings_limits_on_synthetic_minute_bars() -> None:
    frames = {s: synth_bars(s, "1m", "2021-03-01", "2021-03-05", seed=7) for s in ("SYN000", "SYN001")}
    ts, _, open_, close = align_bars(frames)
    session = session_index_from_ts(pl.Series("ts", ts).cast(pl.Datetime("ns", "UTC")))
    rng = np.random.default_rng(5)
    weights = np.repeat(rng.choice([-1.0, 0.0, 1.0], (open_.shape[0] // 30 + 1, 2)), 30, axis=0)
    weights = weights[: open_.shape[0]]
    settings = Settings()
    config = SimConfig.from_settings(settings, rebalance_threshold=0.02)
    limits = RiskLimits.from_settings(settings, vol_lookback=30, periods_per_year=252.0 * 390)
    case = Case(open_, close, weights, session, None, config, limits)
    res = backtest(case)
    assert res.trades.height > 20
    assert_same(drive(case), res)


def test_inputs_are_checked() -> None:
    stepper = PortfolioStepper(["A", "B"], SimConfig())
    with pytest.raises(DataError, match="in order"):
        stepper.on_open(1, [1.0, 1.0])
    with pytest.raises(DataError, match="on_open"):
        stepper.on_close(0, [1.0, 1.0])
    with pytest.raises(DataError, match="2 values"):
        stepper.on_open(0, [1.0])
    with pytest.raises(DataError, match="> 0"):
        stepper.on_open(0, [1.0, -1.0])
    stepper.on_open(0, [1.0, np.nan])
    with pytest.raises(DataError, match="in order"):
        stepper.on_open(0, [1.0, 1.0])
    with pytest.raises(DataError, match="infinite"):
        stepper.on_close(0, [1.0, 1.0], [np.inf, 0.0])
    with pytest.raises(DataError, match="bad fill"):
        stepper.apply_fill("A", 1.0, math.nan, 0.0)
    with pytest.raises(DataError, match="unknown symbol"):
        stepper.apply_fill("Z", 1.0, 1.0, 0.0)
    with pytest.raises(DataError, match="distinct"):
        PortfolioStepper(["A", "A"], SimConfig())
