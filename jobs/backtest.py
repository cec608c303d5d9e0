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
) -> None:
    """Backtest a strategy (or the composer) on bars from the store and write the run folder.

    Writes equity.parquet, positions.parquet, trades.parquet, risk_events.parquet and summary.json.
    """
    from trader.backtest import run
    from trader.data.store import BarStore
    from trader.errors import ConfigError

    if not no_walkforward:
        raise ConfigError(
            "walk-forward backtests need the Ray fan-out (issue #5), not built yet; pass --no-walkforward "
            "for one backtest over the whole range"
        )
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    if not names:
        raise ConfigError("--symbols: give at least one symbol, e.g. --symbols SPY")
    interval = interval or settings.data.interval
    end_exclusive = None
    if end is not None:
        end_exclusive = (dt.date.fromisoformat(end) + dt.timedelta(days=1)).isoformat()
    bars = BarStore(store or settings.data.store).read_bars(names, interval, start=start, end=end_exclusive)
    result = run(bars, strategy, parse_params(params), settings, interval=interval)
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
    click.echo(f"wrote {folder}")


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["backtest", *sys.argv[1:]]))
