"""Out-of-sample stitching and summary (trader.oos).

Oracles: a small stitching example worked by hand (overlapping folds, a symbol missing on a bar), plain loops
for compounded returns and the moments of the stitched series, :func:`trader.backtest._round_trip_returns`
for trades, and :func:`trader.metrics.deflated_sharpe_ratio` fed with inputs computed here. CPCV paths: a
6-group, 2-test-group plan whose per-fold returns are a known function of (fold, symbol, day), so each path's
series, metrics and their distribution are recomputed here by plain loops over the plan's assignment.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from typing import Any

import numpy as np
import polars as pl
import pytest

from trader.metrics import deflated_sharpe_ratio
from trader.oos import cpcv_paths, oos_summary, stitch_equity, trade_returns
from trader.walkforward import TABLE_SCHEMA, FoldPlan, cpcv_plan, walk_forward_plan

UTC = dt.UTC
RETURN_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "symbol": pl.String,
    "fold": pl.Int64,
    "return": pl.Float64,
    "benchmark_return": pl.Float64,
}
TRADE_SCHEMA = {
    "ts": pl.Datetime("ns", "UTC"),
    "symbol": pl.String,
    "fold": pl.Int64,
    "side": pl.String,
    "qty": pl.Float64,
    "price": pl.Float64,
    "commission": pl.Float64,
    "reason": pl.String,
}


def _day(n: int) -> dt.datetime:
    return dt.datetime(2021, 1, 4, tzinfo=UTC) + dt.timedelta(days=n)


def _returns(rows: list[tuple[int, str, int, float, float]]) -> pl.DataFrame:
    """Rows of (fold, symbol, day, return, benchmark_return)."""
    return pl.DataFrame(
        {
            "ts": [_day(d) for _, _, d, _, _ in rows],
            "symbol": [s for _, s, _, _, _ in rows],
            "fold": [f for f, _, _, _, _ in rows],
            "return": [r for *_, r, _ in rows],
            "benchmark_return": [b for *_, b in rows],
        },
        schema=RETURN_SCHEMA,
    )


def _trades(rows: list[tuple[int, str, int, float, float, float]]) -> pl.DataFrame:
    """Rows of (fold, symbol, day, signed qty, price, commission)."""
    return pl.DataFrame(
        {
            "ts": [_day(d) for _, _, d, *_ in rows],
            "symbol": [s for _, s, *_ in rows],
            "fold": [f for f, *_ in rows],
            "side": ["buy" if q > 0 else "sell" for *_, q, _, _ in rows],
            "qty": [abs(q) for *_, q, _, _ in rows],
            "price": [p for *_, p, _ in rows],
            "commission": [c for *_, c in rows],
            "reason": ["signal"] * len(rows),
        },
        schema=TRADE_SCHEMA,
    )


# -- stitch_equity -----------------------------------------------------------------------------------------


def test_stitch_worked_example() -> None:
    # Folds 0 and 1 both test day 1; fold 0 (the lowest) wins there even though fold 1's rows come first.
    # Day 3 has only A: the mean is over the sleeves that have a bar.
    rows = [
        (1, "A", 1, 0.50, 0.40),
        (1, "B", 1, -0.30, -0.30),
        (1, "A", 2, 0.03, 0.02),
        (1, "B", 2, 0.01, 0.00),
        (1, "A", 3, 0.04, 0.05),
        (0, "A", 0, 0.01, 0.02),
        (0, "B", 0, -0.01, 0.01),
        (0, "A", 1, 0.02, -0.01),
        (0, "B", 1, 0.00, 0.03),
    ]
    out = stitch_equity(_returns(rows), 1000.0)
    assert out.columns == ["ts", "equity", "benchmark", "return", "benchmark_return"]
    assert out["ts"].to_list() == [_day(d) for d in range(4)]
    port = [(0.01 - 0.01) / 2, (0.02 + 0.00) / 2, (0.03 + 0.01) / 2, 0.04]
    bench = [(0.02 + 0.01) / 2, (-0.01 + 0.03) / 2, (0.02 + 0.00) / 2, 0.05]
    np.testing.assert_allclose(out["return"].to_numpy(), port, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["benchmark_return"].to_numpy(), bench, rtol=1e-12)
    np.testing.assert_allclose(out["equity"].to_numpy(), [1000.0, 1010.0, 1030.2, 1071.408], rtol=1e-12)
    np.testing.assert_allclose(
        out["benchmark"].to_numpy(), [1015.0, 1025.15, 1035.4015, 1087.171575], rtol=1e-12
    )
    # Row order does not matter.
    shuffled = _returns(rows).sample(fraction=1.0, shuffle=True, seed=3)
    assert stitch_equity(shuffled, 1000.0).equals(out)


def test_stitch_of_nothing_is_an_empty_frame() -> None:
    out = stitch_equity(pl.DataFrame(schema=RETURN_SCHEMA), 1000.0)
    assert out.is_empty()
    assert out.schema["ts"] == pl.Datetime("ns", "UTC")
    assert out.columns == ["ts", "equity", "benchmark", "return", "benchmark_return"]


# -- trade_returns -----------------------------------------------------------------------------------------


def test_trade_returns_are_per_symbol_and_fold() -> None:
    trades = _trades(
        [
            (1, "A", 5, 5.0, 12.0, 0.0),
            (0, "A", 0, 10.0, 10.0, 0.0),  # still open when fold 0 ends: no trip, and no netting with fold 1
            (1, "A", 7, -5.0, 13.0, 0.0),
            (0, "B", 1, 4.0, 50.0, 1.0),
            (0, "B", 2, -4.0, 55.0, 1.0),
        ]
    )
    got = trade_returns(trades)
    # A in fold 1: 5 * (13 - 12) on 60; B in fold 0: 4 * 5 - 2 on 200.
    np.testing.assert_allclose(got, [5.0 / 60.0, 18.0 / 200.0], rtol=1e-12)
    assert trade_returns(trades.clear()).size == 0


# -- oos_summary ---------------------------------------------------------------------------------------------


def _plan() -> pl.DataFrame:
    rows = []
    for fold in range(3):
        base = dt.date(2020, 1, 1) + dt.timedelta(days=100 * fold)
        rows.append((fold, "train", 0, base, base + dt.timedelta(days=59)))
        rows.append((fold, "test", 0, base + dt.timedelta(days=60), base + dt.timedelta(days=89)))
    return pl.DataFrame(rows, schema=TABLE_SCHEMA, orient="row")


@pytest.fixture(scope="module")
def case() -> dict[str, Any]:
    rng = np.random.default_rng(42)
    rows = []
    for fold, symbols in ((0, ("A", "B")), (1, ("A",))):
        for day in range(25):
            for symbol in symbols:
                rows.append(
                    (
                        fold,
                        symbol,
                        30 * fold + day,
                        float(rng.normal(0.001, 0.01)),
                        float(rng.normal(0, 0.01)),
                    )
                )
    returns = _returns(rows)
    trades = _trades(
        [
            (0, "A", 1, 10.0, 10.0, 1.0),
            (0, "A", 4, -10.0, 11.0, 1.0),
            (0, "B", 2, 3.0, 20.0, 0.0),
            (1, "A", 31, 2.0, 30.0, 0.0),
            (1, "A", 33, -2.0, 29.0, 0.0),
            (1, "A", 40, 1.0, 30.0, 0.0),  # open at the end
        ]
    )
    params = pl.DataFrame(
        {
            "fold": [0, 0, 1],
            "symbol": ["A", "B", "A"],
            "trial_sharpe_var": [0.0004, None, 0.0010],
        }
    )
    failures = [
        {"fold": 1, "symbol": "B", "reason": "3 bars in the test window 2020-06-09..2020-07-08"},
        {"fold": 2, "symbol": "A", "reason": "0 bars in the train window 2020-07-19..2020-09-16"},
        {"fold": 2, "symbol": "B", "reason": "no bars in the store for this span"},
    ]
    summary = oos_summary(
        returns=returns,
        trades=trades,
        params=params,
        plan_table=_plan(),
        failures=failures,
        interval="1d",
        initial_cash=1000.0,
        n_trials=20,
    )
    return {"returns": returns, "trades": trades, "failures": failures, "summary": summary}


def _compound(values: list[float]) -> float:
    growth = 1.0
    for v in values:
        growth *= 1.0 + v
    return growth - 1.0


def _port(returns: pl.DataFrame) -> list[float]:
    """Equal-weight mean per bar, by hand (no overlaps in this case)."""
    by_ts: dict[Any, list[float]] = {}
    for ts, r in returns.select("ts", "return").iter_rows():
        by_ts.setdefault(ts, []).append(r)
    return [statistics.mean(by_ts[t]) for t in sorted(by_ts)]


def test_summary_parts(case: dict[str, Any]) -> None:
    assert set(case["summary"]) == {
        "oos",
        "benchmark",
        "per_fold",
        "per_symbol",
        "dsr",
        "failed_folds",
        "paths",
    }


def test_per_fold_status_reason_and_metrics(case: dict[str, Any]) -> None:
    per_fold = case["summary"]["per_fold"]
    plan = _plan().filter(pl.col("role") == "test")
    assert [row["fold"] for row in per_fold] == [0, 1, 2]
    assert [row["status"] for row in per_fold] == ["ok", "partial", "failed"]
    for row, (start, end) in zip(per_fold, plan.select("start", "end").iter_rows(), strict=True):
        assert (row["test_start"], row["test_end"]) == (str(start), str(end))
    assert per_fold[0]["reason"] is None
    assert per_fold[1]["reason"] == "B: 3 bars in the test window 2020-06-09..2020-07-08"
    assert "A: 0 bars in the train window" in per_fold[2]["reason"] and "B: no bars" in per_fold[2]["reason"]
    assert per_fold[2]["sharpe"] is None and per_fold[2]["total_return"] is None
    assert per_fold[2]["n_trades"] == 0
    for row in per_fold[:2]:
        sub = case["returns"].filter(pl.col("fold") == row["fold"])
        port = _port(sub)
        assert row["total_return"] == pytest.approx(_compound(port), rel=1e-10)
        expected_sharpe = statistics.mean(port) / statistics.stdev(port) * math.sqrt(252)
        assert row["sharpe"] == pytest.approx(expected_sharpe, rel=1e-9)


def test_failed_folds_list_every_failure(case: dict[str, Any]) -> None:
    failed = case["summary"]["failed_folds"]
    assert [f["fold"] for f in failed] == [1, 2]
    assert failed[1]["symbols"] == ["A", "B"]
    for f in failed:
        for failure in case["failures"]:
            if failure["fold"] == f["fold"]:
                assert failure["reason"] in f["reason"]


def test_portfolio_and_per_symbol_figures(case: dict[str, Any]) -> None:
    summary, returns = case["summary"], case["returns"]
    port = _port(returns)
    assert summary["oos"]["total_return"] == pytest.approx(_compound(port), rel=1e-10)
    assert summary["oos"]["n_periods"] == len(port)
    # Trips: A fold 0 (1), A fold 1 (1; the last buy stays open); B never closes.
    assert summary["oos"]["n_trades"] == 2
    assert summary["oos"]["win_rate"] == pytest.approx(0.5)
    assert set(summary["per_symbol"]) == {"A", "B"}
    for symbol in ("A", "B"):
        sub = returns.filter(pl.col("symbol") == symbol).sort("ts")
        got = summary["per_symbol"][symbol]
        assert got["total_return"] == pytest.approx(_compound(sub["return"].to_list()), rel=1e-10)
        assert got["benchmark_total_return"] == pytest.approx(
            _compound(sub["benchmark_return"].to_list()), rel=1e-10
        )
    assert summary["per_symbol"]["A"]["n_trades"] == 2
    assert summary["per_symbol"]["B"]["n_trades"] == 0


def test_deflated_sharpe_from_the_inputs(case: dict[str, Any]) -> None:
    port = _port(case["returns"])
    n = len(port)
    mean = sum(port) / n
    m2 = sum((x - mean) ** 2 for x in port) / n
    m3 = sum((x - mean) ** 3 for x in port) / n
    m4 = sum((x - mean) ** 4 for x in port) / n
    sr = statistics.mean(port) / statistics.stdev(port)
    var_trials = (0.0004 + 0.0010) / 2  # mean over (fold, symbol) of the non-null variances
    dsr = case["summary"]["dsr"]
    assert dsr["n_trials"] == 20
    assert dsr["n_observations"] == n
    assert dsr["sharpe_per_period"] == pytest.approx(sr, rel=1e-10)
    assert dsr["var_trials"] == pytest.approx(var_trials, rel=1e-12)
    assert dsr["skewness"] == pytest.approx(m3 / m2**1.5, rel=1e-9)
    assert dsr["kurtosis"] == pytest.approx(m4 / m2**2, rel=1e-9)
    expected = deflated_sharpe_ratio(sr, 20, var_trials, n, m3 / m2**1.5, m4 / m2**2)
    assert dsr["deflated_sharpe"] == pytest.approx(expected, rel=1e-9)
    assert 0.0 <= dsr["deflated_sharpe"] <= 1.0


@pytest.mark.parametrize("n_trials", [1, 20])
def test_deflated_sharpe_needs_trials_and_their_variance(case: dict[str, Any], n_trials: int) -> None:
    # One configuration (no selection to deflate), or no trial variance at all: no DSR, and a note why.
    params = pl.DataFrame(
        {"fold": [0], "symbol": ["A"], "trial_sharpe_var": [None if n_trials > 1 else 0.001]},
        schema={"fold": pl.Int64, "symbol": pl.String, "trial_sharpe_var": pl.Float64},
    )
    summary = oos_summary(
        returns=case["returns"],
        trades=case["trades"],
        params=params,
        plan_table=_plan(),
        failures=[],
        interval="1d",
        initial_cash=1000.0,
        n_trials=n_trials,
    )
    assert summary["dsr"]["deflated_sharpe"] is None
    assert summary["dsr"]["note"]
    assert [row["status"] for row in summary["per_fold"]] == ["ok", "ok", "failed"]
    assert summary["per_fold"][2]["reason"] is None


# -- CPCV paths ---------------------------------------------------------------------------------------------
CV_DAYS = [dt.date(2021, 3, 1) + dt.timedelta(days=i) for i in range(60)]
CV_SYMBOLS = ("A", "B")


def _cv_plan() -> FoldPlan:
    # N = 6 groups of 10 days, k = 2: C(6, 2) = 15 splits and C(5, 1) = 5 paths.
    return cpcv_plan(CV_DAYS, n_groups=6, k_test_groups=2, purge=1, embargo=1)


def _cv_return(fold: int, symbol: str, day: int) -> float:
    """A level per fold (negative for folds 0-6, zero for 7, positive after), a wiggle, a symbol offset."""
    return 0.001 * (fold - 7) + 0.002 * math.sin(day + fold) + (0.0005 if symbol == "A" else -0.0003)


def _cv_returns(plan: FoldPlan) -> pl.DataFrame:
    rows = []
    for fold in plan.folds:
        for i, day in enumerate(CV_DAYS):
            if fold.test_mask([day])[0]:
                for symbol in CV_SYMBOLS:
                    rows.append((fold.fold, symbol, day, _cv_return(fold.fold, symbol, i), 0.0))
    # Rows of fold 0 outside its test groups (0, 1): no path may take them.
    rows += [(0, "A", CV_DAYS[55], 9.9, 0.0), (0, "B", CV_DAYS[25], -0.9, 0.0)]
    return pl.DataFrame(
        {
            "ts": [dt.datetime.combine(d, dt.time(), UTC) for _, _, d, _, _ in rows],
            "symbol": [s for _, s, _, _, _ in rows],
            "fold": [f for f, *_ in rows],
            "return": [r for *_, r, _ in rows],
            "benchmark_return": [b for *_, b in rows],
        },
        schema=RETURN_SCHEMA,
    )


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (Hyndman-Fan type 7), by hand."""
    xs = sorted(values)
    h = (len(xs) - 1) * q / 100
    lo = math.floor(h)
    return xs[lo] + (h - lo) * (xs[min(lo + 1, len(xs) - 1)] - xs[lo])


def _oracle_paths(plan: FoldPlan) -> list[list[tuple[dt.date, int, int, float]]]:
    """Per path, (day, group, fold, portfolio return) by plain loops over the plan's path assignment."""
    out = []
    for path in plan.paths:
        rows = []
        for g, (fold, segment) in enumerate(path):
            start, end = plan.folds[fold].test[segment]
            for i, day in enumerate(CV_DAYS):
                if start <= day <= end:
                    r = statistics.mean(_cv_return(fold, s, i) for s in CV_SYMBOLS)
                    rows.append((day, g, fold, r))
        out.append(rows)
    return out


@pytest.fixture(scope="module")
def cv() -> dict[str, Any]:
    plan = _cv_plan()
    returns = _cv_returns(plan)
    res = cpcv_paths(returns, plan.paths_table, interval="1d", initial_cash=1000.0)
    assert res is not None
    return {"plan": plan, "returns": returns, "res": res}


def test_cpcv_every_path_covers_every_group_once_and_equals_the_oracle(cv: dict[str, Any]) -> None:
    plan, res = cv["plan"], cv["res"]
    assert plan.n_folds == 15 and len(plan.paths) == 5
    series = res.series
    assert series.columns == ["ts", "path", "group", "fold", "return", "equity"]
    assert sorted(series["path"].unique().to_list()) == list(range(5))
    groups = plan.groups
    used: dict[int, set[int]] = {g: set() for g in range(6)}
    for j, want in enumerate(_oracle_paths(plan)):
        got = series.filter(pl.col("path") == j)
        # every group exactly once: each group's days appear once, in time order, from one fold
        assert got["ts"].is_sorted() and got["ts"].n_unique() == got.height == len(CV_DAYS)
        for g, (start, end) in enumerate(groups):
            in_group = got.filter(pl.col("group") == g)
            assert in_group["ts"].dt.date().to_list() == [d for d in CV_DAYS if start <= d <= end]
            assert in_group["fold"].n_unique() == 1
            used[g].add(in_group["fold"][0])
        assert got["ts"].dt.date().to_list() == [d for d, *_ in want]
        assert got["group"].to_list() == [g for _, g, _, _ in want]
        assert got["fold"].to_list() == [f for _, _, f, _ in want]
        assert got["return"].to_list() == pytest.approx([r for *_, r in want], abs=1e-15)
        growth, curve = 1.0, []
        for *_, r in want:
            growth *= 1.0 + r
            curve.append(1000.0 * growth)
        assert got["equity"].to_list() == pytest.approx(curve, rel=1e-12)
    # Across the paths each group is taken from every split that tests it, once: C(5, 1) = 5 splits.
    for g in range(6):
        testing = {f.fold for f in plan.folds if groups[g] in f.test}
        assert used[g] == testing and len(testing) == 5
    assert res.equity.columns == ["ts", "path", "equity"]


def test_cpcv_path_metrics_and_distribution(cv: dict[str, Any]) -> None:
    plan, summary = cv["plan"], cv["res"].summary
    assert summary["n_paths"] == 5 and summary["n_groups"] == 6
    per_path = summary["per_path"]
    assert [p["path"] for p in per_path] == list(range(5))
    sharpes = []
    for entry, want, path in zip(per_path, _oracle_paths(plan), plan.paths, strict=True):
        rets = [r for *_, r in want]
        sr = statistics.mean(rets) / statistics.stdev(rets) * math.sqrt(252)
        sharpes.append(sr)
        assert entry["sharpe"] == pytest.approx(sr, rel=1e-9)
        assert entry["total_return"] == pytest.approx(_compound(rets), rel=1e-10)
        assert entry["n_periods"] == len(rets)
        assert entry["folds"] == [fold for fold, _ in path]
        assert entry["missing_groups"] == []
        assert entry["start"] == "2021-03-01T00:00:00+00:00" and entry["end"] == "2021-04-29T00:00:00+00:00"
    # The fold levels make some paths lose and some win, so the distribution is not degenerate.
    assert min(sharpes) <= 0 < max(sharpes)
    dist = summary["sharpe"]
    assert dist["n"] == 5
    assert dist["mean"] == pytest.approx(statistics.mean(sharpes), rel=1e-9)
    assert dist["std"] == pytest.approx(statistics.stdev(sharpes), rel=1e-9)
    assert dist["min"] == pytest.approx(min(sharpes)) and dist["max"] == pytest.approx(max(sharpes))
    for q in (5, 25, 50, 75, 95):
        assert dist[f"p{q}"] == pytest.approx(_percentile(sharpes, q), rel=1e-9)
    assert summary["frac_sharpe_le_0"] == pytest.approx(sum(s <= 0 for s in sharpes) / 5)
    assert sharpes[summary["median_path"]] == pytest.approx(statistics.median(sharpes))
    cagrs = [p["cagr"] for p in per_path]
    assert summary["cagr"]["p50"] == pytest.approx(statistics.median(cagrs))


def test_cpcv_paths_from_lazy_scans_equal_the_eager_result(cv: dict[str, Any], tmp_path: Any) -> None:
    # As a run gathers them: one Parquet file per fold, scanned lazily, never loaded whole.
    for (fold,), part in cv["returns"].partition_by("fold", as_dict=True).items():
        part.write_parquet(tmp_path / f"f{fold:04d}.parquet")
    scan = pl.scan_parquet(str(tmp_path / "*.parquet"))
    res = cpcv_paths(scan, cv["plan"].paths_table, interval="1d", initial_cash=1000.0)
    assert res is not None
    assert res.series.equals(cv["res"].series)
    assert res.summary == cv["res"].summary
    lazy = cpcv_paths(cv["returns"].lazy(), cv["plan"].paths_table, interval="1d", initial_cash=1000.0)
    assert lazy is not None and lazy.series.equals(res.series) and lazy.summary == res.summary


def test_cpcv_failed_fold_leaves_its_groups_missing_on_its_path(cv: dict[str, Any]) -> None:
    plan = cv["plan"]
    returns = cv["returns"].filter(pl.col("fold") != 3)  # fold 3 tests groups (0, 4)
    res = cpcv_paths(returns, plan.paths_table, interval="1d", initial_cash=1000.0)
    assert res is not None
    for j, path in enumerate(plan.paths):
        missing = [g for g, (fold, _) in enumerate(path) if fold == 3]
        assert res.summary["per_path"][j]["missing_groups"] == missing
    assert any(p["missing_groups"] for p in res.summary["per_path"])


def test_cpcv_intraday_bars_belong_to_their_local_session() -> None:
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(4)]
    plan = cpcv_plan(days, n_groups=2, k_test_groups=1)  # fold 0 tests days 0-1, fold 1 days 2-3
    # 23:00 UTC on Jan 2 is 08:00 on Jan 3 in Tokyo: group 1's session, so fold 1's bar and not fold 0's.
    ts = [dt.datetime(2024, 1, 2, 23, 0, tzinfo=UTC), dt.datetime(2024, 1, 1, 1, 0, tzinfo=UTC)]
    returns = pl.DataFrame(
        {"ts": ts * 2, "symbol": ["A"] * 4, "fold": [0, 0, 1, 1], "return": [0.1, 0.2, 0.3, 0.4]},
        schema={k: v for k, v in RETURN_SCHEMA.items() if k != "benchmark_return"},
    )
    res = cpcv_paths(returns, plan.paths_table, interval="1m", initial_cash=1.0, tz="Asia/Tokyo")
    assert res is not None
    assert res.series.select("ts", "group", "fold", "return").rows() == [
        (ts[1], 0, 0, 0.2),
        (ts[0], 1, 1, 0.3),
    ]
    utc = cpcv_paths(returns, plan.paths_table, interval="1m", initial_cash=1.0, tz="UTC")
    assert utc is not None
    assert utc.series.select("ts", "fold").rows() == [(ts[1], 0), (ts[0], 0)]


def test_walk_forward_plan_has_no_paths(case: dict[str, Any]) -> None:
    plan = walk_forward_plan(CV_DAYS, train_len=20, test_len=10, stride=10, purge=1)
    assert cpcv_paths(case["returns"], plan.paths_table, interval="1d", initial_cash=1000.0) is None
    assert case["summary"]["paths"] is None


def test_oos_summary_carries_the_paths(cv: dict[str, Any]) -> None:
    plan, res = cv["plan"], cv["res"]
    summary = oos_summary(
        returns=cv["returns"].lazy(),
        trades=pl.DataFrame(schema=TRADE_SCHEMA),
        params=pl.DataFrame(schema={"fold": pl.Int64, "symbol": pl.String, "trial_sharpe_var": pl.Float64}),
        plan_table=plan.table,
        failures=[],
        interval="1d",
        initial_cash=1000.0,
        n_trials=1,
        paths=res,
    )
    assert summary["paths"] is res.summary
    # The stitched history is one path-agnostic series; the paths are several full histories over it.
    assert summary["oos"]["n_periods"] == len(CV_DAYS)


def test_a_symbols_series_is_the_lowest_fold_per_bar_as_the_aggregation_gives() -> None:
    # Per-symbol metrics take a sort-and-mask shortcut instead of the per-bar aggregation: both must pick
    # the lowest fold's row of every bar, overlapping CPCV test windows included, whatever the row order.
    from trader.oos import _per_bar_means, _symbol_series

    rng = np.random.default_rng(4)
    ts = np.repeat(np.arange(300) * 60_000_000_000, 3)[:800]
    frame = pl.DataFrame(
        {
            "ts": pl.Series(ts).cast(pl.Datetime("ns", "UTC")),
            "symbol": "A",
            "fold": np.tile([2, 0, 1], 300)[:800],
            "return": rng.normal(0, 0.01, 800),
            "benchmark_return": rng.normal(0, 0.01, 800),
        }
    ).sample(fraction=1.0, shuffle=True, seed=2)
    got = _symbol_series(frame)
    assert got.height == 267
    assert got.equals(_per_bar_means(frame))
    one_fold = frame.filter(pl.col("fold") == 1)  # walk-forward: one fold per bar
    assert _symbol_series(one_fold).equals(_per_bar_means(one_fold))
