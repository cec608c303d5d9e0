"""The execution actor on a real local Ray cluster, over the real ib_insync client and the simulated
gateway: fills published to subscribers, concurrent intents from many Ray tasks, and a crashed actor restarted
by Ray that sends no duplicate order and keeps its journal."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
ray = pytest.importorskip("ray")

from cluster.actors.execution import execution_actor  # noqa: E402
from trader.broker import Approval, OrderIntent, OrderJournal  # noqa: E402
from trader.config import load_settings  # noqa: E402
from trader.ibsim import GatewayConfig, run_gateway  # noqa: E402

pytestmark = pytest.mark.integration

SECRET = "actor-test-key"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="trader-test-exec")
    yield
    ray.shutdown()


@pytest.fixture()
def gateway() -> Iterator[Any]:
    with run_gateway(GatewayConfig(symbols=("SPY", "AAPL"), account="DU7654321")) as gw:
        gw.set_price("SPY", 400.0, volume=1e9)
        gw.set_price("AAPL", 190.0, volume=1e9)
        yield gw


def _settings(port: int, client_id: int) -> Any:
    return load_settings(
        [],
        [
            f"ibkr.port={port}", f"ibkr.client_id={client_id}", "ibkr.heartbeat_seconds=0.5",
            "ibkr.reconnect_initial_seconds=0.05", "ibkr.reconnect_max_seconds=0.5",
            "ray.namespace=trader-test-exec",
        ],
        env={},
    )  # fmt: skip


def _intent(name: str, symbol: str = "SPY", qty: int = 5, **kw: Any) -> OrderIntent:
    return OrderIntent(
        intent_id=name, symbol=symbol, side="BUY", quantity=qty, created_at=dt.datetime.now(dt.UTC),
        source="test", **kw,
    )  # fmt: skip


@ray.remote
class Collector:
    """A subscriber: keeps every event pushed to it and lets a test await a kind."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def on_execution_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, kind: str, intent_id: str, timeout: float) -> list[dict[str, Any]]:
        async def seen() -> None:
            while not any(e["kind"] == kind and e["intent_id"] == intent_id for e in self.events):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen(), timeout)
        return self.events


def test_actor_fills_and_publishes_to_subscribers(cluster: None, gateway: Any, tmp_path: Path) -> None:
    actor = execution_actor(
        _settings(gateway.port, 21), journal=str(tmp_path / "o.sqlite"), secret=SECRET, name="exec-a"
    )
    try:
        ready = ray.get(actor.wait_ready.remote(20))
        assert ready["healthy"] and ready["account"] == "DU7654321"
        collector = Collector.remote()
        ray.get(actor.subscribe.remote(collector))
        intent = _intent("sub-1")
        sent = ray.get(actor.submit.remote(intent, Approval.sign(intent, SECRET)))
        assert sent["accepted"] and sent["submitted"]
        state = ray.get(actor.wait_for.remote("sub-1", 20, True))
        assert state["filled"] == 5 and state["commission"] == pytest.approx(1.0)
        events = ray.get(collector.wait_for.remote("commission", "sub-1", 20))
        # Order by seq: an async subscriber may run pushed calls out of order (Ray does not order them).
        kinds = [e["kind"] for e in sorted(events, key=lambda e: e["seq"]) if e["intent_id"] == "sub-1"]
        assert kinds[:3] == ["intent", "approval", "submission"] and "fill" in kinds
        # The long poll sees the same journal.
        polled = ray.get(actor.events.remote(0, 0))
        assert [e["seq"] for e in polled] == sorted(e["seq"] for e in polled)
        assert {e["seq"] for e in events} <= {e["seq"] for e in polled}
    finally:
        ray.get(actor.shutdown.remote())
        ray.kill(actor)


def test_many_ray_tasks_send_each_intent_once(cluster: None, gateway: Any, tmp_path: Path) -> None:
    settings = _settings(gateway.port, 22)
    actor = execution_actor(settings, journal=str(tmp_path / "o.sqlite"), secret=SECRET, name="exec-b")
    ray.get(actor.wait_ready.remote(20))

    @ray.remote(num_cpus=0)
    def caller(k: int) -> list[dict[str, Any]]:
        handle = ray.get_actor("exec-b", namespace="trader-test-exec")
        out = []
        for i in range(6):
            # Callers k and k+1 share half their intents: duplicated messages from two sources.
            name = f"many-{(k + i % 2) % 8}-{i}"
            intent = OrderIntent(
                intent_id=name, symbol=("SPY", "AAPL")[i % 2], side="BUY", quantity=1,
                created_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC), source=f"caller-{k}",
            )  # fmt: skip
            out.append(ray.get(handle.submit.remote(intent, Approval.sign(intent, SECRET))))
        return out

    try:
        results = [r for batch in ray.get([caller.remote(k) for k in range(8)]) for r in batch]
        names = {r["intent_id"] for r in results}
        for name in names:
            ray.get(actor.wait_for.remote(name, 20, True))
        assert all(r["accepted"] for r in results)
        assert gateway.orders_received() == dict.fromkeys(names, 1)
        assert sum(not r["duplicate"] for r in results) == len(names)
    finally:
        ray.get(actor.shutdown.remote())
        ray.kill(actor)


def test_crashed_actor_restarts_without_duplicate_orders(cluster: None, gateway: Any, tmp_path: Path) -> None:
    journal = tmp_path / "o.sqlite"
    actor = execution_actor(_settings(gateway.port, 23), journal=str(journal), secret=SECRET, name="exec-c")
    resting = _intent("crash-1", order_type="LMT", limit_price=350.0)  # rests: the price is 400
    approval = Approval.sign(resting, SECRET)
    try:
        first = ray.get(actor.wait_ready.remote(20))
        assert ray.get(actor.submit.remote(resting, approval))["submitted"]
        gateway.wait_for_orders(1, "crash-1", timeout=10)
        with OrderJournal(journal, readonly=True) as j:
            before = [(e.seq, e.kind) for e in j.events()]
        os.kill(first["pid"], signal.SIGKILL)  # a crash: Ray restarts the actor (max_restarts)
        # The caller retries its intent: the new instance reconciles first, then answers from the journal.
        again = ray.get(actor.submit.remote(resting, approval))
        status = ray.get(actor.status.remote())
        assert status["pid"] != first["pid"] and status["reconciliations"] >= 1
        assert again["accepted"] and again["duplicate"] and again["submitted"]
        assert gateway.orders_received() == {"crash-1": 1}
        # The order fills at the gateway; the restarted actor journals it.
        assert gateway.fill_open_orders(price=349.0) == 1
        state = ray.get(actor.wait_for.remote("crash-1", 20, True))
        assert state["filled"] == 5 and state["avg_price"] == pytest.approx(349.0)
        with OrderJournal(journal, readonly=True) as j:
            after = [(e.seq, e.kind) for e in j.events()]
        assert after[: len(before)] == before  # nothing lost or rewritten
        assert sum(kind == "submission" for _, kind in after) == 1
    finally:
        ray.get(actor.shutdown.remote())
        ray.kill(actor)
