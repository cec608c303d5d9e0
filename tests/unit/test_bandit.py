"""trader.bandit: conjugate updates, Thompson sampling, no lookahead, determinism, posteriors as data."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from trader.bandit import (
    FEATURE_GROUPS,
    MODEL_VERSION,
    ArmPosteriors,
    BanditModel,
    ContextSpec,
    PosteriorSet,
    _gamma,
    arm_names,
    bandit_select,
    decision_seeds,
    thompson_replay,
)
from trader.config import BanditFeature, StrategySpec, load_settings
from trader.data.synth import synth_bars
from trader.errors import ConfigError, DataError
from trader.strategies import get_strategy

REPO = Path(__file__).resolve().parents[2]
ARMS = (
    StrategySpec(name="sma_cross", params={"fast": 10, "slow": 50}),
    StrategySpec(name="rsi_reversion", params={"period": 14, "lower": 30, "upper": 70}),
    StrategySpec(name="donchian_breakout", params={"lookback": 20}),
)


def _settings(*overrides: str):  # type: ignore[no-untyped-def]
    return load_settings([], ["engine.rng_seed=11", *overrides], env={})


def _bars(seed: int = 4, start: str = "2019-01-01", end: str = "2021-12-31") -> pl.DataFrame:
    return synth_bars("SYN001", "1d", start, end, seed=seed)


def _batch_posterior(x: np.ndarray, y: np.ndarray, w: np.ndarray, model: BanditModel):  # type: ignore[no-untyped-def]
    """The closed-form NIG posterior of weighted data (prior mean 0), written independently of the kernel."""
    d = x.shape[1]
    p0 = np.eye(d) / model.prior_variance
    precision = p0 + (x * w[:, None]).T @ x
    mean = np.linalg.solve(precision, (x * w[:, None]).T @ y)
    a = model.prior_a + 0.5 * w.sum()
    b = model.prior_b + 0.5 * (float(np.sum(w * y * y)) - float(mean @ precision @ mean))
    return mean, precision, a, b


def _problem(m: int = 300, d: int = 5, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(m), rng.normal(size=(m, d - 1))])
    beta = rng.normal(size=(k, d))
    return x, x @ beta.T + rng.normal(scale=0.7, size=(m, k))


# -- the conjugate update ---------------------------------------------------------------------------------


@pytest.mark.parametrize("discount", [1.0, 0.97])
def test_full_information_update_equals_the_batch_posterior(discount: float) -> None:
    x, r = _problem()
    m = x.shape[0]
    model = BanditModel(prior_variance=2.0, prior_a=3.0, prior_b=0.5, discount=discount)
    out = thompson_replay(x, r, ready=np.arange(1, m + 1), seeds=np.arange(m, dtype=np.uint64), model=model)
    weights = discount ** np.arange(m - 1, -1, -1, dtype=np.float64)  # reward j is m-1-j updates old
    for arm in range(r.shape[1]):
        mean, precision, a, b = _batch_posterior(x, r[:, arm], weights, model)
        post = out.posteriors
        np.testing.assert_allclose(post.mean[arm], mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(post.precision[arm], precision, rtol=1e-10, atol=1e-10)
        assert post.a[arm] == pytest.approx(a, rel=1e-10, abs=1e-10)
        assert post.b[arm] == pytest.approx(b, rel=1e-10, abs=1e-10)
        assert post.count[arm] == m


def test_bandit_mode_updates_only_the_chosen_arm_as_its_batch() -> None:
    x, r = _problem(seed=1)
    m = x.shape[0]
    model = BanditModel(full_information=False)
    out = thompson_replay(x, r, ready=np.arange(1, m + 1), seeds=np.arange(m, dtype=np.uint64), model=model)
    for arm in range(r.shape[1]):
        mine = out.chosen == arm
        mean, precision, a, b = _batch_posterior(x[mine], r[mine, arm], np.ones(mine.sum()), model)
        np.testing.assert_allclose(out.posteriors.mean[arm], mean, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(out.posteriors.precision[arm], precision, rtol=1e-10, atol=1e-10)
        assert out.posteriors.a[arm] == pytest.approx(a, rel=1e-10)
        assert out.posteriors.b[arm] == pytest.approx(b, rel=1e-10)
        assert out.posteriors.count[arm] == mine.sum()
    assert out.posteriors.count.sum() == m


def test_sliding_window_equals_the_batch_of_the_last_rewards() -> None:
    x, r = _problem(m=200, seed=2)
    m, window = x.shape[0], 37
    model = BanditModel(forgetting="window", window=window, discount=0.5)  # discount unused with a window
    out = thompson_replay(x, r, ready=np.arange(1, m + 1), seeds=np.arange(m, dtype=np.uint64), model=model)
    for arm in range(r.shape[1]):
        mean, precision, a, b = _batch_posterior(x[-window:], r[-window:, arm], np.ones(window), model)
        np.testing.assert_allclose(out.posteriors.mean[arm], mean, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(out.posteriors.precision[arm], precision, rtol=1e-10, atol=1e-9)
        assert out.posteriors.a[arm] == pytest.approx(a, rel=1e-12)
        assert out.posteriors.b[arm] == pytest.approx(b, rel=1e-9)
        assert out.posteriors.count[arm] == m  # count is every reward ever applied


def test_discount_pulls_an_unchosen_arm_back_to_the_prior() -> None:
    # Bandit mode: arm 1 starts with the evidence of 50 rewards but never gets another (its rewards are
    # unknown, so rounds that choose it apply nothing); every round that applies arm 0's reward also
    # forgets: P1 = gamma^n (P0 + 50 I) + (1 - gamma^n) P0, so arm 1 returns to prior uncertainty.
    model = BanditModel(full_information=False, discount=0.9)
    d = 2
    seen = ArmPosteriors.prior(2, d, model)
    seen.precision[1] += 50.0 * np.eye(d)
    x = np.ones((300, d))
    rewards = np.column_stack([np.zeros(300), np.full(300, np.nan)])
    out = thompson_replay(
        x,
        rewards,
        ready=np.arange(1, 301),
        seeds=np.arange(300, dtype=np.uint64),
        model=model,
        posteriors=seen,
    )
    n = int(out.applied.sum())
    assert n == (out.chosen == 0).sum() and n > 100
    expected = np.eye(d) * (1.0 + 50.0 * 0.9**n)
    np.testing.assert_allclose(out.posteriors.precision[1], expected, rtol=1e-12)
    assert out.posteriors.count.tolist() == [n, 0]
    assert seen.precision[1, 0, 0] == 51.0  # the input is not modified


# -- sampling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [0.6, 1.0, 4.5])
def test_gamma_sampler_has_the_gamma_mean_and_variance(shape: float) -> None:
    state = np.array([12345], dtype=np.uint64)
    draws = np.array([_gamma(state, shape) for _ in range(40_000)])
    # Gamma(shape, 1): mean = var = shape; 40k draws give a standard error of about 0.5 % of the mean.
    assert draws.mean() == pytest.approx(shape, rel=0.03)
    assert draws.var() == pytest.approx(shape, rel=0.08)
    assert (draws > 0).all()


def test_sampled_expected_reward_follows_the_student_t_posterior() -> None:
    # With no rewards the draws are x'beta for (beta, sigma^2) from the posterior: mean x'm and
    # variance b / (a - 1) * x'P^-1 x (a Student t with 2a degrees of freedom).
    model = BanditModel(prior_a=4.0, prior_b=2.0)
    rng = np.random.default_rng(5)
    d, n = 3, 30_000
    post = ArmPosteriors.prior(1, d, model)
    q = rng.normal(size=(d, d))
    post.precision[0] = q @ q.T + np.eye(d)
    post.mean[0] = [0.3, -0.2, 0.1]
    x = np.tile([1.0, 0.5, -2.0], (n, 1))
    out = thompson_replay(
        x,
        np.full((n, 1), np.nan),
        ready=np.full(n, n + 1),
        seeds=decision_seeds(0, "T", np.arange(n)),
        model=model,
        posteriors=post,
    )
    spread = x[0] @ np.linalg.solve(post.precision[0], x[0])
    draws = out.sampled[:, 0]
    assert draws.mean() == pytest.approx(
        x[0] @ post.mean[0], abs=3 * math.sqrt(2.0 / 3.0 * spread / n) + 1e-3
    )
    assert draws.var() == pytest.approx(2.0 / 3.0 * spread, rel=0.05)
    assert not out.applied.any()


def test_policy_learns_the_best_arm_per_context_with_sublinear_regret() -> None:
    # Three contexts, three arms; arm c pays 0.5 more than the others in context c; noise sd 1.
    rng = np.random.default_rng(42)
    rounds = 5000
    ctx = rng.integers(0, 3, size=rounds)
    x = np.column_stack([np.ones(rounds), ctx == 1, ctx == 2]).astype(np.float64)
    means = np.full((3, 3), 0.1) + 0.5 * np.eye(3)
    rewards = means[ctx] + rng.normal(size=(rounds, 3))
    model = BanditModel(full_information=False, discount=1.0)
    out = thompson_replay(
        x,
        rewards,
        ready=np.arange(1, rounds + 1),
        seeds=decision_seeds(0, "synthetic", np.arange(rounds)),
        model=model,
    )
    regret = np.cumsum(means[ctx, ctx] - means[ctx, out.chosen])  # expected regret, no noise
    # Sublinear: each later block of 1,000 rounds adds less regret than the first, and the second half
    # adds well under the first half's (linear regret would add the same).
    blocks = np.diff(np.r_[0.0, regret[999::1000]])
    assert blocks[-1] < 0.25 * blocks[0]
    assert regret[-1] - regret[2499] < 0.5 * regret[2499]
    assert (out.chosen[-1000:] == ctx[-1000:]).mean() > 0.9


# -- bars: rewards, weights, no lookahead, determinism ----------------------------------------------------


def test_rewards_and_weights_follow_their_definition() -> None:
    bars = _bars()
    settings = _settings("costs.slippage_bps=7", "costs.commission_bps=2", "bandit.horizon=4")
    res = bandit_select(bars, ARMS, settings, start_index=60)
    close = bars["close"].to_numpy()
    targets = np.column_stack([get_strategy(a.name).run(bars, a.params) for a in ARMS])
    ts = bars["ts"].to_list()
    rows = [ts.index(t) for t in res.decisions["ts"].to_list()]
    assert rows[0] >= 60 and np.all(np.diff(rows) == settings.bandit.decision_every)
    # Plain loops: the arm's return over t+1..t+h less costs on its own trades at t..t+h-1, over the
    # trailing per-bar volatility (sample stdev of 20 log returns) times sqrt(h).
    h, cost = 4, 9e-4
    for i, t in enumerate(rows[:-2]):
        logs = [math.log(close[u] / close[u - 1]) for u in range(t - 19, t + 1)]
        mu = sum(logs) / 20
        sigma = math.sqrt(sum((v - mu) ** 2 for v in logs) / 19)
        for j in range(len(ARMS)):
            pnl = sum(targets[u - 1, j] * (close[u] / close[u - 1] - 1) for u in range(t + 1, t + h + 1))
            paid = sum(abs(targets[u, j] - targets[u - 1, j]) for u in range(t, t + h))
            expected = (pnl - cost * paid) / (sigma * math.sqrt(h))
            assert res.decisions["arm_rewards"][i][j] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # Weights: 0 before the first decision, then the chosen arm's own target until the next decision.
    assert (res.weights[: rows[0]] == 0).all()
    names = [a.name for a in ARMS]
    for i, t in enumerate(rows):
        stop = rows[i + 1] if i + 1 < len(rows) else bars.height
        j = names.index(res.decisions["arm"][i])
        assert np.array_equal(res.weights[t:stop], targets[t:stop, j])
        assert res.decisions["reward"][i] == res.decisions["arm_rewards"][i][j] if i < len(rows) - 1 else True
    # The last decision's window runs past the data: its reward is not known.
    assert res.decisions["reward"][-1] is None and res.decisions["arm_rewards"][-1] is None


def test_no_decision_or_posterior_depends_on_a_future_bar() -> None:
    bars = _bars(seed=9)
    settings = _settings()
    cut = 500  # a row index
    full = bandit_select(bars, ARMS, settings, start_index=50, learn_until=cut)
    # The future replaced by something else entirely.
    noise = np.exp(np.random.default_rng(1).normal(0, 0.03, bars.height - cut - 1).cumsum())
    scale = pl.Series(np.r_[np.ones(cut + 1), noise])
    altered = bars.with_columns([pl.col(c) * scale for c in ("open", "high", "low", "close")])
    other = bandit_select(altered, ARMS, settings, start_index=50, learn_until=cut)
    truncated = bandit_select(bars.head(cut + 1), ARMS, settings, start_index=50)
    cut_ts = bars["ts"][cut]
    for res in (other, truncated):
        mine = res.decisions.filter(pl.col("ts") <= cut_ts).drop("reward", "arm_rewards")
        assert mine.height > 50
        assert mine.equals(full.decisions.filter(pl.col("ts") <= cut_ts).drop("reward", "arm_rewards"))
        assert res.posteriors.equals(full.posteriors)
    post = full.posteriors.symbols["ASSET"]
    assert (post.last_update <= cut_ts.timestamp() * 1e9).all() and (post.count > 0).all()
    assert np.array_equal(full.weights[: cut + 1], truncated.weights)


def test_a_reward_is_applied_only_once_its_window_has_closed() -> None:
    # Round j's reward is applied before round ready[j]: changing it cannot move earlier draws.
    x, r = _problem(m=120, seed=3)
    ready = np.minimum(np.arange(120) + 4, 120)
    seeds = np.arange(120, dtype=np.uint64)
    base = thompson_replay(x, r, ready=ready, seeds=seeds, model=BanditModel())
    changed = r.copy()
    changed[60:] += 5.0
    moved = thompson_replay(x, changed, ready=ready, seeds=seeds, model=BanditModel())
    assert np.array_equal(base.sampled[:64], moved.sampled[:64])
    assert not np.array_equal(base.sampled[64:], moved.sampled[64:])
    with pytest.raises(DataError, match="ready"):
        thompson_replay(x, r, ready=np.arange(120), seeds=seeds, model=BanditModel())


def _digest(res) -> str:  # type: ignore[no-untyped-def]
    payload = json.dumps(res.posteriors.to_dict(), sort_keys=True).encode()
    payload += res.decisions.drop("ts").write_json().encode() + res.weights.tobytes()
    return hashlib.sha256(payload).hexdigest()


def test_same_inputs_and_seed_give_the_same_run_in_another_process() -> None:
    bars = _bars(seed=2)
    first = bandit_select(bars, ARMS, _settings(), start_index=50)
    again = bandit_select(bars, ARMS, _settings(), start_index=50)
    assert _digest(first) == _digest(again)
    reseeded = bandit_select(bars, ARMS, _settings("engine.rng_seed=12"), start_index=50)
    assert not np.array_equal(
        np.asarray(reseeded.decisions["sampled"].to_list()), np.asarray(first.decisions["sampled"].to_list())
    )
    script = (
        "import sys; sys.path.insert(0, 'tests/unit');"
        "from test_bandit import _bars, _digest, _settings, ARMS;"
        "from trader.bandit import bandit_select;"
        "print(_digest(bandit_select(_bars(seed=2), ARMS, _settings(), start_index=50)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    child = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == _digest(first)


def test_seeds_are_stable_and_differ_by_symbol_seed_and_time() -> None:
    seeds = decision_seeds(7, "SPY", [0, 86_400 * 10**9])
    # blake2b and splitmix64 written out independently: the seed does not drift between versions.
    key = int.from_bytes(hashlib.blake2b(b"7\x00SPY", digest_size=8).digest(), "little")
    mask = (1 << 64) - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    expected = [mix(key ^ mix((t + 0x9E3779B97F4A7C15) & mask)) for t in (0, 86_400 * 10**9)]
    assert seeds.tolist() == expected
    assert decision_seeds(8, "SPY", [0])[0] != seeds[0] != decision_seeds(7, "QQQ", [0])[0]


# -- posteriors as data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained() -> PosteriorSet:
    settings = _settings()
    res = bandit_select(_bars(seed=5), ARMS, settings, start_index=50)
    other = bandit_select(_bars(seed=6).with_columns(symbol=pl.lit("QQQ")), ARMS, settings, start_index=50)
    return res.posteriors.merge(other.posteriors)


def test_round_trip_is_exact(trained: PosteriorSet, tmp_path: Path) -> None:
    assert sorted(trained.symbols) == ["ASSET", "QQQ"]
    assert PosteriorSet.from_dict(json.loads(json.dumps(trained.to_dict()))).equals(trained)
    for name in ("p.parquet", "p.json"):
        written = trained.write(tmp_path / name)
        back = PosteriorSet.read(written, expect=trained.context)
        assert back.equals(trained)
        assert back.symbols["QQQ"].last_update.tolist() == trained.symbols["QQQ"].last_update.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.parquet"]  # no temp files left
    never = PosteriorSet(trained.context, {"NEW": ArmPosteriors.prior(3, trained.context.dim, BanditModel())})
    assert PosteriorSet.read(never.write(tmp_path / "n.parquet")).equals(never)


def _corrupt_json(trained: PosteriorSet, tmp_path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    data = trained.to_dict()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def _set(data: dict, key: str, value: object) -> None:
    data["symbols"]["QQQ"][1][key] = value


CORRUPTIONS = {
    "shape": (
        lambda d: [row.__setitem__("mean", row["mean"][:-1]) for row in d["symbols"]["QQQ"]],
        DataError,
        r"mean has shape \(3, 6\), expected \(3, 7\)",
    ),
    "ragged": (
        lambda d: _set(d, "mean", d["symbols"]["QQQ"][1]["mean"][:-1]),
        DataError,
        "not a regular array",
    ),
    "nan": (
        lambda d: d["symbols"]["QQQ"][1]["precision"][0].__setitem__(0, math.nan),
        DataError,
        "not finite",
    ),
    "not_pd": (
        lambda d: d["symbols"]["QQQ"][1]["precision"][0].__setitem__(0, -1.0),
        DataError,
        "not positive definite",
    ),
    "asym": (
        lambda d: d["symbols"]["QQQ"][1]["precision"][0].__setitem__(1, 5.0),
        DataError,
        "not symmetric",
    ),
    "a": (lambda d: _set(d, "a", 0.0), DataError, "a of arm rsi_reversion is 0.0"),
    "b": (lambda d: _set(d, "b", -1.0), DataError, "b of arm rsi_reversion"),
    "count": (lambda d: _set(d, "count", 1.5), DataError, "count"),
    "version": (lambda d: d.__setitem__("model_version", MODEL_VERSION + 1), ConfigError, "model version"),
    "fingerprint": (
        lambda d: d["context"]["features"].__setitem__(1, "something_else"),
        DataError,
        "fingerprint",
    ),
    "arms_missing": (lambda d: d["symbols"]["QQQ"].pop(), DataError, "arms must be listed"),
    "garbage": (lambda d: d["symbols"].__setitem__("QQQ", [{"arm": 1}]), DataError, "arms must be listed"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_files_are_refused_with_their_reason(
    trained: PosteriorSet, tmp_path: Path, case: str
) -> None:
    change, error, reason = CORRUPTIONS[case]
    path = _corrupt_json(trained, tmp_path, change)
    with pytest.raises(error, match=reason) as info:
        PosteriorSet.read(path)
    assert str(path) in str(info.value)


def test_mismatched_or_foreign_files_are_refused(trained: PosteriorSet, tmp_path: Path) -> None:
    path = trained.write(tmp_path / "p.parquet")
    other = ContextSpec.from_groups(["regime", "momentum"], [a.name for a in ARMS])
    with pytest.raises(ConfigError, match="different context definition") as info:
        PosteriorSet.read(path, expect=other)
    assert str(path) in str(info.value) and "momentum" in str(info.value)
    with pytest.raises(ConfigError, match="different context definition"):
        PosteriorSet.read(path, expect=ContextSpec.from_groups(["regime"], ["sma_cross", "ema_cross"]))
    # A Parquet file whose numbers were altered after writing is checked just the same.
    table = pq.read_table(path)
    frame = pl.from_arrow(table).with_columns(b=pl.when(pl.col("arm_index") == 2).then(-3.0).otherwise("b"))
    assert isinstance(frame, pl.DataFrame)
    pq.write_table(frame.to_arrow().replace_schema_metadata(table.schema.metadata), tmp_path / "b.parquet")
    with pytest.raises(DataError, match="b of arm donchian_breakout"):
        PosteriorSet.read(tmp_path / "b.parquet")
    pl.DataFrame({"x": [1]}).write_parquet(tmp_path / "plain.parquet")
    with pytest.raises(DataError, match=r"no trader\.bandit metadata"):
        PosteriorSet.read(tmp_path / "plain.parquet")
    (tmp_path / "torn.json").write_text('{"model_version": 1, "context": ')
    with pytest.raises(DataError, match="not readable as JSON"):
        PosteriorSet.read(tmp_path / "torn.json")
    with pytest.raises(DataError, match="no such file"):
        PosteriorSet.read(tmp_path / "absent.parquet")


def test_a_failed_write_leaves_the_old_file(trained: PosteriorSet, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = trained.write(tmp_path / "p.parquet")
    before = path.read_bytes()

    def boom(*_a: object, **_k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        trained.write(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]


# -- warm start -------------------------------------------------------------------------------------------


def test_warm_start_continues_from_the_given_posteriors() -> None:
    bars = _bars(seed=3)
    settings = _settings()
    train_end = 400
    train = bandit_select(bars, ARMS, settings, start_index=50, learn_until=train_end)
    test = bandit_select(bars, ARMS, settings, posteriors=train.posteriors, start_index=train_end + 1)
    cold = bandit_select(bars, ARMS, settings, start_index=train_end + 1)
    assert test.decisions["ts"][0] > bars["ts"][train_end]
    assert test.decisions["ts"].equals(cold.decisions["ts"])
    trained_counts = train.posteriors.symbols["ASSET"].count
    applied = cold.posteriors.symbols["ASSET"].count  # full information: every arm per applied reward
    assert np.array_equal(test.posteriors.symbols["ASSET"].count, trained_counts + applied)
    # The same draws (seeded by symbol and ts) under different posteriors choose differently somewhere.
    assert not test.decisions["sampled"].equals(cold.decisions["sampled"])
    inflated = train.posteriors.inflated(4.0).symbols["ASSET"]
    np.testing.assert_array_equal(inflated.precision * 4.0, train.posteriors.symbols["ASSET"].precision)
    with pytest.raises(ConfigError, match="warm_start_inflation"):
        train.posteriors.inflated(0.5)
    with pytest.raises(ConfigError, match="different context definition"):
        bandit_select(bars, ARMS[:2], settings, posteriors=train.posteriors)


# -- definitions and settings -----------------------------------------------------------------------------


def test_context_definition_and_arm_names() -> None:
    assert set(typing.get_args(BanditFeature)) == set(FEATURE_GROUPS)
    assert arm_names(["a", "b", "a", "a"]) == ("a", "b", "a#2", "a#3")
    settings = load_settings([REPO / "configs" / "base.yaml", REPO / "configs" / "demo.yaml"], env={})
    spec = ContextSpec.from_settings(settings)
    assert spec.features == (
        "bias",
        "regime_trend",
        "regime_chop",
        "regime_volatile",
        "volatility",
        "efficiency_ratio",
        "trend_strength",
    )
    assert spec.arms == ("sma_cross", "rsi_reversion", "donchian_breakout")
    assert spec.fingerprint != ContextSpec.from_groups(settings.bandit.context_features, ARMS[:2]).fingerprint
    res = bandit_select(_bars(), ARMS, _settings("bandit.context_features=[momentum]"), start_index=50)
    context = np.asarray(res.decisions["context"].to_list())
    assert context.shape[1] == 2 and (context[:, 0] == 1).all() and np.abs(context[:, 1]).max() <= 3
    assert res.decisions["regime"].null_count() == res.decisions.height  # no regime feature asked for


def test_bad_requests_are_clear() -> None:
    bars = _bars()
    with pytest.raises(ConfigError, match="no arms"):
        bandit_select(bars, (), _settings())
    with pytest.raises(DataError, match="several symbols"):
        two = pl.concat([bars.with_columns(symbol=pl.lit("A")), bars.with_columns(symbol=pl.lit("B"))])
        bandit_select(two, ARMS, _settings())
    with pytest.raises(DataError, match="no bars"):
        bandit_select(bars.head(0), ARMS, _settings())
    with pytest.raises(DataError, match="ascending"):
        bandit_select(bars.reverse(), ARMS, _settings())
    with pytest.raises(ConfigError, match="start_index"):
        bandit_select(bars, ARMS, _settings(), start_index=-1)
    with pytest.raises(ConfigError, match=r"bandit\.context_features"):
        load_settings([], ["bandit.context_features=[regime, regime]"], env={})
    with pytest.raises(ConfigError, match=r"bandit\.context_features"):
        load_settings([], ["bandit.context_features=[rsi]"], env={})
