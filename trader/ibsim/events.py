"""What tests wait on: counters the gateway bumps, and waits that end when a condition holds.

Tests never sleep: they wait for "order received", "client connected", "fill done" and the like. The
gateway calls :meth:`GatewayEvents.bump` on its loop; a test thread blocks in :meth:`GatewayEvents.wait_for`
(a ``threading.Condition``), an asyncio test awaits :meth:`GatewayEvents.wait_for_async` on the gateway's
loop. Both raise ``TimeoutError`` naming what they waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable


class GatewayEvents:
    """Counters by name (``orders``, ``orders:<orderRef>``, ``fills``, ``connections``, ``errors:<code>``...).

    >>> events = GatewayEvents()
    >>> events.bump("orders")
    >>> events.wait_for(lambda: events.count("orders") >= 1, timeout=1.0, what="an order")
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._counts: Counter[str] = Counter()
        self._generation = 0
        self._async_waiters: list[asyncio.Event] = []

    def bump(self, name: str, by: int = 1) -> None:
        with self._cond:
            self._counts[name] += by
        self.poke()

    def poke(self) -> None:
        """Wake every waiter to re-check its condition (after a state change that is not a counter)."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for event in waiters:
            event.set()

    def count(self, name: str) -> int:
        with self._cond:
            return self._counts[name]

    def counts(self, prefix: str = "") -> dict[str, int]:
        with self._cond:
            return {k: v for k, v in self._counts.items() if k.startswith(prefix)}

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "a condition"
    ) -> None:
        """Block this (non-gateway) thread until ``predicate()`` is true; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            # The predicate runs outside the lock (it may ask the gateway's loop, which bumps under the lock);
            # the generation number closes the gap between checking and waiting.
            with self._cond:
                generation = self._generation
            if predicate():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"ibsim: timed out after {timeout:g} s waiting for {what}")
            with self._cond:
                if self._generation == generation:
                    self._cond.wait(min(left, 0.25))  # re-check now and then: not every change notifies

    async def wait_for_async(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "a condition"
    ) -> None:
        """Await ``predicate()`` on the gateway's own loop; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"ibsim: timed out after {timeout:g} s waiting for {what}")
            event = asyncio.Event()
            self._async_waiters.append(event)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, 0.25))
