"""`trader paper`: the live actor cluster for paper trading, and its operations.

``trader paper --config configs/paper.yaml --replay 2024-03-04:2024-03-08 [--speed N] [--out DIR]`` replays
stored bars through the whole cluster (symbol session actors, portfolio risk actor, execution actor) and a
simulated IB gateway; without ``--replay`` the bars come live from the gateway at ``ibkr.host:port``
(``--until DATE``: the last session; the store gives the warm-up history). ``trader paper status``,
``trader paper stop`` and ``trader paper kill-switch [--reset]`` talk to a running session's named actors:
on the cluster recorded in ``--run RUN_DIR`` (``cluster.json``), else ``ray.address`` / ``RAY_ADDRESS``,
else the local cluster Ray recorded last. Runs as ``python -m jobs.paper`` for ``ray job submit``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import click

from jobs.options import settings_options

COORDINATOR = "coordinator"


def _parse_replay(text: str) -> tuple[dt.date, dt.date]:
    from trader.errors import ConfigError

    start, sep, end = text.partition(":")
    try:
        first = dt.date.fromisoformat(start)
        last = dt.date.fromisoformat(end) if sep else first
    except ValueError as exc:
        raise ConfigError(f"--replay {text!r}: use START:END as YYYY-MM-DD:YYYY-MM-DD ({exc})") from None
    if last < first:
        raise ConfigError(f"--replay {text!r}: END is before START")
    return first, last


@click.group("paper", invoke_without_command=True)
@click.option("--replay", default=None, metavar="START:END", help="Replay stored bars over these dates.")
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=None,
    help="Replay speed, x real time; 0 = as fast as possible (default: session.speed_multiplier).",
)
@click.option(
    "--until", default=None, metavar="DATE", help="Live: trade through this session (default: one session)."
)
@click.option("--symbols", default=None, help="Comma-separated symbols (default: session.symbols).")
@click.option("--store", default=None, help="Bar store URI (default: data.store).")
@click.option("--interval", default=None, help="Bar interval (default: the first of session.streams).")
@click.option("--strategy", default=None, help="A registered strategy; default: the configured composer.")
@click.option(
    "--out", default=None, help="Session folder, a path or s3:// URI (default: runs/paper-<UTC time>)."
)
@settings_options
@click.pass_context
def paper(
    ctx: click.Context,
    settings: Any,
    replay: str | None,
    speed: float | None,
    until: str | None,
    symbols: str | None,
    store: str | None,
    interval: str | None,
    strategy: str | None,
    out: str | None,
) -> None:
    """Run the live actor cluster (paper trading); subcommands operate a running session."""
    ctx.obj = settings
    if ctx.invoked_subcommand is not None:
        return
    import ray

    from cluster.actors.coordinator import SessionCoordinator
    from cluster.runtime import connect
    from trader.config import with_overrides
    from trader.errors import ConfigError

    live = replay is None
    if live:
        # Live: the gateway at ibkr.host:port streams the bars, from today's (or the next) session on.
        from trader.calendar import get_calendar

        calendar = get_calendar(settings.data.exchange)
        first = calendar.first_trading_date(dt.datetime.now(dt.UTC).date())
        last = _parse_replay(until)[0] if until else first
    else:
        first, last = _parse_replay(replay)
    names = [s.strip() for s in symbols.split(",")] if symbols else list(settings.session.symbols)
    if not names:
        raise ConfigError("trader paper: no symbols; set session.symbols or give --symbols")
    if speed is not None:
        settings = with_overrides(settings, {"session.speed_multiplier": speed})
    run_dir = out or f"runs/paper-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    with connect(settings) as ray_ctx:
        from trader.rundir import RunDir

        # Where the operations commands find this session (`trader paper status --run RUN_DIR`).
        RunDir(run_dir).write_json(
            "cluster.json", {"address": ray_ctx.address, "namespace": settings.ray.namespace}
        )
        coordinator = (
            ray.remote(SessionCoordinator)
            .options(name=COORDINATOR, namespace=settings.ray.namespace, num_cpus=0, max_concurrency=16)
            .remote(
                settings,
                run_dir,
                symbols=names,
                store=store or settings.data.store,
                interval=interval or settings.session.streams[0],
                start=str(first),
                end=str(last),
                strategy=strategy,
            )
        )
        mode = f"live from the gateway at {settings.ibkr.host}:{settings.ibkr.port}" if live else "replay"
        click.echo(f"paper session ({mode}) in {run_dir}: {', '.join(names)} {first}..{last}", err=True)
        summary = ray.get(coordinator.run.remote())
    click.echo(
        f"{summary['state']}: {len(summary['sessions'])} sessions, {summary['bars']} bars, "
        f"{summary['decisions']} decisions, {summary['orders']} orders, {summary['fills']} fills, "
        f"P&L {summary['pnl']:.2f}; rejected {summary['rejected_by_rule'] or 'none'}"
    )
    click.echo(f"wrote {run_dir}")


def _actor(settings: Any, name: str, run: str | None) -> Any:
    import os

    import ray

    from trader.errors import ConfigError
    from trader.rundir import RunDir

    os.environ["RAY_AUTH_MODE"] = settings.ray.auth_mode
    namespace = settings.ray.namespace
    if run is not None:
        where = RunDir(run)
        if not where.exists("cluster.json"):
            raise ConfigError(f"--run {run}: no cluster.json there; is it a paper session folder?")
        recorded = where.read_json("cluster.json")
        address, namespace = recorded["address"], recorded["namespace"]
    else:
        address = settings.ray.address or os.environ.get("RAY_ADDRESS") or "auto"
    settings = settings.model_copy(update={"ray": settings.ray.model_copy(update={"namespace": namespace})})
    try:
        ray.init(address=address, namespace=settings.ray.namespace, logging_level="ERROR")
    except ConnectionError as exc:
        raise ConfigError(
            f"no running Ray cluster at {address} ({exc}); is a paper session running?"
        ) from None
    try:
        return ray.get_actor(name, namespace=settings.ray.namespace)
    except ValueError as exc:
        raise ConfigError(
            f"no {name!r} actor in namespace {settings.ray.namespace!r} on the cluster at {address}; is a "
            f"paper session running? ({str(exc).splitlines()[0][:200]})"
        ) from None


_RUN = click.option(
    "--run", default=None, help="The session folder (--out of `trader paper`): its recorded cluster is used."
)


@paper.command("status")
@_RUN
@click.pass_obj
def status(settings: Any, run: str | None) -> None:
    """Print the running session's state, positions, P&L, risk state, connectivity and data quality (JSON)."""
    import ray

    click.echo(json.dumps(ray.get(_actor(settings, COORDINATOR, run).status.remote()), sort_keys=True))


@paper.command("stop")
@_RUN
@click.pass_obj
def stop(settings: Any, run: str | None) -> None:
    """End the running session cleanly after the current bar (checkpoints and summary written)."""
    import ray

    click.echo(f"stopping (was {ray.get(_actor(settings, COORDINATOR, run).stop.remote())})")


@paper.command("kill-switch")
@click.option("--reset", is_flag=True, help="Re-arm trading after the kill switch fired.")
@_RUN
@click.pass_obj
def kill_switch(settings: Any, reset: bool, run: str | None) -> None:
    """Flatten every symbol and halt new entries, or with --reset re-arm trading."""
    import ray

    state = ray.get(_actor(settings, "risk", run).kill_switch.remote(reset))
    click.echo(json.dumps({"killed": state["killed"], "positions": state["positions"]}, sort_keys=True))


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["paper", *sys.argv[1:]]))
