"""trader.backtest.run with bandit selection, and the backtest CLI's --selection / --posteriors-* options."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from jobs.cli import main
from trader.backtest import run
from trader.bandit import ContextSpec, PosteriorSet, bandit_select
from trader.config import load_settings
from trader.data.store import BarStore
from trader.data.synth import synth_bars
from trader.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "configs" / "base.yaml", REPO / "configs" / "demo.yaml"]
SYMBOLS = ("AAA", "BBB")


def _settings(*overrides: str):  # type: ignore[no-untyped-def]
    return load_settings(CONFIGS, list(overrides), env={})


def _bars(start: str = "2019-01-01", end: str = "2021-12-31") -> pl.DataFrame:
    return pl.concat(
        [
            synth_bars(s, "1d", start, end, seed=8 + i).with_columns(symbol=pl.lit(s))
            for i, s in enumerate(SYMBOLS)
        ]
    )


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return run(_bars(), None, {}, _settings("bandit.enabled=true"))


def test_enabled_bandit_drives_the_targets_per_symbol(result) -> None:  # type: ignore[no-untyped-def]
    settings = _settings("bandit.enabled=true")
    assert result.summary["run"]["mode"] == "bandit"
    assert [s["name"] for s in result.summary["run"]["strategies"]] == [
        "sma_cross",
        "rsi_reversion",
        "donchian_breakout",
    ]
    bars = _bars()
    for symbol in SYMBOLS:
        alone = bars.filter(pl.col("symbol") == symbol)
        expected = bandit_select(
            alone, settings.composer.strategies, settings, start_index=settings.engine.min_history_bars
        )
        mine = result.decisions.filter(pl.col("symbol") == symbol)
        assert mine.equals(expected.decisions)
        # The targets table holds the weight at every bar where it changed: rebuild the series.
        rows = result.targets.filter(pl.col("symbol") == symbol)
        target = np.zeros(alone.height)
        idx = alone["ts"].search_sorted(rows["ts"]).to_numpy()
        changed = np.zeros(alone.height, dtype=bool)
        changed[idx] = True
        target[idx] = rows["target"].to_numpy()
        target = target[np.maximum.accumulate(np.where(changed, np.arange(alone.height), 0))]
        assert np.array_equal(target, expected.weights)
        assert result.posteriors is not None
        assert result.posteriors.symbols[symbol].equals(expected.posteriors.symbols[symbol])
    assert result.trades.height > 0


def test_summary_reports_arm_shares_and_cumulative_rewards(result) -> None:  # type: ignore[no-untyped-def]
    report = result.summary["bandit"]
    arms = ["sma_cross", "rsi_reversion", "donchian_breakout"]
    decisions = result.decisions
    for regime, shares in report["arm_share_by_regime"].items():
        assert list(shares) == arms and sum(shares.values()) == pytest.approx(1.0)
        part = (
            decisions
            if regime == "all"
            else decisions.filter(pl.col("regime").fill_null("undefined") == regime)
        )
        assert report["decisions_by_regime"][regime] == part.height
        for arm in arms:
            assert shares[arm] == pytest.approx((part["arm"] == arm).sum() / part.height)
    reward = report["cumulative_reward"]
    known = decisions.filter(pl.col("reward").is_not_null())
    per_arm = np.asarray(known["arm_rewards"].to_list()).sum(axis=0)
    for j, arm in enumerate(arms):
        assert reward[arm] == pytest.approx(per_arm[j])
    assert reward["policy"] == pytest.approx(known["reward"].sum())
    assert reward["best_arm_hindsight"] == pytest.approx(per_arm.max())
    assert reward["best_arm"] == arms[int(per_arm.argmax())]
    assert reward["regret"] == pytest.approx(per_arm.max() - known["reward"].sum())
    # The policy's reward per decision is the chosen arm's.
    for row in known.head(20).iter_rows(named=True):
        assert row["reward"] == row["arm_rewards"][arms.index(row["arm"])]


def test_write_adds_decisions_and_posteriors(result, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = result.write(tmp_path / "run")
    names = sorted(p.name for p in out.iterdir())
    assert "decisions.parquet" in names and "posteriors.parquet" in names
    assert pl.read_parquet(out / "decisions.parquet").equals(result.decisions)
    assert PosteriorSet.read(out / "posteriors.parquet").equals(result.posteriors)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["bandit"]) >= {"arm_share_by_regime", "cumulative_reward"}


def test_selection_keyword_and_its_conflicts() -> None:
    bars = _bars(end="2020-06-30")
    chosen = run(bars, None, {}, _settings(), selection="bandit")
    assert chosen.summary["run"]["mode"] == "bandit" and chosen.decisions is not None
    blended = run(bars, None, {}, _settings("bandit.enabled=true"), selection="composer")
    assert blended.summary["run"]["mode"] == "composer" and blended.decisions is None
    assert "bandit" not in blended.summary
    with pytest.raises(ConfigError, match="drop --strategy"):
        run(bars, "sma_cross", {}, _settings(), selection="bandit")
    with pytest.raises(ConfigError, match="need bandit selection"):
        run(bars, None, {}, _settings(), posteriors=chosen.posteriors)
    with pytest.raises(ConfigError, match=r"composer\.strategies, which is empty"):
        run(bars, None, {}, load_settings([], ["bandit.enabled=true"], env={}))
    with pytest.raises(ConfigError, match="not one of"):
        run(bars, None, {}, _settings(), selection="softmax")


def test_warm_start_from_exported_posteriors(result) -> None:  # type: ignore[no-untyped-def]
    later = _bars(start="2022-01-01", end="2022-12-31")
    settings = _settings("bandit.enabled=true")
    warm = run(later, None, {}, settings, posteriors=result.posteriors)
    cold = run(later, None, {}, settings)
    assert warm.summary["run"]["warm_start"] is True
    for symbol in SYMBOLS:
        before = result.posteriors.symbols[symbol].count
        added = cold.posteriors.symbols[symbol].count
        assert np.array_equal(warm.posteriors.symbols[symbol].count, before + added)
    assert not warm.decisions["sampled"].equals(cold.decisions["sampled"])


def test_cli_selection_and_posteriors_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    bars = _bars(end="2020-12-31")
    for symbol in SYMBOLS:
        BarStore(str(store)).write_bars(symbol, "1d", bars.filter(pl.col("symbol") == symbol).drop("symbol"))
    config = ["--config", str(CONFIGS[0]), "--config", str(CONFIGS[1])]
    common = ["backtest", *config, "--store", str(store), "--symbols", ",".join(SYMBOLS), "--no-walkforward"]
    exported = tmp_path / "post.json"
    assert (
        main(
            [
                *common,
                "--selection",
                "bandit",
                "--out",
                str(tmp_path / "a"),
                "--posteriors-out",
                str(exported),
            ]
        )
        == 0
    )
    assert "bandit: policy reward" in capsys.readouterr().out
    first = PosteriorSet.read(exported, expect=ContextSpec.from_settings(_settings()))
    assert first.equals(PosteriorSet.read(tmp_path / "a" / "posteriors.parquet"))
    # Warm start: --posteriors-in implies bandit selection; the counts continue from the file.
    assert main([*common, "--posteriors-in", str(exported), "--out", str(tmp_path / "b")]) == 0
    second = PosteriorSet.read(tmp_path / "b" / "posteriors.parquet")
    assert (second.symbols["AAA"].count == 2 * first.symbols["AAA"].count).all()
    # A file from another context definition is refused with one line naming it.
    other = ["--set", "bandit.context_features=[momentum]"]
    assert main([*common, *other, "--posteriors-in", str(exported), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert str(exported) in err and "different context definition" in err
    assert not (tmp_path / "c").exists()
    assert main([*common, "--strategy", "sma_cross", "--posteriors-out", str(exported), "--out", "x"]) == 2
    assert "need bandit selection" in capsys.readouterr().err


def test_train_then_trade_on_real_bars(shared_data: Path) -> None:
    """The walk-forward use on real SPY bars: learn on the train window only, then trade the test window."""
    from trader.data.ingest import read_source
    from trader.data.sanity import validate_bars

    raw = read_source(shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv", fmt="yahoo")
    bars = validate_bars(raw.frame, symbol="SPY", interval="1d", mode="repair")[0]
    bars = bars.select("ts", "open", "high", "low", "close", "volume")
    settings = _settings("bandit.mode=bandit")
    arms = settings.composer.strategies
    train_end = int((bars["ts"] < dt.datetime(2013, 1, 1, tzinfo=dt.UTC)).sum()) - 1  # last 2012 bar
    train = bandit_select(bars, arms, settings, start_index=50, learn_until=train_end)
    post = train.posteriors.symbols["ASSET"]
    assert (post.last_update <= bars["ts"][train_end].timestamp() * 1e9).all()
    # Bandit mode: one arm learns per applied reward; every reward known by the train end is applied.
    scored = train.decisions.filter(pl.col("ts") <= bars["ts"][train_end - settings.bandit.horizon])
    assert post.count.sum() == scored.height > 200
    test = bandit_select(bars, arms, settings, train.posteriors, start_index=train_end + 1)
    assert test.decisions["ts"][0] > bars["ts"][train_end]
    assert (test.weights[: train_end + 1] == 0).all()
    assert test.posteriors.symbols["ASSET"].count.sum() == post.count.sum() + test.decisions.height - 1
    rewards = test.decisions["reward"].drop_nulls().to_numpy()
    assert rewards.size == test.decisions.height - 1 and np.isfinite(rewards).all()
