"""The walk-forward run report: reading a run directory, tables, plots, the page, the CLI, and Chromium.

Run directories are built here with exactly the RUN_DIR contract's schema from synthetic bars and a simple
momentum rule, so every figure the report shows can be recomputed independently with plain Python.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from trader.data.synth import synth_bars
from trader.errors import DataError
from trader.metrics import deflated_sharpe_ratio, sharpe, summarize
from trader.report import REPORT_NAME, build_report, load_run, render_report
from trader.report.figures import (
    MAX_PLOT_POINTS,
    build_panels,
    decimate_indices,
    drawdown,
    param_values,
    selection_shares,
)
from trader.report.tables import fold_rows, format_metric

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
INITIAL_CASH = 100_000.0
TRAIN, TEST = 120, 60
N_FOLDS = 3
UTC_NS = pl.Datetime("ns", "UTC")
FAIL_REASON = "no bars for CCC in the test window <shard missing> & retried 3x"


# -- a synthetic run directory with the contract's schema -------------------------------------------------
def _none_if_nan(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _clean_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, float):
        return _none_if_nan(obj)
    return obj


def make_run_dir(
    root: Path, *, failed_fold: int | None = None, empty_tables: bool = False, n_bars: int = 300
) -> Path:
    """Write a 3-fold, 4-symbol walk-forward run of ``n_bars`` daily bars into ``root``; return it.

    Rolling folds: train 120 bars, test 60, stride 60. Each symbol sleeve holds sign(5-bar momentum) decided
    at a bar's close, earning the next bar's close-to-close return. ``failed_fold`` makes that fold fail
    (no returns; flat equity over its window); ``empty_tables`` writes zero-row trades, risk events and
    selection.
    """
    root.mkdir(parents=True, exist_ok=True)
    bars = {
        s: synth_bars(s, "1d", "2022-01-03", "2023-12-29", seed=7 + i).head(n_bars)
        for i, s in enumerate(SYMBOLS)
    }
    ts = bars[SYMBOLS[0]]["ts"]
    close = {s: b["close"].to_numpy() for s, b in bars.items()}
    open_ = {s: b["open"].to_numpy() for s, b in bars.items()}
    dates = ts.dt.date().to_list()

    # fold plan: test windows [120 + 60k, 180 + 60k) bars, train the 120 bars before
    plan_rows = []
    tests = []
    for k in range(N_FOLDS):
        t0 = TRAIN + TEST * k
        t1 = min(t0 + TEST, n_bars)
        tests.append((t0, t1))
        plan_rows.append((k, "train", 0, dates[t0 - TRAIN], dates[t0 - 1]))
        plan_rows.append((k, "test", 0, dates[t0], dates[t1 - 1]))
    plan = pl.DataFrame(
        plan_rows,
        schema={"fold": pl.Int64, "role": pl.String, "segment": pl.Int64, "start": pl.Date, "end": pl.Date},
        orient="row",
    )

    # positions decided at bar t's close from rows <= t; the return of bar t uses the position of t - 1
    pos = {}
    for s in SYMBOLS:
        c = close[s]
        p = np.zeros(n_bars)
        p[5:] = np.sign(c[5:] - c[:-5])
        pos[s] = p
    sleeve = {s: np.r_[np.nan, pos[s][:-1] * (close[s][1:] / close[s][:-1] - 1.0)] for s in SYMBOLS}

    oos_rows, sel_rows, trade_rows = [], [], []
    port = np.zeros(n_bars)
    for k, (t0, t1) in enumerate(tests):
        if k == failed_fold:
            continue
        for s in SYMBOLS:
            for t in range(t0, t1):
                oos_rows.append((ts[t], s, k, float(sleeve[s][t])))
                regime = (
                    None
                    if t < t0 + 3
                    else ("trend" if abs(close[s][t] / close[s][t - 3] - 1) > 0.01 else "chop")
                )
                arm = "momentum" if regime == "trend" else "mean_reversion"
                sel_rows.append((ts[t], s, k, regime, arm))
                if t + 1 < t1 and pos[s][t] != pos[s][t - 1]:
                    side = "buy" if pos[s][t] > pos[s][t - 1] else "sell"
                    trade_rows.append(
                        (
                            ts[t + 1],
                            s,
                            k,
                            side,
                            100.0 * abs(pos[s][t] - pos[s][t - 1]),
                            open_[s][t + 1],
                            1.0,
                            "signal",
                        )
                    )
        port[t0:t1] = np.mean([sleeve[s][t0:t1] for s in SYMBOLS], axis=0)
    first, last = tests[0][0], tests[-1][1]
    equity = INITIAL_CASH * np.cumprod(1.0 + port[first:last])
    bench = sum(INITIAL_CASH / len(SYMBOLS) * close[s][first:last] / close[s][first - 1] for s in SYMBOLS)
    pl.DataFrame({"ts": ts[first:last], "equity": equity, "benchmark": bench}).write_parquet(
        root / "equity.parquet"
    )
    plan.write_parquet(root / "fold_plan.parquet")
    pl.DataFrame(
        oos_rows,
        schema={"ts": UTC_NS, "symbol": pl.String, "fold": pl.Int64, "return": pl.Float64},
        orient="row",
    ).write_parquet(root / "oos_returns.parquet")

    if empty_tables:
        trade_rows, sel_rows, risk_rows = [], [], []
    else:
        risk_rows = [
            (ts[tests[0][0] + 10], "AAA", 0, "stop_loss_pct", 0.05),
            (ts[tests[0][0] + 30], "", 0, "max_drawdown_pct", 0.12),
            (ts[tests[-1][0] + 5], "DDD", N_FOLDS - 1, "max_position_pct", 0.25),
        ]
    pl.DataFrame(
        trade_rows,
        schema={
            "ts": UTC_NS,
            "symbol": pl.String,
            "fold": pl.Int64,
            "side": pl.String,
            "qty": pl.Float64,
            "price": pl.Float64,
            "commission": pl.Float64,
            "reason": pl.String,
        },
        orient="row",
    ).write_parquet(root / "trades.parquet")
    pl.DataFrame(
        risk_rows,
        schema={"ts": UTC_NS, "symbol": pl.String, "fold": pl.Int64, "rule": pl.String, "detail": pl.Float64},
        orient="row",
    ).write_parquet(root / "risk_events.parquet")
    pl.DataFrame(
        sel_rows,
        schema={"ts": UTC_NS, "symbol": pl.String, "fold": pl.Int64, "regime": pl.String, "arm": pl.String},
        orient="row",
    ).write_parquet(root / "selection.parquet")
    params_rows = [
        (
            k,
            s,
            "composer",
            json.dumps(
                {"lookback": 5 + k + i % 2, "allow_short": i % 2 == 0, "weights": {"trend": 0.5 + 0.1 * k}}
            ),
            0.3 + 0.01 * i,
            20,
        )
        for k in range(N_FOLDS)
        if k != failed_fold
        for i, s in enumerate(SYMBOLS)
    ]
    pl.DataFrame(
        params_rows,
        schema={
            "fold": pl.Int64,
            "symbol": pl.String,
            "strategy": pl.String,
            "params": pl.String,
            "train_score": pl.Float64,
            "n_candidates": pl.Int64,
        },
        orient="row",
    ).write_parquet(root / "params.parquet")

    port_r = port[first:last]
    bench_r = np.r_[bench[0] / INITIAL_CASH - 1.0, bench[1:] / bench[:-1] - 1.0]
    per_fold = []
    for k, (t0, t1) in enumerate(tests):
        failed = k == failed_fold
        r = port[t0:t1]
        per_fold.append(
            {
                "fold": k,
                "test_start": dates[t0].isoformat(),
                "test_end": dates[t1 - 1].isoformat(),
                "sharpe": None if failed else float(sharpe(r)),
                "total_return": None if failed else float(np.prod(1 + r) - 1),
                "max_drawdown": None if failed else summarize(r, interval="1d")["max_drawdown"],
                "n_trades": 0 if failed else sum(1 for row in trade_rows if row[2] == k),
                "status": "failed" if failed else "ok",
                "reason": FAIL_REASON if failed else None,
            }
        )
    oos = summarize(port_r, interval="1d")
    summary = {
        "run_id": "wf-test-001",
        "mode": "walk_forward",
        "oos": oos,
        "benchmark": summarize(bench_r, interval="1d"),
        "per_fold": per_fold,
        "per_symbol": {
            s: summarize(
                np.concatenate([sleeve[s][a:b] for k, (a, b) in enumerate(tests) if k != failed_fold]),
                interval="1d",
            )
            for s in SYMBOLS
        },
        "dsr": {
            "sharpe": oos["sharpe"],
            "deflated_sharpe": deflated_sharpe_ratio(
                oos["sharpe"] / math.sqrt(252), 20, 0.5 / 252, len(port_r)
            ),
            "n_trials": 20,
        },
        "failed_folds": []
        if failed_fold is None
        else [{"fold": failed_fold, "symbols": list(SYMBOLS), "reason": FAIL_REASON}],
        "settings": {"engine": {"initial_cash": INITIAL_CASH}},
        "data_fingerprint": "sha256:0123abcd",
        "versions": {"trader": "0.1.0"},
        "wall_s": 12.5,
        "started_at": "2024-01-01T00:00:00Z",
        "finished_at": "2024-01-01T00:00:12Z",
    }
    (root / "summary.json").write_text(json.dumps(_clean_json(summary), indent=2, allow_nan=False))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run") / "wf")


@pytest.fixture(scope="module")
def page(run_dir: Path) -> str:
    return render_report(str(run_dir))


def figure_json(page: str, key: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(data, layout) of the figure ``fig-<key>`` as plotly.js receives them."""
    m = re.search(
        r'Plotly\.newPlot\(\s*"fig-' + re.escape(key) + r'",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"',
        page,
        re.S,
    )
    assert m, f"no figure fig-{key} on the page"
    return json.loads(m.group(1)), json.loads(m.group(2))


# -- the page ---------------------------------------------------------------------------------------------
def test_page_is_self_contained_with_plotlyjs_once(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    # plotly.js itself, inline, exactly once; nothing loaded from anywhere
    assert page.count("* plotly.js v") == 1
    # outside plotly.js (whose source names URLs of features the report does not use, e.g. geo maps)
    from plotly.offline import get_plotlyjs

    rest = page.replace(get_plotlyjs(), "")
    assert len(rest) < len(page) - 1_000_000
    assert not re.search(r"<script[^>]*\bsrc=", rest)
    assert not re.search(r"<link[^>]*\bhref=", rest)
    assert not re.search(r"https?://", rest)
    for key in ("equity", "drawdown", "fold_sharpe", "symbols", "params", "selection", "risk"):
        assert f'id="fig-{key}"' in page
        assert len(re.findall(r'Plotly\.newPlot\(\s*"fig-' + key + '"', page)) == 1


def test_render_is_deterministic(run_dir: Path, page: str) -> None:
    assert render_report(str(run_dir)) == page


def test_headline_table_shows_summary_metrics(run_dir: Path, page: str) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    table = page.split("<h2>Headline", 1)[1].split("</table>", 1)[0]
    for key in ("sharpe", "total_return", "max_drawdown", "cagr"):
        oos, bench = summary["oos"][key], summary["benchmark"][key]
        pct = key != "sharpe"
        want = [f"{v:.2%}" if pct else f"{v:.2f}" for v in (oos, bench)]
        assert f"<td>{want[0]}</td><td>{want[1]}</td>" in table, key
    assert format_metric("deflated_sharpe", summary["dsr"]["deflated_sharpe"]) in page


def test_fold_rows_match_plan_summary_and_benchmark(run_dir: Path) -> None:
    run = load_run(str(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = fold_rows(run)
    assert [r.fold for r in rows] == list(range(N_FOLDS))
    eq = pl.read_parquet(run_dir / "equity.parquet")
    dates = eq["ts"].dt.date().to_list()
    bench = eq["benchmark"].to_list()
    for row, entry in zip(rows, summary["per_fold"], strict=True):
        assert row.status == "ok" and row.sharpe == pytest.approx(entry["sharpe"])
        assert str(row.test[0].start) == entry["test_start"] and str(row.test[0].end) == entry["test_end"]
        # benchmark over the same test bars, by a plain loop: from the bar before the window to its last bar
        inside = [i for i, d in enumerate(dates) if entry["test_start"] <= d.isoformat() <= entry["test_end"]]
        lo = max(inside[0] - 1, 0)
        rets = [bench[i] / bench[i - 1] - 1 for i in range(lo + 1, inside[-1] + 1)]
        assert row.benchmark_return == pytest.approx(math.prod(1 + r for r in rets) - 1)
        mean = sum(rets) / len(rets)
        sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / (len(rets) - 1))
        assert row.benchmark_sharpe == pytest.approx(mean / sd * math.sqrt(252))
        assert len(row.train) == 1 and (row.train[0].end - row.train[0].start).days > 100


def test_cpcv_fold_with_several_segments(tmp_path: Path) -> None:
    root = make_run_dir(tmp_path / "run")
    plan = pl.read_parquet(root / "fold_plan.parquet")
    test0 = plan.filter((pl.col("fold") == 0) & (pl.col("role") == "test")).row(0, named=True)
    mid = test0["start"] + dt.timedelta(days=30)
    split = [
        {**test0, "end": mid - dt.timedelta(days=1)},
        {**test0, "segment": 1, "start": mid + dt.timedelta(days=14)},  # a gap: another group's test span
    ]
    plan = pl.concat(
        [plan.filter(~((pl.col("fold") == 0) & (pl.col("role") == "test"))), pl.DataFrame(split)]
    )
    plan.write_parquet(root / "fold_plan.parquet")
    row = fold_rows(load_run(str(root)))[0]
    assert [(w.start, w.end) for w in row.test] == [(s["start"], s["end"]) for s in split]
    eq = pl.read_parquet(root / "equity.parquet")
    dates, bench = eq["ts"].dt.date().to_list(), eq["benchmark"].to_list()
    growth = 1.0
    for seg in split:
        inside = [i for i, d in enumerate(dates) if seg["start"] <= d <= seg["end"]]
        growth *= bench[inside[-1]] / bench[max(inside[0] - 1, 0)]
    assert row.benchmark_return == pytest.approx(growth - 1)
    assert "(2 segments)" in render_report(str(root))


def test_fold_sharpe_figure_plots_per_fold_values(run_dir: Path, page: str) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    data, _ = figure_json(page, "fold_sharpe")
    assert data[0]["x"] == [str(e["fold"]) for e in summary["per_fold"]]
    assert data[0]["y"] == pytest.approx([e["sharpe"] for e in summary["per_fold"]])


def test_equity_and_drawdown_figures_carry_the_series(run_dir: Path, page: str) -> None:
    eq = pl.read_parquet(run_dir / "equity.parquet")
    data, _ = figure_json(page, "equity")
    assert data[0]["x"][0] == eq["ts"][0].strftime("%Y-%m-%d")
    assert data[0]["y"] == pytest.approx(eq["equity"].to_list())
    assert data[1]["y"] == pytest.approx(eq["benchmark"].to_list())
    dd_data, _ = figure_json(page, "drawdown")
    peak, expect = -math.inf, []
    for v in eq["equity"].to_list():
        peak = max(peak, v)
        expect.append(v / peak - 1)
    assert dd_data[0]["y"] == pytest.approx(expect)
    assert "Down-sampled" not in page


def test_symbol_heatmap_text_and_direction(run_dir: Path, page: str) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    data, _ = figure_json(page, "symbols")
    heat = data[0]
    assert heat["y"] == list(SYMBOLS)
    j_dd, j_sr = heat["x"].index("max_drawdown"), heat["x"].index("sharpe")
    for i, s in enumerate(SYMBOLS):
        assert heat["text"][i][j_sr] == f"{summary['per_symbol'][s]['sharpe']:.2f}"
    # colour: higher Sharpe is greener (larger z), deeper drawdown is redder (smaller z)
    z = heat["z"]
    srs = [summary["per_symbol"][s]["sharpe"] for s in SYMBOLS]
    dds = [summary["per_symbol"][s]["max_drawdown"] for s in SYMBOLS]
    assert z[int(np.argmax(srs))][j_sr] == max(row[j_sr] for row in z)
    assert z[int(np.argmax(dds))][j_dd] == min(row[j_dd] for row in z)


def test_param_stability_per_fold_values(run_dir: Path, page: str) -> None:
    params = pl.read_parquet(run_dir / "params.parquet")
    values = param_values(params)
    assert set(values) == {"lookback", "allow_short", "weights.trend"}
    data, _ = figure_json(page, "params")
    box = next(t for t in data if t["type"] == "box" and t["name"] == "lookback")
    expect = [
        (str(f), float(json.loads(p)["lookback"]))
        for f, p in zip(params["fold"], params["params"], strict=True)
    ]
    assert list(zip(box["x"], box["y"], strict=True)) == expect
    # a boolean parameter is categorical: the share of symbols choosing each value per fold sums to 1
    bars = [t for t in data if t["type"] == "bar"]
    assert {t["name"] for t in bars} == {"true", "false"}
    for fold in range(N_FOLDS):
        assert sum(t["y"][fold] for t in bars) == pytest.approx(1.0)


def test_param_values_with_several_strategies() -> None:
    frame = pl.DataFrame(
        {
            "fold": [0, 0, 1],
            "symbol": ["A", "B", "A"],
            "strategy": ["sma_cross", "rsi_reversion", "sma_cross"],
            "params": ['{"fast": 5, "slow": 20}', '{"period": 14}', '{"fast": 8, "slow": 30}'],
        }
    )
    values = param_values(frame)
    assert list(values) == ["strategy", "rsi_reversion.period", "sma_cross.fast", "sma_cross.slow"]
    assert values["strategy"] == [(0, "A", "sma_cross"), (0, "B", "rsi_reversion"), (1, "A", "sma_cross")]
    assert values["sma_cross.fast"] == [(0, "A", 5), (1, "A", 8)]


def test_selection_shares_by_plain_counting(
    run_dir: Path, page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stream in many small batches: the counts must not depend on how the file is cut
    monkeypatch.setattr("trader.report.rundir.BATCH_ROWS", 37)
    run = load_run(str(run_dir))
    rows = pl.read_parquet(run_dir / "selection.parquet").rows(named=True)
    assert int(run.selection_counts["n"].sum()) == len(rows) == run.row_counts["selection.parquet"]
    for by, col, fill in (
        ("fold", "regime", "unlabelled"),
        ("fold", "arm", "none"),
        ("regime", "arm", "none"),
    ):

        def key(r: dict[str, Any], by: str = by) -> str:
            return r[by] if r[by] is not None else "unlabelled"

        totals = Counter(key(r) for r in rows)
        counts = Counter((key(r), r[col] if r[col] is not None else fill) for r in rows)
        got = {(g, v): s for g, v, s in selection_shares(run.selection_counts, by, col).iter_rows()}
        assert got == pytest.approx({k: n / totals[k[0]] for k, n in counts.items()})
    assert any(r["regime"] is None for r in rows)  # the fixture exercises the unlabelled case
    data, _ = figure_json(page, "selection")
    assert {t["name"] for t in data} >= {"regime: trend", "regime: chop", "regime: unlabelled", "momentum"}


def test_run_length_selection_counts_each_bar(tmp_path: Path) -> None:
    root = make_run_dir(tmp_path / "run")
    plain = load_run(str(root)).selection_counts
    # the same decisions written as runs of consecutive bars with the same regime and arm, `bars` long
    rows = pl.read_parquet(root / "selection.parquet").sort("symbol", "fold", "ts").rows()
    runs: list[list[Any]] = []
    for ts, symbol, fold, regime, arm in rows:
        if runs and runs[-1][1:5] == [symbol, fold, regime, arm]:
            runs[-1][5] += 1
        else:
            runs.append([ts, symbol, fold, regime, arm, 1])
    assert len(runs) < len(rows) / 2
    frame = pl.DataFrame(
        runs,
        schema={
            "ts": UTC_NS,
            "symbol": pl.String,
            "fold": pl.Int64,
            "regime": pl.String,
            "arm": pl.String,
            "bars": pl.Int64,
        },
        orient="row",
    )
    frame.write_parquet(root / "selection.parquet")
    assert load_run(str(root)).selection_counts.equals(plain)


def test_risk_events_figure(run_dir: Path, page: str) -> None:
    ev = pl.read_parquet(run_dir / "risk_events.parquet")
    data, _ = figure_json(page, "risk")
    scatter = {t["name"]: t for t in data if t["type"] == "scatter"}
    assert set(scatter) == set(ev["rule"].to_list())
    # a portfolio-level event (symbol "") is labelled as such
    assert scatter["max_drawdown_pct"]["customdata"][0][0] == "portfolio"


# -- empty, missing and failed ----------------------------------------------------------------------------
def test_empty_tables_give_notes_not_plots(tmp_path: Path) -> None:
    page = render_report(str(make_run_dir(tmp_path / "run", empty_tables=True)))
    assert "No risk events." in page
    assert "No selection records (selection.parquet empty)." in page
    assert 'id="fig-risk"' not in page and 'id="fig-selection"' not in page
    assert 'id="fig-equity"' in page


def test_missing_optional_files_are_named(tmp_path: Path) -> None:
    root = make_run_dir(tmp_path / "run")
    for name in ("trades", "risk_events", "selection", "params", "oos_returns"):
        (root / f"{name}.parquet").unlink()
    run = load_run(str(root))
    assert set(run.missing) == {
        f"{n}.parquet" for n in ("trades", "risk_events", "selection", "params", "oos_returns")
    }
    page = render_report(str(root))
    assert "No risk events (risk_events.parquet not written)." in page
    assert "No chosen parameters (params.parquet not written)." in page
    assert 'id="fig-equity"' in page and 'id="fig-fold_sharpe"' in page


def test_failed_fold_is_reported_with_reason_escaped(tmp_path: Path) -> None:
    root = make_run_dir(tmp_path / "run", failed_fold=1)
    page = render_report(str(root))
    failed = page.split("<h2>Failed folds</h2>", 1)[1].split("</table>", 1)[0]
    escaped = "no bars for CCC in the test window &lt;shard missing&gt; &amp; retried 3x"
    assert (
        f'<td class="l">1</td><td class="l">{", ".join(SYMBOLS)}</td><td class="l">{escaped}</td>' in failed
    )
    assert "<shard missing>" not in page
    folds = page.split("<h2>Folds</h2>", 1)[1].split("</table>", 1)[0]
    assert folds.count('<tr class="bad">') == 1
    # the failed fold's test window is shaded on the equity plot and it has no Sharpe bar
    run = load_run(str(root))
    rows = fold_rows(run)
    _, layout = figure_json(page, "equity")
    (shape,) = layout["shapes"]
    assert (shape["x0"], shape["x1"]) == (rows[1].test[0].start.isoformat(), rows[1].test[0].end.isoformat())
    data, _ = figure_json(page, "fold_sharpe")
    assert data[0]["y"][1] is None and data[0]["y"][0] is not None


def test_planned_fold_without_result_is_not_dropped(tmp_path: Path) -> None:
    root = make_run_dir(tmp_path / "run")
    summary = json.loads((root / "summary.json").read_text())
    summary["per_fold"] = summary["per_fold"][:2]
    (root / "summary.json").write_text(json.dumps(summary))
    rows = fold_rows(load_run(str(root)))
    assert [r.status for r in rows] == ["ok", "ok", "missing"]
    page = render_report(str(root))
    assert "planned, but summary.json has no result for this fold" in page.split("<h2>Failed folds</h2>")[1]


@pytest.mark.parametrize("name", ["summary.json", "equity.parquet", "fold_plan.parquet"])
def test_missing_required_file_raises_data_error_naming_it(tmp_path: Path, name: str) -> None:
    root = make_run_dir(tmp_path / "run")
    (root / name).unlink()
    with pytest.raises(DataError, match=re.escape(name)):
        render_report(str(root))


def _break_summary(root: Path) -> None:
    (root / "summary.json").write_text('{"run_id": "x", "oos": ')


def _summary_without_per_fold(root: Path) -> None:
    summary = json.loads((root / "summary.json").read_text())
    del summary["per_fold"]
    (root / "summary.json").write_text(json.dumps(summary))


def _equity_without_benchmark(root: Path) -> None:
    pl.read_parquet(root / "equity.parquet").drop("benchmark").write_parquet(root / "equity.parquet")


def _equity_naive_ts(root: Path) -> None:
    eq = pl.read_parquet(root / "equity.parquet")
    eq.with_columns(pl.col("ts").dt.replace_time_zone(None)).write_parquet(root / "equity.parquet")


def _plan_not_parquet(root: Path) -> None:
    (root / "fold_plan.parquet").write_bytes(b"fold,role\n0,train\n")


def _plan_bad_role(root: Path) -> None:
    plan = pl.read_parquet(root / "fold_plan.parquet")
    plan.with_columns(pl.lit("validate").alias("role")).write_parquet(root / "fold_plan.parquet")


def _oos_returns_as_text(root: Path) -> None:
    oos = pl.read_parquet(root / "oos_returns.parquet")
    oos.with_columns(pl.col("return").cast(pl.String)).write_parquet(root / "oos_returns.parquet")


def _params_not_json(root: Path) -> None:
    params = pl.read_parquet(root / "params.parquet")
    params.with_columns(pl.lit("{lookback: 5").alias("params")).write_parquet(root / "params.parquet")


@pytest.mark.parametrize(
    ("breaker", "name", "needle"),
    [
        (_break_summary, "summary.json", "not valid JSON"),
        (_summary_without_per_fold, "summary.json", "per_fold"),
        (_equity_without_benchmark, "equity.parquet", "benchmark"),
        (_equity_naive_ts, "equity.parquet", "time zone"),
        (_plan_not_parquet, "fold_plan.parquet", "Parquet"),
        (_plan_bad_role, "fold_plan.parquet", "validate"),
        (_params_not_json, "params.parquet", "not JSON"),
        (_oos_returns_as_text, "oos_returns.parquet", "'return'"),
    ],
)
def test_malformed_file_raises_data_error_naming_it(
    tmp_path: Path, breaker: Any, name: str, needle: str
) -> None:
    root = make_run_dir(tmp_path / "run")
    breaker(root)
    with pytest.raises(DataError) as info:
        render_report(str(root))
    assert name in str(info.value) and needle in str(info.value)


# -- writing ----------------------------------------------------------------------------------------------
def test_build_report_writes_atomically_and_keeps_old_report_on_failure(tmp_path: Path) -> None:
    root = make_run_dir(tmp_path / "run")
    path = build_report(str(root))
    assert path == str(root / REPORT_NAME)
    assert Path(path).read_text(encoding="utf-8") == render_report(str(root))
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temp file left
    before = Path(path).read_bytes()
    _break_summary(root)
    with pytest.raises(DataError):
        build_report(str(root))
    assert Path(path).read_bytes() == before
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


@pytest.mark.integration
def test_build_report_on_s3(tmp_path: Path, s3_bucket: str) -> None:
    import pyarrow.fs as pafs

    root = make_run_dir(tmp_path / "run")
    fs, base = pafs.FileSystem.from_uri(f"s3://{s3_bucket}/runs/wf")
    for p in root.iterdir():
        with fs.open_output_stream(f"{base}/{p.name}") as out:
            out.write(p.read_bytes())
    uri = build_report(f"s3://{s3_bucket}/runs/wf")
    assert uri == f"s3://{s3_bucket}/runs/wf/{REPORT_NAME}"
    with fs.open_input_stream(f"{base}/{REPORT_NAME}") as fh:
        assert fh.read().decode("utf-8") == render_report(f"s3://{s3_bucket}/runs/wf")
    import boto3

    head = boto3.client("s3").head_object(Bucket=s3_bucket, Key=f"runs/wf/{REPORT_NAME}")
    assert head["ContentType"] == "text/html"


def test_cli_report_prints_path_and_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobs.cli import cli, main

    root = make_run_dir(tmp_path / "run")
    result = CliRunner().invoke(cli, ["report", str(root)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(root / REPORT_NAME)
    assert (root / REPORT_NAME).is_file()
    (root / "equity.parquet").unlink()
    capsys.readouterr()
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "equity.parquet" in err[0]
    with pytest.raises(DataError, match="does not exist"):
        build_report(str(tmp_path / "no-such-run"))


# -- down-sampling and helpers ----------------------------------------------------------------------------
def test_decimate_keeps_every_bucket_extreme_against_a_plain_loop() -> None:
    rng = np.random.default_rng(3)
    a = np.cumsum(rng.normal(size=23_456))
    b = np.cumsum(rng.normal(size=23_456))
    b[100:200] = np.nan
    idx = decimate_indices([a, b], max_points=1_000)
    assert idx.size <= 1_000 and list(idx) == sorted(set(idx.tolist()))
    n_buckets = (1_000 - 2) // 4
    size = -(-a.size // n_buckets)
    expect = {0, a.size - 1}
    for start in range(0, a.size, size):
        for col in (a, b):
            chunk = [(v, start + i) for i, v in enumerate(col[start : start + size]) if not math.isnan(v)]
            if chunk:
                expect.add(min(chunk)[1])
                expect.add(max(chunk)[1])
    assert expect <= set(idx.tolist())
    assert int(np.argmin(a)) in idx and int(np.nanargmax(b)) in idx
    assert decimate_indices([a[:50]]).tolist() == list(range(50))


def test_long_equity_is_downsampled_and_says_so(run_dir: Path) -> None:
    run = load_run(str(run_dir))
    n = 3 * MAX_PLOT_POINTS
    ts = pl.datetime_range(
        dt.datetime(2020, 1, 1, 14, 30),
        dt.datetime(2020, 1, 1, 14, 30) + dt.timedelta(minutes=n - 1),
        "1m",
        eager=True,
        time_zone="UTC",
    )
    rng = np.random.default_rng(5)
    equity = INITIAL_CASH * np.cumprod(1 + rng.normal(0, 0.001, n))
    long_eq = pl.DataFrame({"ts": ts, "equity": equity, "benchmark": equity[::-1].copy()})
    panels = {p.key: p for p in build_panels(dataclasses.replace(run, equity=long_eq))}
    fig = panels["equity"].figure
    assert fig is not None and len(fig.data[0].y) <= MAX_PLOT_POINTS
    assert "Down-sampled for plotting" in panels["equity"].note
    assert min(fig.data[0].y) == pytest.approx(equity.min())
    dd = panels["drawdown"].figure.data[0].y
    assert min(dd) == pytest.approx(np.min(drawdown(equity)))
    assert fig.data[0].x[0] == "2020-01-01 14:30"


def test_report_renders_in_headless_chromium_without_errors(tmp_path: Path, headless_chromium: Any) -> None:
    root = make_run_dir(tmp_path / "run", failed_fold=1)
    html = Path(build_report(str(root))).read_text(encoding="utf-8")
    head = '<meta charset="utf-8">'
    good = tmp_path / "good.html"
    good.write_text(html.replace(head, head + headless_chromium.recorder, 1), encoding="utf-8")
    # the same page broken twice over: plotly.js gone (every plot fails) and an explicit console.error
    from plotly.offline import get_plotlyjs

    broken = tmp_path / "broken.html"
    broken_html = html.replace(get_plotlyjs(), "", 1).replace(
        head, head + headless_chromium.recorder + '<script>console.error("injected failure")</script>', 1
    )
    broken.write_text(broken_html, encoding="utf-8")

    scan, stderr = headless_chromium.dump(good)
    expected = {
        f"fig-{k}" for k in ("equity", "drawdown", "fold_sharpe", "symbols", "params", "selection", "risk")
    }
    assert set(scan.plots) == expected
    assert all(scan.plots.values()), scan.plots
    assert scan.errors == []
    # Chromium logs every console message (any level) and uncaught exception as an INFO:CONSOLE line
    assert headless_chromium.console(stderr) == []

    bad_scan, bad_stderr = headless_chromium.dump(broken)
    assert set(bad_scan.plots) == expected and not any(bad_scan.plots.values())
    assert any("injected failure" in e for e in bad_scan.errors or [])
    assert any("Plotly is not defined" in e for e in bad_scan.errors or []), bad_scan.errors
    console = headless_chromium.console(bad_stderr)
    assert any("injected failure" in line for line in console), bad_stderr[-2000:]
    assert any("Uncaught ReferenceError" in line for line in console), bad_stderr[-2000:]


# -- CPCV paths -------------------------------------------------------------------------------------------
CV_GROUPS, CV_K = 6, 2  # 15 splits, C(5, 1) = 5 backtest paths


def make_cpcv_run_dir(root: Path, *, n_bars: int = 300) -> Path:
    """The walk-forward run of :func:`make_run_dir` turned into a CPCV run over its out-of-sample days.

    6 groups, 2 test groups: each split's sleeves earn seeded normal returns whose mean depends on the split
    (some splits lose, some win), ``cpcv_paths`` turns them into the 5 paths, and the plan, summary (mode,
    per-fold rows, paths) and ``paths_equity.parquet`` are written as a CPCV run writes them.
    """
    from trader.oos import cpcv_paths
    from trader.walkforward import cpcv_plan

    make_run_dir(root, n_bars=n_bars)
    eq = pl.read_parquet(root / "equity.parquet")
    days, stamps = eq["ts"].dt.date().to_list(), eq["ts"].to_list()
    plan = cpcv_plan(days, n_groups=CV_GROUPS, k_test_groups=CV_K)
    rows = []
    for fold in plan.folds:
        mask = fold.test_mask(days)
        for i, s in enumerate(SYMBOLS):
            rng = np.random.default_rng(100 * fold.fold + i)
            rets = rng.normal(0.0004 * (fold.fold - 7), 0.01, len(days))
            rows += [(stamps[t], s, fold.fold, float(rets[t])) for t in np.flatnonzero(mask)]
    returns = pl.DataFrame(
        rows, schema={"ts": UTC_NS, "symbol": pl.String, "fold": pl.Int64, "return": pl.Float64}, orient="row"
    )
    returns.write_parquet(root / "oos_returns.parquet")
    plan.table.write_parquet(root / "fold_plan.parquet")
    paths = cpcv_paths(returns, plan.paths_table, interval="1d", initial_cash=INITIAL_CASH)
    assert paths is not None
    paths.equity.write_parquet(root / "paths_equity.parquet")
    summary = json.loads((root / "summary.json").read_text())
    per_fold = []
    for fold in plan.folds:
        mine = returns.filter(pl.col("fold") == fold.fold)
        port = mine.group_by("ts").agg(pl.col("return").mean()).sort("ts")
        m = summarize(port["return"].to_numpy(), interval="1d")
        per_fold.append(
            {
                "fold": fold.fold,
                "test_start": fold.test[0][0].isoformat(),
                "test_end": fold.test[-1][1].isoformat(),
                "sharpe": m["sharpe"],
                "total_return": m["total_return"],
                "max_drawdown": m["max_drawdown"],
                "n_trades": 0,
                "status": "ok",
                "reason": None,
            }
        )
    summary.update(mode="cpcv", per_fold=per_fold, paths=paths.summary)
    (root / "summary.json").write_text(json.dumps(_clean_json(summary), indent=2, allow_nan=False))
    return root


@pytest.fixture(scope="module")
def cpcv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cpcv_run_dir(tmp_path_factory.mktemp("cpcv") / "cv")


def test_cpcv_paths_section_plots_every_path_and_the_sharpe_histogram(cpcv_run: Path) -> None:
    page = render_report(str(cpcv_run))
    summary = json.loads((cpcv_run / "summary.json").read_text())
    per_path = summary["paths"]["per_path"]
    sharpes = [p["sharpe"] for p in per_path]
    assert len(per_path) == math.comb(CV_GROUPS - 1, CV_K - 1) == 5
    assert '<section id="cpcv_paths"><h2>CPCV paths</h2>' in page
    assert len(re.findall(r'Plotly\.newPlot\(\s*"fig-cpcv_paths"', page)) == 1
    data, _ = figure_json(page, "cpcv_paths")
    curves = [t for t in data if t["type"] == "scatter"]
    hist = [t for t in data if t["type"] == "histogram"]
    assert len(curves) == 5 and len(hist) == 1
    assert hist[0]["x"] == pytest.approx(sharpes)
    # Every curve is its path's equity as written (short series: nothing down-sampled).
    written = pl.read_parquet(cpcv_run / "paths_equity.parquet")
    by_name = {}
    for t in curves:
        m = re.match(r"(?:median )?path (\d+):", t["hovertemplate"])
        assert m, t["hovertemplate"]
        by_name[int(m.group(1))] = t
        want = written.filter(pl.col("path") == int(m.group(1))).sort("ts")
        assert t["y"] == pytest.approx(want["equity"].to_list())
        assert t["x"] == want["ts"].dt.strftime("%Y-%m-%d").to_list()
    assert sorted(by_name) == list(range(5))
    # The median path by Sharpe is drawn thick, on top (last), and named in the legend.
    median = statistics.median(sharpes)
    median_path = next(p["path"] for p in per_path if p["sharpe"] == median)
    assert curves[-1] is by_name[median_path]
    assert curves[-1]["name"] == "median path" and curves[-1]["line"]["width"] == 3
    assert all(t["line"]["width"] == 1 for t in curves[:-1])
    section = page.split('<section id="cpcv_paths">', 1)[1].split("</section>", 1)[0]
    assert f"(path {median_path})" in section
    assert f"{sum(s <= 0 for s in sharpes)} of 5 paths have a Sharpe ratio &lt;= 0" in section
    # The distribution table, from plain statistics of the per-path Sharpe ratios.
    table = section.split("<table>", 1)[1].split("</table>", 1)[0]
    for label, value in (
        ("mean", statistics.mean(sharpes)),
        ("std (sample)", statistics.stdev(sharpes)),
        ("min", min(sharpes)),
        ("median", median),
        ("max", max(sharpes)),
    ):
        assert f'<td class="l">{label}</td><td>{value:.2f}</td>' in table, label
    # The per-path table: one row per path, with its folds per group.
    assert section.count("<table>") == 2
    path_table = section.split("<table>")[2]
    for p in per_path:
        folds = " ".join(str(f) for f in p["folds"])
        assert f'<tr><td class="l">{p["path"]}</td><td>{p["sharpe"]:.2f}</td>' in path_table
        assert f"<td>{folds}</td>" in path_table


def test_walk_forward_report_has_no_paths_section(page: str) -> None:
    assert "cpcv_paths" not in page and "CPCV paths" not in page


def test_cpcv_paths_without_curves_still_show_the_histogram(tmp_path: Path) -> None:
    root = make_cpcv_run_dir(tmp_path / "cv")
    (root / "paths_equity.parquet").unlink()
    run = load_run(str(root))
    assert run.path_equity.height == 0 and "paths_equity.parquet" not in run.missing
    page = render_report(str(root))
    data, _ = figure_json(page, "cpcv_paths")
    assert [t["type"] for t in data] == ["histogram"]
    assert "No equity curves: paths_equity.parquet was not written." in page


def test_long_path_curves_are_downsampled_per_path_on_read(tmp_path: Path) -> None:
    from trader.report.rundir import PATH_PLOT_POINTS

    root = make_cpcv_run_dir(tmp_path / "cv")
    n, n_paths = 12_000, 5
    ts = pl.datetime_range(
        dt.datetime(2020, 1, 1, 14, 30),
        dt.datetime(2020, 1, 1, 14, 30) + dt.timedelta(minutes=n - 1),
        "1m",
        eager=True,
        time_zone="UTC",
    )
    rng = np.random.default_rng(9)
    curves = {p: INITIAL_CASH * np.cumprod(1 + rng.normal(0, 0.001, n)) for p in range(n_paths)}
    frame = pl.concat(pl.DataFrame({"ts": ts, "path": [p] * n, "equity": curves[p]}) for p in range(n_paths))
    # Small row groups, so the per-path read really skips the other paths' data.
    frame.write_parquet(root / "paths_equity.parquet", row_group_size=4_000)
    run = load_run(str(root))
    assert run.row_counts["paths_equity.parquet"] == n * n_paths
    for (p,), got in run.path_equity.partition_by("path", as_dict=True).items():
        assert got.height <= PATH_PLOT_POINTS // n_paths < n
        assert got["ts"].is_sorted()
        assert got["equity"].min() == pytest.approx(curves[p].min())
        assert got["equity"].max() == pytest.approx(curves[p].max())
        assert got["equity"][0] == curves[p][0] and got["equity"][-1] == curves[p][-1]
    assert "Down-sampled for plotting" in render_report(str(root)).split('id="cpcv_paths"', 1)[1]


def test_cpcv_report_renders_in_headless_chromium_without_errors(
    cpcv_run: Path, tmp_path: Path, headless_chromium: Any
) -> None:
    html = Path(build_report(str(cpcv_run))).read_text(encoding="utf-8")
    head = '<meta charset="utf-8">'
    good = tmp_path / "cpcv.html"
    good.write_text(html.replace(head, head + headless_chromium.recorder, 1), encoding="utf-8")
    scan, stderr = headless_chromium.dump(good)
    assert "fig-cpcv_paths" in scan.plots
    assert all(scan.plots.values()), scan.plots
    assert scan.errors == []
    assert headless_chromium.console(stderr) == []
