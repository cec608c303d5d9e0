"""Run reports: ``report.html`` of a walk-forward run directory, one self-contained file that works offline.

A run directory (local path or ``s3://bucket/prefix``; S3 endpoint and credentials from the environment)
holds what the walk-forward driver wrote:

* required: ``summary.json`` (aggregate OOS and benchmark metrics, per fold, per symbol, DSR, failed folds,
  settings, versions), ``equity.parquet`` (ts, equity, benchmark in account currency) and
  ``fold_plan.parquet`` (fold, role train/test, segment, start, end: inclusive dates);
* optional, possibly empty: ``oos_returns``, ``trades``, ``params``, ``risk_events``, ``selection``
  (``.parquet``);
* CPCV runs only: ``paths_equity.parquet`` (ts, path, equity: each backtest path's equity curve).

The page shows a headline table (OOS vs benchmark, deflated Sharpe ratio), failed folds with their
reasons, a per-fold table, then plots: equity vs benchmark, drawdown, OOS Sharpe per fold, for CPCV runs the
backtest paths (every path's equity curve with the median path highlighted, a histogram of path Sharpe
ratios, and their distribution and per-path tables), a per-symbol metrics heatmap, parameter stability
across folds, regime and bandit-arm shares, and risk events. Series longer than 5,000 points (CPCV paths:
20,000 points over all paths) are down-sampled for plotting (min/max per bucket; the page says so). A missing
optional file or an empty table gives a one-line note instead of a plot; a missing or malformed required
file raises :class:`~trader.errors.DataError` naming it.

Example::

    from trader.report import build_report, render_report

    path = build_report("runs/wf-2024")          # writes runs/wf-2024/report.html, returns its path
    html = render_report("s3://bucket/runs/wf")  # the page as text, nothing written
"""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa

from trader.data.objectstore import temp_path
from trader.errors import DataError
from trader.report.html import render_page
from trader.report.rundir import RunData, load_run, open_run_dir

__all__ = ["REPORT_NAME", "RunData", "build_report", "load_run", "render_report"]

#: File name of the report inside the run directory.
REPORT_NAME = "report.html"


def render_report(run_dir: str) -> str:
    """The report page of ``run_dir`` (local path or ``s3://`` URI) as HTML text; writes nothing.

    Raises :class:`~trader.errors.DataError` naming the file when a required file is missing or malformed.

    Example::

        html = render_report("runs/wf-2024")
        assert html.startswith("<!DOCTYPE html>")
    """
    return render_page(load_run(run_dir))


def build_report(run_dir: str) -> str:
    """Render the report and write it to ``RUN_DIR/report.html``; return its path (local) or URI (S3).

    The page is rendered completely before anything is written, and then written atomically: locally to a
    hidden temporary sibling and renamed over the target with ``os.replace``; on S3 through one pyarrow
    output stream (a single PutObject under 5 MiB, else a multipart upload completed at close: either way
    the object appears only once complete). A failed render leaves any previous report untouched.

    Example::

        path = build_report("runs/wf-2024")
        print(path)   # /abs/path/runs/wf-2024/report.html
    """
    html = render_report(run_dir)
    data = html.encode("utf-8")
    fs, base, uri = open_run_dir(run_dir, delayed_open=True)
    if not uri.startswith("s3://"):
        target = os.path.join(base, REPORT_NAME)
        tmp = temp_path(target)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise DataError(f"{target}: cannot write the report ({exc})") from exc
        return target
    target_uri = f"{uri.rstrip('/')}/{REPORT_NAME}"
    try:
        with fs.open_output_stream(f"{base}/{REPORT_NAME}", metadata={"Content-Type": "text/html"}) as out:
            out.write(data)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{target_uri}: cannot write the report ({exc})") from exc
    return target_uri
