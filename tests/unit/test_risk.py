"""Risk rules: each one firing on a constructed case, in the simulator and in the live helpers."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from trader.config import RiskSettings, Settings
from trader.errors import ConfigError
from trader.risk import (
    RULES,
    RiskLimits,
    RiskState,
    approve_order,
    cap_abs,
    daily_loss_hit,
    drawdown_hit,
    keep_largest,
    stop_hit,
    trailing_vol,
    update_risk_state,
    vol_target_scale,
)
from trader.sim import SimConfig, simulate


def run(prices, weights, limits, *, cash=100_000.0, sessions=None, vol=None, **config):
    prices = np.asarray(prices, dtype=float)
    return simulate(
        prices,
        prices,
        np.asarray(weights, dtype=float),
        config=SimConfig(initial_cash=cash, **config),
        limits=limits,
        session_index=sessions,
        vol=vol,
    )


def events_of(result, rule: str) -> list[tuple[int, int, float]]:
    rows = result.events.filter(pl.col("rule") == rule).select("bar", "symbol", "detail").rows()
    return [(b, s, d) for b, s, d in rows]


# -- kernels called from Python ---------------------------------------------------------------------------


def test_scalar_rules() -> None:
    assert cap_abs(0.3, 0.2) == 0.2 and cap_abs(-0.3, 0.2) == -0.2 and cap_abs(0.1, 0.2) == 0.1
    assert stop_hit(5.0, 100.0, 95.0, 0.05) and not stop_hit(5.0, 100.0, 95.01, 0.05)
    assert stop_hit(-5.0, 100.0, 105.0, 0.05) and not stop_hit(-5.0, 100.0, 104.99, 0.05)
    assert not stop_hit(0.0, 100.0, 1.0, 0.05) and not stop_hit(5.0, 100.0, math.nan, 0.05)
    assert daily_loss_hit(96_999.0, 100_000.0, 0.03) and not daily_loss_hit(97_000.0, 100_000.0, 0.03)
    assert drawdown_hit(79_999.0, 100_000.0, 0.2) and not drawdown_hit(80_000.0, 100_000.0, 0.2)


def test_vol_target_scale_ignores_correlation_and_drops_unknown_vol() -> None:
    w = np.array([0.5, 0.5, 0.3, 0.0])
    vol = np.array([0.2, 0.4, np.nan, np.nan])
    scale = vol_target_scale(w, vol, 0.1)
    expected = 0.1 / math.sqrt((0.5 * 0.2) ** 2 + (0.5 * 0.4) ** 2)
    assert scale == pytest.approx(expected)
    np.testing.assert_allclose(w, [0.5 * expected, 0.5 * expected, 0.0, 0.0])
    assert math.sqrt(((w * np.nan_to_num(vol)) ** 2).sum()) == pytest.approx(0.1)
    none = np.array([0.5])
    assert math.isnan(vol_target_scale(none, np.array([np.nan]), 0.1)) and none[0] == 0.0


def test_trailing_vol_matches_numpy_std_of_log_returns() -> None:
    rng = np.random.default_rng(5)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, (120, 3)), axis=0))
    close[60, 2] = np.nan
    vol = trailing_vol(close, 20, 252.0)
    assert np.isnan(vol[:20]).all()
    for t in (20, 57, 119):
        for j in range(2):
            rets = np.log(close[t - 19 : t + 1, j] / close[t - 20 : t, j])
            assert vol[t, j] == pytest.approx(np.std(rets, ddof=1) * math.sqrt(252.0), rel=1e-12)
    assert np.isnan(vol[60:81, 2]).all() and not np.isnan(vol[81, 2])  # a missing close blanks its windows
    # Only rows <= t: changing the future leaves the past untouched.
    changed = close.copy()
    changed[90:] *= 2.0
    np.testing.assert_array_equal(trailing_vol(changed, 20, 252.0)[:90], vol[:90])


def test_keep_largest_breaks_ties_by_index() -> None:
    dropped = np.zeros(4, np.bool_)
    assert keep_largest(np.array([0.1, -0.3, 0.3, 0.2]), 2, dropped) == 2
    assert dropped.tolist() == [True, False, False, True]
    dropped = np.zeros(3, np.bool_)
    assert keep_largest(np.array([0.2, 0.2, 0.2]), 2, dropped) == 1
    assert dropped.tolist() == [False, False, True]
    assert keep_largest(np.array([0.2, 0.0, 0.0]), 1, dropped) == 0 and not dropped.any()


# -- each rule in the simulator --------------------------------------------------------------------------


def test_vol_target_sizes_to_target_with_given_vol() -> None:
    n = 6
    limits = RiskLimits(pos_size_method="vol_target", vol_target=0.1)
    vol = np.full((n, 2), 0.2)
    vol[:, 1] = 0.4
    res = run(np.full((n, 2), 10.0), np.full((n, 2), 0.5), limits, vol=vol)
    scale = 0.1 / math.sqrt(0.1**2 + 0.2**2)
    np.testing.assert_allclose(res.targets[0], [0.5 * scale, 0.5 * scale])
    assert events_of(res, "vol_target") == [(0, -1, pytest.approx(scale))]  # once: when it starts binding
    assert res.positions[1, 0] == pytest.approx(0.5 * scale * 100_000.0 / 10.0)


def test_vol_target_from_trailing_close_vol() -> None:
    rng = np.random.default_rng(8)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 80)))
    limits = RiskLimits(pos_size_method="vol_target", vol_target=0.1, vol_lookback=10)
    res = run(close, np.ones(80), limits)
    np.testing.assert_array_equal(res.targets[:10, 0], 0.0)  # no vol yet: cannot size
    for t in (10, 40, 79):
        rets = np.diff(np.log(close[t - 10 : t + 1]))
        assert res.targets[t, 0] == pytest.approx(0.1 / (np.std(rets, ddof=1) * math.sqrt(252)), rel=1e-9)
    assert res.trades["bar"][0] == 11


def test_max_position_pct_caps_and_records_each_episode() -> None:
    weights = np.array([[0.5, -0.05], [0.5, -0.05], [0.1, -0.3], [0.6, -0.3], [0.0, 0.0]])
    res = run(np.full((5, 2), 20.0), weights, RiskLimits(max_position_pct=0.2))
    np.testing.assert_allclose(res.targets[0], [0.2, -0.05])
    np.testing.assert_allclose(res.targets[2], [0.1, -0.2])
    np.testing.assert_allclose(res.targets[3], [0.2, -0.2])
    assert events_of(res, "max_position_pct") == [(0, 0, 0.5), (2, 1, 0.3), (3, 0, 0.6)]
    assert res.positions[1, 0] == pytest.approx(0.2 * 100_000.0 / 20.0)


def test_unit_signal_with_fixed_sizing_is_max_position_pct_of_equity() -> None:
    limits = RiskLimits.from_settings(RiskSettings(max_position_pct=0.1))
    res = run([50.0, 50.0, 50.0], [1.0, 1.0, 1.0], limits)
    assert res.positions[1, 0] * 50.0 == pytest.approx(10_000.0)


def test_max_open_positions_keeps_largest_lowest_index_on_ties() -> None:
    weights = np.array([[0.1, 0.3, 0.3, 0.2], [0.2, 0.2, 0.2, 0.0], [0.2, 0.2, 0.2, 0.0]])
    res = run(np.full((3, 4), 10.0), weights, RiskLimits(max_open_positions=2))
    np.testing.assert_allclose(res.targets[0], [0.0, 0.3, 0.3, 0.0])
    np.testing.assert_allclose(res.targets[1], [0.2, 0.2, 0.0, 0.0])
    assert events_of(res, "max_open_positions") == [(0, 0, 0.1), (0, 3, 0.2), (1, 2, 0.2)]


def test_max_gross_leverage_scales_all_down() -> None:
    res = run(np.full((3, 2), 10.0), np.tile([0.8, -0.8], (3, 1)), RiskLimits(max_gross_leverage=1.0))
    np.testing.assert_allclose(res.targets[0], [0.5, -0.5])
    assert events_of(res, "max_gross_leverage") == [(0, -1, pytest.approx(1.6))]
    np.testing.assert_allclose(res.positions[1], [5_000.0, -5_000.0])


def test_max_buying_power_caps_gross_notional() -> None:
    res = run([10.0, 10.0, 10.0], [1.0, 1.0, 1.0], RiskLimits(max_buying_power=50_000.0))
    assert res.targets[0, 0] == pytest.approx(0.5)
    assert events_of(res, "max_buying_power") == [(0, -1, pytest.approx(100_000.0))]


def test_max_per_trade_slices_the_order_over_bars() -> None:
    res = run(np.full(6, 100.0), np.full(6, 0.5), RiskLimits(max_per_trade=20_000.0))
    assert res.trades.select("bar", "qty").rows() == [(1, 200.0), (2, 200.0), (3, 100.0)]
    assert events_of(res, "max_per_trade") == [(1, 0, 50_000.0), (2, 0, 30_000.0)]


def test_max_per_symbol_caps_position_notional() -> None:
    res = run(np.full(4, 100.0), np.full(4, 0.5), RiskLimits(max_per_symbol=30_000.0))
    assert res.trades.select("bar", "qty").rows() == [(1, 300.0)]
    assert events_of(res, "max_per_symbol") == [(1, 0, pytest.approx(50_000.0))]


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_stop_loss_exits_next_open_and_waits_for_a_new_signal(side: float) -> None:
    moves = np.array([0.0, 0.0, -0.02, -0.06, -0.07, -0.05, -0.04, -0.03, -0.03])
    prices = 100.0 * (1.0 + side * moves)
    weights = side * np.array([1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=float)
    res = run(prices, weights, RiskLimits(stop_loss_pct=0.05))
    assert events_of(res, "stop_loss_pct") == [(3, 0, pytest.approx(-0.06 if side > 0 else 0.06))]
    rows = res.trades.select("bar", "side", "reason").rows()
    enter, leave = ("buy", "sell") if side > 0 else ("sell", "buy")
    # Entry, stop exit at bar 4's open, no re-entry on the still-on signal, re-entry after it went flat.
    assert rows == [(1, enter, "signal"), (4, leave, "stop_loss"), (8, enter, "signal")]
    assert res.trades["price"][1] == prices[4]


def test_daily_loss_halts_until_next_session() -> None:
    prices = [100.0, 100.0, 96.0, 97.0, 97.0, 98.0, 99.0]
    sessions = np.array([0, 0, 0, 0, 1, 1, 1])
    res = run(prices, np.ones(7), RiskLimits(daily_loss_limit=0.03), sessions=sessions)
    assert events_of(res, "daily_loss_limit") == [(2, -1, pytest.approx(0.04))]
    rows = res.trades.select("bar", "side", "reason").rows()
    # Halted at bar 2's close: flat at bar 3's open, no entry from bar 3's decision (same session),
    # re-entry from the first decision of session 1 (bar 4), filled at bar 5.
    assert rows == [(1, "buy", "signal"), (3, "sell", "daily_loss"), (5, "buy", "signal")]
    np.testing.assert_array_equal(res.targets[2:4, 0], 0.0)
    assert res.targets[4, 0] == 1.0


def test_daily_loss_session_start_is_previous_close() -> None:
    # Session 1 starts from bar 2's close (97,000 after the 3 % drop); a further 2 % is within the limit.
    prices = [100.0, 100.0, 97.0, 95.2, 95.0]
    res = run(prices, np.ones(5), RiskLimits(daily_loss_limit=0.025), sessions=np.array([0, 0, 0, 1, 1]))
    assert res.events.height == 1 and res.events["bar"][0] == 2
    res = run(prices, np.ones(5), RiskLimits(daily_loss_limit=0.035), sessions=np.array([0, 0, 0, 1, 1]))
    assert res.events.height == 0


def test_kill_switch_halts_to_the_end() -> None:
    prices = [100.0, 100.0, 90.0, 85.0, 79.0, 78.0, 90.0, 100.0, 110.0, 120.0]
    sessions = np.arange(10)
    res = run(prices, np.ones(10), RiskLimits(max_drawdown=0.2, daily_loss_limit=0.5), sessions=sessions)
    assert events_of(res, "max_drawdown") == [(4, -1, pytest.approx(0.21))]
    assert res.trades.select("bar", "side", "reason").rows() == [
        (1, "buy", "signal"),
        (5, "sell", "kill_switch"),
    ]
    np.testing.assert_array_equal(res.targets[4:, 0], 0.0)
    np.testing.assert_array_equal(res.positions[5:, 0], 0.0)


def test_account_rules_match_the_live_state_machine() -> None:
    rng = np.random.default_rng(21)
    n = 400
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    sessions = np.repeat(np.arange(n // 4), 4)
    weights = np.where(rng.uniform(size=n) < 0.9, 1.0, 0.0)
    limits = RiskLimits(daily_loss_limit=0.02, max_drawdown=0.3)
    res = run(prices, weights, limits, sessions=sessions)
    state = RiskState.start(100_000.0, session=0)
    fired = []
    for t in range(n):
        state, events = update_risk_state(state, float(res.equity[t]), int(sessions[t]), limits)
        fired += [(t, e.rule, e.detail) for e in events]
    sim = res.events.select("bar", "rule", "detail").rows()
    assert len(sim) > 3 and [(b, r) for b, r, _ in fired] == [(b, r) for b, r, _ in sim]
    np.testing.assert_allclose([d for *_, d in fired], [d for *_, d in sim])


def test_events_frame_uses_rule_names() -> None:
    res = run(np.full(4, 10.0), np.full(4, 0.5), RiskLimits(max_position_pct=0.1, max_per_symbol=1_000.0))
    assert set(res.events["rule"]) <= set(RULES)
    assert res.events.schema == pl.Schema(
        {"bar": pl.Int64, "symbol": pl.Int64, "rule": pl.String, "detail": pl.Float64}
    )


# -- limits from settings and the live helpers ------------------------------------------------------------


def test_limits_from_settings_and_validation() -> None:
    settings = Settings()
    limits = RiskLimits.from_settings(settings)
    for name in (
        "pos_size_method",
        "vol_target",
        "max_position_pct",
        "max_open_positions",
        "max_gross_leverage",
        "max_buying_power",
        "max_per_trade",
        "max_per_symbol",
        "stop_loss_pct",
        "daily_loss_limit",
        "max_drawdown",
    ):
        assert getattr(limits, name) == getattr(settings.risk, name)
    assert limits.active and not RiskLimits().active
    with pytest.raises(ConfigError, match="max_drawdown"):
        RiskLimits(max_drawdown=1.5)
    with pytest.raises(ConfigError, match="vol_target"):
        RiskLimits(pos_size_method="vol_target")
    with pytest.raises(ConfigError, match="max_open_positions"):
        RiskLimits(max_open_positions=0)
    with pytest.raises(ConfigError, match="max_per_trade"):
        RiskLimits(max_per_trade=math.inf)


def test_approve_order_each_rule() -> None:
    limits = RiskLimits(
        max_per_trade=10_000.0,
        max_per_symbol=20_000.0,
        max_position_pct=0.15,
        max_open_positions=2,
        max_gross_leverage=0.3,
        max_buying_power=35_000.0,
    )
    positions = {"AAA": 100.0, "BBB": -100.0}
    prices = {"AAA": 100.0, "BBB": 50.0}
    kw = {"positions": positions, "prices": prices, "equity": 100_000.0, "limits": limits}
    assert approve_order("AAA", 50, 100.0, **kw).approved  # 15,000 position, 20,000 gross
    assert approve_order("AAA", 101, 100.0, **kw).rule == "max_per_trade"
    assert approve_order("AAA", -100, 100.0, **kw).approved  # closing: always allowed
    big = {**kw, "limits": RiskLimits(max_per_symbol=20_000.0)}
    assert approve_order("AAA", 99, 100.5, **big).approved
    assert approve_order("AAA", 101, 100.0, **big).rule == "max_per_symbol"
    assert approve_order("AAA", 51, 100.0, **kw).rule == "max_position_pct"
    assert approve_order("CCC", 10, 10.0, **kw).rule == "max_open_positions"
    lev = {**kw, "limits": RiskLimits(max_gross_leverage=0.3)}
    decision = approve_order("BBB", -300, 50.0, **lev)  # gross 10,000 + 20,000 + ... = 0.3 is the edge
    assert decision.approved
    decision = approve_order("BBB", -320, 50.0, **lev)
    assert decision.rule == "max_gross_leverage" and decision.detail == pytest.approx(0.31)
    bp = {**kw, "limits": RiskLimits(max_buying_power=25_000.0)}
    assert approve_order("AAA", 101, 100.0, **bp).rule == "max_buying_power"
    assert approve_order("AAA", math.nan, 100.0, **kw).rule == "invalid_order"
    assert approve_order("AAA", 1, 100.0, **{**kw, "prices": {"AAA": 100.0}}).rule == "invalid_order"


def test_approve_order_respects_halts_but_lets_exits_through() -> None:
    limits = RiskLimits(daily_loss_limit=0.03, max_drawdown=0.2)
    state, _ = update_risk_state(RiskState.start(100_000.0), 96_000.0, 0, limits)
    kw = {"positions": {"AAA": 10.0}, "prices": {"AAA": 100.0}, "equity": 96_000.0, "limits": limits}
    assert approve_order("AAA", 5, 100.0, state=state, **kw).rule == "daily_loss_limit"
    assert approve_order("AAA", -10, 100.0, state=state, **kw).approved
    state, _ = update_risk_state(state, 96_500.0, 1, limits)  # a new session lifts the halt
    assert not state.halted and state.session_start_equity == 96_000.0
    assert approve_order("AAA", 5, 100.0, state=state, **kw).approved
    state, events = update_risk_state(state, 79_000.0, 1, limits)
    assert state.killed and [e.rule for e in events] == ["max_drawdown"]
    state, _ = update_risk_state(state, 120_000.0, 5, limits)
    assert state.killed and approve_order("AAA", 5, 100.0, state=state, **kw).rule == "max_drawdown"


def test_stop_loss_measures_from_average_entry_price() -> None:
    # 500 shares at 100, then 454.5 more at 110: average entry 104.76, so the 5 % stop sits at 99.52.
    prices = [100.0, 100.0, 110.0, 100.0, 99.0, 99.0]
    res = run(prices, [0.5, 1.0, 1.0, 1.0, 1.0, 1.0], RiskLimits(stop_loss_pct=0.05))
    shares = res.positions[2, 0]
    entry = (500.0 * 100.0 + (shares - 500.0) * 110.0) / shares
    assert events_of(res, "stop_loss_pct") == [(4, 0, pytest.approx(99.0 / entry - 1.0))]
    assert res.trades["reason"].to_list() == ["signal", "signal", "stop_loss"]
