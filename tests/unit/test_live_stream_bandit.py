"""The streaming bandit equals trader.bandit.bandit_select bit for bit: the target at every bar, the
posteriors and the last arm, for the demo config and variations of every option (decision_every, horizon,
mode, forgetting, reward scale, context features), with missing bars injected; warm-up equals stepping;
an arm without a streaming kernel is refused."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from trader.bandit import bandit_select
from trader.config import load_settings
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.live.stream_bandit import StreamBandit, supports
from trader.strategies import get_strategy, register_strategy

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("open", "high", "low", "close", "volume")
SYMBOL = "SYN000"

VARIANTS: dict[str, tuple[str, ...]] = {
    "demo": (),
    "every1_h5": ("bandit.decision_every=1",),
    "every3_h1": ("bandit.decision_every=3", "bandit.horizon=1"),
    "every5_h1": ("bandit.horizon=1",),
    "every3_h7_discount1": ("bandit.decision_every=3", "bandit.horizon=7", "bandit.discount=1.0"),
    "mode_bandit": ("bandit.mode=bandit", "bandit.discount=0.9"),
    "window": ("bandit.forgetting=window", "bandit.window=12", "bandit.decision_every=2"),
    "window_bandit": ("bandit.forgetting=window", "bandit.window=5", "bandit.mode=bandit"),
    "reward_none": ("bandit.reward_scale=none", "costs.commission_bps=3.0"),
    "momentum": ("bandit.context_features=[momentum,regime,trend_strength]",),
    "momentum_only": ("bandit.context_features=[momentum]", "bandit.decision_every=1", "bandit.horizon=3"),
}


def _settings(*extra: str) -> Any:
    return load_settings(
        [ROOT / "configs/base.yaml", ROOT / "configs/demo.yaml"], ["bandit.enabled=true", *extra], env={}
    )


@cache
def _bars(n: int = 2500) -> pl.DataFrame:
    bars = synth_bars(SYMBOL, "1m", "2021-03-01", "2021-03-12", seed=11).sort("ts").head(n)
    return bars.with_columns(pl.lit(SYMBOL).alias("symbol"))


@cache
def _gappy_bars() -> pl.DataFrame:
    """Missing closes (one of them on a decision bar's neighbourhood), a missing high, a missing open."""
    bars = _bars()
    out = {c: bars[c].to_numpy().copy() for c in COLUMNS}
    out["close"][[70, 71, 400, 401, 402, 1200]] = np.nan
    out["high"][[90, 900]] = np.nan
    out["open"][[1500]] = np.nan
    return bars.with_columns(*(pl.Series(c, out[c]) for c in COLUMNS))


def _reference(bars: pl.DataFrame, settings: Any) -> Any:
    return bandit_select(
        bars,
        settings.composer.strategies,
        settings,
        start_index=settings.engine.min_history_bars,
        interval="1m",
    )


def _rows(bars: pl.DataFrame) -> list[tuple[Any, ...]]:
    ts = bars["ts"].dt.epoch("ns").to_numpy()
    cols = [bars[c].to_numpy() for c in COLUMNS]
    return [(int(ts[i]), *(float(c[i]) for c in cols)) for i in range(bars.height)]


def _stepped(bars: pl.DataFrame, settings: Any) -> tuple[StreamBandit, np.ndarray]:
    stream = StreamBandit(SYMBOL, settings, interval="1m")
    return stream, np.array([stream.step(*row) for row in _rows(bars)])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_bar_posteriors_and_arm_equal_bandit_select(name: str) -> None:
    settings = _settings(*VARIANTS[name])
    assert supports(settings, interval="1m")
    bars = _bars()
    ref = _reference(bars, settings)
    assert ref.decisions.height > 100  # the comparison covers many decisions and rewards
    stream, targets = _stepped(bars, settings)
    np.testing.assert_array_equal(targets, ref.weights)  # exact, NaN-free
    assert stream.posteriors.equals(ref.posteriors)
    assert stream.arm == ref.decisions["arm"][-1]
    assert stream.decisions == ref.decisions.height
    warmed = StreamBandit(SYMBOL, settings, interval="1m")
    np.testing.assert_array_equal(warmed.warm(bars), ref.weights)
    assert warmed.posteriors.equals(ref.posteriors)
    assert warmed.arm == stream.arm and warmed.last_ts == stream.last_ts and warmed.seen == bars.height


@pytest.mark.parametrize("name", ["demo", "window", "momentum_only"])
def test_prefix_calls_equal_stream_at_each_cut(name: str) -> None:
    # Causality: bandit_select over bars[:t+1] gives the stream's target, posteriors and arm at bar t, for
    # cuts on and between decision bars and where a reward window has just ended.
    settings = _settings(*VARIANTS[name])
    bars = _gappy_bars() if name == "momentum_only" else _bars()
    rows = _rows(bars)
    rng = np.random.default_rng(5)
    cuts = set(rng.choice(np.arange(60, 1200), size=10, replace=False).tolist()) | {49, 50, 55, 56, 71, 402}
    stream = StreamBandit(SYMBOL, settings, interval="1m")
    for t, row in enumerate(rows[: max(cuts) + 1]):
        target = stream.step(*row)
        if t not in cuts:
            continue
        ref = _reference(bars.head(t + 1), settings)
        assert target == ref.weights[t], t
        assert stream.posteriors.equals(ref.posteriors), t
        expected = ref.decisions["arm"][-1] if ref.decisions.height else None
        assert stream.arm == expected, t


@pytest.mark.parametrize("name", ["demo", "momentum", "window_bandit"])
def test_missing_bars_equal_bandit_select(name: str) -> None:
    settings = _settings(*VARIANTS[name])
    bars = _gappy_bars()
    ref = _reference(bars, settings)
    stream, targets = _stepped(bars, settings)
    np.testing.assert_array_equal(targets, ref.weights)
    assert stream.posteriors.equals(ref.posteriors)
    assert stream.arm == ref.decisions["arm"][-1]


def test_warm_then_step_equals_step_from_scratch() -> None:
    settings = _settings(*VARIANTS["momentum"])
    bars = _gappy_bars()
    rows = _rows(bars)
    scratch, expected = _stepped(bars, settings)
    stream = StreamBandit(SYMBOL, settings, interval="1m")
    # chunks of odd sizes (some shorter than the momentum window) and single steps in between
    parts = [stream.warm(bars.slice(0, 7)), stream.warm(bars.slice(7, 600))]
    parts.append(np.array([stream.step(*row) for row in rows[607:650]]))
    parts.append(stream.warm(bars.slice(650, 13)))
    parts.append(stream.warm({c: bars[c].to_numpy()[663:] for c in ("ts", *COLUMNS)}))
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    assert stream.posteriors.equals(scratch.posteriors)
    assert stream.arm == scratch.arm and stream.last_target == scratch.last_target
    stream.reset()
    assert stream.arm is None and stream.seen == 0
    np.testing.assert_array_equal(stream.warm(bars), expected)


def test_refuses_unsupported_arms_and_out_of_order_bars() -> None:
    settings = _settings()
    assert supports(settings) and StreamBandit.supports(settings)
    original = get_strategy("sma_cross")

    def flat(bars: Any) -> np.ndarray:
        return np.zeros(len(bars))

    # a built-in name registered again with another function has no streaming kernel
    register_strategy("sma_cross", flat, original.params, style="trend", replace=True)
    try:
        assert not supports(settings)
        with pytest.raises(ConfigError, match="not a built-in"):
            StreamBandit(SYMBOL, settings)
    finally:
        register_strategy(
            "sma_cross",
            original.func,
            original.params,
            style=original.style,
            inputs=original.inputs,
            warmup=original.warmup,
            replace=True,
        )
    assert supports(settings)
    assert not supports(_settings("composer.strategies=[]"))
    stream = StreamBandit(SYMBOL, settings, interval="1m")
    stream.step(10, 1.0, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(DataError, match="not after"):
        stream.step(10, 1.0, 1.0, 1.0, 1.0, 0.0)


@pytest.mark.parametrize("name", ["demo", "momentum"])
def test_real_daily_bars_equal_bandit_select(shared_data: Path, name: str) -> None:
    from trader.data.ingest import read_source

    path = shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv"
    frame = read_source(path, fmt="yahoo", interval="1d").frame.sort("ts")
    bars = frame.with_columns(pl.lit("SPY").alias("symbol"))
    settings = _settings(*VARIANTS[name])
    ref = bandit_select(
        bars,
        settings.composer.strategies,
        settings,
        start_index=settings.engine.min_history_bars,
        interval="1d",
    )
    stream = StreamBandit("SPY", settings, interval="1d")
    np.testing.assert_array_equal(stream.warm(bars), ref.weights)
    assert stream.posteriors.equals(ref.posteriors)
    assert stream.arm == ref.decisions["arm"][-1]
