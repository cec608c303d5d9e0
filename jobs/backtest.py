"""`trader backtest`: a walk-forward backtest on Ray (default), or one backtest over the whole range.

Runs as ``python -m jobs.backtest`` too: that is the Ray job entry point (``trader submit backtest`` and
``ray job submit`` call it), and it runs the same code as ``trader backtest``.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import click
import yaml

from jobs.options import settings_options


def parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    """``("fast=10", "allow_short=true")`` -> ``{"fast": 10, "allow_short": True}`` (values read as YAML)."""
    from trader.errors import ConfigError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: use NAME=VALUE, e.g. --param fast=10")
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--param {item!r}: cannot read the value ({exc.problem})") from exc
    return params


@click.command("backtest")
@click.option(
    "--symbols",
    default=None,
    help="Comma-separated symbols, e.g. SPY,QQQ (default: every symbol in the store).",
)
@click.option("--start", default=None, help="First bar date, YYYY-MM-DD (inclusive; default: all).")
@click.option("--end", default=None, help="Last bar date, YYYY-MM-DD (inclusive; default: all).")
@click.option("--strategy", default=None, help="A registered strategy; default: the configured composer.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Strategy parameter; repeat.")
@click.option("--store", default=None, help="Store URI (default: data.store).")
@click.option("--interval", default=None, help="Bar interval (default: data.interval).")
@click.option(
    "--no-walkforward",
    "no_walkforward",
    is_flag=True,
    help="One backtest over the whole range, in this process (default: walk-forward folds on Ray).",
)
@click.option(
    "--out", default=None, help="Run folder, a path or s3:// URI (default: runs/<kind>-<UTC time>)."
)
@click.option("--resume", is_flag=True, help="Finish the walk-forward run in --out, skipping finished folds.")
@click.option("--no-progress", "no_progress", is_flag=True, help="No progress bar.")
@click.option(
    "--selection",
    type=click.Choice(["composer", "bandit"]),
    default=None,
    help="Without --strategy: blend strategies (composer) or let the bandit pick one per symbol and period "
    "(default: bandit if bandit.enabled, else composer).",
)
@click.option(
    "--posteriors-in",
    "posteriors_in",
    default=None,
    type=click.Path(dir_okay=False),
    help="Warm start the bandit from this posteriors file (.parquet or .json), variance times "
    "bandit.warm_start_inflation.",
)
@click.option(
    "--posteriors-out",
    "posteriors_out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also export the bandit's final posteriors to this file (.parquet, or .json by suffix).",
)
@settings_options
def backtest(
    settings: Any,
    symbols: str | None,
    start: str | None,
    end: str | None,
    strategy: str | None,
    params: tuple[str, ...],
    store: str | None,
    interval: str | None,
    no_walkforward: bool,
    out: str | None,
    resume: bool = False,
    no_progress: bool = False,
    selection: str | None = None,
    posteriors_in: str | None = None,
    posteriors_out: str | None = None,
) -> None:
    """Backtest a strategy (or the composer, or the bandit) on bars from the store; write the run folder.

    By default a walk-forward run on Ray (walkforward.* settings: each fold tuned on its train window, traded
    on its unseen test window), writing fold_plan, oos_returns, equity, trades, params, risk_events,
    selection, summary.json and report.html. With --no-walkforward one backtest over the whole range in this
    process: equity, positions, trades, risk_events and summary.json (bandit: decisions and posteriors too).
    """
    from trader.backtest import run
    from trader.data.store import BarStore
    from trader.errors import ConfigError

    if posteriors_in is not None and selection is None and strategy is None:
        selection = "bandit"  # a warm start only means something to the bandit
    bandit = selection == "bandit" or (selection is None and strategy is None and settings.bandit.enabled)
    if (posteriors_in or posteriors_out) and not bandit:
        raise ConfigError(
            "--posteriors-in/--posteriors-out need bandit selection: --selection bandit (or bandit.enabled) "
            "without --strategy"
        )
    interval = interval or settings.data.interval
    store_uri = store or settings.data.store
    if symbols is None:
        names = BarStore(store_uri).symbols(interval)
        if not names:
            raise ConfigError(
                f"no {interval} bars in store {store_uri}; ingest or synthesise some (trader data)"
            )
    else:
        names = [s.strip() for s in symbols.split(",") if s.strip()]
    if not names:
        raise ConfigError("--symbols: give at least one symbol, e.g. --symbols SPY")
    if not no_walkforward:
        if posteriors_in or posteriors_out:
            raise ConfigError("--posteriors-in/--posteriors-out apply to --no-walkforward runs")
        _walkforward(settings, names, start, end, strategy, parse_params(params), store_uri, interval, out,
                     resume, not no_progress, "bandit" if bandit else "composer")  # fmt: skip
        return
    if resume:
        raise ConfigError("--resume applies to walk-forward runs; drop --no-walkforward")
    end_exclusive = None
    if end is not None:
        end_exclusive = (dt.date.fromisoformat(end) + dt.timedelta(days=1)).isoformat()
    bars = BarStore(store_uri).read_bars(names, interval, start=start, end=end_exclusive)
    posteriors = None
    if posteriors_in is not None:
        from trader.bandit import ContextSpec, PosteriorSet

        posteriors = PosteriorSet.read(posteriors_in, expect=ContextSpec.from_settings(settings)).inflated(
            settings.bandit.warm_start_inflation
        )
    result = run(
        bars,
        strategy,
        parse_params(params),
        settings,
        interval=interval,
        selection=selection,
        posteriors=posteriors,
    )
    folder = result.write(out or f"runs/backtest-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
    metrics = result.metrics

    def pct(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.2%}"

    sharpe = metrics.get("sharpe")
    period = result.summary["period"]
    click.echo(
        f"{', '.join(names)} {interval} {period['start'][:10]}..{period['end'][:10]}: "
        f"total return {pct('total_return')}, CAGR {pct('cagr')}, Sharpe "
        f"{'n/a' if sharpe is None else f'{sharpe:.2f}'}, max drawdown {pct('max_drawdown')}, "
        f"{result.summary['trades']} fills"
    )
    if result.posteriors is not None:
        reward = result.summary["bandit"]["cumulative_reward"]
        click.echo(
            f"bandit: policy reward {reward['policy']:.2f} vs best arm {reward['best_arm']} "
            f"{reward['best_arm_hindsight']:.2f} over {reward['decisions_scored']} decisions"
        )
        if posteriors_out is not None:
            click.echo(f"wrote {result.posteriors.write(posteriors_out)}")
    click.echo(f"wrote {folder}")


def _walkforward(
    settings: Any,
    names: list[str],
    start: str | None,
    end: str | None,
    strategy: str | None,
    params: dict[str, Any],
    store_uri: str,
    interval: str,
    out: str | None,
    resume: bool,
    progress: bool,
    selection: str,
) -> None:
    from cluster.fanout import WalkForwardRequest, run_walkforward
    from trader.errors import ConfigError

    if resume and out is None:
        raise ConfigError("--resume needs --out RUN_DIR: the run folder to finish")
    try:
        first = dt.date.fromisoformat(start) if start else None
        last = dt.date.fromisoformat(end) if end else None
    except ValueError as exc:
        raise ConfigError(f"--start/--end: use YYYY-MM-DD ({exc})") from exc
    run_dir = out or f"runs/walkforward-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    request = WalkForwardRequest(
        tuple(names), first, last, strategy, params, store_uri, interval, run_dir, selection
    )
    summary = run_walkforward(request, settings, resume=resume, progress=progress)
    oos, bench = summary["oos"], summary["benchmark"]

    def pct(metrics: dict[str, Any], key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None or value != value else f"{value:.2%}"

    def num(metrics: dict[str, Any], key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None or value != value else f"{value:.2f}"

    click.echo(
        f"walk-forward {summary['n_folds']} folds, {len(names)} symbols, {interval}, "
        f"{summary['start']}..{summary['end']} ({summary['wall_s']:.1f} s)"
    )
    click.echo(
        f"out of sample: total return {pct(oos, 'total_return')}, CAGR {pct(oos, 'cagr')}, Sharpe "
        f"{num(oos, 'sharpe')}, max drawdown {pct(oos, 'max_drawdown')}, "
        f"deflated Sharpe {num(summary['dsr'], 'deflated_sharpe')} "
        f"({summary['dsr']['n_trials']} configurations per fold)"
    )
    click.echo(
        f"benchmark (equal-weight buy and hold): total return {pct(bench, 'total_return')}, "
        f"Sharpe {num(bench, 'sharpe')}, max drawdown {pct(bench, 'max_drawdown')}"
    )
    for failed in summary["failed_folds"]:
        click.echo(
            f"fold {failed['fold']} failed for {', '.join(failed['symbols'])}: {failed['reason']}", err=True
        )
    click.echo(f"report: {summary.get('report') or run_dir}")


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["backtest", *sys.argv[1:]]))
