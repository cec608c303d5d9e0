"""Strategies: obvious answers on constructed series, TA-Lib / plain-loop oracles on real SPY bars, the target
contract (range, warm-up, no NaN, no lookahead) for every registered strategy, parameter validation, search
spaces and user registration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
import pytest
import talib
import yaml

from trader.data.ingest import read_source
from trader.data.sanity import check_feature_lookahead, validate_bars
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.strategies import (
    STRATEGIES,
    BarArrays,
    Param,
    StrategyDef,
    as_bar_arrays,
    get_strategy,
    latch_positions,
    register_strategy,
    strategy_names,
    unregister_strategy,
)

REPO = Path(__file__).resolve().parents[2]
BUILTIN = (
    "sma_cross",
    "ema_cross",
    "donchian_breakout",
    "ts_momentum",
    "vol_breakout",
    "rsi_reversion",
    "bollinger_reversion",
)
SHORTABLE = BUILTIN  # every built-in strategy has allow_short

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def spy(shared_data: Path) -> pl.DataFrame:
    """SPY daily 2008-2017 (Yahoo), repaired (two real OHLC errors) and sorted."""
    path = shared_data / "mplfinance" / "yahoofinance-SPY-20080101-20180101.csv"
    raw = read_source(path, fmt="yahoo", interval="1d").frame.sort("ts")
    return validate_bars(raw, symbol="SPY", interval="1d", mode="repair")[0]


def _arrays(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    return {c: frame.get_column(c).cast(pl.Float64).to_numpy() for c in ("open", "high", "low", "close")}


def _bars_from_close(close: np.ndarray, spread: float = 0.5) -> dict[str, np.ndarray]:
    close = np.asarray(close, dtype=np.float64)
    open_ = np.r_[close[0], close[:-1]]
    return {
        "open": open_,
        "high": np.maximum(open_, close) + spread,
        "low": np.minimum(open_, close) - spread,
        "close": close,
        "volume": np.full(close.shape, 1e6),
    }


def _latch_loop(enter_long, exit_long, enter_short, exit_short) -> np.ndarray:
    """Plain-Python reference of the entry/exit state machine (see latch_positions)."""
    pos, out = 0.0, []
    for el, xl, es, xs in zip(enter_long, exit_long, enter_short, exit_short, strict=True):
        if pos > 0 and (xl or es):
            pos = -1.0 if es else 0.0
        elif pos < 0 and (xs or el):
            pos = 1.0 if el else 0.0
        elif pos == 0:
            pos = 1.0 if el else (-1.0 if es else 0.0)
        out.append(pos)
    return np.array(out)


def _gt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(a > b)


def _lt(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(a < b)


def _shift(x: np.ndarray) -> np.ndarray:
    return np.r_[np.nan, x[:-1]]


# -- constructed series with an obvious answer ------------------------------------------------------------


def test_sma_cross_rising_then_falling() -> None:
    close = np.r_[np.linspace(100, 200, 100), np.linspace(199, 100, 100)]
    bars = _bars_from_close(close)
    w = get_strategy("sma_cross").run(bars, fast=5, slow=20)
    assert np.all(w[:19] == 0)  # warm-up: SMA(20) needs 20 bars
    assert np.all(w[19:100] == 1)  # fast above slow all the way up
    assert np.all(w[115:] == 0)  # after the turn the fast average falls below the slow one
    w_short = get_strategy("sma_cross").run(bars, fast=5, slow=20, allow_short=True)
    assert np.all(w_short[115:] == -1)
    assert np.array_equal(w_short[:100], w[:100])


def test_donchian_channel_break() -> None:
    close = np.full(80, 100.0)
    close[50:65] = 105.0  # breaks above the 20-bar channel
    close[65:] = 95.0  # falls below the prior 10-bar low (which is 104.5 then)
    bars = {"high": close + 0.5, "low": close - 0.5, "close": close}
    w = get_strategy("donchian_breakout").run(bars, lookback=20, exit_lookback=10)
    assert np.all(w[:50] == 0)
    assert np.all(w[50:65] == 1)  # entry on the breakout bar, held while the close stays above the exit low
    assert np.all(w[65:] == 0)
    w_short = get_strategy("donchian_breakout").run(bars, lookback=20, exit_lookback=10, allow_short=True)
    # 95 is below the prior 20-bar low (99.5) as well: the long reverses to short on that bar.
    assert np.all(w_short[65:] == -1)


def test_rsi_reversion_buys_the_dip_and_sells_the_rally() -> None:
    rng = np.random.default_rng(3)
    close = np.r_[
        100 + rng.normal(0, 0.3, 40),  # noise: RSI near 50
        np.linspace(100, 80, 15),  # selloff: RSI < 30
        np.linspace(80, 100, 20),  # rally: RSI > 70
        np.full(10, 100.0),
    ]
    w = get_strategy("rsi_reversion").run({"close": close}, period=14, lower=30, upper=70)
    assert np.all(w[:40] == 0)
    assert np.all(w[50:55] == 1)  # long during the selloff
    assert np.all(w[70:] == 0)  # sold into the rally
    first_long = int(np.argmax(w == 1))
    assert 40 <= first_long < 55


def test_bollinger_reversion_enters_below_band_exits_at_middle() -> None:
    rng = np.random.default_rng(5)
    close = np.r_[100 + rng.normal(0, 0.5, 40), 95.0, 95.5, 96.0, 100.5, 100.5, 100.5]
    w = get_strategy("bollinger_reversion").run({"close": close}, period=20, k=2.0)
    assert np.all(w[:40] == 0)
    assert w[40] == 1  # the drop to 95 closes below the lower band
    assert w[-1] == 0  # back above the middle band: out


def test_ts_momentum_signs() -> None:
    close = np.r_[np.linspace(100, 150, 60), np.linspace(150, 90, 60)]
    w = get_strategy("ts_momentum").run({"close": close}, lookback=10, allow_short=True)
    assert np.all(w[:10] == 0)
    assert np.all(w[10:60] == 1)
    assert np.all(w[70:] == -1)
    w_long = get_strategy("ts_momentum").run({"close": close}, lookback=10, threshold=0.15)
    assert np.all(w_long == 0)  # no 10-bar move reaches 15 %


def test_vol_breakout_holds_for_hold_bars() -> None:
    close = np.full(60, 100.0)
    bars = {"open": close.copy(), "high": close + 0.5, "low": close - 0.5, "close": close.copy()}
    bars["open"][40], bars["close"][40], bars["high"][40] = 100.0, 104.0, 104.5  # wide up bar
    bars["close"][41:] = 104.0
    bars["open"][41:], bars["high"][41:], bars["low"][41:] = 104.0, 104.5, 103.5
    w = get_strategy("vol_breakout").run(bars, atr_period=14, k=2.0, hold=5)
    assert np.all(w[:40] == 0)
    assert np.all(w[40:45] == 1)
    assert np.all(w[45:] == 0)


def test_latch_positions_matches_reference_loop() -> None:
    rng = np.random.default_rng(11)
    conds = [rng.random(500) < p for p in (0.1, 0.1, 0.08, 0.12)]
    assert np.array_equal(latch_positions(*conds), _latch_loop(*conds))


# -- oracles on real SPY bars -----------------------------------------------------------------------------


def _oracle(name: str, b: dict[str, np.ndarray], p: dict[str, Any]) -> np.ndarray:
    """Each built-in strategy re-derived from TA-Lib indicators and plain loops."""
    c, h, lo, o = b["close"], b["high"], b["low"], b["open"]
    short = -1.0 if p.get("allow_short") else 0.0
    if name in ("sma_cross", "ema_cross"):
        ma = talib.SMA if name == "sma_cross" else talib.EMA
        f, s = ma(c, p["fast"]), ma(c, p["slow"])
        return np.where(_gt(f, s), 1.0, np.where(_lt(f, s), short, 0.0))
    if name == "donchian_breakout":
        up, dn = _shift(talib.MAX(h, p["lookback"])), _shift(talib.MIN(lo, p["lookback"]))
        xup, xdn = _shift(talib.MAX(h, p["exit_lookback"])), _shift(talib.MIN(lo, p["exit_lookback"]))
        return _latch_loop(_gt(c, up), _lt(c, xdn), _lt(c, dn) & p["allow_short"], _gt(c, xup))
    if name == "ts_momentum":
        n = p["lookback"]
        ret = np.full(c.shape, np.nan)
        for t in range(n, len(c)):
            ret[t] = c[t] / c[t - n] - 1.0
        return np.where(_gt(ret, p["threshold"]), 1.0, np.where(_lt(ret, -p["threshold"]), short, 0.0))
    if name == "vol_breakout":
        big = _gt(h - lo, p["k"] * _shift(talib.ATR(h, lo, c, p["atr_period"])))
        pos, left, out = 0.0, 0, []
        for t in range(len(c)):
            if big[t] and c[t] > o[t]:
                pos, left = 1.0, p["hold"]
            elif big[t] and c[t] < o[t]:
                if p["allow_short"]:
                    pos, left = -1.0, p["hold"]
                elif pos > 0:
                    pos, left = 0.0, 0
            if left <= 0:
                pos = 0.0
            out.append(pos)
            left -= 1
        return np.array(out)
    if name == "rsi_reversion":
        x = talib.RSI(c, p["period"])
        xl, xs = (p["upper"], p["lower"]) if p["exit_at"] == "opposite" else (50.0, 50.0)
        return _latch_loop(_lt(x, p["lower"]), _gt(x, xl), _gt(x, p["upper"]) & p["allow_short"], _lt(x, xs))
    if name == "bollinger_reversion":
        up, mid, dn = talib.BBANDS(c, p["period"], p["k"], p["k"], 0)
        if p["exit_at"] == "middle":
            xl, xs = ~_lt(c, mid) & np.isfinite(mid), ~_gt(c, mid) & np.isfinite(mid)
        else:
            xl, xs = _gt(c, up), _lt(c, dn)
        return _latch_loop(_lt(c, dn), xl, _gt(c, up) & p["allow_short"], xs)
    raise AssertionError(name)


ORACLE_CASES = [
    ("sma_cross", {"fast": 10, "slow": 50}),
    ("sma_cross", {"fast": 20, "slow": 100, "allow_short": True}),
    ("ema_cross", {"fast": 12, "slow": 26, "allow_short": True}),
    ("donchian_breakout", {"lookback": 20, "exit_lookback": 10}),
    ("donchian_breakout", {"lookback": 55, "exit_lookback": 20, "allow_short": True}),
    ("ts_momentum", {"lookback": 60, "threshold": 0.02, "allow_short": True}),
    ("vol_breakout", {"atr_period": 14, "k": 1.5, "hold": 5}),
    ("vol_breakout", {"atr_period": 10, "k": 1.2, "hold": 3, "allow_short": True}),
    ("rsi_reversion", {"period": 14, "lower": 30, "upper": 70}),
    ("rsi_reversion", {"period": 2, "lower": 10, "upper": 90, "exit_at": "middle", "allow_short": True}),
    ("bollinger_reversion", {"period": 20, "k": 2.0}),
    ("bollinger_reversion", {"period": 20, "k": 1.5, "exit_at": "opposite", "allow_short": True}),
]


@pytest.mark.parametrize(
    ("name", "params"), ORACLE_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ORACLE_CASES)]
)
def test_strategy_matches_oracle_on_spy(spy: pl.DataFrame, name: str, params: dict[str, Any]) -> None:
    spec = get_strategy(name)
    full = spec.validate(params)
    got = spec.run(spy, params)
    want = _oracle(name, _arrays(spy), full)
    want[: spec.warmup(full)] = 0.0
    mismatch = np.flatnonzero(got != want)
    assert mismatch.size == 0, f"{name} differs from the oracle at rows {mismatch[:10]}"
    assert np.any(got != 0)  # the case trades at all, so the comparison means something


# -- the contract, for every registered strategy ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("allow_short", [False, True])
def test_contract_on_spy(spy: pl.DataFrame, name: str, allow_short: bool) -> None:
    spec = get_strategy(name)
    params = spec.defaults()
    if "allow_short" in params:
        params["allow_short"] = allow_short
    elif allow_short:
        pytest.skip(f"{name} has no allow_short")
    w = spec.run(spy, params)
    assert w.dtype == np.float64 and w.shape == (spy.height,)
    assert np.all(np.isfinite(w))
    assert np.all((w >= -1) & (w <= 1))
    warm = spec.warmup(params)
    assert warm > 0 and np.all(w[:warm] == 0)
    assert np.any(w[warm:] != 0)
    assert np.any(w < 0) == allow_short  # shorts exactly when allowed


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_lookahead(spy: pl.DataFrame, name: str) -> None:
    spec = get_strategy(name)
    params = spec.defaults()
    if "allow_short" in params:
        params["allow_short"] = True
    frame = spy.head(800)
    leaking = check_feature_lookahead(lambda f: pl.DataFrame({"w": spec.run(f, params)}), frame, probes=6)
    assert leaking == []


def test_lookahead_check_catches_a_peeking_strategy(spy: pl.DataFrame) -> None:
    def peek(bars: BarArrays) -> np.ndarray:
        return np.sign(np.r_[np.diff(bars.close), 0.0])  # tomorrow's move: lookahead

    spec = StrategyDef("peek", peek, ())
    leaking = check_feature_lookahead(lambda f: pl.DataFrame({"w": spec.run(f)}), spy.head(300))
    assert leaking == ["w"]


def test_strategies_deterministic_and_frame_equals_arrays(spy: pl.DataFrame) -> None:
    for name in BUILTIN:
        spec = get_strategy(name)
        a = spec.run(spy)
        assert np.array_equal(a, spec.run(spy))
        assert np.array_equal(a, spec.run(_arrays(spy) | {"volume": spy["volume"].to_numpy()}))


def test_synthetic_minute_bars() -> None:
    bars = synth_bars("SYN001", "1m", "2021-03-01", "2021-03-05", seed=4)
    for name in BUILTIN:
        w = get_strategy(name).run(bars)
        assert np.all(np.isfinite(w)) and np.any(w != 0), name


# -- parameters -------------------------------------------------------------------------------------------


def test_demo_config_names_and_params_validate() -> None:
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    for entry in demo["composer"]["strategies"]:
        spec = get_strategy(entry["name"])
        params = spec.validate(entry["params"])
        assert {k: params[k] for k in entry["params"]} == entry["params"]


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("sma_cross", {"fast": 50, "slow": 50}, "fast (50) must be less than slow (50)"),
        ("ema_cross", {"fast": 30}, "fast (30) must be less than slow (26)"),
        ("sma_cross", {"fsat": 5}, "unknown param 'fsat' (did you mean 'fast'?"),
        ("sma_cross", {"fast": 1}, "param fast=1 is out of range"),
        ("sma_cross", {"fast": 5.5}, "must be a whole number"),
        ("sma_cross", {"fast": "5"}, "must be a finite number"),
        ("sma_cross", {"allow_short": 1}, "param allow_short=1 is not allowed"),
        ("rsi_reversion", {"lower": 60}, "param lower=60 is out of range"),
        ("rsi_reversion", {"exit_at": "never"}, "param exit_at='never' is not allowed"),
        ("bollinger_reversion", {"k": float("nan")}, "must be a finite number"),
        ("vol_breakout", {"hold": 0}, "param hold=0 is out of range"),
    ],
)
def test_param_validation_errors(name: str, params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        get_strategy(name).validate(params)
    assert f"strategy {name}" in str(err.value)
    assert fragment in str(err.value)


def test_validation_converts_and_completes() -> None:
    spec = get_strategy("rsi_reversion")
    params = spec.validate({"period": np.int64(7), "lower": 25})
    assert params == {"period": 7, "lower": 25.0, "upper": 70.0, "exit_at": "opposite", "allow_short": False}
    assert type(params["period"]) is int and type(params["lower"]) is float
    assert get_strategy("sma_cross").validate({"fast": 5.0})["fast"] == 5  # whole floats from YAML are fine


def test_get_strategy_unknown_lists_known() -> None:
    with pytest.raises(ConfigError) as err:
        get_strategy("sma_crossover")
    message = str(err.value)
    assert "unknown strategy 'sma_crossover'" in message
    for name in BUILTIN:
        assert name in message


def test_bad_declarations_rejected() -> None:
    with pytest.raises(ConfigError, match=r"default 500 does not fit .* out of range"):
        Param("n", "int", 500, 1, 100)
    with pytest.raises(ConfigError, match="log=True"):
        Param("x", "float", 1.0, 0.1, 10.0, step=0.1, log=True)
    with pytest.raises(ConfigError, match="needs choices"):
        Param("c", "categorical", None)
    with pytest.raises(ConfigError, match="declared before it"):
        StrategyDef("bad", lambda b, **k: b.close, (Param("slow", "int", 5, 2, 9, above="fast"),))
    with pytest.raises(ConfigError, match="must be less than"):  # defaults break the constraint
        StrategyDef(
            "bad", lambda b, **k: b.close, (Param("a", "int", 5, 2, 9), Param("b", "int", 3, 2, 9, above="a"))
        )


@pytest.mark.parametrize("name", BUILTIN)
def test_random_search_space_gives_valid_params(name: str) -> None:
    spec = get_strategy(name)

    def draws(seed: int) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        out = []
        for _ in range(40):
            trial = study.ask()
            params = spec.suggest(trial)
            out.append(params)
            study.tell(trial, 0.0)
        return out

    first = draws(7)
    assert first == draws(7)  # seeded sampler: same draws
    for params in first:
        assert spec.validate(params) == params
        for p in spec.params:
            if not p.tunable:
                assert params[p.name] == p.default
    tunable_numeric = [p.name for p in spec.params if p.tunable and p.kind != "categorical"]
    for key in tunable_numeric:
        assert len({d[key] for d in first}) > 5  # it is actually searched


def test_suggest_with_tpe_prefix_and_fixed() -> None:
    spec = get_strategy("sma_cross")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=5))
    for _ in range(25):
        trial = study.ask()
        params = spec.suggest(trial, prefix="sma.", fixed={"allow_short": True})
        assert params["fast"] < params["slow"] and params["allow_short"] is True
        assert set(trial.params) == {"sma.fast", "sma.slow"}
        study.tell(trial, params["slow"] - params["fast"])


@pytest.mark.parametrize("name", BUILTIN)
def test_grid_is_valid_and_spans_bounds(name: str) -> None:
    spec = get_strategy(name)
    grid = spec.grid(4)
    assert grid and grid == spec.grid(4)
    keys = [tuple(sorted(g.items())) for g in grid]
    assert len(set(keys)) == len(keys)
    for params in grid:
        assert spec.validate(params) == params
    for p in spec.params:
        values = {g[p.name] for g in grid}
        if not p.tunable:
            assert values == {p.default}
        elif p.kind == "categorical":
            assert values == set(p.choices)
        elif p.above is None:
            assert min(values) == p.low and max(values) == p.high


def test_grid_respects_constraint_and_size() -> None:
    spec = get_strategy("sma_cross")
    grid = spec.grid(3)
    pairs = sorted((g["fast"], g["slow"]) for g in grid)
    fasts, slows = sorted({f for f, _ in pairs}), sorted({s for _, s in pairs})
    assert len(fasts) == 3 and len(slows) == 3 and fasts[0] == 2 and slows[-1] == 400
    # every combination with fast < slow, and only those
    assert pairs == sorted((f, s) for f in fasts for s in slows if f < s)
    assert (100, 5) not in pairs and (2, 5) in pairs
    fixed = spec.grid(3, fixed={"fast": 10})
    assert [(g["fast"], g["slow"]) for g in fixed] == [(10, s) for s in slows if s > 10]


# -- inputs -----------------------------------------------------------------------------------------------


def test_bar_inputs_checked() -> None:
    spec = get_strategy("donchian_breakout")
    with pytest.raises(DataError, match="missing column"):
        spec.run({"close": np.ones(50)})
    with pytest.raises(DataError, match="equal length"):
        as_bar_arrays({"close": np.ones(5), "high": np.ones(4)}, ("close", "high"))
    two = pl.DataFrame({"symbol": ["A", "B"], "close": [1.0, 2.0]})
    with pytest.raises(DataError, match="several symbols"):
        get_strategy("sma_cross").run(two)
    frame = synth_bars("SYN002", "1d", "2021-01-01", "2021-06-30", seed=1)
    with pytest.raises(DataError, match="ascending ts"):
        get_strategy("sma_cross").run(frame.reverse())


# -- user strategies --------------------------------------------------------------------------------------


@pytest.fixture()
def user_strategy() -> Iterator[str]:
    name = "test_close_above_open"

    @register_strategy(
        name,
        params=[Param("min_gap", "float", 0.0, 0.0, 0.05, doc="fraction of open")],
        inputs=("open", "close"),
        style="trend",
        warmup=lambda p: 1,
    )
    def close_above_open(bars: BarArrays, *, min_gap: float) -> np.ndarray:
        """Long after a bar that closes ``min_gap`` above its open."""
        return (bars.close > bars.column("open") * (1.0 + min_gap)).astype(np.float64) * 2.0  # clipped to 1

    yield name
    unregister_strategy(name)


def test_user_registered_strategy(user_strategy: str, spy: pl.DataFrame) -> None:
    assert user_strategy in STRATEGIES and user_strategy in strategy_names()
    spec = get_strategy(user_strategy)
    assert spec.doc.startswith("Long after a bar")
    b = _arrays(spy)
    w = spec.run(spy, min_gap=0.005)
    want = (b["close"] > b["open"] * 1.005).astype(float)
    want[0] = 0.0  # declared warm-up
    assert np.array_equal(w, want)
    with pytest.raises(ConfigError, match="already registered"):
        register_strategy(user_strategy, lambda bars: bars.close, [])
    with pytest.raises(ConfigError, match=r"min_gap=0\.5 is out of range"):
        spec.run(spy, min_gap=0.5)


def test_register_direct_call_and_replace() -> None:
    spec = register_strategy("test_always_long", lambda bars: np.ones(len(bars)), [], style="other")
    try:
        assert get_strategy("test_always_long") is spec
        assert np.all(spec.run({"close": np.arange(5.0)}) == 1)
        again = register_strategy("test_always_long", lambda bars: -np.ones(len(bars)), [], replace=True)
        assert np.all(again.run({"close": np.arange(5.0)}) == -1)
        with pytest.raises(DataError, match="returned shape"):
            register_strategy("test_always_long", lambda bars: np.ones(3), [], replace=True).run(
                {"close": np.arange(5.0)}
            )
    finally:
        unregister_strategy("test_always_long")
    assert "test_always_long" not in STRATEGIES
