"""trader.backtest.run: the single-backtest entry point, end to end without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trader.backtest import _round_trip_returns, data_fingerprint, run
from trader.config import Settings, load_settings
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.strategies import get_strategy

REPO = Path(__file__).resolve().parents[2]


def _bars(symbols: list[str], start: str = "2020-01-01", end: str = "2023-12-31") -> pl.DataFrame:
    return pl.concat(
        [synth_bars(s, "1d", start, end, seed=3).with_columns(symbol=pl.lit(s)) for s in symbols]
    )


def _plain(settings_overrides: list[str] | None = None) -> Settings:
    """Fixed sizing, no risk limits that bind, commission in bps only: the simulator's plain path."""
    overrides = [
        "risk.pos_size_method=fixed",
        "risk.max_position_pct=1.0",
        "risk.max_gross_leverage=10",
        "risk.max_per_trade=1e12",
        "risk.max_per_symbol=1e12",
        "risk.max_buying_power=1e12",
        "risk.max_drawdown=1.0",
        "risk.daily_loss_limit=1.0",
        "risk.stop_loss_pct=1.0",
        "costs.commission_per_share=0",
        "costs.min_commission=0",
        "costs.slippage_bps=0",
        "costs.commission_bps=1",
        *(settings_overrides or []),
    ]
    return load_settings([], overrides, env={})


def test_single_symbol_matches_strategy_weights_and_next_open_fills() -> None:
    bars = synth_bars("AAA", "1d", "2020-01-01", "2023-12-31", seed=5)
    settings = _plain()
    result = run(bars, "sma_cross", {"fast": 10, "slow": 50}, settings)
    weights = get_strategy("sma_cross").run(bars, {"fast": 10, "slow": 50})
    first = settings.engine.min_history_bars
    decided = np.where(np.arange(weights.size) < first, 0.0, weights)
    changes = np.flatnonzero(np.diff(np.concatenate(([0.0], decided))) != 0)
    # Each change of decision at bar t is one fill at bar t+1's open.
    fills = result.trades.with_row_index()
    expected_ts = bars["ts"].gather(changes + 1).to_list()
    assert fills["ts"].to_list() == expected_ts
    assert np.allclose(fills["price"].to_numpy(), bars["open"].gather(changes + 1).to_numpy())
    assert result.summary["run"]["strategy"] == "sma_cross"
    assert result.equity.height == bars.height
    assert result.equity["equity"][-1] == pytest.approx(result.summary["final_equity"])


def test_several_symbols_each_decide_on_their_own_bars() -> None:
    bars = _bars(["AAA", "BBB", "CCC"])
    together = run(bars, "ema_cross", {"fast": 8, "slow": 30}, _plain(["risk.max_position_pct=0.3"]))
    assert set(together.trades["symbol"].unique()) <= {"AAA", "BBB", "CCC"}
    assert together.summary["run"]["symbols"] == ["AAA", "BBB", "CCC"]
    # A symbol's decisions do not depend on the other symbols' bars.
    for symbol in ("AAA", "BBB"):
        alone = bars.filter(pl.col("symbol") == symbol)
        w = get_strategy("ema_cross").run(alone, {"fast": 8, "slow": 30})
        mine = together.targets.filter(pl.col("symbol") == symbol)
        last = np.zeros(alone.height)
        idx = alone["ts"].search_sorted(mine["ts"]).to_numpy()
        last[idx] = mine["target"].to_numpy()
        changed = np.zeros(alone.height, dtype=bool)
        changed[idx] = True
        filled = np.maximum.accumulate(np.where(changed, np.arange(alone.height), 0))
        assert np.allclose(last[filled], w)


def test_composer_mode_uses_configured_strategies() -> None:
    settings = load_settings([REPO / "configs" / "base.yaml", REPO / "configs" / "demo.yaml"], env={})
    result = run(_bars(["AAA", "BBB"]), None, None, settings)
    assert result.summary["run"]["mode"] == "composer"
    assert [s["name"] for s in result.summary["run"]["strategies"]] == [
        "sma_cross",
        "rsi_reversion",
        "donchian_breakout",
    ]
    assert result.trades.height > 0


def test_same_inputs_same_outputs_and_fingerprint() -> None:
    bars = _bars(["AAA", "BBB"])
    settings = load_settings([REPO / "configs" / "base.yaml"], env={})
    a = run(bars, "donchian_breakout", {"lookback": 20}, settings)
    b = run(bars.sample(fraction=1.0, shuffle=True, seed=1), "donchian_breakout", {"lookback": 20}, settings)
    assert a.equity.equals(b.equity) and a.trades.equals(b.trades)
    assert a.summary["data_fingerprint"] == b.summary["data_fingerprint"] == data_fingerprint(bars)
    changed = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.col("close") * 1.01).otherwise("close")
    )
    assert data_fingerprint(changed) != data_fingerprint(bars)


def test_write_produces_the_run_folder(tmp_path: Path) -> None:
    result = run(_bars(["AAA"]), "sma_cross", {"fast": 10, "slow": 50}, Settings())
    out = result.write(tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == [
        "equity.parquet",
        "positions.parquet",
        "risk_events.parquet",
        "summary.json",
        "trades.parquet",
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert {"metrics", "settings", "data_fingerprint", "versions", "run"} <= set(summary)
    assert pl.read_parquet(out / "trades.parquet").columns == [
        "ts",
        "symbol",
        "side",
        "qty",
        "price",
        "commission",
        "reason",
    ]
    assert pl.read_parquet(out / "equity.parquet").columns == ["ts", "equity", "cash"]
    # Rewriting replaces the folder whole; nothing else is left beside it.
    result.write(tmp_path / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_failed_write_leaves_no_partial_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(_bars(["AAA"]), "sma_cross", {"fast": 10, "slow": 50}, Settings())

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError):
        result.write(tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_round_trip_returns_by_hand() -> None:
    trades = pl.DataFrame(
        {
            "symbol": ["A", "A", "A", "B", "B"],
            "side": ["buy", "buy", "sell", "sell", "buy"],
            "qty": [10.0, 10.0, 20.0, 5.0, 5.0],
            "price": [100.0, 110.0, 120.0, 50.0, 40.0],
            "commission": [1.0, 1.0, 2.0, 0.0, 0.0],
        }
    )
    # A: cost 2100, proceeds 2400, fees 4 -> 296 / 2100; B: short 250 covered at 200 -> 50 / 250.
    assert np.allclose(_round_trip_returns(trades), [296 / 2100, 50 / 250])


def test_bad_requests_are_clear() -> None:
    bars = _bars(["AAA"])
    with pytest.raises(ConfigError, match="sma_cros"):
        run(bars, "sma_cros", None, Settings())
    with pytest.raises(ConfigError, match="fast"):
        run(bars, "sma_cross", {"fast": 50, "slow": 10}, Settings())
    with pytest.raises(ConfigError, match="composer"):
        run(bars, None, None, Settings())
    with pytest.raises(DataError, match="no bars"):
        run(bars.head(0), "sma_cross", None, Settings())
    with pytest.raises(DataError, match="duplicate"):
        run(pl.concat([bars, bars.head(1)]), "sma_cross", None, Settings())
