"""Live decisions bar by bar equal the backtest's whole-history decisions (composer and a strategy), on
synthetic minute bars and real SPY daily bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trader.composer import Composer
from trader.config import load_settings
from trader.data.synth import synth_bars
from trader.errors import DataError
from trader.live.decide import Decider
from trader.strategies import get_strategy

ROOT = Path(__file__).resolve().parents[2]


def _settings(*extra: str):
    return load_settings([ROOT / "configs/base.yaml", ROOT / "configs/demo.yaml"], list(extra), env={})


def _replay(decider: Decider, bars: pl.DataFrame) -> np.ndarray:
    ts = bars["ts"].dt.epoch("ns").to_numpy()
    cols = [bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    return np.array([decider.on_bar(int(ts[k]), *(float(c[k]) for c in cols)) for k in range(bars.height)])


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("extra", [(), ("composer.trend_bias=0.5", "composer.volatile_bias=-0.5")])
def test_composer_decisions_equal_the_backtest(extra: tuple[str, ...], stream: bool) -> None:
    settings = _settings(*extra)
    bars = synth_bars("SYN001", "1m", "2021-03-01", "2021-03-05", seed=3)
    decider = Decider("SYN001", settings, stream=stream)
    assert decider.streaming is stream  # the built-in composer streams unless told not to
    live = _replay(decider, bars)
    whole = Composer.from_settings(settings).target_weights(bars)
    assert np.any(whole != 0)  # the comparison is not all zeros
    np.testing.assert_array_equal(live, whole)


def test_strategy_decisions_equal_the_backtest_on_real_daily_bars(shared_data: Path) -> None:
    from trader.data.ingest import read_source
    from trader.data.sanity import validate_bars

    raw = read_source(shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv", fmt="yahoo",
                      interval="1d").frame.sort("ts")  # fmt: skip
    bars = validate_bars(raw, symbol="SPY", interval="1d", mode="repair")[0]
    settings = _settings()
    decider = Decider("SPY", settings, strategy="sma_cross", params={"fast": 10, "slow": 40})
    live = _replay(decider, bars)
    whole = get_strategy("sma_cross").run(bars, {"fast": 10, "slow": 40})
    np.testing.assert_array_equal(live, whole)


def test_warm_history_then_live_bars_and_out_of_order_refused() -> None:
    settings = _settings()
    bars = synth_bars("SYN002", "1m", "2021-03-01", "2021-03-03", seed=4)
    cut = 600
    decider = Decider("SYN002", settings)
    decider.warm(bars.head(cut))
    assert len(decider) == cut and decider.ready
    live = _replay(decider, bars.slice(cut))
    whole = Composer.from_settings(settings).target_weights(bars)
    np.testing.assert_array_equal(live, whole[cut:])
    with pytest.raises(DataError, match="not after the last bar"):
        decider.append(int(decider.last_ts), 1.0, 1.0, 1.0, 1.0, 1.0)
    window = decider.window()
    assert np.all(np.diff(window["ts"]) > 0) and window["close"][-1] == bars["close"][-1]


@pytest.mark.parametrize("stream", [True, False])
def test_beyond_max_bars_decisions_equal_a_backtest_from_the_new_first_bar(stream: bool) -> None:
    settings = _settings()
    bars = synth_bars("SYN003", "1m", "2021-03-01", "2021-03-04", seed=5)
    decider = Decider("SYN003", settings, max_bars=700, stream=stream)
    live = _replay(decider, bars)
    assert len(decider) < bars.height  # the oldest bars were dropped
    first = bars["ts"].dt.epoch("ns").to_list().index(decider.first_ts)
    tail = Composer.from_settings(settings).target_weights(bars.slice(first))
    assert live[-1] == tail[-1]


def test_a_user_strategy_is_recomputed_and_still_equals_the_backtest() -> None:
    from trader.strategies import Param, register_strategy, unregister_strategy

    @register_strategy(
        "test_close_above_open", params=[Param("gap", "float", 0.0, 0.0, 0.1)], inputs=("open", "close")
    )
    def close_above_open(bars, *, gap):
        return (bars.close > bars.open * (1.0 + gap)).astype(np.float64)

    try:
        bars = synth_bars("SYN004", "1m", "2021-03-01", "2021-03-02", seed=6)
        decider = Decider("SYN004", _settings(), strategy="test_close_above_open", params={"gap": 0.0005})
        assert not decider.streaming  # not a built-in: no stream, the backtest's function at every bar
        live = _replay(decider, bars)
        whole = get_strategy("test_close_above_open").run(bars, {"gap": 0.0005})
        assert np.any(whole != 0)
        np.testing.assert_array_equal(live, whole)
    finally:
        unregister_strategy("test_close_above_open")


@pytest.mark.parametrize("stream", [True, False])
def test_bandit_decisions_and_posterior_equal_the_backtests_bandit(stream: bool) -> None:
    from trader.bandit import bandit_select

    settings = _settings("bandit.enabled=true", "bandit.decision_every=3", "bandit.horizon=3")
    bars = synth_bars("SYN005", "1m", "2021-03-01", "2021-03-03", seed=8).with_columns(
        symbol=pl.lit("SYN005")
    )
    decider = Decider("SYN005", settings, interval="1m", stream=stream)
    assert decider.description["mode"] == "bandit" and decider.streaming is stream
    cut = 500
    decider.warm(bars.head(cut))
    live = _replay(decider, bars.slice(cut))
    start = int(settings.engine.min_history_bars)
    whole = bandit_select(bars, settings.composer.strategies, settings, start_index=start, interval="1m")
    assert len(set(whole.decisions["arm"].to_list())) > 1  # the bandit switched arms: not a trivial match
    np.testing.assert_array_equal(live, whole.weights[cut:])
    # The posterior after the last bar is the backtest's, exactly (what a restarted actor rebuilds).
    assert decider.posteriors.equals(whole.posteriors)
    assert decider.arm == whole.decisions["arm"][-1]
