"""The report page: one self-contained HTML file with plotly.js inlined once, tables first, then the plots.

Nothing on the page loads from the network: plotly.js is embedded in ``<head>`` and every figure after it
is a ``<div>`` plus a ``Plotly.newPlot`` call (``include_plotlyjs=False``). Every text that comes from the
run directory is HTML-escaped (plotly escapes ``<`` inside its JSON itself). Div ids are fixed
(``fig-<panel key>``) so the same run directory always gives the same bytes.

Example::

    from trader.report.html import render_page
    from trader.report.rundir import load_run

    html = render_page(load_run("runs/wf-2024"))
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

import plotly.io as pio
from plotly.offline import get_plotlyjs

from trader.report.figures import Panel, build_panels
from trader.report.rundir import RunData
from trader.report.tables import (
    DASH,
    FoldRow,
    failed_fold_entries,
    fold_rows,
    format_metric,
    headline_rows,
)

__all__ = ["PLOT_CONFIG", "render_page"]

#: plotly.js config of every figure: no plotly logo or cloud links; resize with the window.
PLOT_CONFIG: Final = {"displaylogo": False, "responsive": True}

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem auto;max-width:1200px;
 padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{padding:.2rem .6rem;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
th{background:#f6f6f6} td.l,th.l{text-align:left} tr.bad td{background:#fdecea}
p.note{font-size:.8rem;color:#555;margin:.2rem 0 1rem} p.empty{font-style:italic;color:#555}
.meta{color:#555;font-size:.9rem} pre{font-size:.75rem;background:#f8f8f8;padding:.5rem;overflow:auto}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    left: Collection[int] = (0,),
    status_last: bool = False,
) -> str:
    """An HTML table; cells are escaped here, columns ``left`` are left-aligned (text), the others right
    (numbers). With ``status_last``, rows whose last cell is not ``"ok"`` are highlighted."""

    def cells(tag: str, values: Sequence[str]) -> str:
        return "".join(
            f'<{tag} class="l">{_e(v)}</{tag}>' if i in left else f"<{tag}>{_e(v)}</{tag}>"
            for i, v in enumerate(values)
        )

    body = []
    for row in rows:
        bad = ' class="bad"' if status_last and row and row[-1] != "ok" else ""
        body.append(f"<tr{bad}>{cells('td', row)}</tr>")
    return f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _header(run: RunData, folds: Sequence[FoldRow]) -> str:
    s = run.summary
    eq = run.equity
    period = (
        f"{eq['ts'][0]:%Y-%m-%d %H:%M} .. {eq['ts'][-1]:%Y-%m-%d %H:%M} UTC ({eq.height:,} bars)"
        if eq.height
        else "no out-of-sample bars"
    )
    symbols = set((s.get("per_symbol") or {}).keys()) | set(run.params["symbol"].drop_nulls().to_list())
    statuses = Counter(r.status for r in folds)
    wall = s.get("wall_s")
    parts = [
        f"mode {s.get('mode') or DASH}",
        period,
        f"{len(symbols)} symbol(s)",
        f"{len(folds)} fold(s): " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())),
        f"{run.row_counts['trades.parquet']:,} fills" if "trades.parquet" in run.row_counts else "",
        f"wall time {format_metric('wall_s', wall)} s" if wall is not None else "",
        f"started {s.get('started_at')}" if s.get("started_at") else "",
        f"finished {s.get('finished_at')}" if s.get("finished_at") else "",
    ]
    return (
        f"<h1>Walk-forward run {_e(s.get('run_id'))}</h1>"
        f'<p class="meta">{_e(" · ".join(p for p in parts if p))}</p>'
        f'<p class="meta">{_e(run.uri)}</p>'
    )


def _headline(run: RunData) -> str:
    out = ["<h2>Headline: out-of-sample vs benchmark</h2>"]
    rows = headline_rows(run.summary)
    if rows:
        out.append(_table(["metric", "OOS", "benchmark", "meaning"], rows, left=(0, 3)))
        out.append(
            '<p class="note">OOS: the stitched out-of-sample returns of every fold. Benchmark: equal-weight'
            " buy-and-hold of the same symbols over the same bars. Fractions are shown as percent; — marks a"
            " metric that is undefined or was not computed.</p>"
        )
    else:
        out.append('<p class="empty">summary.json holds no out-of-sample metrics.</p>')
    dsr = run.summary.get("dsr") or {}
    if dsr:
        out.append(
            _table(
                ["deflated Sharpe ratio", "value"],
                [(k, format_metric(k, v)) for k, v in dsr.items() if not isinstance(v, dict | list)],
            )
        )
        out.append(
            '<p class="note">deflated_sharpe: probability that the true Sharpe ratio exceeds zero after'
            " correcting for the number of configurations tried (n_trials) and for non-normal returns"
            " (Bailey &amp; López de Prado, 2014).</p>"
        )
    return "".join(out)


def _failed(run: RunData) -> str:
    entries = failed_fold_entries(run)
    out = ["<h2>Failed folds</h2>"]
    if not entries:
        out.append('<p class="empty">No failed folds.</p>')
        return "".join(out)
    rows = [(str(e["fold"]), ", ".join(e["symbols"]) or "all", e["reason"]) for e in entries]
    out.append(_table(["fold", "symbols", "reason"], rows, left=(0, 1, 2)))
    return "".join(out)


def _windows_text(windows: Sequence[Any]) -> str:
    if not windows:
        return DASH
    text = str(windows[0]) if len(windows) == 1 else f"{windows[0].start} .. {windows[-1].end}"
    return text if len(windows) == 1 else f"{text} ({len(windows)} segments)"


def _folds(folds: Sequence[FoldRow]) -> str:
    out = ["<h2>Folds</h2>"]
    if not folds:
        out.append('<p class="empty">The fold plan is empty.</p>')
        return "".join(out)
    rows = [
        (
            str(r.fold),
            _windows_text(r.train),
            _windows_text(r.test),
            format_metric("sharpe", r.sharpe),
            format_metric("total_return", r.total_return),
            format_metric("max_drawdown", r.max_drawdown),
            format_metric("n_trades", r.n_trades),
            format_metric("sharpe", r.benchmark_sharpe),
            format_metric("benchmark_return", r.benchmark_return),
            r.reason or "",
            r.status,
        )
        for r in folds
    ]
    header = [
        "fold",
        "train",
        "test",
        "Sharpe",
        "return",
        "max DD",
        "trades",
        "bench Sharpe",
        "bench return",
        "reason",
        "status",
    ]
    out.append(_table(header, rows, left=(0, 1, 2, 9, 10), status_last=True))
    out.append(
        '<p class="note">Dates inclusive (UTC). Sharpe annualised; return and max drawdown as percent of the'
        " fold's test window; benchmark: buy-and-hold over the same test bars.</p>"
    )
    return "".join(out)


def _panel(panel: Panel) -> str:
    head = f'<section id="{_e(panel.key)}"><h2>{_e(panel.title)}</h2>'
    if panel.figure is None:
        return f'{head}<p class="empty">{_e(panel.note)}</p></section>'
    div = pio.to_html(
        panel.figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{panel.key}",
        config=PLOT_CONFIG,
    )
    note = f'<p class="note">{_e(panel.note)}</p>' if panel.note else ""
    tables = "".join(_table(header, rows) for header, rows in panel.tables)
    return f"{head}{div}{tables}{note}</section>"


def _details(run: RunData) -> str:
    s = run.summary
    info = {
        "data_fingerprint": s.get("data_fingerprint"),
        "versions": s.get("versions"),
        "files not written": list(run.missing),
        "settings": s.get("settings"),
    }
    text = json.dumps(info, indent=2, sort_keys=True, default=str)
    return f"<details><summary>Run details</summary><pre>{_e(text)}</pre></details>"


def render_page(run: RunData) -> str:
    """The complete report page of ``run`` as HTML text (self-contained, works offline)."""
    folds = fold_rows(run)
    panels = build_panels(run, folds)
    title = f"Run {run.summary.get('run_id')}"
    body = [
        _header(run, folds),
        _headline(run),
        _failed(run),
        _folds(folds),
        *(_panel(p) for p in panels),
        _details(run),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
