"""Outputs of a finished sweep (trader.sweep.report): trials table, best overlay, summary, sweep.html."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
import pytest
from optuna.trial import TrialState, create_trial

from trader.config import Settings, load_settings
from trader.metrics import deflated_sharpe_ratio, expected_max_sharpe, min_backtest_length
from trader.rundir import RunDir
from trader.sweep.report import (
    RETURNS_FILE,
    best_overlay,
    overlay_yaml,
    render_sweep_report,
    sweep_report_html,
    sweep_summary,
    trials_table,
)
from trader.sweep.space import search_space, suggest, trial_settings

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "configs" / "base.yaml", REPO / "configs" / "demo.yaml"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def demo(*overrides: str) -> Settings:
    return load_settings(CONFIGS, list(overrides), env={})


# -- trials table -----------------------------------------------------------------------------------------


def _toy_study() -> optuna.Study:
    """x in [0, 1], y categorical; folds score x * (k + 1); trial 3 fails; low x gets pruned at fold 1."""

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_categorical("y", ["a", "b"])
        trial.set_user_attr("worker", f"w{trial.number % 2}")
        if trial.number == 3:
            raise ValueError("boom")
        for k in range(3):
            trial.report(x * (k + 1), k)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x * 3 + (y == "b")

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.optimize(objective, n_trials=16, catch=(ValueError,))
    return study


def test_trials_table_of_a_small_study(tmp_path: Path) -> None:
    study = _toy_study()
    trials = study.trials
    states = {t.state for t in trials}
    assert states == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}  # the toy covers all three
    RunDir(str(tmp_path)).write_bytes(RETURNS_FILE.format(number=0), b"x")
    table = trials_table(study, returns_dir=str(tmp_path))
    assert table.height == len(trials)
    assert table.columns[:4] == ["number", "state", "params_x", "params_y"]
    assert table.schema["params_x"] == pl.Float64 and table.schema["params_y"] == pl.String
    assert table.schema["fold_scores"] == pl.List(pl.Float64)
    assert table.schema["datetime_start"] == pl.Datetime("ns", "UTC")
    for row, t in zip(table.iter_rows(named=True), trials, strict=True):
        assert row["number"] == t.number
        assert row["state"] == t.state.name
        assert row["params_x"] == t.params["x"] and row["params_y"] == t.params["y"]
        assert row["fold_scores"] == [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        # optuna gives a pruned trial its last fold score as value; a failed one has none
        assert row["value"] == t.value
        assert (row["value"] is None) is (t.state == TrialState.FAIL)
        assert row["worker"] == f"w{t.number % 2}"
        assert row["duration_s"] == pytest.approx((t.datetime_complete - t.datetime_start).total_seconds())
        assert row["duration_s"] >= 0
        start = t.datetime_start.astimezone(dt.UTC)  # optuna's naive local time, as UTC
        assert row["datetime_start"] == start
        assert row["returns_file"] == ("t00000.parquet" if t.number == 0 else None)
        if t.state == TrialState.PRUNED:
            assert len(row["fold_scores"]) < 3
    failed = table.filter(pl.col("state") == "FAIL")
    assert failed["number"].to_list() == [3] and failed["fold_scores"].to_list() == [[]]


def test_trials_table_of_two_objectives() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(create_trial(values=[1.0, 0.2], params={"k": 3}, distributions=_int_dist("k")))
    study.add_trial(create_trial(values=[2.0, 0.5], params={"k": 5}, distributions=_int_dist("k")))
    table = trials_table(study)
    assert table["value_0"].to_list() == [1.0, 2.0] and table["value_1"].to_list() == [0.2, 0.5]
    assert table.schema["params_k"] == pl.Int64 and "value" not in table.columns
    assert table["worker"].to_list() == [None, None]


def _int_dist(name: str) -> dict[str, Any]:
    return {name: optuna.distributions.IntDistribution(0, 10)}


# -- best overlay -----------------------------------------------------------------------------------------


def test_best_overlay_round_trips_through_load_settings(tmp_path: Path) -> None:
    settings = demo()
    space = search_space(settings)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=9))
    for _ in range(5):
        params = suggest(study.ask(), space)
        # and a few keys outside the composer's list, one of them text that YAML could misread
        params |= {"composer.lookback": 30, "risk.max_drawdown": 0.15, "data.exchange": "1e3"}
        overlay = best_overlay(settings, params)
        assert set(overlay) == {"composer", "risk", "data"}
        assert overlay["risk"] == {"max_drawdown": 0.15}
        assert set(overlay["composer"]) == {"strategies", "lookback"}  # the whole list, not an item
        path = tmp_path / "best.yaml"
        path.write_text(overlay_yaml(overlay, comment="trial 7\nscore 1.5"), encoding="utf-8")
        loaded = load_settings([*CONFIGS, path], env={})
        assert loaded == trial_settings(settings, params)
        assert loaded.data.exchange == "1e3"
        assert loaded.composer.strategies[0].params["fast"] == params["composer.strategies[0].params.fast"]
    assert path.read_text(encoding="utf-8").startswith("# trial 7\n# score 1.5\n")


# -- summary ----------------------------------------------------------------------------------------------


def _matrix_study(matrix: np.ndarray, *, extra_pruned: int = 0, extra_failed: int = 0) -> optuna.Study:
    """One COMPLETE trial per column (value = its per-period Sharpe ratio), plus pruned and failed ones."""
    study = optuna.create_study(direction="maximize", study_name="toy")
    dist = {"p": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for j in range(matrix.shape[1]):
        col = matrix[:, j]
        sr = float(col.mean() / col.std(ddof=1))
        study.add_trial(
            create_trial(
                value=sr,
                params={"p": j / matrix.shape[1]},
                distributions=dist,
                intermediate_values={0: sr},
                user_attrs={"metrics": {"sharpe": sr * math.sqrt(252), "score": sr}},
            )
        )
    for _ in range(extra_pruned):
        study.add_trial(create_trial(state=TrialState.PRUNED, params={"p": 0.5}, distributions=dist))
    for _ in range(extra_failed):
        study.add_trial(create_trial(state=TrialState.FAIL, params={"p": 0.5}, distributions=dist))
    return study


def _plain_moments(x: np.ndarray) -> tuple[float, float, float]:
    """Per-period Sharpe ratio (ddof=1), skewness and ordinary kurtosis (population moments), plain numpy."""
    d = x - x.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    return float(x.mean() / x.std(ddof=1)), float(m3 / m2**1.5), float(m4 / m2**2)


def test_summary_dominant_column_gives_pbo_near_zero_and_a_dsr() -> None:
    rng = np.random.default_rng(21)
    matrix = rng.normal(0.0, 0.01, (1600, 12))
    matrix[:, 5] += 0.004  # one configuration is far better in every period block
    study = _matrix_study(matrix, extra_pruned=2, extra_failed=1)
    numbers = [t.number for t in study.trials if t.state == TrialState.COMPLETE]
    summary = sweep_summary(study, demo(), matrix, numbers, "1d")
    json.dumps(summary, allow_nan=False)  # JSON-safe
    assert summary["counts"] == {"complete": 12, "pruned": 2, "failed": 1, "other": 0, "total": 15}
    assert summary["best"]["number"] == 5
    assert summary["best"]["metrics"]["score"] == pytest.approx(study.trials[5].value)
    pbo = summary["pbo"]
    assert pbo["pbo"] is not None and pbo["pbo"] < 0.02
    assert pbo["n_splits"] == math.comb(16, 8) and len(pbo["logits"]) == pbo["n_splits"]
    # DSR recomputed independently from the matrix
    srs = [_plain_moments(matrix[:, j])[0] for j in range(12)]
    sr, skew, kurt = _plain_moments(matrix[:, 5])
    var = float(np.var(srs, ddof=1))
    dsr = summary["dsr"]
    assert dsr["n_trials"] == 12 and dsr["var_trials"] == pytest.approx(var)
    assert dsr["sr_per_period"] == pytest.approx(sr)
    assert dsr["expected_max_sr_per_period"] == pytest.approx(expected_max_sharpe(12, var))
    assert dsr["dsr"] == pytest.approx(deflated_sharpe_ratio(sr, 12, var, 1600, skew, kurt))
    assert dsr["dsr"] > 0.95  # 0.4 % a day on 1 % noise is real skill
    assert summary["pareto_front"] == []


def test_summary_noise_gives_pbo_well_above_zero() -> None:
    matrix = np.random.default_rng(3).normal(0.0, 0.01, (800, 20))
    study = _matrix_study(matrix)
    summary = sweep_summary(study, demo(), matrix, list(range(20)), "1d")
    assert 0.2 < summary["pbo"]["pbo"] < 0.8


def test_summary_warns_when_the_data_is_shorter_than_min_btl() -> None:
    rng = np.random.default_rng(8)
    n_trials = 20
    need = min_backtest_length(n_trials)  # years
    short = rng.normal(0.0, 0.01, (int(252 * need * 0.5), n_trials))
    long = rng.normal(0.0, 0.01, (int(252 * need * 1.5), n_trials))
    for matrix, warned in [(short, True), (long, False)]:
        summary = sweep_summary(_matrix_study(matrix), demo(), matrix, list(range(n_trials)), "1d")
        btl = summary["min_btl"]
        assert btl["years_required"] == pytest.approx(need)
        assert btl["years_available"] == pytest.approx(matrix.shape[0] / 252)
        assert (btl["warning"] is not None) is warned
        if warned:
            assert f"{n_trials} trials" in btl["warning"]


def test_summary_without_returns_falls_back_to_trial_metrics() -> None:
    study = optuna.create_study(direction="maximize")
    for i, sr in enumerate([0.05, 0.02, -0.01, 0.08]):
        metrics = {"sharpe": sr * math.sqrt(252), "skewness": 0.1, "kurtosis": 3.5, "n_periods": 500.0}
        study.add_trial(create_trial(value=float(i), user_attrs={"metrics": metrics}))
    summary = sweep_summary(study, demo(), None, [], "1d")
    assert summary["pbo"]["pbo"] is None and summary["pbo"]["note"]
    var = float(np.var([0.05, 0.02, -0.01, 0.08], ddof=1))
    # the best is trial 3 by value; its Sharpe ratio comes from its metrics
    assert summary["dsr"]["dsr"] == pytest.approx(deflated_sharpe_ratio(0.08, 4, var, 500, 0.1, 3.5))
    assert summary["min_btl"]["years_available"] == pytest.approx(500 / 252)


def _two_objective_study(n: int = 24) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="pareto")
    rng = np.random.default_rng(2)
    dists = {
        "a": optuna.distributions.FloatDistribution(0.0, 1.0),
        "b": optuna.distributions.IntDistribution(1, 9),
    }
    for _ in range(n):
        a, b = float(rng.uniform()), int(rng.integers(1, 10))
        sharpe_, mdd = a + 0.1 * b + rng.normal(0, 0.1), 0.05 + 0.3 * a + rng.uniform(0, 0.05)
        study.add_trial(create_trial(values=[sharpe_, mdd], params={"a": a, "b": b}, distributions=dists))
    return study


def test_summary_pareto_front_of_two_objectives() -> None:
    study = _two_objective_study()
    settings = demo("sweep.objectives=[sharpe, max_drawdown]")
    summary = sweep_summary(study, settings, None, [], "1d")
    vals = {t.number: t.values for t in study.trials}

    def dominated(i: int) -> bool:
        s, d = vals[i]
        return any((s2 >= s and d2 <= d) and (s2 > s or d2 < d) for j, (s2, d2) in vals.items() if j != i)

    expected = sorted(i for i in vals if not dominated(i))
    assert [p["number"] for p in summary["pareto_front"]] == expected
    assert summary["objectives"] == ["sharpe", "max_drawdown"]
    assert summary["directions"] == ["maximize", "minimize"]
    best = summary["best"]
    assert best["number"] in expected
    assert best["values"]["sharpe"] == max(vals[i][0] for i in expected)


# -- the page ---------------------------------------------------------------------------------------------


def test_page_is_self_contained_and_notes_missing_plots(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", study_name="tiny <b>")
    study.add_trial(create_trial(value=1.0))
    summary = sweep_summary(study, demo(), None, [], "1d")
    page = sweep_report_html(study, summary)
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()) == 1  # plotly.js inlined once ...
    ours = page.replace(get_plotlyjs(), "")
    assert "<script src=" not in ours and "https://" not in ours  # ... and nothing else loaded
    assert "tiny &lt;b&gt;" in page and "tiny <b>" not in page
    assert "Not enough trials to plot." in page
    out = render_sweep_report(study, summary, tmp_path / "run")
    assert out == str(tmp_path / "run" / "sweep.html")
    assert Path(out).read_text(encoding="utf-8") == page
    named = render_sweep_report(study, summary, str(tmp_path / "elsewhere.html"))
    assert Path(named).name == "elsewhere.html" and Path(named).is_file()


def _check_page(
    tmp_path: Path, study: optuna.Study, summary: dict[str, Any], expected: set[str], chromium: Any
) -> None:
    path = Path(render_sweep_report(study, summary, RunDir(str(tmp_path))))
    head = '<meta charset="utf-8">'
    page = path.read_text(encoding="utf-8")
    assert page.count("Plotly.newPlot") == len(expected)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace(head, head + chromium.recorder, 1), encoding="utf-8")
    scan, stderr = chromium.dump(probe)
    console = chromium.console(stderr)
    assert set(scan.plots) == expected
    assert all(scan.plots.values()), scan.plots
    assert scan.errors == []
    assert console == []


def test_single_objective_page_renders_in_headless_chromium(tmp_path: Path, headless_chromium: Any) -> None:
    settings = demo()
    space = search_space(settings)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    rng = np.random.default_rng(1)
    columns, numbers = [], []
    for _ in range(14):
        trial = study.ask()
        params = suggest(trial, space)
        r = rng.normal(0.0002 + params["composer.strategies[0].params.fast"] * 1e-5, 0.01, 600)
        for k in range(3):
            trial.report(float(r[k * 200 : (k + 1) * 200].mean() * 100), k)
        study.tell(trial, float(r.mean() / r.std(ddof=1)))
        columns.append(r)
        numbers.append(trial.number)
    summary = sweep_summary(study, settings, np.column_stack(columns), numbers, "1d")
    expected = {f"fig-{k}" for k in ("history", "importance", "parallel", "slice", "pbo")}
    _check_page(tmp_path, study, summary, expected, headless_chromium)


def test_two_objective_page_renders_in_headless_chromium(tmp_path: Path, headless_chromium: Any) -> None:
    study = _two_objective_study(16)
    settings = demo("sweep.objectives=[sharpe, max_drawdown]")
    matrix = np.random.default_rng(5).normal(0.0, 0.01, (640, 16))
    summary = sweep_summary(study, settings, matrix, list(range(16)), "1d")
    expected = {
        f"fig-{k}"
        for k in (
            "history_0",
            "history_1",
            "importance_0",
            "importance_1",
            "parallel",
            "slice",
            "pareto",
            "pbo",
        )
    }
    _check_page(tmp_path, study, summary, expected, headless_chromium)
