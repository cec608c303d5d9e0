"""`trader ibsim`: run the simulated IB gateway in the foreground until Ctrl-C.

Point ib_insync / ib_async (or the paper-trading session) at it like at IB Gateway::

    trader ibsim --port 4002 --store ./data --symbols SPY,AAPL --interval 1m --speed 60

Runs as ``python -m jobs.ibsim`` too. Connections, orders and fills are logged at INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

import click

from jobs.options import settings_options


@click.command("ibsim")
@click.option("--host", default=None, help="Address to listen on (default: ibkr.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default: ibkr.port, 4002; 0 = any).")
@click.option(
    "--store", default=None, help="Bar store URI to replay (default: data.store); 'none' = no store."
)
@click.option("--symbols", required=True, help="Comma-separated symbols the gateway knows, e.g. SPY,AAPL.")
@click.option("--interval", default="1m", show_default=True, help="Bar interval replayed from the store.")
@click.option(
    "--speed",
    type=float,
    default=60.0,
    show_default=True,
    help="Replay speed: market seconds per wall second (60 = one 1m bar a second; 0 = frozen).",
)
@click.option("--start", default=None, help="First replayed bar, ISO date/time UTC (default: first stored).")
@click.option("--end", default=None, help="Replay stops before this time (default: after the last bar).")
@click.option(
    "--account", default=None, help="Account id (default: ibkr.account or DU1234567; DU... = paper)."
)
@click.option(
    "--server-version", type=int, default=176, show_default=True, help="Highest API version, 157-178."
)
@click.option("--max-order-qty", type=float, default=None, help="Reject larger orders with error 201.")
@settings_options
def ibsim(
    settings: Any,
    host: str | None,
    port: int | None,
    store: str | None,
    symbols: str,
    interval: str,
    speed: float,
    start: str | None,
    end: str | None,
    account: str | None,
    server_version: int,
    max_order_qty: float | None,
) -> None:
    """Serve the TWS API socket protocol from a simulated account, replaying bars from a store."""
    from trader.ibsim import GatewayConfig, SimGateway

    store_uri = None if (store or "").lower() == "none" else (store or settings.data.store)
    config = GatewayConfig(
        host=host or settings.ibkr.host,
        port=settings.ibkr.port if port is None else port,
        account=account or settings.ibkr.account or "DU1234567",
        server_version=server_version,
        store=store_uri,
        interval=interval,
        symbols=tuple(s.strip() for s in symbols.split(",") if s.strip()),
        start=start,
        end=end,
        speed=speed,
        commission_per_share=settings.costs.commission_per_share,
        min_commission=settings.costs.min_commission,
        max_order_qty=max_order_qty,
        initial_cash=settings.engine.initial_cash,
    )

    async def serve() -> None:
        gateway = SimGateway(config)
        await gateway.start()
        click.echo(
            f"ibsim: listening on {config.host}:{gateway.port} as {config.account} "
            f"(server version <= {config.server_version}); Ctrl-C stops"
        )
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # SIGTERM (kill, a supervisor) stops it cleanly too
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()  # until SIGTERM, or cancelled by Ctrl-C
        finally:
            await gateway.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    click.echo("ibsim: stopped")


if __name__ == "__main__":
    from jobs.cli import cli, main

    if "ibsim" not in cli.commands:  # until jobs/cli.py registers the command
        cli.add_command(ibsim)
    sys.exit(main(["ibsim", *sys.argv[1:]]))
