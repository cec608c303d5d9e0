"""run_gateway: a SimGateway on a background thread with its own event loop.

Tests and scripts that drive a synchronous client (ib_insync's ``IB.connect``) in the main thread use this;
the gateway's public methods are thread-safe, so the test calls them directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Iterator

from trader.ibsim.account import Account
from trader.ibsim.config import GatewayConfig
from trader.ibsim.server import SimGateway


@contextlib.contextmanager
def run_gateway(
    config: GatewayConfig | None = None, *, account: Account | None = None, start_timeout: float = 60.0
) -> Iterator[SimGateway]:
    """Start a gateway on a daemon thread, yield it listening, stop it and join the thread on exit.

    ``account`` lets a test start a second gateway on the state of a first one. Errors raised while
    starting (a bad store, a port in use) are raised here.

    >>> with run_gateway(GatewayConfig(symbols=("SPY",))) as gw:
    ...     gw.set_price("SPY", 400.0)
    ...     gw.port > 0
    True
    """
    gateway = SimGateway(config or GatewayConfig(), account=account)
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[None] = concurrent.futures.Future()

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            try:
                await gateway.start()
            except BaseException as exc:
                started.set_exception(exc)
                loop.stop()
                return
            started.set_result(None)

        boot_task = loop.create_task(boot())
        loop.run_forever()
        del boot_task
        # Let cancelled tasks finish their cleanup before the loop closes.
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    thread = threading.Thread(target=main, name="ibsim-gateway", daemon=True)
    thread.start()
    try:
        started.result(timeout=start_timeout)
        yield gateway
    finally:
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
