"""`trader backtest`: one backtest of bars from the store, written to a run folder.

Runs as ``python -m jobs.backtest`` too, so ``ray job submit`` can call it.
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
@click.option("--symbols", required=True, help="Comma-separated symbols in the store, e.g. SPY,QQQ.")
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
    help="One backtest over the whole range (walk-forward runs come with the Ray fan-out).",
)
@click.option("--out", default=None, help="Run folder (default: runs/backtest-<UTC timestamp>).")
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
    symbols: str,
    start: str | None,
    end: str | None,
    strategy: str | None,
    params: tuple[str, ...],
    store: str | None,
    interval: str | None,
    no_walkforward: bool,
    out: str | None,
    selection: str | None = None,
    posteriors_in: str | None = None,
    posteriors_out: str | None = None,
) -> None:
    """Backtest a strategy (or the composer) on bars from the store and write the run folder.

    Writes equity.parquet, positions.parquet, trades.parquet, risk_events.parquet and summary.json; with
    bandit selection also decisions.parquet and posteriors.parquet.
    """
    from trader.backtest import run
    from trader.data.store import BarStore
    from trader.errors import ConfigError

    if not no_walkforward:
        raise ConfigError(
            "walk-forward backtests need the Ray fan-out (issue #5), not built yet; pass --no-walkforward "
            "for one backtest over the whole range"
        )
    if posteriors_in is not None and selection is None and strategy is None:
        selection = "bandit"  # a warm start only means something to the bandit
    bandit = selection == "bandit" or (selection is None and strategy is None and settings.bandit.enabled)
    if (posteriors_in or posteriors_out) and not bandit:
        raise ConfigError(
            "--posteriors-in/--posteriors-out need bandit selection: --selection bandit (or bandit.enabled) "
            "without --strategy"
        )
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    if not names:
        raise ConfigError("--symbols: give at least one symbol, e.g. --symbols SPY")
    interval = interval or settings.data.interval
    end_exclusive = None
    if end is not None:
        end_exclusive = (dt.date.fromisoformat(end) + dt.timedelta(days=1)).isoformat()
    bars = BarStore(store or settings.data.store).read_bars(names, interval, start=start, end=end_exclusive)
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


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["backtest", *sys.argv[1:]]))
