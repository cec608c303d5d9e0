"""One walk-forward fold on a symbol batch (trader.foldrun.run_fold): tune on train, trade the unseen test.

The oracle is a plain re-implementation written here: each candidate's weights straight from
``get_strategy(name).run`` (or a hand-built :class:`trader.composer.Composer`), each candidate simulated alone
with :func:`trader.sim.simulate` on each window slice (flat start, ``min_history_bars=0``), its metrics from
:mod:`trader.metrics` and :func:`trader.backtest._round_trip_returns`, the composite score from
:func:`trader.composer.composite_score`, and the winner as the argmax (ties and NaN to the lowest index).
Lookahead is checked by changing bars and asserting what must not move.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trader import metrics
from trader.backtest import _round_trip_returns
from trader.composer import Composer, composite_score
from trader.config import load_settings
from trader.data.synth import synth_bars
from trader.foldrun import FoldOutcome, run_fold, run_folds
from trader.oos import trade_returns
from trader.risk import RiskLimits
from trader.sim import SimConfig, session_index_from_ts, simulate
from trader.strategies import get_strategy
from trader.tuning import Candidate, candidate_grid
from trader.walkforward import Fold

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
D = dt.date
SYMBOLS = ["AAA", "BBB", "CCC"]
START, END = "2018-01-01", "2021-12-31"  # ~500 sessions of warm-up before the train window
FOLD = Fold(0, train=((D(2020, 1, 2), D(2020, 12, 31)),), test=((D(2021, 1, 4), D(2021, 6, 30)),))
# A CPCV-style fold: two train segments, one test segment between them and one after.
SPLIT = Fold(
    3,
    train=((D(2019, 7, 1), D(2019, 12, 31)), (D(2020, 7, 1), D(2020, 12, 31))),
    test=((D(2020, 1, 10), D(2020, 6, 19)), (D(2021, 1, 4), D(2021, 6, 30))),
)
DAILY_PPY = 252.0


# -- data ------------------------------------------------------------------------------------------------


def _symbol_bars(symbol: str, seed: int = 11, start: str = START, end: str = END) -> pl.DataFrame:
    return synth_bars(symbol, "1d", start, end, seed=seed).with_columns(symbol=pl.lit(symbol))


def _batch(
    replace: tuple[dt.date, dt.date] | None = None, seed: int = 11, scale: float = 1.0
) -> pl.DataFrame:
    """The batch's bars; with ``replace``, the bars of those sessions come from the path of ``seed`` with
    prices times ``scale`` (0.1: a crash into them, 10: a boom)."""
    frames = []
    for symbol in SYMBOLS:
        base = _symbol_bars(symbol)
        if replace is not None:
            day = pl.col("ts").dt.date()
            inside = day.is_between(replace[0], replace[1])
            other = _symbol_bars(symbol, seed=seed).filter(inside)
            other = other.with_columns(pl.col("open", "high", "low", "close") * scale)
            assert other.height > 0
            base = pl.concat([base.filter(~inside), other]).sort("ts")
        frames.append(base)
    return pl.concat(frames)


@pytest.fixture(scope="module")
def demo() -> Any:
    return load_settings([CONFIGS / "base.yaml", CONFIGS / "demo.yaml"], env={})


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return _batch()


@pytest.fixture(scope="module", params=["strategy", "composer"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def candidates(demo: Any, mode: str) -> list[Candidate]:
    if mode == "strategy":
        return candidate_grid(demo, "sma_cross", {"fast": 10, "slow": 50}, size=6)
    return candidate_grid(demo, size=5)


@pytest.fixture(scope="module")
def outcome(bars: pl.DataFrame, candidates: list[Candidate], demo: Any) -> FoldOutcome:
    return run_fold(bars, FOLD, candidates, demo, interval="1d")


# -- the oracle --------------------------------------------------------------------------------------------


def _weights(group: pl.DataFrame, candidate: Candidate, settings: Any) -> np.ndarray:
    """The candidate's target weights on one symbol's bars, computed without trader.tuning."""
    if candidate.strategy == "composer":
        specs = tuple((get_strategy(n), get_strategy(n).validate(p)) for n, p in candidate.params.items())
        return dataclasses.replace(Composer.from_settings(settings), strategies=specs).target_weights(group)
    w = get_strategy(candidate.strategy).run(group, candidate.params)
    w[: settings.engine.min_history_bars] = 0.0
    return w


def _segments(
    group: pl.DataFrame, ranges: tuple[tuple[dt.date, dt.date], ...], tz: str | None
) -> list[np.ndarray]:
    """Row indices of each range's bars; a session is a daily bar's UTC date, else its date in ``tz``."""
    ts = group["ts"] if tz is None else group["ts"].dt.convert_time_zone(tz)
    days = ts.dt.date().to_list()
    out = []
    for start, end in ranges:
        idx = np.array([i for i, d in enumerate(days) if start <= d <= end], dtype=np.int64)
        if idx.size:
            out.append(idx)
    return out


@dataclasses.dataclass
class _Run:
    returns: np.ndarray  # per-bar returns of the windows, stacked
    trips: np.ndarray  # closed round-trip returns, counted per window
    trades: pl.DataFrame  # fills with ts


def _simulate(
    group: pl.DataFrame, w: np.ndarray, segments: list[np.ndarray], settings: Any, ppy: float, tz: str | None
) -> _Run:
    config = dataclasses.replace(SimConfig.from_settings(settings), min_history_bars=0)
    limits = RiskLimits.from_settings(settings, periods_per_year=ppy)
    o, c = group["open"].to_numpy(), group["close"].to_numpy()
    rets, trips, trades = [], [], []
    for idx in segments:
        ts = group["ts"].gather(idx)
        session = None if tz is None else session_index_from_ts(ts, tz)
        res = simulate(o[idx], c[idx], w[idx], config=config, limits=limits, session_index=session)
        rets.append(res.returns)
        fills = res.trades.with_columns(ts=ts.gather(res.trades["bar"]), symbol=pl.lit("X"))
        trips.append(_round_trip_returns(fills))
        trades.append(fills.select("ts", "side", "qty", "price", "commission", "reason"))
    return _Run(np.concatenate(rets), np.concatenate(trips), pl.concat(trades))


def _score(run: _Run, settings: Any, ppy: float) -> float:
    t = run.trips
    m = {
        "cagr": metrics.cagr(run.returns, periods_per_year=ppy),
        "sharpe": metrics.sharpe(run.returns, periods_per_year=ppy),
        "max_drawdown": metrics.max_drawdown(run.returns),
        "win_rate": metrics.win_rate(t) if t.size else math.nan,
        "avg_trade": metrics.avg_trade_return(t) if t.size else math.nan,
    }
    return composite_score(m, settings.composer.score_weights)


def _argmax(scores: list[float]) -> int:
    best = 0
    for i, s in enumerate(scores):
        if math.isfinite(s) and (not math.isfinite(scores[best]) or s > scores[best]):
            best = i
    return best


@dataclasses.dataclass
class _Expected:
    scores: list[float]
    train_sharpes: list[float]
    best: int
    test: _Run
    test_segments: list[np.ndarray]


def _expect(
    group: pl.DataFrame,
    fold: Fold,
    candidates: list[Candidate],
    settings: Any,
    ppy: float = DAILY_PPY,
    tz: str | None = None,
) -> _Expected:
    train = _segments(group, fold.train, tz)
    test = _segments(group, fold.test, tz)
    weights = [_weights(group, c, settings) for c in candidates]
    runs = [_simulate(group, w, train, settings, ppy, tz) for w in weights]
    scores = [_score(r, settings, ppy) for r in runs]
    best = _argmax(scores)
    sharpes = [float(metrics.sharpe(r.returns, periods_per_year=ppy)) for r in runs]
    return _Expected(scores, sharpes, best, _simulate(group, weights[best], test, settings, ppy, tz), test)


def _group(bars: pl.DataFrame, symbol: str) -> pl.DataFrame:
    return bars.filter(pl.col("symbol") == symbol).sort("ts")


# -- selection and OOS returns -------------------------------------------------------------------------------


def test_the_winner_is_the_argmax_of_train_scores(
    outcome: FoldOutcome, bars: pl.DataFrame, candidates: list[Candidate], demo: Any
) -> None:
    chosen = []
    for symbol in SYMBOLS:
        exp = _expect(_group(bars, symbol), FOLD, candidates, demo)
        row = outcome.params.filter(pl.col("symbol") == symbol).row(0, named=True)
        assert row["candidate"] == exp.best, symbol
        assert row["strategy"] == candidates[exp.best].strategy
        assert row["params"] == candidates[exp.best].to_json()
        assert row["n_candidates"] == len(candidates)
        assert row["train_score"] == pytest.approx(exp.scores[exp.best], rel=1e-9)
        assert row["train_sharpe"] == pytest.approx(exp.train_sharpes[exp.best], rel=1e-9)
        per_period = [s / math.sqrt(DAILY_PPY) for s in exp.train_sharpes if math.isfinite(s)]
        assert row["trial_sharpe_var"] == pytest.approx(statistics.variance(per_period), rel=1e-9)
        chosen.append(exp.best)
    # The check means something only if tuning moved away from the configuration somewhere.
    assert any(best != 0 for best in chosen)


def test_oos_returns_are_the_winner_simulated_on_the_test_slice(
    outcome: FoldOutcome, bars: pl.DataFrame, candidates: list[Candidate], demo: Any
) -> None:
    for symbol in SYMBOLS:
        group = _group(bars, symbol)
        exp = _expect(group, FOLD, candidates, demo)
        got = outcome.returns.filter(pl.col("symbol") == symbol).sort("ts")
        assert got["ts"].to_list() == group["ts"].gather(np.concatenate(exp.test_segments)).to_list()
        np.testing.assert_allclose(got["return"].to_numpy(), exp.test.returns, rtol=1e-12, atol=1e-15)
        assert (got["fold"] == FOLD.fold).all()
        fills = outcome.trades.filter(pl.col("symbol") == symbol).sort("ts", maintain_order=True)
        assert_frame_equal(fills.select(exp.test.trades.columns), exp.test.trades, check_dtypes=False)
    assert outcome.trades.height > 0


def _in(ranges: tuple[tuple[dt.date, dt.date], ...], ts: pl.Series) -> bool:
    return all(any(a <= d <= b for a, b in ranges) for d in ts.dt.date().to_list())


def test_every_output_lies_in_the_test_window(outcome: FoldOutcome, bars: pl.DataFrame) -> None:
    for name in ("returns", "trades", "risk_events", "selection"):
        frame = getattr(outcome, name)
        assert _in(FOLD.test, frame["ts"]), name
    for symbol in SYMBOLS:
        test_bars = _group(bars, symbol).filter(pl.col("ts").dt.date().is_between(*FOLD.test[0]))
        sel = outcome.selection.filter(pl.col("symbol") == symbol)
        assert sel["bars"].sum() == test_bars.height  # selection runs cover the test bars exactly once
        assert sel["ts"][0] == test_bars["ts"][0]


def test_benchmark_is_buy_and_hold_from_the_first_test_open(outcome: FoldOutcome, bars: pl.DataFrame) -> None:
    for symbol in SYMBOLS:
        test_bars = _group(bars, symbol).filter(pl.col("ts").dt.date().is_between(*FOLD.test[0]))
        prev = test_bars["open"][0]
        expected = []
        for close in test_bars["close"].to_list():
            expected.append(close / prev - 1.0)
            prev = close
        got = outcome.returns.filter(pl.col("symbol") == symbol).sort("ts")["benchmark_return"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        growth = float(np.prod(1.0 + got))
        assert growth == pytest.approx(test_bars["close"][-1] / test_bars["open"][0], rel=1e-10)


# -- no lookahead ------------------------------------------------------------------------------------------


def _assert_same(a: FoldOutcome, b: FoldOutcome) -> None:
    for name in ("returns", "trades", "risk_events", "selection", "params"):
        assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.failures == b.failures
    assert (a.fold, a.symbols) == (b.fold, b.symbols)


@pytest.mark.parametrize(("seed", "scale"), [(99, 1.0), (11, 0.1), (11, 10.0)])
def test_bars_after_the_test_window_change_nothing(
    outcome: FoldOutcome, candidates: list[Candidate], demo: Any, seed: int, scale: float
) -> None:
    later = _batch(replace=(D(2021, 7, 1), D(2021, 12, 31)), seed=seed, scale=scale)
    assert later.filter(pl.col("ts").dt.date() > D(2021, 6, 30)).height > 100
    _assert_same(run_fold(later, FOLD, candidates, demo, interval="1d"), outcome)
    # Dropping them changes nothing either.
    cut = later.filter(pl.col("ts").dt.date() <= D(2021, 6, 30))
    _assert_same(run_fold(cut, FOLD, candidates, demo, interval="1d"), outcome)


def test_test_window_bars_do_not_change_the_choice(
    outcome: FoldOutcome, candidates: list[Candidate], demo: Any
) -> None:
    changed = run_fold(_batch(replace=FOLD.test[0], seed=99), FOLD, candidates, demo, interval="1d")
    assert_frame_equal(changed.params, outcome.params)  # the train window alone decides
    # ...while the test window itself did change (so the assertion above could have failed).
    a = changed.returns.sort("symbol", "ts")
    b = outcome.returns.sort("symbol", "ts")
    assert not np.allclose(a["benchmark_return"].to_numpy(), b["benchmark_return"].to_numpy())


def test_run_fold_is_deterministic(
    outcome: FoldOutcome, bars: pl.DataFrame, candidates: list[Candidate], demo: Any
) -> None:
    _assert_same(run_fold(bars, FOLD, candidates, demo, interval="1d"), outcome)
    # Row order of the input does not matter either.
    shuffled = bars.sample(fraction=1.0, shuffle=True, seed=5)
    _assert_same(run_fold(shuffled, FOLD, candidates, demo, interval="1d"), outcome)


def test_several_folds_at_once_equal_each_fold_alone(
    outcome: FoldOutcome, bars: pl.DataFrame, candidates: list[Candidate], demo: Any
) -> None:
    together = run_folds(bars, [SPLIT, FOLD], candidates, demo, interval="1d")
    assert [o.fold for o in together] == [SPLIT.fold, FOLD.fold]
    _assert_same(together[1], outcome)
    _assert_same(together[0], run_fold(bars, SPLIT, candidates, demo, interval="1d"))


# -- symbols that cannot be run ------------------------------------------------------------------------------


def test_symbols_without_enough_bars_are_failures_naming_the_window(demo: Any) -> None:
    candidates = candidate_grid(demo, "sma_cross", size=3)
    train, test = FOLD.train[0], FOLD.test[0]
    day = pl.col("ts").dt.date()
    batch = pl.concat(
        [
            _symbol_bars("AAA"),
            _symbol_bars("LATE").filter(day >= D(2021, 2, 1)),  # listed after the train window
            _symbol_bars("THIN").filter(day <= D(2020, 1, 2)),  # one train bar
            _symbol_bars("GONE").filter(day <= D(2020, 12, 31)),  # delisted before the test window
            _symbol_bars("ONCE").filter(day <= D(2021, 1, 4)),  # one test bar
        ]
    )
    wanted = ["AAA", "LATE", "THIN", "GONE", "ONCE", "NONE"]
    out = run_fold(batch, FOLD, candidates, demo, interval="1d", symbols=wanted)
    assert out.symbols == wanted
    reasons = {f["symbol"]: f["reason"] for f in out.failures}
    assert all(f["fold"] == FOLD.fold for f in out.failures)
    assert len(out.failures) == len(reasons) == 5
    expected = {
        "LATE": ("0 bars", "train window", train),
        "THIN": ("1 bars", "train window", train),
        "GONE": ("0 bars", "test window", test),
        "ONCE": ("1 bars", "test window", test),
    }
    for symbol, (count, window, (start, end)) in expected.items():
        assert count in reasons[symbol] and window in reasons[symbol], reasons[symbol]
        assert str(start) in reasons[symbol] and str(end) in reasons[symbol], reasons[symbol]
    assert "no bars" in reasons["NONE"]
    # Every wanted symbol is either run or reported; a failed one leaves no rows anywhere.
    assert set(out.params["symbol"]) == {"AAA"}
    for name in ("returns", "trades", "selection"):
        assert set(getattr(out, name)["symbol"]) <= {"AAA"}, name
    assert set(out.returns["symbol"]) == {"AAA"}


def test_no_bars_at_all_reports_every_symbol(demo: Any) -> None:
    # cluster.fanout passes a frame without columns after a failed read.
    candidates = candidate_grid(demo, "sma_cross", size=2)
    out = run_fold(pl.DataFrame(), FOLD, candidates, demo, interval="1d", symbols=["AAA", "BBB"])
    assert [f["symbol"] for f in out.failures] == ["AAA", "BBB"]
    assert out.returns.is_empty() and out.params.is_empty()


# -- several windows per fold (CPCV) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split_outcome(bars: pl.DataFrame, demo: Any) -> tuple[FoldOutcome, list[Candidate]]:
    candidates = candidate_grid(demo, "sma_cross", {"fast": 10, "slow": 50}, size=6)
    return run_fold(bars, SPLIT, candidates, demo, interval="1d"), candidates


def test_each_test_segment_starts_flat(
    split_outcome: tuple[FoldOutcome, list[Candidate]], bars: pl.DataFrame, demo: Any
) -> None:
    out, candidates = split_outcome
    for symbol in SYMBOLS:
        group = _group(bars, symbol)
        best = out.params.filter(pl.col("symbol") == symbol)["candidate"][0]
        test = _segments(group, SPLIT.test, None)
        assert len(test) == 2
        expected = _simulate(group, _weights(group, candidates[best], demo), test, demo, DAILY_PPY, None)
        got = out.returns.filter(pl.col("symbol") == symbol).sort("ts")
        assert got["ts"].to_list() == group["ts"].gather(np.concatenate(test)).to_list()
        np.testing.assert_allclose(got["return"].to_numpy(), expected.returns, rtol=1e-12, atol=1e-15)
        assert _in(SPLIT.test, got["ts"])


def test_train_scores_count_round_trips_per_segment(
    split_outcome: tuple[FoldOutcome, list[Candidate]], bars: pl.DataFrame, demo: Any
) -> None:
    # One candidate, so train_score is that candidate's score whatever the ranking.
    candidates = split_outcome[1][:1]
    out = run_fold(bars, SPLIT, candidates, demo, interval="1d")
    for symbol in SYMBOLS:
        exp = _expect(_group(bars, symbol), SPLIT, candidates, demo)
        row = out.params.filter(pl.col("symbol") == symbol).row(0, named=True)
        assert row["train_score"] == pytest.approx(exp.scores[0], rel=1e-9), symbol


# -- intraday bars -----------------------------------------------------------------------------------------


def test_intraday_fold_uses_exchange_sessions(demo: Any) -> None:
    tz = "America/New_York"
    symbols = ["MMM", "NNN"]
    minute = pl.concat(
        [
            synth_bars(s, "1m", "2024-03-01", "2024-03-12", seed=4).with_columns(symbol=pl.lit(s))
            for s in symbols
        ]
    )
    fold = Fold(0, train=((D(2024, 3, 5), D(2024, 3, 7)),), test=((D(2024, 3, 8), D(2024, 3, 11)),))
    candidates = candidate_grid(demo, "ema_cross", {"fast": 5, "slow": 30}, size=4, points_per_param=3)
    out = run_fold(minute, fold, candidates, demo, interval="1m", tz=tz)
    assert not out.failures
    ppy = 252.0 * 390.0  # one-minute bars in a year of 6.5 h sessions
    for symbol in symbols:
        group = _group(minute, symbol)
        exp = _expect(group, fold, candidates, demo, ppy=ppy, tz=tz)
        assert out.params.filter(pl.col("symbol") == symbol)["candidate"][0] == exp.best
        got = out.returns.filter(pl.col("symbol") == symbol).sort("ts")
        assert got.height == 2 * 390
        local_days = set(got["ts"].dt.convert_time_zone(tz).dt.date().to_list())
        assert local_days == {D(2024, 3, 8), D(2024, 3, 11)}
        np.testing.assert_allclose(got["return"].to_numpy(), exp.test.returns, rtol=1e-12, atol=1e-15)


def test_oos_round_trips_are_counted_per_test_segment(
    split_outcome: tuple[FoldOutcome, list[Candidate]], bars: pl.DataFrame, demo: Any
) -> None:
    out, candidates = split_outcome
    for symbol in SYMBOLS:
        group = _group(bars, symbol)
        best = out.params.filter(pl.col("symbol") == symbol)["candidate"][0]
        test = _segments(group, SPLIT.test, None)
        expected = _simulate(group, _weights(group, candidates[best], demo), test, demo, DAILY_PPY, None)
        got = trade_returns(out.trades.filter(pl.col("symbol") == symbol))
        np.testing.assert_allclose(got, expected.trips, rtol=1e-12, err_msg=symbol)


def test_sleeve_rules_split_cash_and_scale_the_per_symbol_cap(demo: Any) -> None:
    from trader.foldrun import sleeve_rules

    settings = load_settings([CONFIGS / "base.yaml"], ["risk.max_position_pct=0.1"], env={})
    one_config, one_limits = sleeve_rules(settings, 252.0, 1)
    assert one_config.initial_cash == settings.engine.initial_cash and one_config.min_history_bars == 0
    assert one_limits.max_position_pct == pytest.approx(0.1)
    config, limits = sleeve_rules(settings, 252.0, 4)
    # A quarter of the cash; 10 % of the portfolio is 40 % of a quarter-sized sleeve.
    assert config.initial_cash == pytest.approx(settings.engine.initial_cash / 4)
    assert limits.max_position_pct == pytest.approx(0.4)
    assert sleeve_rules(settings, 252.0, 20)[1].max_position_pct == 1.0
    assert limits.max_drawdown == one_limits.max_drawdown


def test_bandit_folds_learn_on_train_and_never_see_later_bars(demo: Any, bars: pl.DataFrame) -> None:
    arms = [s.name for s in demo.composer.strategies]
    out = run_fold(bars, FOLD, [], demo, interval="1d", selection="bandit")
    assert not out.failures
    assert out.params["strategy"].to_list() == ["bandit"] * len(SYMBOLS)
    assert set(out.selection["arm"].drop_nulls().unique().to_list()) <= set(arms)
    test_end = FOLD.test[0][1]
    assert out.returns["ts"].dt.date().max() <= test_end
    # Replacing every bar after the test window (a crash into them) changes nothing at all.
    later = (test_end + dt.timedelta(days=1), D(2021, 12, 31))
    again = run_fold(_batch(replace=later, scale=0.1), FOLD, [], demo, interval="1d", selection="bandit")
    for name in ("returns", "trades", "selection", "params"):
        assert_frame_equal(getattr(out, name), getattr(again, name))
    # One OOS return per test-window bar of every symbol.
    assert out.returns.height == sum(
        _group(bars, s).filter(pl.col("ts").dt.date().is_between(*FOLD.test[0])).height for s in SYMBOLS
    )
