"""The portfolio simulator: fills, costs, timing and lookahead, checked against plain-Python loops."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trader.config import Settings
from trader.data.ingest import read_source
from trader.data.sanity import validate_bars
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.risk import RiskLimits
from trader.sim import SimConfig, align_bars, commission, session_index_from_ts, simulate

CENT = 0.005


@pytest.fixture(scope="module")
def spy(shared_data: Path) -> pl.DataFrame:
    path = shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv"
    frame = read_source(path, fmt="yahoo", interval="1d").frame
    return validate_bars(frame, symbol="SPY", interval="1d", mode="repair")[0]


def sma(values: list[float], n: int) -> list[float]:
    """Simple moving average by a plain loop; NaN until n values exist."""
    out = []
    for t in range(len(values)):
        out.append(math.nan if t + 1 < n else sum(values[t + 1 - n : t + 1]) / n)
    return out


def sma_cross_weights(close: list[float]) -> list[float]:
    """1.0 while SMA(10) > SMA(50), else 0.0 (long/flat), decided on each bar's close."""
    fast, slow = sma(close, 10), sma(close, 50)
    return [1.0 if not math.isnan(s) and f > s else 0.0 for f, s in zip(fast, slow, strict=True)]


def reference_run(
    open_: list[float], close: list[float], weights: list[float], cash: float, bps: float, min_history: int
) -> tuple[list[tuple[int, float, float, float]], list[float]]:
    """The contract, one symbol, fractional shares, commission_bps only, no slippage, written out longhand."""
    shares = 0.0
    last_target = 0.0
    decided: float | None = None  # target decided at the previous close, waiting for this open
    trades: list[tuple[int, float, float, float]] = []
    equity: list[float] = []
    for t in range(len(open_)):
        if decided is not None and decided != last_target:
            value = cash + shares * open_[t]
            new_shares = decided * value / open_[t]
            qty = new_shares - shares
            fee = bps / 10_000 * abs(qty * open_[t]) if qty != 0 else 0.0
            cash -= qty * open_[t] + fee
            shares = new_shares
            last_target = decided
            trades.append((t, qty, open_[t], fee))
        equity.append(cash + shares * close[t])
        decided = weights[t] if t >= min_history else None
    return trades, equity


def test_spy_sma_cross_matches_plain_loop_to_the_cent(spy: pl.DataFrame) -> None:
    open_, close = spy["open"].to_list(), spy["close"].to_list()
    weights = sma_cross_weights(close)
    config = SimConfig(initial_cash=100_000.0, commission_bps=2.0, min_history_bars=50)
    result = simulate(np.array(open_), np.array(close), np.array(weights), config=config)
    ref_trades, ref_equity = reference_run(open_, close, weights, 100_000.0, 2.0, 50)

    assert len(ref_trades) > 20  # the rule really trades on this decade of SPY
    got = result.trades
    assert got.height == len(ref_trades)
    for row, (bar, qty, price, fee) in zip(got.iter_rows(named=True), ref_trades, strict=True):
        assert row["bar"] == bar
        assert row["side"] == ("buy" if qty > 0 else "sell")
        assert row["qty"] == pytest.approx(abs(qty), rel=1e-12)
        assert row["price"] == price
        assert abs(row["commission"] - fee) < CENT
        assert row["reason"] == "signal"
    assert np.max(np.abs(result.equity - np.array(ref_equity))) < CENT
    np.testing.assert_array_equal(result.targets[:50], 0.0)


@pytest.mark.parametrize(
    "limits",
    [
        None,
        RiskLimits(pos_size_method="vol_target", vol_target=0.15, max_gross_leverage=1.5, stop_loss_pct=0.05),
    ],
    ids=["plain", "vol_target_and_stop"],
)
def test_spy_lookahead_bar_by_bar(spy: pl.DataFrame, limits: RiskLimits | None) -> None:
    open_, close = spy["open"].to_numpy(), spy["close"].to_numpy()
    weights = np.array(sma_cross_weights(close.tolist()))
    config = SimConfig(commission_bps=1.0, slippage_bps=2.0, min_history_bars=50)
    base = simulate(open_, close, weights, config=config, limits=limits)
    rng = np.random.default_rng(11)
    opens_checked = 0
    for fill in range(40, 340):  # every bar of a window spanning warm-up, entries and exits
        # Change bar `fill`'s close, every later bar, and every decision from `fill` on: nothing up to the
        # fill at `fill`'s open may move.
        o2, c2, w2 = open_.copy(), close.copy(), weights.copy()
        c2[fill:] *= rng.uniform(0.5, 1.5, c2[fill:].shape)
        o2[fill + 1 :] *= rng.uniform(0.5, 1.5, o2[fill + 1 :].shape)
        w2[fill:] = 1.0 - w2[fill:]
        later = simulate(o2, c2, w2, config=config, limits=limits)
        before = base.trades.filter(pl.col("bar") <= fill)
        assert later.trades.filter(pl.col("bar") <= fill).equals(before), fill
        np.testing.assert_array_equal(later.equity[:fill], base.equity[:fill])
        np.testing.assert_array_equal(later.targets[:fill], base.targets[:fill])
        original = base.trades.filter(pl.col("bar") == fill)
        if original.height == 0:
            continue
        # Change only that bar's open: the fill moves with it, at the new open plus slippage.
        o3 = open_.copy()
        o3[fill] *= 1.01
        row = simulate(o3, close, weights, config=config, limits=limits).trades.filter(pl.col("bar") == fill)
        slip = 1.0 + (2.0e-4 if row["side"][0] == "buy" else -2.0e-4)
        assert row["price"][0] == pytest.approx(o3[fill] * slip, rel=1e-12)
        assert row.select("side", "qty", "price").rows() != original.select("side", "qty", "price").rows()
        opens_checked += 1
    assert opens_checked >= (4 if limits is None else 50)  # the open check really ran


def test_fill_uses_next_open_never_the_decision_bar() -> None:
    open_ = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    close = np.array([10.5, 11.5, 12.5, 13.5, 14.5])
    weights = np.array([0.0, 1.0, 1.0, 0.0, 0.0])
    result = simulate(open_, close, weights, config=SimConfig(initial_cash=1_000.0))
    assert result.trades.select("bar", "side", "price").rows() == [(2, "buy", 12.0), (4, "sell", 14.0)]
    shares = 1_000.0 / 12.0
    assert result.equity[2] == pytest.approx(shares * 12.5)
    assert result.equity[4] == pytest.approx(shares * 14.0)
    assert result.cash[4] == pytest.approx(shares * 14.0)


def test_slippage_direction() -> None:
    open_ = np.array([100.0, 100.0, 100.0, 100.0])
    weights = np.array([1.0, -0.5, 0.0, 0.0])
    result = simulate(open_, open_, weights, config=SimConfig(initial_cash=10_000.0, slippage_bps=10.0))
    rows = result.trades.select("bar", "side", "price").rows()
    assert rows == [(1, "buy", 100.0 * 1.001), (2, "sell", 100.0 * 0.999), (3, "buy", 100.0 * 1.001)]
    # Flat prices and a round trip through long and short: slippage is a pure cost.
    assert result.equity[-1] < 10_000.0
    costs = sum(q * abs(p - 100.0) for q, p in result.trades.select("qty", "price").rows())
    assert result.equity[-1] == pytest.approx(10_000.0 - costs, abs=1e-9)


def test_commission_formula_minimum_and_per_share() -> None:
    assert commission(0.0, 50.0, 10.0, 0.01, 1.0) == 0.0  # no trade, no minimum
    assert commission(10.0, 50.0, 1.0, 0.005, 1.0) == 1.0  # 0.05 + 0.05 < the minimum
    assert commission(-1_000.0, 50.0, 1.0, 0.005, 1.0) == pytest.approx(5.0 + 5.0)
    assert commission(1_000.0, 50.0, 0.0, 0.01, 0.0) == pytest.approx(10.0)

    open_ = np.array([50.0, 50.0, 40.0, 40.0, 40.0, 40.0])
    weights = np.array([0.5, 0.5, 0.001, 0.001, 0.0, 0.0])
    config = SimConfig(
        initial_cash=100_000.0, commission_bps=1.0, commission_per_share=0.005, min_commission=2.0
    )
    result = simulate(open_, open_, weights, config=config)
    rows = result.trades.select("side", "qty", "price", "commission").rows()
    assert [r[0] for r in rows] == ["buy", "sell", "sell"]
    for _, qty, price, fee in rows:
        assert fee == pytest.approx(max(2.0, 1e-4 * qty * price + 0.005 * qty))
    assert rows[0][3] == pytest.approx(5.0 + 5.0)  # 1000 shares at 50
    assert rows[2][3] == 2.0  # the small last sale pays the minimum
    spent = sum((q if side == "buy" else -q) * p + fee for side, q, p, fee in rows)
    assert result.cash[-1] == pytest.approx(100_000.0 - spent)
    assert result.positions[-1, 0] == 0.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_whole_shares_round_toward_zero(sign: float) -> None:
    price = np.full(4, 30.0)
    weights = np.array([0.5, 0.5, 0.2, 0.2]) * sign
    config = SimConfig(initial_cash=1_000.0, fractional_shares=False)
    result = simulate(price, price, weights, config=config)
    # 0.5 * 1000 / 30 = 16.67 -> 16 (long) or -16 (short), never 17.
    assert result.positions[1, 0] == 16 * sign
    assert result.positions[2, 0] == 16 * sign  # the decision at bar 2 fills at bar 3's open
    # At bar 3's open the value is still 1000: 0.2 * 1000 / 30 = 6.67 -> 6.
    assert result.positions[3, 0] == 6 * sign
    assert all(q == int(q) for q in result.trades["qty"])
    frac = simulate(price, price, weights, config=SimConfig(initial_cash=1_000.0))
    assert frac.positions[1, 0] == pytest.approx(sign * 500.0 / 30.0)


def test_min_history_bars_first_decision_index() -> None:
    price = np.linspace(100.0, 110.0, 12)
    weights = np.full(12, 0.7)
    result = simulate(price, price, weights, config=SimConfig(min_history_bars=5))
    np.testing.assert_array_equal(result.targets[:5, 0], 0.0)
    assert result.targets[5, 0] == 0.7
    assert result.trades["bar"].to_list() == [6]
    np.testing.assert_array_equal(result.positions[:6, 0], 0.0)
    at_zero = simulate(price, price, weights, config=SimConfig(min_history_bars=0))
    assert at_zero.trades["bar"].to_list() == [1]


def test_no_trade_while_target_unchanged_but_drift_rebalance_when_asked() -> None:
    rng = np.random.default_rng(3)
    price = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, 300)))
    weights = np.full(300, 0.5)
    result = simulate(price, price, weights, config=SimConfig())
    assert result.trades.height == 1
    drift = simulate(price, price, weights, config=SimConfig(rebalance_threshold=0.05))
    reasons = drift.trades["reason"].to_list()
    assert reasons[0] == "signal" and len(reasons) > 2 and set(reasons[1:]) == {"rebalance"}
    # Each drift trade follows a close where the held weight was more than 0.05 off target.
    for bar in drift.trades["bar"].to_list()[1:]:
        held = drift.positions[bar - 1, 0] * price[bar - 1] / drift.equity[bar - 1]
        assert abs(held - 0.5) > 0.05


def test_nan_price_defers_fill_and_nan_weight_keeps_target() -> None:
    open_ = np.array([[10.0, 20.0], [10.0, np.nan], [10.0, np.nan], [10.0, 21.0], [10.0, 22.0]])
    close = open_.copy()
    close[1, 1] = np.nan
    weights = np.array([[0.2, 0.3], [np.nan, np.nan], [0.2, 0.3], [np.nan, 0.0], [0.0, 0.0]])
    result = simulate(open_, close, weights, config=SimConfig(initial_cash=1_000.0))
    rows = result.trades.select("bar", "symbol", "side", "price").rows()
    # Symbol 1 cannot trade at bars 1-2 (no open): its buy waits for bar 3's open, sized at that open.
    assert rows == [(1, 0, "buy", 10.0), (3, 1, "buy", 21.0), (4, 1, "sell", 22.0)]
    np.testing.assert_array_equal(result.targets[1], [0.2, 0.3])  # NaN = the last decision stands


def test_missing_close_values_position_at_last_price() -> None:
    open_ = np.array([10.0, 10.0, 11.0, 12.0])
    close = np.array([10.0, 10.5, np.nan, 12.0])
    result = simulate(open_, close, np.ones(4), config=SimConfig(initial_cash=1_000.0))
    assert result.positions[2, 0] == pytest.approx(100.0)
    assert result.equity[2] == pytest.approx(100.0 * 10.5)
    assert result.equity[3] == pytest.approx(100.0 * 12.0)


def test_multi_symbol_value_and_sizing_at_open() -> None:
    open_ = np.array([[10.0, 50.0], [11.0, 40.0], [12.0, 45.0]])
    close = np.array([[10.5, 48.0], [11.5, 42.0], [12.5, 44.0]])
    weights = np.array([[0.5, 0.5], [0.25, 0.5], [0.0, 0.0]])
    result = simulate(open_, close, weights, config=SimConfig(initial_cash=10_000.0))
    s0, s1 = 5_000.0 / 11.0, 5_000.0 / 40.0
    value = 10_000.0 - 5_000.0 - 5_000.0 + s0 * 12.0 + s1 * 45.0  # V at bar 2's open
    assert result.positions[2, 0] == pytest.approx(0.25 * value / 12.0)
    assert result.positions[2, 1] == pytest.approx(s1)  # target unchanged: no trade despite drift
    assert result.trades.filter(pl.col("bar") == 2).height == 1


def test_many_fills_grow_the_trade_buffer() -> None:
    n = (1 << 20) + 5000  # beyond the kernel's first trade buffer
    price = np.full(n, 10.0)
    weights = np.tile([0.5, 0.25], n // 2 + 1)[:n]
    result = simulate(price, price, weights, config=SimConfig(initial_cash=1_000.0))
    assert result.trades.height == n - 1
    assert result.trades["bar"][-1] == n - 1
    assert result.positions[-1, 0] == pytest.approx(weights[-2] * 1_000.0 / 10.0)


def test_input_checks() -> None:
    good = np.ones((5, 2))
    with pytest.raises(DataError, match="shape"):
        simulate(good, np.ones((5, 3)), good, config=SimConfig())
    bad = good.copy()
    bad[3, 1] = -1.0
    with pytest.raises(DataError, match="bar 3, symbol 1"):
        simulate(bad, good, good, config=SimConfig())
    with pytest.raises(DataError, match="infinite"):
        simulate(good, good, good * np.inf, config=SimConfig())
    with pytest.raises(DataError, match="session_index"):
        simulate(good, good, good, config=SimConfig(), session_index=np.zeros(4, dtype=np.int64))
    with pytest.raises(ConfigError, match="slippage_bps"):
        SimConfig(slippage_bps=-1.0)
    with pytest.raises(ConfigError, match="rebalance_threshold"):
        SimConfig(rebalance_threshold=0.0)
    with pytest.raises(ConfigError, match="min_history_bars"):
        SimConfig(min_history_bars=-1)


def test_sim_config_from_settings() -> None:
    settings = Settings()
    config = SimConfig.from_settings(settings, rebalance_threshold=0.02)
    assert config.initial_cash == settings.engine.initial_cash
    assert config.fractional_shares == settings.engine.fractional_shares
    assert config.min_history_bars == settings.engine.min_history_bars
    assert config.commission_bps == settings.costs.commission_bps
    assert config.commission_per_share == settings.costs.commission_per_share
    assert config.min_commission == settings.costs.min_commission
    assert config.slippage_bps == settings.costs.slippage_bps
    assert config.rebalance_threshold == 0.02


def test_session_index_from_ts_uses_exchange_local_date() -> None:
    utc = dt.UTC
    ts = pl.Series(
        [
            dt.datetime(2024, 3, 8, 14, 30, tzinfo=utc),
            dt.datetime(2024, 3, 8, 20, 59, tzinfo=utc),
            dt.datetime(2024, 3, 11, 13, 30, tzinfo=utc),  # after the DST change: 09:30 New York
            dt.datetime(2024, 3, 11, 23, 30, tzinfo=utc),  # 19:30 New York, same session date
        ]
    )
    assert session_index_from_ts(ts).tolist() == [0, 0, 1, 1]


def test_align_bars_two_symbols_with_a_missing_bar() -> None:
    a = synth_bars("SYN000", "1d", "2021-01-04", "2021-01-15", seed=1)
    b = synth_bars("SYN001", "1d", "2021-01-04", "2021-01-15", seed=1)
    b = b.filter(pl.col("ts") != b["ts"][3])
    ts, names, open_, close = align_bars({"B": b, "A": a})
    assert names == ["A", "B"]
    assert open_.shape == (a.height, 2)
    np.testing.assert_array_equal(open_[:, 0], a["open"].to_numpy())
    assert np.isnan(close[3, 1]) and not np.isnan(close[4, 1])
    assert ts[0] == a["ts"].dt.epoch("ns")[0]
    long = pl.concat([a.with_columns(symbol=pl.lit("A")), b.with_columns(symbol=pl.lit("B"))])
    _, _, open_long, _ = align_bars(long)
    np.testing.assert_array_equal(open_long, open_)
