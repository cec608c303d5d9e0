"""Outputs of a finished sweep: the trials table, the best settings as a YAML overlay, the summary, the page.

* :func:`trials_table` - one row per trial (state, params, per-fold scores, objective values, timing).
* :func:`best_overlay` / :func:`overlay_yaml` - the best trial's swept keys as a YAML mapping, so that
  ``trader backtest --config base.yaml --config best.yaml`` runs exactly the best trial's settings.
* :func:`sweep_summary` - JSON-safe figures: best trial, counts, deflated Sharpe ratio of the best trial,
  probability of backtest overfitting (CSCV), minimum backtest length, Pareto front.
* :func:`render_sweep_report` - ``sweep.html``, one self-contained page that works offline (plotly.js is
  inlined once, as in :mod:`trader.report`).

Trial user attributes read here (the driver sets them): ``metrics`` (a :func:`trader.metrics.summarize`-style
dict plus ``score``), ``sharpe_per_period`` (the trial's per-period OOS Sharpe ratio), ``worker``.

Example::

    from trader.sweep.report import best_overlay, overlay_yaml, render_sweep_report, sweep_summary

    summary = sweep_summary(study, settings, returns_matrix, trial_numbers, interval="1d")
    render_sweep_report(study, summary, "runs/sweep-1")          # writes runs/sweep-1/sweep.html
    text = overlay_yaml(best_overlay(settings, study.best_trial.params))
"""

from __future__ import annotations

import html
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import optuna
import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
import yaml
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from trader.config import Settings
from trader.metrics import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_backtest_length,
    periods_per_year,
    probability_of_backtest_overfitting,
    sample_kurtosis,
    sample_skewness,
    sharpe,
)
from trader.report.html import PLOT_CONFIG
from trader.rundir import RunDir, json_safe
from trader.sweep.space import parse_key, trial_settings

__all__ = [
    "MINBTL_TARGET_SHARPE",
    "RETURNS_FILE",
    "SWEEP_REPORT_NAME",
    "best_overlay",
    "overlay_yaml",
    "render_sweep_report",
    "sweep_report_html",
    "sweep_summary",
    "trials_table",
]

#: File name of the page inside the sweep's run directory.
SWEEP_REPORT_NAME: Final = "sweep.html"
#: Name of a trial's OOS returns file inside ``returns_dir`` (see :func:`trials_table`).
RETURNS_FILE: Final = "t{number:05d}.parquet"  # as the driver writes them under trials/
#: Annualised Sharpe ratio the best of N skill-less trials should not reach by luck (MinBTL's target).
MINBTL_TARGET_SHARPE: Final = 1.0
_TOP_TRIALS: Final = 20


def _state_name(state: TrialState) -> str:
    return state.name


def _json_value(value: Any) -> Any:
    """A parameter value as JSON allows it (numpy scalars as Python, NaN/inf as None)."""
    return json_safe(value.item() if isinstance(value, np.generic) else value)


def _param_column(values: list[Any]) -> pl.Series | list[Any]:
    """One params column: typed when every value has one JSON type, else JSON text."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return pl.Series(values, dtype=pl.Boolean)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Series(values, dtype=pl.Int64)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pl.Series([None if v is None else float(v) for v in values], dtype=pl.Float64)
    if all(isinstance(v, str) for v in present):
        return pl.Series(values, dtype=pl.String)
    return pl.Series([None if v is None else json.dumps(v) for v in values], dtype=pl.String)


def _utc(value: datetime | None) -> datetime | None:
    # Optuna stamps trials with naive local time (datetime.now()); the project speaks UTC.
    if value is None:
        return None
    return value.astimezone(UTC)  # a naive value is read as local time


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _worker(trial: FrozenTrial) -> str | None:
    worker = trial.user_attrs.get("worker")
    if worker is None and isinstance(trial.user_attrs.get("workers"), list):
        worker = ",".join(str(w) for w in trial.user_attrs["workers"]) or None
    return None if worker is None else str(worker)


def trials_table(study: optuna.Study, returns_dir: str | RunDir | None = None) -> pl.DataFrame:
    """One row per trial, in trial-number order.

    Columns: ``number``; ``state`` (COMPLETE, PRUNED, FAIL, RUNNING, WAITING); ``params_<key>`` per swept key
    (typed when the values allow, JSON text otherwise; null where a trial lacks the key); ``fold_scores``
    (the intermediate values in step order, null for NaN); ``value`` (one objective) or ``value_0``,
    ``value_1`` (two; null when not finite or not set, as for a failed trial; optuna gives a pruned trial its
    last running score); ``duration_s`` (seconds); ``worker`` (user attr ``worker``, else the user attr
    ``workers`` list joined with commas, else null); ``datetime_start``, ``datetime_complete`` (UTC). With
    ``returns_dir`` (a local path, an ``s3://`` URI or a :class:`~trader.rundir.RunDir`): ``returns_file``,
    the name (:data:`RETURNS_FILE`) of the trial's returns file when it exists there, else null.

    >>> import optuna
    >>> study = optuna.create_study()
    >>> study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    >>> trials_table(study).columns[:3]
    ['number', 'state', 'params_x']
    """
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    n_obj = len(study.directions)
    keys: list[str] = []
    for t in trials:
        keys.extend(k for k in t.params if k not in keys)
    data: dict[str, Any] = {
        "number": pl.Series([t.number for t in trials], dtype=pl.Int64),
        "state": pl.Series([_state_name(t.state) for t in trials], dtype=pl.String),
    }
    for key in keys:
        data[f"params_{key}"] = _param_column([_json_value(t.params.get(key)) for t in trials])
    data["fold_scores"] = pl.Series(
        [[_finite_or_none(t.intermediate_values[s]) for s in sorted(t.intermediate_values)] for t in trials],
        dtype=pl.List(pl.Float64),
    )
    value_names = ["value"] if n_obj == 1 else [f"value_{i}" for i in range(n_obj)]
    for i, name in enumerate(value_names):
        data[name] = pl.Series(
            [_finite_or_none(t.values[i]) if t.values is not None else None for t in trials], dtype=pl.Float64
        )
    starts = [_utc(t.datetime_start) for t in trials]
    ends = [_utc(t.datetime_complete) for t in trials]
    data["duration_s"] = pl.Series(
        [
            (e - s).total_seconds() if s is not None and e is not None else None
            for s, e in zip(starts, ends, strict=True)
        ],
        dtype=pl.Float64,
    )
    data["worker"] = pl.Series([_worker(t) for t in trials], dtype=pl.String)
    data["datetime_start"] = pl.Series(starts, dtype=pl.Datetime("ns", "UTC"))
    data["datetime_complete"] = pl.Series(ends, dtype=pl.Datetime("ns", "UTC"))
    if returns_dir is not None:
        run = returns_dir if isinstance(returns_dir, RunDir) else RunDir(str(returns_dir))
        names = [RETURNS_FILE.format(number=t.number) for t in trials]
        present = set(run.list())
        data["returns_file"] = pl.Series([n if n in present else None for n in names], dtype=pl.String)
    return pl.DataFrame(data)


# -- the best settings as an overlay ------------------------------------------------------------------------


def _lookup(data: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        data = data[part]
    return data


def best_overlay(settings: Settings, params: Mapping[str, Any]) -> dict[str, Any]:
    """The swept keys of ``params`` as a nested mapping to layer over the sweep's config files.

    A key inside a list (``composer.strategies[0].params.fast``) writes the whole list, with every item as
    in the trial's settings, because a YAML layer replaces lists instead of merging them; any other key
    writes just its value. Loading the sweep's files plus this overlay gives exactly
    ``trial_settings(settings, params)``. Values are JSON/YAML-plain (tuples as lists).

    >>> from trader.config import load_settings
    >>> best_overlay(load_settings([], env={}), {"composer.lookback": 30})
    {'composer': {'lookback': 30}}
    """
    variant = trial_settings(settings, params).model_dump(mode="json")
    overlay: dict[str, Any] = {}
    for key in params:
        path = parse_key(key)
        cut = next((i for i, part in enumerate(path) if isinstance(part, int)), len(path))
        head = path[:cut]
        node = overlay
        for part in head[:-1]:
            node = node.setdefault(str(part), {})
        node[str(head[-1])] = _lookup(variant, head)
    return overlay


# Plain scalars that a YAML 1.1 or 1.2 loader (the project reads YAML 1.2) would not read back as text.
_NOT_TEXT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
    r"|\.(?:nan|NaN|NAN)|0o[0-7]+|0x[0-9a-fA-F]+|[yY]|[nN]|yes|Yes|YES|no|No|NO|true|True|TRUE|false|False"
    r"|FALSE|on|On|ON|off|Off|OFF|null|Null|NULL|~|)$"
)


class _OverlayDumper(yaml.SafeDumper):
    """SafeDumper that quotes every string a YAML 1.1 or 1.2 loader would read as something else."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "'" if _NOT_TEXT.match(value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_OverlayDumper.add_representer(str, _represent_str)


def overlay_yaml(overlay: Mapping[str, Any], *, comment: str = "") -> str:
    """``overlay`` as YAML text that :func:`trader.config.load_settings` reads back to the same values.

    ``comment`` lines go on top as ``#`` comments (e.g. the trial number and its objective values).

    >>> overlay_yaml({"composer": {"lookback": 30}})
    'composer:\\n  lookback: 30\\n'
    """
    text = yaml.dump(dict(overlay), Dumper=_OverlayDumper, sort_keys=False, default_flow_style=False)
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    return head + text


# -- the summary --------------------------------------------------------------------------------------------


def _objective_names(settings: Settings, n_obj: int) -> list[str]:
    names = list(settings.sweep.objectives)
    return names if len(names) == n_obj else [f"objective_{i}" for i in range(n_obj)]


def _best_trial(study: optuna.Study, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The best COMPLETE trial; with several objectives, the Pareto trial best on the first objective."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if not complete:
        return None
    sign = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
    pool = study.best_trials if len(study.directions) > 1 else complete
    # Ties go to the lowest trial number (what optuna's best_trial does for one objective).
    return max(pool, key=lambda t: (sign[0] * t.values[0], -t.number))


def _trial_metrics(trial: FrozenTrial) -> dict[str, Any]:
    metrics = trial.user_attrs.get("metrics")
    return dict(metrics) if isinstance(metrics, Mapping) else {}


def _column_sr(column: np.ndarray) -> tuple[float, float, float, int]:
    """Per-period Sharpe ratio, skewness, ordinary kurtosis and count of one returns column (NaN dropped)."""
    r = column[np.isfinite(column)]
    return (
        float(sharpe(r, periods_per_year=1)),
        float(sample_skewness(r)),
        float(sample_kurtosis(r)),
        int(r.size),
    )


def _dsr_section(
    complete: Sequence[FrozenTrial],
    best: FrozenTrial | None,
    columns: Mapping[int, np.ndarray],
    ppy: float,
) -> dict[str, Any]:
    """Deflated Sharpe ratio of the best trial against every completed trial's per-period Sharpe ratio."""
    srs: list[float] = []
    for t in complete:
        attr = t.user_attrs.get("sharpe_per_period")
        if attr is not None:
            srs.append(float(attr))
        elif t.number in columns:
            srs.append(_column_sr(columns[t.number])[0])
        elif "sharpe" in _trial_metrics(t) and _trial_metrics(t)["sharpe"] is not None:
            srs.append(float(_trial_metrics(t)["sharpe"]) / math.sqrt(ppy))
    finite = np.array([s for s in srs if math.isfinite(s)])
    out: dict[str, Any] = {
        "dsr": None,
        "n_trials": len(complete),
        "n_sharpe_ratios": int(finite.size),
        "var_trials": None,
        "sr_per_period": None,
        "sr_annual": None,
        "expected_max_sr_per_period": None,
        "expected_max_sr_annual": None,
        "n_periods": None,
        "skewness": None,
        "kurtosis": None,
        "source": None,
        "note": "",
    }
    if best is None:
        out["note"] = "no completed trial"
        return out
    if best.number in columns:
        sr, skew, kurt, n = _column_sr(columns[best.number])
        out["source"] = "returns_matrix"
    else:
        m = _trial_metrics(best)
        sr = float(m["sharpe"]) / math.sqrt(ppy) if m.get("sharpe") is not None else math.nan
        skew = float(m["skewness"]) if m.get("skewness") is not None else math.nan
        kurt = float(m["kurtosis"]) if m.get("kurtosis") is not None else math.nan
        n = int(m["n_periods"]) if m.get("n_periods") is not None else 0
        out["source"] = "metrics"
    out.update(sr_per_period=sr, sr_annual=sr * math.sqrt(ppy), n_periods=n, skewness=skew, kurtosis=kurt)
    if finite.size < 2:
        out["note"] = "fewer than two trials with a defined Sharpe ratio; the DSR needs their variance"
        return out
    var = float(np.var(finite, ddof=1))
    sr0 = expected_max_sharpe(len(complete), var)
    out.update(var_trials=var, expected_max_sr_per_period=sr0, expected_max_sr_annual=sr0 * math.sqrt(ppy))
    if not (math.isfinite(sr) and math.isfinite(skew) and math.isfinite(kurt) and n >= 2):
        out["note"] = "the best trial's returns do not define a Sharpe ratio, skewness and kurtosis"
        return out
    out["dsr"] = deflated_sharpe_ratio(sr, len(complete), var, n, skew, kurt)
    return out


def _pbo_section(matrix: np.ndarray | None, n_blocks: int, ppy: float) -> dict[str, Any]:
    out: dict[str, Any] = {"pbo": None, "n_blocks": n_blocks, "logits": [], "note": ""}
    if matrix is None:
        out["note"] = "no returns matrix given"
        return out
    if matrix.shape[1] < 2:
        out["note"] = f"PBO needs at least two completed trials; {matrix.shape[1]} given"
        return out
    if matrix.shape[0] // n_blocks * (n_blocks // 2) < 2:
        out["note"] = f"{matrix.shape[0]} periods are too few for {n_blocks} blocks (sweep.pbo_blocks)"
        return out
    # Periods where a trial held nothing count as flat (0 return), as the CSCV routine asks.
    res = probability_of_backtest_overfitting(np.nan_to_num(matrix, nan=0.0), n_blocks=n_blocks)
    # The CSCV Sharpe ratios are annualised with 252 periods a year; rescale the intercept to this interval.
    scale = math.sqrt(ppy / 252.0)
    out.update(
        pbo=res.pbo,
        logits=res.logits.tolist(),
        n_splits=res.n_splits,
        n_configs=res.n_configs,
        rows_used=res.rows_used,
        degradation_slope=res.degradation_slope,
        degradation_intercept=res.degradation_intercept * scale,
        prob_oos_loss=res.prob_oos_loss,
        metric="Sharpe ratio, annualised",
    )
    return out


def _minbtl_section(n_trials: int, years: float | None) -> dict[str, Any]:
    required = min_backtest_length(n_trials, MINBTL_TARGET_SHARPE) if n_trials > 0 else 0.0
    out: dict[str, Any] = {
        "n_trials": n_trials,
        "target_sharpe_annual": MINBTL_TARGET_SHARPE,
        "years_required": required,
        "years_available": years,
        "warning": None,
    }
    if years is not None and years < required:
        out["warning"] = (
            f"{years:.2f} years of returns are fewer than the {required:.2f} years the minimum backtest "
            f"length asks for {n_trials} trials: the best of them may reach an annualised Sharpe ratio of "
            f"{MINBTL_TARGET_SHARPE:g} by luck alone; run fewer trials or use more data"
        )
    return out


def sweep_summary(
    study: optuna.Study,
    settings: Settings,
    returns_matrix: np.ndarray | None,
    trial_numbers: Sequence[int],
    interval: str,
) -> dict[str, Any]:
    """The figures of a finished sweep, JSON-safe (NaN and infinities as None).

    ``returns_matrix``: T x N per-period OOS returns (fractions) of the N completed trials over the same T
    bars of ``interval``, column j belonging to trial ``trial_numbers[j]`` (NaN = no return that bar; counted
    as 0 for PBO). Keys:

    * ``best``: number, params, values, metrics (user attr ``metrics``) of the best COMPLETE trial (two
      objectives: the Pareto trial best on the first); None when no trial completed.
    * ``counts``: complete, pruned, failed, other (running/waiting), total.
    * ``dsr``: deflated Sharpe ratio of the best trial (Bailey & López de Prado 2014): n_trials = completed
      trials; var_trials = sample variance of their per-period Sharpe ratios (user attr
      ``sharpe_per_period``, else from their returns column, else ``metrics.sharpe / sqrt(ppy)``); the best
      trial's per-period Sharpe ratio, skewness, kurtosis and n from its returns column (else its metrics).
    * ``pbo``: probability of backtest overfitting by CSCV over ``returns_matrix`` with S =
      ``sweep.pbo_blocks``: pbo, logits (one per split), degradation_slope/intercept (OOS on IS annualised
      Sharpe ratios), prob_oos_loss, n_splits; None with a ``note`` when it cannot be computed.
    * ``min_btl``: years of data the number of completed trials needs (target annualised Sharpe 1), the
      years available (rows / bars per year) and a ``warning`` string when they are fewer.
    * ``pareto_front``: with two objectives, ``[{number, values}]`` of the non-dominated trials.

    Example::

        summary = sweep_summary(study, settings, matrix, [0, 1, 2, 5], interval="1d")
        summary["pbo"]["pbo"], summary["dsr"]["dsr"], summary["min_btl"]["warning"]
    """
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    n_obj = len(study.directions)
    names = _objective_names(settings, n_obj)
    ppy = periods_per_year(interval)
    matrix = None
    if returns_matrix is not None:
        matrix = np.asarray(returns_matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(trial_numbers):
            raise ValueError(
                f"returns_matrix has shape {matrix.shape}; expected (periods, {len(trial_numbers)}) "
                "with one column per trial number"
            )
    columns = {int(n): matrix[:, j] for j, n in enumerate(trial_numbers)} if matrix is not None else {}
    best = _best_trial(study, trials)
    counts = {
        "complete": len(complete),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL for t in trials),
        "other": sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials),
        "total": len(trials),
    }
    if matrix is not None:
        years: float | None = matrix.shape[0] / ppy
    elif best is not None and _trial_metrics(best).get("n_periods") is not None:
        years = float(_trial_metrics(best)["n_periods"]) / ppy
    else:
        years = None
    out: dict[str, Any] = {
        "study_name": study.study_name,
        "objectives": names,
        "directions": [d.name.lower() for d in study.directions],
        "interval": interval,
        "periods_per_year": ppy,
        "counts": counts,
        "best": None,
        "dsr": _dsr_section(complete, best, columns, ppy),
        "pbo": _pbo_section(matrix, settings.sweep.pbo_blocks, ppy),
        "min_btl": _minbtl_section(len(complete), years),
        "pareto_front": [],
    }
    if best is not None:
        out["best"] = {
            "number": best.number,
            "params": dict(best.params),
            "values": dict(zip(names, best.values, strict=True)),
            "metrics": _trial_metrics(best),
        }
    if n_obj > 1:
        front = sorted(study.best_trials, key=lambda t: t.number)
        out["pareto_front"] = [
            {"number": t.number, "values": dict(zip(names, t.values, strict=True))} for t in front
        ]
    return json_safe(out)


# -- the page -----------------------------------------------------------------------------------------------

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;max-width:1200px;
 padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f6f6f6} td.l,th.l{text-align:left}
p.note{font-size:.8rem;color:#555;margin:.2rem 0 1rem} p.empty{font-style:italic;color:#555}
p.warn{background:#fdecea;padding:.4rem .6rem} .meta{color:#555;font-size:.9rem}
"""
_DASH: Final = "—"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return _DASH
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return _DASH
        return f"{value:.4g}" if value != 0 else "0"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: Sequence[int] = (0,)) -> str:
    def cells(tag: str, values: Sequence[Any]) -> str:
        return "".join(
            f'<{tag} class="l">{_e(_fmt(v))}</{tag}>' if i in left else f"<{tag}>{_e(_fmt(v))}</{tag}>"
            for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', r)}</tr>" for r in rows)
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(key: str, fig: go.Figure) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"fig-{key}", config=PLOT_CONFIG)


def _section(key: str, title: str, build: Callable[[], go.Figure | None], note: str = "") -> str:
    """A titled plot; a one-line note instead when the plot cannot be drawn (too few trials, say)."""
    head = f'<section id="{_e(key)}"><h2>{_e(title)}</h2>'
    try:
        with warnings.catch_warnings():
            # Optuna warns about sparse regimes and experimental plots; the page says what it shows.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fig = build()
    except (ValueError, RuntimeError, ZeroDivisionError, KeyError, IndexError) as exc:
        return f'{head}<p class="empty">Not available: {_e(exc)}</p></section>'
    if fig is None:
        return f'{head}<p class="empty">{_e(note or "Not enough trials to plot.")}</p></section>'
    tail = f'<p class="note">{_e(note)}</p>' if note else ""
    return f"{head}{_figure_html(key, fig)}{tail}</section>"


def _target(i: int) -> Callable[[FrozenTrial], float]:
    # Optuna's plots want finite numbers; a worst-value (infinite) objective is left out as NaN.
    def target(t: FrozenTrial) -> float:
        v = t.values[i] if t.values is not None else math.nan
        return v if math.isfinite(v) else math.nan

    return target


def _loss(i: int, direction: StudyDirection) -> Callable[[FrozenTrial], float]:
    # Optuna's default importance evaluator (PED-ANOVA) ranks by a target where lower is better; a worst
    # (infinite) objective stays worst.
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0

    def loss(t: FrozenTrial) -> float:
        v = t.values[i] if t.values is not None else math.nan
        return sign * v if math.isfinite(v) else math.inf

    return loss


def _finite_complete(study: optuna.Study) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and all(math.isfinite(v) for v in t.values)
    ]


def _pbo_figure(summary: Mapping[str, Any]) -> go.Figure | None:
    pbo = summary.get("pbo") or {}
    logits = [x for x in pbo.get("logits") or [] if x is not None and math.isfinite(x)]
    if not logits:
        return None
    fig = go.Figure(go.Histogram(x=logits, nbinsx=40, marker_color="#4c78a8", name="splits"))
    fig.add_vline(x=0.0, line_dash="dash", line_color="#d62728")
    fig.update_layout(
        xaxis_title="logit of the in-sample best's out-of-sample relative rank",
        yaxis_title="CSCV splits",
        bargap=0.05,
        height=380,
        margin={"t": 30},
    )
    return fig


def _header(study: optuna.Study, summary: Mapping[str, Any]) -> str:
    counts = summary.get("counts") or {}
    objectives = ", ".join(
        f"{n} ({d})"
        for n, d in zip(summary.get("objectives") or [], summary.get("directions") or [], strict=False)
    )
    meta = " · ".join(
        [
            f"objectives: {objectives}",
            f"interval {summary.get('interval')}",
            f"{counts.get('total', 0)} trials: {counts.get('complete', 0)} complete, "
            f"{counts.get('pruned', 0)} pruned, {counts.get('failed', 0)} failed",
        ]
    )
    return f'<h1>Sweep {_e(study.study_name)}</h1><p class="meta">{_e(meta)}</p>'


def _best_html(summary: Mapping[str, Any]) -> str:
    best = summary.get("best")
    out = ["<h2>Best trial</h2>"]
    if not best:
        out.append('<p class="empty">No trial completed.</p>')
        return "".join(out)
    rows = [("trial", best["number"])]
    rows += [(f"objective {k}", v) for k, v in (best.get("values") or {}).items()]
    rows += [(k, v) for k, v in (best.get("params") or {}).items()]
    out.append(_table(["", "value"], rows))
    metrics = best.get("metrics") or {}
    if metrics:
        out.append(_table(["metric", "value"], sorted(metrics.items())))
    return "".join(out)


def _statistics_html(summary: Mapping[str, Any]) -> str:
    dsr = summary.get("dsr") or {}
    pbo = summary.get("pbo") or {}
    btl = summary.get("min_btl") or {}
    out = ["<h2>Overfitting checks</h2>"]
    if btl.get("warning"):
        out.append(f'<p class="warn">{_e(btl["warning"])}</p>')
    rows = [
        ("deflated Sharpe ratio of the best trial", dsr.get("dsr")),
        ("best trial's Sharpe ratio (annualised)", dsr.get("sr_annual")),
        ("expected best of N skill-less trials (annualised)", dsr.get("expected_max_sr_annual")),
        ("completed trials N", dsr.get("n_trials")),
        ("probability of backtest overfitting (CSCV)", pbo.get("pbo")),
        ("CSCV splits", pbo.get("n_splits")),
        ("performance degradation slope (OOS on IS)", pbo.get("degradation_slope")),
        ("probability of OOS loss", pbo.get("prob_oos_loss")),
        ("minimum backtest length, years", btl.get("years_required")),
        ("years of returns", btl.get("years_available")),
    ]
    out.append(_table(["figure", "value"], rows))
    notes = [f"DSR: {dsr['note']}" for _ in [0] if dsr.get("note")]
    notes += [f"PBO: {pbo['note']}" for _ in [0] if pbo.get("note")]
    out.append(
        '<p class="note">DSR: probability that the best trial\'s true Sharpe ratio exceeds zero after'
        " correcting for the number of trials and non-normal returns (Bailey &amp; López de Prado, 2014)."
        " PBO: share of CSCV splits whose in-sample best ranks at or below the out-of-sample median (Bailey"
        " et al., 2017). MinBTL: years of data below which the best of N trials reaches an annualised"
        f" Sharpe ratio of {MINBTL_TARGET_SHARPE:g} by luck (Bailey et al., 2014).</p>"
    )
    out.extend(f'<p class="note">{_e(n)}</p>' for n in notes)
    return "".join(out)


def _top_trials_html(study: optuna.Study, summary: Mapping[str, Any]) -> str:
    names = list(summary.get("objectives") or [])
    finite = _finite_complete(study)
    out = [f"<h2>Top {_TOP_TRIALS} completed trials</h2>"]
    if not finite:
        out.append('<p class="empty">No completed trial with finite objective values.</p>')
        return "".join(out)
    sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
    top = sorted(finite, key=lambda t: (-sign * t.values[0], t.number))[:_TOP_TRIALS]
    keys: list[str] = []
    for t in top:
        keys.extend(k for k in t.params if k not in keys)
    rows = [[t.number, *t.values, *(t.params.get(k) for k in keys)] for t in top]
    out.append(_table(["trial", *names, *keys], rows))
    return "".join(out)


def _pareto_html(summary: Mapping[str, Any]) -> str:
    front = summary.get("pareto_front") or []
    if not front:
        return ""
    names = list(summary.get("objectives") or [])
    rows = [[p["number"], *(p["values"].get(n) for n in names)] for p in front]
    return "<h2>Pareto front</h2>" + _table(["trial", *names], rows)


def sweep_report_html(study: optuna.Study, summary: Mapping[str, Any]) -> str:
    """The sweep page as HTML text (self-contained, works offline); nothing written.

    Sections: best trial, overfitting checks (DSR, PBO, MinBTL warning), top trials, Pareto front (two
    objectives); plots: optimisation history, parameter importances (when at least two trials completed),
    parallel coordinates, slice plots, Pareto front (two objectives), and the histogram of PBO logits. A plot
    that cannot be drawn gives a one-line note. Div ids are fixed (``fig-<key>``).

    Example::

        html = sweep_report_html(study, sweep_summary(study, settings, None, [], interval="1d"))
    """
    vis = optuna.visualization
    names = list(summary.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))])
    finite = _finite_complete(study)
    multi = len(study.directions) > 1
    has_params = any(t.params for t in finite)
    sections: list[str] = []
    for i, name in enumerate(names):
        key = "history" if not multi else f"history_{i}"

        def history(i: int = i, name: str = name) -> go.Figure | None:
            if not finite:
                return None
            return vis.plot_optimization_history(study, target=_target(i), target_name=name)

        sections.append(_section(key, f"Optimisation history: {name}", history))
    for i, name in enumerate(names):
        key = "importance" if not multi else f"importance_{i}"

        def importance(i: int = i, name: str = name) -> go.Figure | None:
            if len(finite) < 2 or not has_params:
                return None
            loss = _loss(i, study.directions[i])
            return vis.plot_param_importances(study, target=loss, target_name=f"{name} (as a loss)")

        sections.append(
            _section(
                key,
                f"Parameter importances: {name}",
                importance,
                "Optuna's default evaluator over the completed trials; needs at least two.",
            )
        )

    def parallel() -> go.Figure | None:
        if not finite or not has_params:
            return None
        return vis.plot_parallel_coordinate(study, target=_target(0), target_name=names[0])

    sections.append(_section("parallel", f"Parallel coordinates: {names[0]}", parallel))

    def slices() -> go.Figure | None:
        if not finite or not has_params:
            return None
        return vis.plot_slice(study, target=_target(0), target_name=names[0])

    sections.append(_section("slice", f"Slice plots: {names[0]}", slices))
    if multi:

        def pareto() -> go.Figure | None:
            if not finite:
                return None
            return vis.plot_pareto_front(study, target_names=names)

        sections.append(_section("pareto", "Pareto front", pareto))
    sections.append(
        _section(
            "pbo",
            "PBO: logits of the in-sample best's out-of-sample rank",
            lambda: _pbo_figure(summary),
            "Each CSCV split's logit; at or below 0 (dashed) the in-sample best ranked at or below the "
            "out-of-sample median. PBO is the share of splits there.",
        )
    )
    body = [
        _header(study, summary),
        _best_html(summary),
        _statistics_html(summary),
        _top_trials_html(study, summary),
        _pareto_html(summary),
        *sections,
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Sweep {_e(study.study_name)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def render_sweep_report(
    study: optuna.Study, summary: Mapping[str, Any], path_or_rundir: str | Path | RunDir
) -> str:
    """Write ``sweep.html`` and return where it went (a local path or an ``s3://`` URI).

    ``path_or_rundir``: a :class:`~trader.rundir.RunDir` or a run directory (local path or ``s3://`` URI;
    the page goes to ``sweep.html`` inside it), or a local path ending in ``.html`` (written as is). The page
    is rendered completely first and then written atomically (see :class:`~trader.rundir.RunDir`).

    Example::

        render_sweep_report(study, summary, "runs/sweep-1")   # 'runs/sweep-1/sweep.html'
    """
    page = sweep_report_html(study, summary).encode("utf-8")
    if isinstance(path_or_rundir, RunDir):
        run, name = path_or_rundir, SWEEP_REPORT_NAME
    elif str(path_or_rundir).endswith(".html") and "://" not in str(path_or_rundir):
        target = Path(path_or_rundir)
        run, name = RunDir(str(target.parent.resolve())), target.name
    else:
        run, name = RunDir(str(path_or_rundir)), SWEEP_REPORT_NAME
    run.write_bytes(name, page, "text/html")
    return run.path(name)
