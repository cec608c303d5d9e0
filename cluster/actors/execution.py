"""The execution actor: one named async Ray actor owns the IB gateway connection.

It wraps :class:`trader.broker.execution.ExecutionEngine` (approvals checked, at most one order per intent,
reconnection with reconciliation, paper-only refusals, pacing, health) and adds what being an actor needs:

* **Restarts.** Created with ``max_restarts`` and ``max_task_retries``: when its process dies, Ray starts a
  new one and replays the calls that were in flight. The new instance reopens the journal (its state lives
  there, not in memory), connects and reconciles with the gateway before it accepts orders, so a replayed or
  retried ``submit`` of an intent that was already sent returns that intent's state and sends nothing.
* **Lazy start.** ``__init__`` only opens the journal; the engine connects in the actor's event loop on the
  first call (Ray runs async actor methods on one loop; ib_insync's blocking API cannot run there).
* **Subscribers.** ``subscribe(handle, method)`` calls ``handle.<method>.remote(event)`` for every journal
  event (intent, approval, rejection, submission, status, fill, commission, error, reconcile) from then on;
  ``events(after_seq, timeout)`` is a long poll over the same journal for callers that are not actors.
  Pushes are fire-and-forget and an async subscriber may run them out of order: order by ``seq``, and fill
  a gap in ``seq`` (a subscriber restarted, a push lost) from ``events(after_seq)``.

Example::

    from cluster.actors.execution import execution_actor
    actor = execution_actor(settings, journal="runs/paper/orders.sqlite", secret=key)
    result = ray.get(actor.submit.remote(intent, approval))   # approval = Approval.sign(intent, key, ...)
    ray.get(actor.wait_for.remote(intent.intent_id, 30))
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import ray

from trader.broker.execution import ExecutionEngine
from trader.broker.journal import OrderJournal
from trader.broker.order import Approval, OrderIntent

__all__ = ["ExecutionActor", "execution_actor"]

#: How long a call waits for the first connection before answering "not ready" (seconds).
READY_WAIT_SECONDS = 15.0


class ExecutionActor:
    """See the module docstring. Build it with :func:`execution_actor`; every method is a coroutine."""

    def __init__(self, ibkr: Any, journal: str, secret: str, name: str = "execution") -> None:
        self._ibkr, self._journal_path, self._secret, self._name = ibkr, journal, secret, name
        self._journal = OrderJournal(journal)  # raises at once for a bad path: the actor fails to start
        self._engine: ExecutionEngine | None = None

    async def _ready(self) -> ExecutionEngine:
        if self._engine is None:
            self._engine = ExecutionEngine(self._ibkr, self._journal, self._secret, name=self._name)
            await self._engine.start()
        return self._engine

    async def wait_ready(self, timeout: float = READY_WAIT_SECONDS) -> dict[str, Any]:
        """Wait until orders are accepted (connected, reconciled); returns :meth:`status`."""
        engine = await self._ready()
        await engine.wait_ready(timeout)
        return await self.status()

    async def submit(self, intent: OrderIntent | dict[str, Any], approval: Approval | dict[str, Any]) -> dict:
        """Send ``intent`` if ``approval`` (risk's signed answer) checks out; returns the intent's state with
        ``accepted``, ``reason`` and ``duplicate``. Waits up to READY_WAIT_SECONDS for a first connection."""
        engine = await self._ready()
        if not engine.accepting and engine.fatal is None:
            # Not ready in time: submit answers "not accepting" with the reason.
            with contextlib.suppress(Exception):
                await engine.wait_ready(READY_WAIT_SECONDS)
        intent = intent if isinstance(intent, OrderIntent) else OrderIntent.from_dict(intent)
        approval = approval if isinstance(approval, Approval) else Approval.from_dict(approval)
        return await engine.submit(intent, approval)

    async def cancel(self, intent_id: str) -> dict[str, Any]:
        """Ask the gateway to cancel the intent's order; returns its state (``accepted`` False: not open)."""
        return await (await self._ready()).cancel(intent_id)

    async def wait_for(self, intent_id: str, timeout: float, filled: bool = False) -> dict[str, Any]:
        """Wait until the intent is done (or fully filled); TimeoutError after ``timeout`` seconds."""
        return await (await self._ready()).wait_for(intent_id, timeout, filled=filled)

    async def state(self, intent_id: str) -> dict[str, Any]:
        return (await self._ready()).state(intent_id)

    async def events(self, after_seq: int = 0, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Journal events after ``after_seq`` (a long poll of up to ``timeout`` seconds)."""
        return await (await self._ready()).events(after_seq, timeout)

    async def subscribe(self, handle: Any, method: str = "on_execution_event") -> None:
        """Push every journal event from now on to ``handle.<method>.remote(event)`` (fire and forget)."""
        target = getattr(handle, method)
        (await self._ready()).subscribe(lambda event: target.remote(event))

    async def subscribe_market_data(self, symbol: str) -> None:
        await (await self._ready()).subscribe_market_data(symbol)

    async def last_price(self, symbol: str) -> float | None:
        return (await self._ready()).last_price(symbol)

    async def status(self) -> dict[str, Any]:
        """Health: connected, accepting, healthy, last heartbeat, account, open orders, pending intents, last
        error, reconnections and the last reconciliation (JSON-safe)."""
        out = (await self._ready()).status()
        out["pid"] = os.getpid()
        return out

    async def shutdown(self) -> None:
        """Disconnect and close the journal (the actor can then be killed without losing anything)."""
        if self._engine is not None:
            await self._engine.close()
        self._journal.close()


def execution_actor(
    settings: Any,
    *,
    journal: str,
    secret: str,
    name: str = "execution",
    namespace: str | None = None,
    max_restarts: int = 5,
) -> Any:
    """The named execution actor (created, or the running one when it exists).

    ``settings``: the validated Settings (its ``ibkr`` section is used); ``journal``: the SQLite file;
    ``secret``: the approval HMAC key the risk side signs with. Restarts up to ``max_restarts`` times, and
    in-flight calls are retried on the new instance (safe: submit is idempotent per intent).
    """
    remote = ray.remote(ExecutionActor).options(
        name=name,
        namespace=namespace or settings.ray.namespace,
        get_if_exists=True,
        max_restarts=max_restarts,
        max_task_retries=3,
        max_concurrency=1000,  # async: many callers wait on fills at once
        num_cpus=0,  # waits on a socket; it must never wait for a free CPU
    )
    return remote.remote(settings.ibkr, journal, secret, name)
