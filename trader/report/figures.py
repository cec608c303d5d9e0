"""The report's plots, one :class:`Panel` each: a plotly figure, or a short note when there is nothing to
plot.

Series longer than :data:`MAX_PLOT_POINTS` are down-sampled for plotting by :func:`decimate_indices`, which
keeps the first and last point and the minimum and maximum of every bucket, so drawdown troughs and peaks
survive; the panel's note says so. Figures use SVG traces only (no WebGL), so they render in any browser,
headless ones included.

Example::

    from trader.report.figures import build_panels
    from trader.report.rundir import load_run

    for panel in build_panels(load_run("runs/wf-2024")):
        print(panel.key, panel.figure is not None, panel.note)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from trader.errors import DataError
from trader.report.rundir import PATHS_EQUITY, RunData, finite_or_none
from trader.report.tables import DASH, FoldRow, fold_rows, format_metric

__all__ = [
    "HEATMAP_METRICS",
    "MAX_PLOT_POINTS",
    "Panel",
    "build_panels",
    "cpcv_paths_panel",
    "decimate_indices",
    "drawdown",
    "drawdown_panel",
    "equity_panel",
    "fold_sharpe_panel",
    "param_stability_panel",
    "param_values",
    "risk_events_panel",
    "selection_panel",
    "selection_shares",
    "symbol_heatmap_panel",
]

#: Most points a plotted series keeps; longer ones are down-sampled (min/max per bucket).
MAX_PLOT_POINTS: Final = 5_000
#: Per-symbol metrics shown in the heatmap (those present), and +1 where higher is better, -1 where lower is.
HEATMAP_METRICS: Final[Mapping[str, int]] = {
    "total_return": 1,
    "cagr": 1,
    "sharpe": 1,
    "sortino": 1,
    "calmar": 1,
    "max_drawdown": -1,
    "volatility": -1,
    "win_rate": 1,
    "profit_factor": 1,
    "psr": 1,
    "exposure": 0,
    "n_trades": 0,
}
# Most parameters drawn (one small subplot each); the rest are named in the note.
_MAX_PARAMS: Final = 12
# Beyond this many symbols a box shows outliers only, not every symbol's point.
_BOX_ALL_POINTS: Final = 50
# Beyond this many symbols the heatmap cells carry no text (it would be unreadable), hover only.
_HEATMAP_TEXT_ROWS: Final = 40
_PALETTE: Final = tuple(qualitative.D3) + tuple(qualitative.Set2)
_STRATEGY_COLOR: Final = "#1f77b4"
_BENCH_COLOR: Final = "#7f7f7f"
_FAILED_COLOR: Final = "#d62728"
_PARTIAL_COLOR: Final = "#ff7f0e"
# Fold statuses without any out-of-sample result ("partial": some symbols failed, the rest traded).
_NO_RESULT: Final = frozenset({"failed", "missing"})
_PATH_COLOR: Final = "rgba(127,127,127,0.45)"
# Beyond this many CPCV paths the per-path table is left out (summary.json has every path).
_PATH_TABLE_ROWS: Final = 60
# Multi-panel figures carry subplot titles where the default legend sits; theirs goes on the right.
_SIDE_LEGEND: Final = {"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top"}


#: A small table shown under a panel's figure: (header, rows) of page text (escaped when rendered).
TableData = tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]


@dataclass(frozen=True)
class Panel:
    """One plot of the page. ``key`` is stable (the div id is ``fig-<key>``); ``figure`` is ``None`` when
    there is nothing to plot and ``note`` then says why; otherwise ``note`` is a caption (units, sources,
    down-sampling). ``tables`` are shown under the figure (first column left-aligned, the rest numbers)."""

    key: str
    title: str
    figure: go.Figure | None
    note: str = ""
    tables: tuple[TableData, ...] = ()


# -- helpers ----------------------------------------------------------------------------------------------
def decimate_indices(columns: Sequence[np.ndarray], max_points: int = MAX_PLOT_POINTS) -> np.ndarray:
    """Sorted row indices to plot so that at most ``max_points`` rows remain.

    All ``columns`` (same length) share the rows. Short input is kept whole; otherwise the rows are cut
    into equal buckets and each bucket keeps the row of each column's minimum and maximum (NaN ignored),
    plus the first and last row overall, so every extreme of every column is plotted.

    >>> decimate_indices([np.array([0.0, 5, 1, 2, 9, 3, 4, 8])], max_points=6).tolist()
    [0, 1, 4, 5, 7]
    """
    n = len(columns[0]) if columns else 0
    if n <= max_points:
        return np.arange(n)
    per_bucket = 2 * len(columns)
    n_buckets = max(1, (max_points - 2) // per_bucket)
    size = -(-n // n_buckets)
    pad = n_buckets * size - n
    keep = [np.array([0, n - 1])]
    base = np.arange(n_buckets) * size
    for col in columns:
        values = np.asarray(col, dtype=np.float64)
        lows = np.concatenate([np.where(np.isnan(values), np.inf, values), np.full(pad, np.inf)])
        highs = np.concatenate([np.where(np.isnan(values), -np.inf, values), np.full(pad, -np.inf)])
        keep.append(base + lows.reshape(n_buckets, size).argmin(axis=1))
        keep.append(base + highs.reshape(n_buckets, size).argmax(axis=1))
    idx = np.unique(np.concatenate(keep))
    return idx[idx < n]


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Drawdown of an equity curve as a fraction <= 0: ``equity / running peak - 1`` (NaN where equity is).

    >>> drawdown(np.array([100.0, 120.0, 90.0, 130.0])).tolist()
    [0.0, 0.0, -0.25, 0.0]
    """
    values = np.asarray(equity, dtype=np.float64)
    peak = np.fmax.accumulate(values)  # fmax skips NaN, so a gap does not reset the peak
    with np.errstate(divide="ignore", invalid="ignore"):
        out = values / peak - 1.0
    out[~np.isfinite(out)] = np.nan
    return out


def _ts_text(ts: pl.Series, rows: np.ndarray | None = None) -> list[str]:
    """UTC timestamps (of ``rows`` only, when given) as plotly date strings: dates alone when every bar of
    ``ts`` starts at midnight (daily bars), else minutes."""
    if ts.len() == 0:
        return []
    daily = bool((ts.dt.hour() == 0).all() and (ts.dt.minute() == 0).all())
    picked = ts if rows is None else ts.gather(rows)
    return picked.dt.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M").to_list()


def _plain(values: np.ndarray) -> list[float | None]:
    """Floats with NaN as None (a gap in the line), for JSON."""
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def _downsample_note(n: int, kept: int) -> str:
    if kept >= n:
        return ""
    return (
        f" Down-sampled for plotting: {kept:,} of {n:,} points (each bucket keeps its minimum and maximum,"
        " so extremes are exact)."
    )


def _layout(fig: go.Figure, *, height: int = 380, **kwargs: Any) -> go.Figure:
    settings: dict[str, Any] = {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 30, "b": 40},
        "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
    }
    settings.update(kwargs)
    fig.update_layout(**settings)
    return fig


def _colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per name (sorted order), cycling the palette."""
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(sorted(names))}


# -- equity and drawdown ----------------------------------------------------------------------------------
def equity_panel(run: RunData, folds: Sequence[FoldRow]) -> Panel:
    """Stitched OOS equity vs the buy-and-hold benchmark (account currency); failed folds' test windows
    shaded."""
    title = "Equity vs benchmark"
    eq = run.equity
    if eq.height == 0:
        return Panel("equity", title, None, "No equity rows: no fold produced out-of-sample returns.")
    strat = eq["equity"].fill_null(float("nan")).to_numpy()
    bench = eq["benchmark"].fill_null(float("nan")).to_numpy()
    idx = decimate_indices([strat, bench])
    x = _ts_text(eq["ts"], idx)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=x, y=_plain(strat[idx]), name="strategy (OOS)", line={"color": _STRATEGY_COLOR})
    )
    fig.add_trace(
        go.Scatter(x=x, y=_plain(bench[idx]), name="benchmark", line={"color": _BENCH_COLOR, "dash": "dash"})
    )
    shaded = 0
    for row in folds:
        if row.status not in _NO_RESULT:  # "partial" folds traded: their equity is real
            continue
        for win in row.test:
            shaded += 1
            fig.add_shape(
                type="rect",
                xref="x",
                yref="paper",
                x0=win.start.isoformat(),
                x1=win.end.isoformat(),
                y0=0,
                y1=1,
                fillcolor=_FAILED_COLOR,
                opacity=0.12,
                line={"width": 0},
                layer="below",
                label={"text": f"fold {row.fold} {row.status}", "textposition": "top left"},
            )
    _layout(fig, hovermode="x unified", yaxis_title="equity (account currency)", xaxis_title="UTC")
    note = (
        "Stitched out-of-sample portfolio equity, and an equal-weight buy-and-hold of the same symbols over"
        " the same bars from the same starting cash."
    )
    if shaded:
        note += " Shaded: test windows of folds without a result."
    return Panel("equity", title, fig, note + _downsample_note(eq.height, idx.size))


def drawdown_panel(run: RunData) -> Panel:
    """Drawdown (fraction below the running peak, axis in percent) of the strategy and the benchmark."""
    title = "Drawdown"
    eq = run.equity
    if eq.height == 0:
        return Panel("drawdown", title, None, "No equity rows, so no drawdown.")
    dd_s = drawdown(eq["equity"].fill_null(float("nan")).to_numpy())
    dd_b = drawdown(eq["benchmark"].fill_null(float("nan")).to_numpy())
    idx = decimate_indices([dd_s, dd_b])
    x = _ts_text(eq["ts"], idx)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=_plain(dd_s[idx]),
            name="strategy (OOS)",
            fill="tozeroy",
            line={"color": _STRATEGY_COLOR},
        )
    )
    fig.add_trace(
        go.Scatter(x=x, y=_plain(dd_b[idx]), name="benchmark", line={"color": _BENCH_COLOR, "dash": "dash"})
    )
    _layout(fig, hovermode="x unified", yaxis={"tickformat": ".0%", "title": "below peak"}, xaxis_title="UTC")
    worst = [np.nanmin(d) if np.isfinite(d).any() else float("nan") for d in (dd_s, dd_b)]
    note = (
        f"Fall from the running peak. Deepest: strategy {format_metric('max_drawdown', -worst[0])},"
        f" benchmark {format_metric('max_drawdown', -worst[1])}."
    )
    return Panel("drawdown", title, fig, note + _downsample_note(eq.height, idx.size))


# -- folds ------------------------------------------------------------------------------------------------
def fold_sharpe_panel(folds: Sequence[FoldRow]) -> Panel:
    """Annualised OOS Sharpe ratio of each fold's test window, next to the benchmark's over the same bars."""
    title = "Out-of-sample Sharpe ratio per fold"
    if not folds:
        return Panel("fold_sharpe", title, None, "The fold plan is empty.")
    x = [str(r.fold) for r in folds]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=x,
            y=[r.sharpe for r in folds],
            name="strategy (OOS)",
            marker_color=[
                _STRATEGY_COLOR
                if r.status == "ok"
                else (_FAILED_COLOR if r.status in _NO_RESULT else _PARTIAL_COLOR)
                for r in folds
            ],
            customdata=[[r.status, str(r.test[0]) if r.test else ""] for r in folds],
            hovertemplate="fold %{x}: %{y:.2f}<br>%{customdata[0]} %{customdata[1]}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(x=x, y=[r.benchmark_sharpe for r in folds], name="benchmark", marker_color=_BENCH_COLOR)
    )
    for r in folds:
        if r.status != "ok":
            fig.add_annotation(x=str(r.fold), y=0, text=r.status, showarrow=False, yshift=10)
    _layout(
        fig,
        barmode="group",
        xaxis={"title": "fold", "type": "category"},
        yaxis_title="Sharpe ratio (annualised)",
    )
    note = (
        "Strategy: each fold's out-of-sample Sharpe ratio from summary.json. Benchmark: buy-and-hold over the"
        " same test bars (from equity.parquet). Failed folds have no bar; orange: partial folds (some symbols"
        " failed)."
    )
    return Panel("fold_sharpe", title, fig, note)


# -- CPCV paths -------------------------------------------------------------------------------------------
_DISTRIBUTION_ROWS: Final = (
    ("mean", "mean"),
    ("std", "std (sample)"),
    ("min", "min"),
    ("p5", "5th percentile"),
    ("p25", "25th percentile"),
    ("p50", "median"),
    ("p75", "75th percentile"),
    ("p95", "95th percentile"),
    ("max", "max"),
)


def _path_tables(paths: Mapping[str, Any]) -> tuple[TableData, ...]:
    """The distribution of path metrics, then (for up to 60 paths) one row per path."""
    metrics = (("sharpe", "Sharpe"), ("cagr", "CAGR"), ("max_drawdown", "max DD"))
    dist: list[tuple[str, ...]] = []
    for stat, label in _DISTRIBUTION_ROWS:
        dist.append((label, *(format_metric(key, (paths.get(key) or {}).get(stat)) for key, _ in metrics)))
    out: list[TableData] = [(("across paths", *(label for _, label in metrics)), tuple(dist))]
    per_path = paths.get("per_path") or []
    if 0 < len(per_path) <= _PATH_TABLE_ROWS:
        rows = tuple(
            (
                str(e.get("path")),
                format_metric("sharpe", e.get("sharpe")),
                format_metric("cagr", e.get("cagr")),
                format_metric("total_return", e.get("total_return")),
                format_metric("max_drawdown", e.get("max_drawdown")),
                format_metric("n_periods", e.get("n_periods")),
                " ".join(str(f) for f in e.get("folds") or []) or DASH,
                " ".join(str(g) for g in e.get("missing_groups") or []) or "none",
            )
            for e in per_path
        )
        header = ("path", "Sharpe", "CAGR", "return", "max DD", "bars", "fold per group", "groups missing")
        out.append((header, rows))
    return tuple(out)


def cpcv_paths_panel(run: RunData) -> Panel | None:
    """CPCV backtest paths: every path's equity curve (thin lines, the median path by Sharpe thick) and a
    histogram of path Sharpe ratios (annualised); ``None`` for a run without paths (walk-forward)."""
    title = "CPCV paths"
    paths: Mapping[str, Any] = run.summary.get("paths") or {}
    per_path = paths.get("per_path") or []
    curves = run.path_equity
    if not per_path and curves.height == 0:
        return None
    sharpes = [v for v in (finite_or_none(e.get("sharpe")) for e in per_path) if v is not None]
    n_paths = int(paths.get("n_paths") or len(per_path) or curves["path"].n_unique())
    median = paths.get("median_path")
    if not sharpes and curves.height == 0:
        return Panel("cpcv_paths", title, None, f"{n_paths} paths, none with an out-of-sample return.")
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.68, 0.32],
        horizontal_spacing=0.08,
        subplot_titles=("equity per path (account currency)", "path Sharpe ratio (annualised)"),
    )
    by_path = curves.partition_by("path", as_dict=True) if curves.height else {}
    order = sorted(p for (p,) in by_path)
    order = [p for p in order if p != median] + [p for p in order if p == median]  # median on top
    legend_other = True
    for p in order:
        frame = by_path[(p,)]
        is_median = p == median
        label = f"median path {p}" if is_median else f"path {p}"
        fig.add_trace(
            go.Scatter(
                x=_ts_text(frame["ts"]),
                y=_plain(frame["equity"].fill_null(float("nan")).to_numpy()),
                mode="lines",
                name="median path" if is_median else "other paths",
                legendgroup="median" if is_median else "paths",
                showlegend=is_median or legend_other,
                line={"color": _STRATEGY_COLOR if is_median else _PATH_COLOR, "width": 3 if is_median else 1},
                hovertemplate=f"{label}: %{{y:,.0f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        legend_other = legend_other and is_median
    if sharpes:
        # Bins chosen here, not by plotly.js: a handful of paths would get 2-3 very wide auto bins.
        n_bins = min(max(len(sharpes) // 2, 5), 30)
        lo, hi = min(sharpes), max(sharpes)
        size = (hi - lo) / n_bins if hi > lo else 1.0
        fig.add_trace(
            go.Histogram(
                x=sharpes,
                xbins={"start": lo - size / 2, "end": hi + size / 2, "size": size},
                name="paths",
                showlegend=False,
                marker_color=_STRATEGY_COLOR,
                opacity=0.75,
                hovertemplate="Sharpe %{x}: %{y} path(s)<extra></extra>",
            ),
            row=1,
            col=2,
        )
        fig.add_vline(x=0.0, line={"color": _BENCH_COLOR, "dash": "dot", "width": 1}, row=1, col=2)
        stitched = finite_or_none((run.summary.get("oos") or {}).get("sharpe"))
        if stitched is not None:
            fig.add_vline(
                x=stitched,
                line={"color": _PARTIAL_COLOR, "dash": "dash", "width": 2},
                annotation_text="stitched OOS",
                annotation_position="top right",
                row=1,
                col=2,
            )
    fig.update_xaxes(title_text="UTC", row=1, col=1)
    fig.update_xaxes(title_text="Sharpe ratio (annualised)", row=1, col=2)
    # Whole path counts: no 0.5 ticks when few paths share a bin.
    fig.update_yaxes(title_text="paths", rangemode="tozero", tickformat=",d", row=1, col=2)
    if len(sharpes) <= 10:
        fig.update_yaxes(dtick=1, row=1, col=2)
    _layout(
        fig, height=420, hovermode="closest", legend=_SIDE_LEGEND, margin={"l": 60, "r": 20, "t": 60, "b": 40}
    )
    n_le_0 = sum(1 for v in sharpes if v <= 0)
    note = (
        f"{n_paths} backtest paths (AFML ch. 12): each takes, for every group of sessions, the out-of-sample"
        " returns of the split the plan assigns to it, so every path covers every group once. Thick line: the"
        f" median path by Sharpe ratio (path {median}). Right: path Sharpe ratios; dotted at zero, dashed the"
        f" stitched OOS series' Sharpe. {n_le_0} of {len(sharpes)} paths have a Sharpe ratio <= 0."
    )
    if per_path and curves.height == 0:
        note += f" No equity curves: {PATHS_EQUITY} was not written."
    note += _downsample_note(run.row_counts.get(PATHS_EQUITY, curves.height), curves.height)
    if len(per_path) > _PATH_TABLE_ROWS:
        note += f" Per-path metrics of all {len(per_path)} paths: summary.json paths.per_path."
    return Panel("cpcv_paths", title, fig, note, _path_tables(paths))


# -- per symbol -------------------------------------------------------------------------------------------
def symbol_heatmap_panel(run: RunData) -> Panel:
    """Per-symbol OOS metrics; colour is each metric's z-score across symbols, signed so green is better."""
    title = "Per-symbol metrics"
    per_symbol: Mapping[str, Mapping[str, Any]] = run.summary.get("per_symbol") or {}
    if not per_symbol:
        return Panel("symbols", title, None, "summary.json has no per-symbol metrics.")
    symbols = sorted(per_symbol)
    present = {k for m in per_symbol.values() for k, v in m.items() if finite_or_none(v) is not None}
    metrics = [k for k in HEATMAP_METRICS if k in present]
    metrics = metrics or sorted(present)
    if not metrics:
        return Panel("symbols", title, None, "The per-symbol metrics in summary.json are all empty.")
    raw = np.array(
        [[finite_or_none(per_symbol[s].get(m)) for m in metrics] for s in symbols], dtype=np.float64
    )
    z = np.full(raw.shape, np.nan)
    for j, m in enumerate(metrics):
        col = raw[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            continue
        std = float(np.std(col[ok]))
        sign = HEATMAP_METRICS.get(m, 0)
        z[ok, j] = 0.0 if std == 0 or sign == 0 else sign * (col[ok] - col[ok].mean()) / std
    text = [[format_metric(m, per_symbol[s].get(m)) for m in metrics] for s in symbols]
    heat = go.Heatmap(
        z=[_plain(row) for row in np.clip(z, -3, 3)],
        x=metrics,
        y=symbols,
        text=text,
        colorscale="RdYlGn",
        zmid=0,
        zmin=-3,
        zmax=3,
        colorbar={"title": {"text": "z (green better)"}},
        hovertemplate="%{y} %{x}: %{text}<extra></extra>",
        xgap=1,
        ygap=1,
    )
    if len(symbols) <= _HEATMAP_TEXT_ROWS:
        heat.update(texttemplate="%{text}")
    fig = go.Figure(heat)
    _layout(
        fig,
        height=min(max(260, 28 * len(symbols) + 120), 1400),
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"side": "top", "type": "category"},
        margin={"l": 60, "r": 20, "t": 60, "b": 20},
    )
    note = (
        "Out-of-sample metrics per symbol sleeve (summary.json per_symbol; percent for fractions, Sharpe"
        " annualised). Colour: the metric's z-score across symbols, signed so that green is better (lower is"
        " better for drawdown and volatility; exposure and trade counts are not ranked)."
    )
    return Panel("symbols", title, fig, note)


# -- parameters -------------------------------------------------------------------------------------------
def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def param_values(params: pl.DataFrame) -> dict[str, list[tuple[int, str, Any]]]:
    """Chosen parameter values per parameter name: ``{name: [(fold, symbol, value), ...]}``.

    Nested JSON objects are flattened with dots (``weights.trend``); when rows hold more than one strategy,
    names are prefixed with the strategy (``sma_cross.fast``) and the strategy choice itself is the
    parameter ``strategy``, listed first. Raises :class:`~trader.errors.DataError` for a ``params`` cell
    that is not a JSON object.

    >>> frame = pl.DataFrame({"fold": [0], "symbol": ["A"], "strategy": ["s"], "params": ['{"n": 5}']})
    >>> param_values(frame)
    {'n': [(0, 'A', 5)]}
    """
    strategies = set(params["strategy"].drop_nulls().to_list())
    several = len(strategies) > 1
    out: dict[str, list[tuple[int, str, Any]]] = {}
    for row in params.iter_rows(named=True):
        text = row["params"]
        try:
            parsed = json.loads(text) if text is not None else {}
        except json.JSONDecodeError as exc:
            raise DataError(
                f"params.parquet: fold {row['fold']} symbol {row['symbol']}: 'params' is not JSON ({exc})"
            ) from exc
        if not isinstance(parsed, dict):
            raise DataError(
                f"params.parquet: fold {row['fold']} symbol {row['symbol']}: 'params' must be a JSON object"
            )
        flat: dict[str, Any] = {}
        _flatten(str(row["strategy"]) if several else "", parsed, flat)
        if several:
            flat["strategy"] = row["strategy"]
        for name, value in flat.items():
            out.setdefault(name, []).append((int(row["fold"]), str(row["symbol"]), value))
    # the strategy choice first (it explains the rest), then parameters by name
    return dict(sorted(out.items(), key=lambda item: (item[0] != "strategy" or not several, item[0])))


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def param_stability_panel(run: RunData) -> Panel:
    """Chosen parameters across folds: a box per fold of the values chosen for the symbols (numbers), or the
    share of symbols choosing each value (anything else)."""
    title = "Parameter stability across folds"
    if run.params.height == 0:
        why = "not written" if "params.parquet" in run.missing else "empty"
        return Panel("params", title, None, f"No chosen parameters (params.parquet {why}).")
    values = param_values(run.params)
    if not values:
        return Panel("params", title, None, "The chosen parameter sets are all empty objects.")
    names = list(values)[:_MAX_PARAMS]
    folds = sorted({f for rows in values.values() for f, _, _ in rows})
    n_symbols = run.params["symbol"].n_unique()
    cols = min(3, len(names))
    nrows = -(-len(names) // cols)
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=names, vertical_spacing=0.5 / nrows)
    categories: set[str] = set()
    cat_rows: dict[str, list[tuple[int, str]]] = {}
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        rows = values[name]
        if all(_is_number(v) for _, _, v in rows):
            fig.add_trace(
                go.Box(
                    x=[str(f) for f, _, _ in rows],
                    y=[float(v) for _, _, v in rows],
                    text=[s for _, s, _ in rows],
                    name=name,
                    boxpoints="all" if n_symbols <= _BOX_ALL_POINTS else "outliers",
                    pointpos=0,
                    jitter=0.3,
                    marker={"color": _STRATEGY_COLOR, "size": 4},
                    line={"width": 1},
                    showlegend=False,
                    hovertemplate="fold %{x} %{text}: %{y}<extra></extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
        else:
            text_rows = [(f, json.dumps(v) if not isinstance(v, str) else v) for f, _, v in rows]
            cat_rows[name] = text_rows
            categories |= {v for _, v in text_rows}
    colors = _colors(list(categories))
    shown: set[str] = set()
    for i, name in enumerate(names):
        if name not in cat_rows:
            continue
        r, c = divmod(i, cols)
        per_fold = Counter(f for f, _ in cat_rows[name])
        counts = Counter(cat_rows[name])
        for value in sorted({v for _, v in cat_rows[name]}):
            fig.add_trace(
                go.Bar(
                    x=[str(f) for f in folds],
                    y=[counts[(f, value)] / per_fold[f] if per_fold[f] else None for f in folds],
                    name=value,
                    legendgroup=value,
                    showlegend=value not in shown,
                    marker_color=colors[value],
                    hovertemplate=f"fold %{{x}}: %{{y:.0%}} chose {value}<extra></extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
            shown.add(value)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[str(f) for f in folds])
    _layout(
        fig,
        height=max(300, 240 * nrows),
        barmode="stack",
        legend=_SIDE_LEGEND,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    note = (
        f"Parameters chosen on each fold's training window (params.parquet; x axis: fold). Numbers: one box"
        f" per fold over the {n_symbols} symbol(s). Other values: share of symbols choosing each value."
    )
    if len(values) > len(names):
        note += f" Not drawn ({len(values) - len(names)} more): {', '.join(list(values)[_MAX_PARAMS:])}."
    return Panel("params", title, fig, note)


# -- regimes and arms -------------------------------------------------------------------------------------
def selection_shares(counts: pl.DataFrame, by: str, column: str) -> pl.DataFrame:
    """Share (fraction, summing to 1 per ``by`` group) of decisions per value of ``column``.

    ``counts`` has columns ``fold``, ``regime``, ``arm`` and ``n`` (decisions), as
    :attr:`~trader.report.rundir.RunData.selection_counts`. Null regimes count as ``"unlabelled"`` and null
    arms as ``"none"``. Returns columns ``by``, ``column``, ``share``, sorted.

    >>> counts = pl.DataFrame({"fold": [0, 0, 1], "regime": ["trend"] * 3, "arm": ["a", "b", None]})
    >>> counts = counts.with_columns(n=pl.Series([2, 1, 1]))
    >>> selection_shares(counts, "fold", "arm")["share"].round(3).to_list()
    [0.667, 0.333, 1.0]
    """
    frame = counts.with_columns(pl.col("regime").fill_null("unlabelled"), pl.col("arm").fill_null("none"))
    sums = frame.group_by(by, column).agg(pl.col("n").sum())
    return (
        sums.with_columns((pl.col("n") / pl.col("n").sum().over(by)).alias("share"))
        .select(by, column, "share")
        .sort(by, column)
    )


def selection_panel(run: RunData) -> Panel:
    """Regime shares and bandit arm shares of the decisions, per fold, and the arm mix within each regime."""
    title = "Regime and arm shares"
    sel = run.selection_counts
    if sel.height == 0:
        why = "not written" if "selection.parquet" in run.missing else "empty"
        return Panel("selection", title, None, f"No selection records (selection.parquet {why}).")
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("regime share per fold", "arm share per fold", "arm share within regime"),
        horizontal_spacing=0.07,
    )
    shares = {
        "regime_fold": selection_shares(sel, "fold", "regime"),
        "arm_fold": selection_shares(sel, "fold", "arm"),
        "arm_regime": selection_shares(sel, "regime", "arm"),
    }
    regimes = sorted(shares["regime_fold"]["regime"].unique().to_list())
    arms = sorted(shares["arm_fold"]["arm"].unique().to_list())
    colors = _colors([f"regime: {r}" for r in regimes] + arms)
    panels = (
        ("regime_fold", "fold", "regime", regimes, 1, "regime: "),
        ("arm_fold", "fold", "arm", arms, 2, ""),
        ("arm_regime", "regime", "arm", arms, 3, ""),
    )
    for key, by, _column, values, col, prefix in panels:
        frame = shares[key]
        groups = sorted(frame[by].unique().to_list())
        lookup = {(g, v): s for g, v, s in frame.iter_rows()}
        for value in values:
            label = prefix + value
            fig.add_trace(
                go.Bar(
                    x=[str(g) for g in groups],
                    y=[lookup.get((g, value), 0.0) for g in groups],
                    name=label,
                    legendgroup=label,
                    showlegend=col != 3,
                    marker_color=colors[label],
                    hovertemplate=f"{by} %{{x}}: %{{y:.1%}} {label}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(type="category")
    fig.update_xaxes(title_text="fold", row=1, col=1)
    fig.update_xaxes(title_text="fold", row=1, col=2)
    fig.update_yaxes(tickformat=".0%", range=[0, 1])
    _layout(
        fig, height=400, barmode="stack", legend=_SIDE_LEGEND, margin={"l": 50, "r": 20, "t": 40, "b": 40}
    )
    note = (
        f"Share of the {int(sel['n'].sum()):,} out-of-sample decisions (selection.parquet) by market regime"
        " (unlabelled: warm-up) and by the arm driving the position (in composer mode the strategy with the"
        " largest blend weight)."
    )
    return Panel("selection", title, fig, note)


# -- risk events ------------------------------------------------------------------------------------------
def risk_events_panel(run: RunData) -> Panel:
    """Risk events over time by rule, and counts per rule; aggregated per day and rule when numerous."""
    title = "Risk events"
    ev = run.risk_events
    if ev.height == 0:
        why = " (risk_events.parquet not written)" if "risk_events.parquet" in run.missing else ""
        return Panel("risk", title, None, f"No risk events{why}.")
    ev = ev.with_columns(
        pl.col("rule").fill_null("unknown"),
        pl.when(pl.col("symbol").fill_null("") == "")
        .then(pl.lit("portfolio"))
        .otherwise(pl.col("symbol"))
        .alias("who"),
    )
    rules = sorted(ev["rule"].unique().to_list())
    colors = _colors(rules)
    aggregated = ev.height > MAX_PLOT_POINTS
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.75, 0.25], shared_yaxes=True, horizontal_spacing=0.04
    )
    for rule in rules:
        sub = ev.filter(pl.col("rule") == rule)
        if aggregated:
            day = sub.group_by(pl.col("ts").dt.truncate("1d")).agg(pl.len().alias("n")).sort("ts")
            fig.add_trace(
                go.Scatter(
                    x=_ts_text(day["ts"]),
                    y=[rule] * day.height,
                    mode="markers",
                    name=rule,
                    marker={"color": colors[rule], "size": np.clip(4 + np.sqrt(day["n"].to_numpy()), 4, 20)},
                    text=[f"{n} event(s)" for n in day["n"].to_list()],
                    hovertemplate="%{x} %{y}: %{text}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        else:
            fig.add_trace(
                go.Scatter(
                    x=_ts_text(sub["ts"]),
                    y=[rule] * sub.height,
                    mode="markers",
                    name=rule,
                    marker={
                        "color": colors[rule],
                        "size": 14,
                        "symbol": "line-ns-open",
                        "line": {"width": 2},
                    },
                    customdata=list(
                        zip(
                            sub["who"].to_list(),
                            sub["fold"].to_list(),
                            [format_metric("detail", d) for d in sub["detail"].to_list()],
                            strict=True,
                        )
                    ),
                    hovertemplate=(
                        "%{x} %{y}<br>%{customdata[0]}, fold %{customdata[1]}, detail %{customdata[2]}"
                        "<extra></extra>"
                    ),
                ),
                row=1,
                col=1,
            )
        fig.add_trace(
            go.Bar(
                x=[sub.height],
                y=[rule],
                orientation="h",
                marker_color=colors[rule],
                showlegend=False,
                hovertemplate="%{y}: %{x} event(s)<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=rules)
    fig.update_xaxes(title_text="UTC", row=1, col=1)
    if run.equity.height:  # the whole out-of-sample span, so quiet stretches show as quiet
        span = _ts_text(run.equity["ts"], np.array([0, run.equity.height - 1]))
        fig.update_xaxes(range=span, row=1, col=1)
    fig.update_xaxes(title_text="events", row=1, col=2)
    _layout(fig, height=max(260, 40 * len(rules) + 160), showlegend=False)
    note = f"{ev.height:,} risk events (risk_events.parquet) by rule; hover for symbol, fold and detail."
    if aggregated:
        note += " Aggregated per day and rule for plotting (marker size grows with the count)."
    return Panel("risk", title, fig, note)


def build_panels(run: RunData, folds: Sequence[FoldRow] | None = None) -> list[Panel]:
    """Every panel of the page, in page order (the CPCV paths panel only for runs with paths)."""
    folds = fold_rows(run) if folds is None else folds
    return [
        equity_panel(run, folds),
        drawdown_panel(run),
        fold_sharpe_panel(folds),
        *([paths] if (paths := cpcv_paths_panel(run)) is not None else []),
        symbol_heatmap_panel(run),
        param_stability_panel(run),
        selection_panel(run),
        risk_events_panel(run),
    ]
