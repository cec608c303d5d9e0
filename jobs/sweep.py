"""`trader sweep`: an Optuna study whose trials are walk-forward runs on Ray (cluster/sweep.py).

Runs as ``python -m jobs.sweep`` too: the Ray job entry point (``trader submit sweep ...``).
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click

from jobs.options import settings_options


@click.command("sweep")
@click.option("--symbols", default=None, help="Comma-separated symbols (default: every symbol in the store).")
@click.option("--start", default=None, help="First bar date, YYYY-MM-DD (inclusive; default: all).")
@click.option("--end", default=None, help="Last bar date, YYYY-MM-DD (inclusive; default: all).")
@click.option("--store", default=None, help="Store URI (default: data.store).")
@click.option("--interval", default=None, help="Bar interval (default: data.interval).")
@click.option(
    "--trials", type=click.IntRange(min=1), default=None, help="Trials to run (default: sweep.n_trials)."
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Stop asking for trials after this many seconds (default: sweep.timeout_s).",
)  # fmt: skip
@click.option("--study", default=None, help="Study name (default: sweep.study_name).")
@click.option("--out", default=None, help="Run folder, a path or s3:// URI (default: runs/sweep-<UTC time>).")
@click.option("--resume", is_flag=True, help="Continue the study in --out (trials left running are re-run).")
@click.option("--no-progress", "no_progress", is_flag=True, help="No progress bar.")
@settings_options
def sweep(
    settings: Any,
    symbols: str | None,
    start: str | None,
    end: str | None,
    store: str | None,
    interval: str | None,
    trials: int | None,
    timeout: float | None,
    study: str | None,
    out: str | None,
    resume: bool = False,
    no_progress: bool = False,
) -> None:
    """Sweep parameters with Optuna; every trial is a walk-forward run (each fold tuned on its train window,
    judged on its test window), fanned out on Ray. Writes trials.parquet, best.yaml, summary.json (best trial,
    deflated Sharpe, PBO, MinBTL) and sweep.html to the run folder."""
    from cluster.sweep import SweepRequest, run_sweep
    from trader.errors import ConfigError

    if resume and out is None:
        raise ConfigError("--resume needs --out RUN_DIR: the sweep folder to continue")
    try:
        first = dt.date.fromisoformat(start) if start else None
        last = dt.date.fromisoformat(end) if end else None
    except ValueError as exc:
        raise ConfigError(f"--start/--end: use YYYY-MM-DD ({exc})") from exc
    names = tuple(s.strip() for s in symbols.split(",") if s.strip()) if symbols else ()
    run_dir = out or f"runs/sweep-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    request = SweepRequest(names, first, last, store, interval, run_dir, trials, timeout, study)
    summary = run_sweep(request, settings, resume=resume, progress=not no_progress)
    counts = summary.get("counts", {})
    click.echo(
        f"sweep {summary['study_name']}: {counts.get('complete', 0)} complete, "
        f"{counts.get('pruned', 0)} pruned, {counts.get('failed', 0)} failed "
        f"({summary['wall_seconds']:.1f} s)"
    )
    best = summary.get("best")
    if best:
        click.echo(f"best trial {best['number']}: {best.get('values')} with {best.get('params')}")
    dsr, pbo, btl = summary.get("dsr") or {}, summary.get("pbo") or {}, summary.get("min_btl") or {}
    click.echo(
        f"deflated Sharpe of the best trial: {dsr.get('dsr')}; probability of backtest overfitting: "
        f"{pbo.get('pbo')}; minimum backtest length {btl.get('years_required')} years"
    )
    if btl.get("warning"):
        click.echo(f"warning: {btl['warning']}", err=True)
    click.echo(f"report: {summary.get('report') or run_dir}")


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["sweep", *sys.argv[1:]]))
