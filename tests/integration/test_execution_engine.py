"""The execution engine over the real ib_insync client and the simulated gateway on loopback: approvals
checked, at most one order per intent, reconnection with reconciliation, 1100/1102, paper-only refusals,
concurrent callers. No Ray here (cluster/actors/execution.py wraps the same engine; see
test_execution_actor.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trader.broker import Approval, OrderIntent, OrderJournal, PaperOnlyError
from trader.broker.execution import ExecutionEngine
from trader.config import load_settings
from trader.ibsim import GatewayConfig, run_gateway

pytestmark = pytest.mark.integration

SECRET = "test-approval-key"


@pytest.fixture(autouse=True)
def _no_dropped_messages(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    bad = [r.getMessage() for r in caplog.records if "Error handling fields" in r.getMessage()]
    assert not bad, f"the client dropped messages: {bad[:3]}"


@pytest.fixture()
def gateway() -> Iterator[Any]:
    with run_gateway(GatewayConfig(symbols=("SPY", "AAPL"), account="DU7654321")) as gw:
        gw.set_price("SPY", 400.0, volume=1e9)
        gw.set_price("AAPL", 190.0, volume=1e9)
        yield gw


def _ibkr(port: int, client_id: int = 7, **extra: Any) -> Any:
    overrides = [
        f"ibkr.port={port}", f"ibkr.client_id={client_id}", "ibkr.heartbeat_seconds=0.5",
        "ibkr.reconnect_initial_seconds=0.05", "ibkr.reconnect_max_seconds=0.5",
    ] + [f"ibkr.{k}={v}" for k, v in extra.items()]  # fmt: skip
    return load_settings([], overrides, env={}).ibkr


def _intent(n: int, symbol: str = "SPY", qty: int = 10, **kw: Any) -> OrderIntent:
    return OrderIntent(
        intent_id=f"test-{symbol}-{n}", symbol=symbol, side=kw.pop("side", "BUY"), quantity=qty,
        created_at=dt.datetime.now(dt.UTC), source="test", **kw,
    )  # fmt: skip


def _approve(intent: OrderIntent, secret: str = SECRET, **kw: Any) -> Approval:
    return Approval.sign(intent, secret, **kw)


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _engine(tmp_path: Path, port: int, **extra: Any) -> ExecutionEngine:
    engine = ExecutionEngine(_ibkr(port, **extra), OrderJournal(tmp_path / "orders.sqlite"), SECRET)
    await engine.start(wait=15)
    return engine


def test_market_order_fills_and_is_journaled_with_commission(gateway: Any, tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        engine = await _engine(tmp_path, gateway.port)
        intent = _intent(1)
        sent = await engine.submit(intent, _approve(intent))
        assert sent["accepted"] and sent["submitted"] and not sent["duplicate"]
        done = await engine.wait_for(intent.intent_id, 10, filled=True)
        status = engine.status()
        await engine.close()
        return {"done": done, "status": status}

    out = _run(main())
    done = out["done"]
    assert done["filled"] == 10 and done["avg_price"] == pytest.approx(400.0, rel=1e-3)
    assert done["commission"] == pytest.approx(max(1.0, 0.005 * 10))
    assert gateway.orders_received() == {"test-SPY-1": 1}
    assert gateway.positions() == {"SPY": 10}
    status = out["status"]
    assert status["healthy"] and status["account"] == "DU7654321" and status["open_orders"] == []


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "tampered quantity", "other intent", "rejected by risk", "expired"],
)
def test_an_approval_that_does_not_check_out_sends_nothing(gateway: Any, tmp_path: Path, case: str) -> None:
    intent = _intent(2)
    approval = {
        "wrong secret": lambda: _approve(intent, secret="not-the-key"),
        "tampered quantity": lambda: _approve(_intent(2, qty=1)),
        "other intent": lambda: _approve(_intent(3)),
        "rejected by risk": lambda: _approve(intent, approved=False, reason="max_per_trade"),
        "expired": lambda: _approve(intent, issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=600)),
    }[case]()

    async def main() -> dict[str, Any]:
        engine = await _engine(tmp_path, gateway.port)
        result = await engine.submit(intent, approval)
        await engine.close()
        return result

    result = _run(main())
    assert not result["accepted"] and result["reason"].startswith("refused:")
    assert gateway.orders_received() == {}
    with OrderJournal(tmp_path / "orders.sqlite", readonly=True) as journal:
        state = journal.state(intent.intent_id) if journal.has_intent(intent.intent_id) else None
    if case != "tampered quantity":  # a tampered one collides with nothing: its intent is journaled too
        assert state is not None and state.approved is False and not state.submitted


def test_duplicates_and_many_concurrent_callers_send_each_intent_once(gateway: Any, tmp_path: Path) -> None:
    intents = [_intent(i, symbol=("SPY", "AAPL")[i % 2], qty=5) for i in range(24)]

    async def main() -> list[dict[str, Any]]:
        engine = await _engine(tmp_path, gateway.port)
        # Every intent submitted three times at once (a retry storm), all intents concurrently.
        calls = [engine.submit(i, _approve(i)) for i in intents for _ in range(3)]
        results = await asyncio.gather(*calls)
        for i in intents:
            await engine.wait_for(i.intent_id, 20, filled=True)
        await engine.close()
        return results

    results = _run(main())
    assert all(r["accepted"] for r in results)
    assert sum(not r["duplicate"] for r in results) == len(intents)
    assert gateway.orders_received() == {i.intent_id: 1 for i in intents}
    assert gateway.positions() == {"SPY": 60, "AAPL": 60}


def test_fill_while_disconnected_is_reconciled_exactly_once(gateway: Any, tmp_path: Path) -> None:
    intent = _intent(4, order_type="LMT", limit_price=350.0)  # rests: the price is 400

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        engine = await _engine(tmp_path, gateway.port)
        sent = await engine.submit(intent, _approve(intent))
        assert sent["accepted"]
        await asyncio.to_thread(gateway.wait_for, lambda: len(gateway.open_orders()) == 1, 10, "resting")
        connects = engine.connects
        gateway.drop_connections()
        # While the engine is away, the order fills at the gateway.
        assert gateway.fill_open_orders(price=349.5) == 1
        await engine._wait(lambda: engine.connects > connects and engine.status()["accepting"])
        state = await engine.wait_for(intent.intent_id, 15, filled=True)
        status = engine.status()
        await engine.close()
        return state, status

    state, status = _run(main())
    assert state["filled"] == 10 and state["avg_price"] == pytest.approx(349.5)
    assert status["reconciliations"] >= 2 and status["last_reconcile"]["reason"] == "reconnect"
    with OrderJournal(tmp_path / "orders.sqlite", readonly=True) as journal:
        fills = journal.fills(intent.intent_id)
    execs = [e for e in gateway.executions() if e.order_ref == intent.intent_id]
    assert len(fills) == len(execs) >= 1  # each execution journaled once
    assert sorted(f.exec_id for f in fills) == sorted(e.exec_id for e in execs)


def test_connectivity_lost_stops_orders_until_restored(gateway: Any, tmp_path: Path) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        engine = await _engine(tmp_path, gateway.port)
        gateway.announce_connectivity_lost()
        await engine._wait(lambda: engine.status()["link_lost"])
        first = _intent(5)
        refused = await engine.submit(first, _approve(first))
        unhealthy = engine.status()
        gateway.announce_connectivity_restored()
        await engine.wait_ready(10)
        sent = await engine.submit(first, _approve(first))
        await engine.wait_for(first.intent_id, 10, filled=True)
        await engine.close()
        return refused, unhealthy, sent

    refused, unhealthy, sent = _run(main())
    assert not refused["accepted"] and "1100" in refused["reason"]
    assert not unhealthy["healthy"] and unhealthy["connected"]
    assert sent["accepted"] and not sent["duplicate"]
    assert gateway.orders_received() == {"test-SPY-5": 1}


def test_live_account_and_live_port_are_refused(tmp_path: Path) -> None:
    with run_gateway(GatewayConfig(symbols=("SPY",), account="U1234567")) as gw:

        async def live_account() -> None:
            engine = ExecutionEngine(_ibkr(gw.port), OrderJournal(tmp_path / "a.sqlite"), SECRET)
            try:
                await engine.start(wait=15)
            finally:
                await engine.close()

        with pytest.raises(PaperOnlyError, match="U1234567 is not a paper account"):
            _run(live_account())
        assert gw.orders_received() == {}

    # Settings refuse a live port; the engine checks again rather than trusting them.
    live = _ibkr(4002).model_copy(update={"port": 7496})
    with pytest.raises(PaperOnlyError, match="live trading port"):
        _run(ExecutionEngine(live, OrderJournal(tmp_path / "b.sqlite"), SECRET).start())


def test_disconnected_gateway_is_reported_unhealthy(tmp_path: Path) -> None:
    async def main() -> dict[str, Any]:
        # Nothing listens on this port: the engine keeps retrying and says so.
        engine = ExecutionEngine(_ibkr(1), OrderJournal(tmp_path / "c.sqlite"), SECRET)
        with pytest.raises(Exception, match="not ready"):
            await engine.start(wait=1.0)
        status = engine.status()
        await engine.close()
        return status

    status = _run(main())
    assert not status["healthy"] and not status["connected"] and status["last_error"]


def test_the_engine_runs_on_ib_async_too(tmp_path: Path) -> None:
    with run_gateway(GatewayConfig(symbols=("SPY",), account="DU7654321", server_version=178)) as gw:
        gw.set_price("SPY", 400.0, volume=1e9)

        async def main() -> tuple[dict[str, Any], dict[str, Any]]:
            engine = await _engine(tmp_path, gw.port, client_library="ib_async")
            intent = _intent(9)
            await engine.submit(intent, _approve(intent))
            state = await engine.wait_for(intent.intent_id, 10, filled=True)
            status = engine.status()
            await engine.close()
            return state, status

        state, status = _run(main())
        assert status["server_version"] == 178
        assert state["filled"] == 10 and state["commission"] == pytest.approx(1.0)
        assert gw.orders_received() == {"test-SPY-9": 1}


@pytest.mark.parametrize("rate", [40, 49, 5])
def test_pacing_never_lets_a_second_carry_more_than_the_gateways_50(tmp_path: Path, rate: int) -> None:
    # The most messages any 1-second window can hold is the bucket's burst plus a second's refill.
    engine = ExecutionEngine(_ibkr(1, pacing_per_second=rate), OrderJournal(tmp_path / "p.sqlite"), SECRET)
    bucket = engine._bucket
    assert bucket.rate == rate and bucket.capacity >= 1
    assert bucket.capacity + bucket.rate <= 50
