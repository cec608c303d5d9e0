"""Composer: level-1 blend arithmetic against a plain-Python reference, regime bias direction, the confidence,
history and NaN rules, no lookahead on real bars, building from settings; level-2 composite scoring and
ranking on hand-made metric dicts."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from trader.composer import (
    Composer,
    blend_targets,
    composite_score,
    rank_candidates,
    regime_bias,
    softmax_weights,
    strategy_scores,
)
from trader.config import ComposerSettings, ScoreWeights, load_settings
from trader.data.ingest import read_source
from trader.data.sanity import check_feature_lookahead, validate_bars
from trader.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
STYLES = ["trend", "mean_reversion"]


@pytest.fixture(scope="module")
def spy(shared_data: Path) -> pl.DataFrame:
    path = shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv"
    raw = read_source(path, fmt="yahoo", interval="1d").frame.sort("ts")
    return validate_bars(raw, symbol="SPY", interval="1d", mode="repair")[0]


@pytest.fixture(scope="module")
def demo_settings() -> Any:
    return load_settings([REPO / "configs" / "base.yaml", REPO / "configs" / "demo.yaml"], env={})


# -- a plain-Python reference of level 1 ------------------------------------------------------------------


def _reference_blend(
    targets: np.ndarray,
    returns: np.ndarray,
    regimes: np.ndarray,
    styles: list[str],
    *,
    lookback: int,
    temperature: float,
    biases: dict[str, float],
    min_confidence: float,
    min_history_bars: int,
    hold_on_nan: bool,
) -> tuple[list[float], list[list[float]]]:
    n, k = targets.shape
    out: list[float] = []
    all_weights: list[list[float]] = []
    prev = 0.0
    for t in range(n):
        logits = []
        for j in range(k):
            window = []
            for u in range(max(1, t - lookback + 1), t + 1):
                s = targets[u - 1, j] * returns[u]
                if math.isfinite(s):
                    window.append(s)
            score = 0.0
            if len(window) >= 2 and statistics.stdev(window) > 0:
                score = statistics.mean(window) / statistics.stdev(window) * math.sqrt(len(window))
            code = regimes[t]
            if code == 0 and styles[j] == "trend":
                score += biases["trend"]
            if code == 1 and styles[j] == "mean_reversion":
                score += biases["chop"]
            if code == 2:
                score += biases["volatile"]
            logits.append(score)
        expo = [math.exp(x / temperature) for x in [*logits, 0.0]]  # last: the flat arm
        weights = [e / sum(expo) for e in expo]
        all_weights.append(weights)
        if t < min_history_bars:
            value = 0.0
        elif any(math.isnan(x) for x in targets[t]):
            value = prev if hold_on_nan else 0.0
        else:
            value = sum(weights[j] * targets[t, j] for j in range(k))
            value = value if abs(value) >= min_confidence else 0.0
        out.append(value)
        prev = value
    return out, all_weights


@pytest.mark.parametrize("hold_on_nan", [False, True])
def test_blend_matches_reference(hold_on_nan: bool) -> None:
    rng = np.random.default_rng(42)
    n = 120
    targets = np.column_stack([rng.choice([-1.0, 0.0, 1.0], n), rng.uniform(-1, 1, n)])
    targets[70, 1] = np.nan
    targets[71:73, :] = np.nan
    returns = np.r_[np.nan, rng.normal(0.0005, 0.01, n - 1)]
    returns[90] = np.nan  # a missing close: that strategy return is left out of the window
    regimes = rng.choice(np.array([-1, 0, 1, 2], dtype=np.int8), n)
    kw = {"lookback": 15, "temperature": 0.7, "min_confidence": 0.05, "min_history_bars": 12}
    biases = {"trend": 0.4, "chop": -0.3, "volatile": -0.8}
    got = blend_targets(
        targets,
        returns,
        regimes,
        STYLES,
        trend_bias=biases["trend"],
        chop_bias=biases["chop"],
        volatile_bias=biases["volatile"],
        hold_on_nan=hold_on_nan,
        **kw,
    )
    want, want_weights = _reference_blend(
        targets, returns, regimes, STYLES, biases=biases, hold_on_nan=hold_on_nan, **kw
    )
    np.testing.assert_allclose(got.target, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.weights, want_weights, rtol=0, atol=1e-12)
    # The leader is the strategy with the largest weight (the first on ties), never the flat arm.
    np.testing.assert_array_equal(got.leader, np.argmax(np.asarray(want_weights)[:, :2], axis=1))
    # Scores given by the caller (shared between candidates) blend exactly as scores computed here.
    again = blend_targets(
        targets, returns, regimes, STYLES, trend_bias=biases["trend"], chop_bias=biases["chop"],
        volatile_bias=biases["volatile"], hold_on_nan=hold_on_nan, scores=got.scores, **kw,
    )  # fmt: skip
    np.testing.assert_array_equal(again.target, got.target)
    assert np.any(got.target != 0) and np.any(got.target[12:] == 0)  # both branches exercised


def test_hand_computed_softmax() -> None:
    # Zero returns: every score is 0, so the logits are the bias alone: [ln 2, 0] and the flat arm 0.
    n = 5
    targets = np.tile([1.0, -1.0], (n, 1))
    regimes = np.zeros(n, dtype=np.int8)  # trend
    blend = blend_targets(
        targets,
        np.zeros(n),
        regimes,
        STYLES,
        trend_bias=math.log(2.0),
        min_confidence=0.0,
        min_history_bars=0,
    )
    np.testing.assert_allclose(blend.weights, np.tile([0.5, 0.25, 0.25], (n, 1)), atol=1e-15)
    np.testing.assert_allclose(blend.target, 0.25, atol=1e-15)  # 0.5 * 1 + 0.25 * -1
    # Temperature 0.5 doubles the logits: exp([2 ln 2, 0, 0]) = [4, 1, 1] -> (4 - 1) / 6.
    sharp = blend_targets(
        targets, np.zeros(n), regimes, STYLES, trend_bias=math.log(2.0), temperature=0.5,
        min_confidence=0.0, min_history_bars=0,
    )  # fmt: skip
    np.testing.assert_allclose(sharp.target, 0.5, atol=1e-15)
    # Without the flat arm: [2, 1] / 3 -> 2/3 - 1/3.
    no_flat = blend_targets(
        targets, np.zeros(n), regimes, STYLES, trend_bias=math.log(2.0), min_confidence=0.0,
        min_history_bars=0, include_flat=False,
    )  # fmt: skip
    np.testing.assert_allclose(no_flat.target, 1.0 / 3.0, atol=1e-15)


def test_score_is_t_statistic() -> None:
    # strategy returns 0.01, 0.03, 0.02 (long all along): mean 0.02, sample stdev 0.01, three values.
    s = strategy_scores(np.ones((4, 1)), [np.nan, 0.01, 0.03, 0.02], lookback=3)
    assert s[0, 0] == 0 and s[1, 0] == 0  # fewer than two values: no evidence
    assert s[3, 0] == pytest.approx(0.02 / 0.01 * math.sqrt(3), rel=1e-12)
    # a short strategy earns the negated returns
    assert strategy_scores(-np.ones((4, 1)), [np.nan, 0.01, 0.03, 0.02], 3)[3, 0] == pytest.approx(-s[3, 0])
    assert softmax_weights([[0.0, math.log(3.0)]], include_flat=False)[0].tolist() == pytest.approx(
        [0.25, 0.75]
    )


def test_better_strategy_gets_more_weight() -> None:
    rng = np.random.default_rng(1)
    r = np.r_[np.nan, 0.005 + rng.normal(0, 0.01, 299)]  # drifting up: t-statistic about 5 over 100 bars
    targets = np.column_stack([np.ones(300), -np.ones(300)])  # long wins, short loses
    blend = blend_targets(targets, r, styles=["other", "other"], lookback=100, min_history_bars=0)
    assert np.all(blend.weights[150:, 0] > blend.weights[150:, 2] * 1.5)  # long beats flat
    assert np.all(blend.weights[150:, 2] > blend.weights[150:, 1] * 1.5)  # flat beats the loser
    assert np.all(blend.target[150:] > 0)


# -- regime bias ------------------------------------------------------------------------------------------


def _weights_under(regime: int, **biases: float) -> np.ndarray:
    rng = np.random.default_rng(9)
    n = 80
    targets = np.column_stack([rng.choice([-1.0, 1.0], n), rng.choice([-1.0, 1.0], n)])
    returns = np.r_[np.nan, rng.normal(0, 0.01, n - 1)]
    regimes = np.full(n, regime, dtype=np.int8)
    return blend_targets(targets, returns, regimes, STYLES, lookback=20, min_history_bars=0, **biases).weights


def test_regime_bias_shifts_weight_as_documented() -> None:
    base_trend, base_chop, base_vol = (_weights_under(code) for code in (0, 1, 2))
    # trend_bias: trend strategy gains on trend bars; nothing changes on chop bars
    up = _weights_under(0, trend_bias=1.0)
    assert np.all(up[:, 0] > base_trend[:, 0]) and np.all(up[:, 1] < base_trend[:, 1])
    np.testing.assert_allclose(_weights_under(1, trend_bias=1.0), base_chop)
    # chop_bias: mean-reversion strategy gains on chop bars; nothing changes on trend bars
    chop = _weights_under(1, chop_bias=1.0)
    assert np.all(chop[:, 1] > base_chop[:, 1]) and np.all(chop[:, 0] < base_chop[:, 0])
    np.testing.assert_allclose(_weights_under(0, chop_bias=1.0), base_trend)
    # volatile_bias < 0 de-risks: the flat arm gains, both strategies lose, in proportion
    calm = _weights_under(2, volatile_bias=-2.0)
    assert np.all(calm[:, 2] > base_vol[:, 2])
    np.testing.assert_allclose(calm[:, 0] / calm[:, 1], base_vol[:, 0] / base_vol[:, 1])
    # warm-up bars (-1) get no bias at all
    np.testing.assert_allclose(_weights_under(-1, trend_bias=3.0, chop_bias=3.0, volatile_bias=3.0), base_vol)


def test_blend_argument_errors() -> None:
    with pytest.raises(ConfigError, match="unknown strategy style 'trendy'"):
        blend_targets(np.ones((5, 1)), np.zeros(5), styles=["trendy"])
    with pytest.raises(ConfigError, match="2 styles given for 1 strategies"):
        blend_targets(np.ones((5, 1)), np.zeros(5), styles=["trend", "trend"])
    # lookback 1 is a valid setting: a single return has no spread, so every score is 0
    assert np.all(strategy_scores(np.ones((6, 1)), np.r_[np.nan, np.arange(5.0)], lookback=1) == 0)


def test_regime_bias_table() -> None:
    got = regime_bias(
        [0, 1, 2, -1], ["trend", "mean_reversion", "other"], trend_bias=1, chop_bias=2, volatile_bias=-3
    )
    assert got.tolist() == [[1, 0, 0], [0, 2, 0], [-3, -3, -3], [0, 0, 0]]


def test_volatile_bias_reduces_exposure_on_spy(spy: pl.DataFrame, demo_settings: Any) -> None:
    composer = replace(Composer.from_settings(demo_settings), min_confidence=0.0)
    volatile = np.full(spy.height, 2, dtype=np.int8)
    plain = composer.blend(spy, volatile)
    calm = replace(composer, volatile_bias=-1.5).blend(spy, volatile)
    # The bias moves weight to the flat arm only: the strategies keep their relative weights, so the target
    # shrinks by exactly the ratio of the non-flat weight.
    shrink = (1 - calm.weights[:, -1]) / (1 - plain.weights[:, -1])
    assert np.all(shrink < 1) and np.all(calm.weights[:, -1] > plain.weights[:, -1])
    np.testing.assert_allclose(calm.target, plain.target * shrink, rtol=1e-12, atol=1e-15)
    assert np.abs(calm.target).sum() < 0.9 * np.abs(plain.target).sum()


# -- confidence, history, NaN -----------------------------------------------------------------------------


def _constant(value: float, n: int = 30) -> np.ndarray:
    return np.full((n, 1), value)


def test_min_confidence_is_on_the_blended_target() -> None:
    # one strategy at 0.3, zero returns: weights [0.5, 0.5 flat] -> blended 0.15
    kw = {"min_history_bars": 0, "styles": ["other"]}
    assert np.all(blend_targets(_constant(0.3), np.zeros(30), min_confidence=0.2, **kw).target == 0)
    assert np.allclose(blend_targets(_constant(0.3), np.zeros(30), min_confidence=0.15, **kw).target, 0.15)
    assert np.allclose(blend_targets(_constant(-0.3), np.zeros(30), min_confidence=0.1, **kw).target, -0.15)


def test_min_history_bars() -> None:
    out = blend_targets(_constant(1.0), np.zeros(30), min_history_bars=10, min_confidence=0.0).target
    assert np.all(out[:10] == 0)  # the first decision is at index 10, as in the simulator
    assert np.all(out[10:] == 0.5)


@pytest.mark.parametrize("hold", [True, False])
def test_nan_input_holds_or_flattens(hold: bool) -> None:
    targets = _constant(1.0, 40)
    targets[20:23, 0] = np.nan
    targets[30:, 0] = -1.0
    out = blend_targets(
        targets, np.zeros(40), hold_on_nan=hold, min_history_bars=5, min_confidence=0.0
    ).target
    assert np.all(out[20:23] == (0.5 if hold else 0.0))
    assert out[19] == 0.5 and out[23] == 0.5 and out[-1] == -0.5
    # a NaN before min_history_bars holds the (flat) pre-history target
    early = _constant(1.0, 10)
    early[5, 0] = np.nan
    out = blend_targets(early, np.zeros(10), hold_on_nan=True, min_history_bars=6, min_confidence=0.0).target
    assert out.tolist() == [0, 0, 0, 0, 0, 0.0, 0.5, 0.5, 0.5, 0.5]


def test_composer_nan_close_holds(spy: pl.DataFrame, demo_settings: Any) -> None:
    close = spy["close"].to_numpy().copy()
    close[400] = np.nan
    bars = spy.with_columns(pl.Series("close", close))
    for hold in (True, False):
        composer = replace(Composer.from_settings(demo_settings), hold_on_nan=hold)
        out = composer.target_weights(bars)
        assert np.all(np.isfinite(out))
        assert out[400] == (out[399] if hold else 0.0)
        assert np.array_equal(out[:400], composer.target_weights(spy)[:400])


# -- the configured composer ------------------------------------------------------------------------------


def test_from_settings_demo(spy: pl.DataFrame, demo_settings: Any) -> None:
    composer = Composer.from_settings(demo_settings)
    assert [s.name for s, _ in composer.strategies] == ["sma_cross", "rsi_reversion", "donchian_breakout"]
    assert composer.strategies[1][1]["lower"] == 30.0 and composer.min_history_bars == 50
    assert composer.styles == ["trend", "mean_reversion", "trend"]
    blend = composer.blend(spy)
    stacked = np.column_stack([spec.run(spy, p) for spec, p in composer.strategies])
    close = spy["close"].to_numpy()
    ref = blend_targets(
        stacked,
        np.r_[np.nan, close[1:] / close[:-1] - 1],
        None,
        composer.styles,
        lookback=50,
        min_history_bars=50,
    )
    np.testing.assert_array_equal(blend.target, ref.target)
    t = blend.target
    assert np.all(np.abs(t) <= 1) and np.all(t[:49] == 0) and np.any(t != 0)
    assert np.all((t == 0) | (np.abs(t) >= demo_settings.composer.min_confidence))
    bare = Composer.from_settings(demo_settings.composer, min_history_bars=20)
    assert bare.min_history_bars == 20


def test_from_settings_errors() -> None:
    bad_name = ComposerSettings(strategies=[{"name": "sma_crossover", "params": {}}])
    with pytest.raises(ConfigError, match=r"unknown strategy 'sma_crossover'.*known:.*sma_cross"):
        Composer.from_settings(bad_name)
    bad_param = ComposerSettings(strategies=[{"name": "rsi_reversion", "params": {"period": 1}}])
    with pytest.raises(ConfigError, match="strategy rsi_reversion: param period=1 is out of range"):
        Composer.from_settings(bad_param)


def test_empty_composer_is_flat(spy: pl.DataFrame) -> None:
    out = Composer.from_settings(ComposerSettings()).target_weights(spy)
    assert out.shape == (spy.height,) and np.all(out == 0)


def test_composer_no_lookahead(spy: pl.DataFrame, demo_settings: Any) -> None:
    base = Composer.from_settings(demo_settings)
    biased = replace(base, trend_bias=0.5, chop_bias=0.5, volatile_bias=-0.5)
    frame = spy.head(700)
    for composer in (base, biased):
        leaking = check_feature_lookahead(
            lambda f, c=composer: pl.DataFrame({"w": c.target_weights(f)}), frame
        )
        assert leaking == []


def test_composer_deterministic(spy: pl.DataFrame, demo_settings: Any) -> None:
    composer = Composer.from_settings(demo_settings)
    assert np.array_equal(composer.target_weights(spy), composer.target_weights(spy))


def test_user_strategy_in_settings() -> None:
    from trader.strategies import register_strategy, unregister_strategy

    register_strategy("test_long_only", lambda bars: np.ones(len(bars)), [], style="other")
    try:
        composer = Composer.from_settings(ComposerSettings(strategies=[{"name": "test_long_only"}]))
        out = composer.target_weights({"close": np.linspace(100, 110, 60)})
        # a steady winner's score is large, so it takes (almost) all the weight from the flat arm
        assert np.all(out[:50] == 0) and np.allclose(out[50:], 1.0)
    finally:
        unregister_strategy("test_long_only")


# -- level 2 ----------------------------------------------------------------------------------------------

GOOD = {"cagr": 0.12, "sharpe": 1.1, "win_rate": 0.55, "avg_trade_return": 0.004, "max_drawdown": -0.18}


def test_composite_score_default_weights() -> None:
    # defaults: cagr 1, sharpe 1, win_rate 0.5, avg_trade 0.5, drawdown penalty 1
    want = 0.12 + 1.1 + 0.5 * 0.55 + 0.5 * 0.004 - 0.18
    assert composite_score(GOOD) == pytest.approx(want, abs=1e-12)
    assert composite_score({**GOOD, "max_drawdown": 0.18}) == pytest.approx(want, abs=1e-12)  # sign-agnostic
    assert composite_score(GOOD, ScoreWeights()) == pytest.approx(want, abs=1e-12)


def test_composite_score_custom_weights() -> None:
    w = {"sharpe": 2.0, "max_drawdown_penalty": 3.0}
    assert composite_score(GOOD, w) == pytest.approx(2 * 1.1 - 3 * 0.18, abs=1e-12)
    only_trade = {"avg_trade": 10.0}
    assert composite_score({"avg_trade": 0.01}, only_trade) == pytest.approx(0.1)  # alias accepted
    settings = ComposerSettings(score_weights={"cagr": 2.0, "sharpe": 0.0, "win_rate": 0.0, "avg_trade": 0.0})
    assert composite_score(GOOD, settings) == pytest.approx(2 * 0.12 - 0.18)
    composer = Composer.from_settings(settings)
    assert composer.score(GOOD) == pytest.approx(2 * 0.12 - 0.18)


def test_composite_score_reads_summarize_output() -> None:
    from trader.metrics import summarize

    rets = np.random.default_rng(0).normal(0.0005, 0.01, 500)
    m = summarize(rets, interval="1d", trades=[0.02, -0.01, 0.03, 0.01])
    want = m["cagr"] + m["sharpe"] + 0.5 * m["win_rate"] + 0.5 * m["avg_trade"] - abs(m["max_drawdown"])
    assert np.isfinite(want) and composite_score(m) == pytest.approx(want, abs=1e-12)
    # average trade return 0.0125 and three winners of four, as summarize reports them
    assert m["avg_trade"] == pytest.approx(0.0125) and m["win_rate"] == pytest.approx(0.75)


def test_composite_score_errors_and_nan() -> None:
    with pytest.raises(ConfigError, match=r"metrics lack 'win_rate'.*score_weights\.win_rate=0"):
        composite_score({k: v for k, v in GOOD.items() if k != "win_rate"})
    assert composite_score({"sharpe": 1.0}, {"sharpe": 1.0}) == 1.0  # unweighted metrics are not read
    assert math.isnan(composite_score({**GOOD, "sharpe": float("nan")}))
    with pytest.raises(ConfigError, match="unknown score weight 'sortino'"):
        composite_score(GOOD, {"sortino": 1.0})
    with pytest.raises(ConfigError, match="must be a finite number >= 0"):
        composite_score(GOOD, {"sharpe": -1.0})


def test_rank_candidates() -> None:
    candidates = [
        ({"fast": 5, "slow": 20}, {**GOOD, "sharpe": 0.4}),
        ({"fast": 10, "slow": 50}, {**GOOD, "sharpe": 1.4}),
        ({"fast": 20, "slow": 100}, {**GOOD, "sharpe": float("nan")}),
        ({"fast": 30, "slow": 150}, {**GOOD, "sharpe": 0.4}),
        ({"fast": 40, "slow": 200}, {**GOOD, "max_drawdown": -0.9}),
    ]
    ranked = rank_candidates(candidates)
    assert [r.key["fast"] for r in ranked] == [10, 5, 30, 40, 20]  # tie (5, 30) keeps input order; NaN last
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5]
    scores = [r.score for r in ranked]
    assert scores[0] > scores[1] == scores[2] > scores[3] and math.isnan(scores[4])
    by_name = rank_candidates({"sma_cross": GOOD, "rsi_reversion": {**GOOD, "cagr": 0.3}}, {"cagr": 1.0})
    assert [r.key for r in by_name] == ["rsi_reversion", "sma_cross"]
    assert by_name[0].score == pytest.approx(0.3)


def test_blend_with_flat_stretches_matches_reference_in_either_layout() -> None:
    # Long flat stretches keep scores (and so logits) unchanged from bar to bar: the kernel then reuses the
    # previous bar's exponentials. Results must equal the reference, and be identical for column-major
    # inputs (tuning's layout) and with the weights left out.
    rng = np.random.default_rng(7)
    n = 300
    targets = np.zeros((n, 2))
    targets[40:90, 0] = 1.0
    targets[150:260, 1] = -1.0
    targets[200:210, 0] = 1.0
    returns = np.r_[np.nan, rng.normal(0.0005, 0.01, n - 1)]
    regimes = np.repeat(np.array([0, 1, 2, -1], dtype=np.int8), n // 4)
    kw = {"lookback": 20, "temperature": 0.5, "min_confidence": 0.0, "min_history_bars": 5}
    biases = {"trend": 0.4, "chop": -0.3, "volatile": -0.8}
    args = {"trend_bias": 0.4, "chop_bias": -0.3, "volatile_bias": -0.8, **kw}
    got = blend_targets(targets, returns, regimes, STYLES, **args)
    want, want_weights = _reference_blend(
        targets, returns, regimes, STYLES, biases=biases, hold_on_nan=False, **kw
    )
    np.testing.assert_allclose(got.target, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.weights, want_weights, rtol=0, atol=1e-12)
    fortran = blend_targets(np.asfortranarray(targets), returns, regimes, STYLES, keep_weights=False, **args)
    assert np.array_equal(fortran.target, got.target) and np.array_equal(fortran.leader, got.leader)
    assert fortran.weights.shape == (0, 3)
