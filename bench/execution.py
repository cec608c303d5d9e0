"""Order round trips through the execution engine, the Ray execution actor and the simulated IB gateway.
Prints one JSON object.

    .venv/bin/python bench/execution.py
    .venv/bin/python bench/execution.py --client-library ib_async
    .venv/bin/python bench/execution.py --orders 200 --callers 8 --seconds 10 --pacing 40 --paths direct,ray

Workload (issue #6): a simulated gateway (``trader.ibsim``, paper account, pacing 50 messages/s, SPY at 400
USD with 1e9 shares of volume so every MKT order fills at once) on a thread of this process, a fresh one for
each of two paths, each path with its own client id and its own order journal (SQLite, WAL,
``synchronous=FULL``) in a temporary folder (under ``--journal-dir``; removed at the end):

* ``direct``: :class:`trader.broker.execution.ExecutionEngine` in this process's asyncio loop, no Ray;
* ``ray``: the execution actor (``cluster/actors/execution.py``) on an embedded 2-CPU Ray cluster, called
  from the driver's asyncio loop (``await actor.submit.remote(...)``), as a symbol-session actor would.

On each path, after 5 warm-up orders:

1. **latency**: ``--orders`` sequential 1-share MKT orders alternating BUY/SELL, at most one started every
   ``--gap-ms`` (30 ms = 33 orders/s, under the 40/s pacing bucket, so no order waits for a pacing token and
   the figure is the stack's latency, not the throttle's). Per order, in ms: ``submit`` (intent and signed
   approval in; returns once the order is handed to the client library), ``fill_wait`` (``wait_for(filled)``;
   returns once the fill is journaled), ``round_trip`` = both; p50/p90/p99/max, and the p50 of the first and
   of the last fifth of the orders (does a call get slower as the journal grows?). The ray path also times
   ``--orders`` actor calls that do no work (``last_price``): what one Ray call costs by itself.
2. **sustained**: ``--callers`` concurrent asyncio tasks, each submitting a 1-share order and waiting for its
   fill, back to back, for ``--seconds``: fills per second (overall, per 1-s bin, and after the first second),
   the most submissions returned and the most orders the gateway received in any 1-s window (the gateway's
   ``orders`` counter sampled every 50 ms, so to within a sampling period; a submission returns when the
   order is queued in the client library, which may hold it behind its own throttle, so only the gateway's
   count is the wire rate), and the
   gateway's error-100 pacing violations (its ``GatewayEvents`` counter ``errors:100``; the gateway refuses
   every message beyond 50/s and reports error 100 at most once a second while flooded).
3. **journal**: events by kind (each event is one SQLite transaction, fsynced), events and bytes per order,
   the time of one ``status()`` call after the latency phase and at the journal's final size (it derives
   every journaled intent's state; the actor's ``submit`` calls it once per order), and
   (``journal_write_ms``) the time of one record on this disk, measured on a scratch journal.

Rate limits in the chain: the engine's token bucket ``ibkr.pacing_per_second`` (40/s, burst 40), the client
library's own throttle (ib_insync and ib_async: ``Client.MaxRequests`` = 45 messages per ``RequestsInterval``
= 1 s; the excess waits in the client's queue), the gateway's 50/s. Over a ``T``-second window the bucket
admits ``40 + 40 T`` orders, so with ``T`` = 10 its cap on the average is 44/s and the client throttle (45 in
any second) is what spreads the burst; over a long run the bucket's 40/s is the bound. ``rate_bound`` names
the cap that held each path's sustained rate, or says the stack itself was slower than every cap.

Targets: zero error-100 pacing violations; sustained fills/s within 10 % of the pacing cap on both paths (the
pacing bucket, not the stack, bounds the rate); the whole run under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import inspect
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SECRET = "bench-execution-approval-key"
SYMBOL = "SPY"
PRICE = 400.0  # USD; the gateway fills MKT orders at the last price
NAMESPACE = "trader-bench-execution"
WARMUP_ORDERS = 5  # first contract qualification and first-call paths, kept out of the figures
FILL_TIMEOUT = 30.0  # seconds one wait_for may take before the run is declared broken
# The highest API version each client speaks; the gateway runs at that ceiling for the client in use.
SERVER_VERSION = {"ib_insync": 176, "ib_async": 178}
GATEWAY_PACING = 50  # messages/s, as TWS

Submit = Callable[[Any, Any], Awaitable[dict[str, Any]]]
WaitFilled = Callable[[str, float], Awaitable[dict[str, Any]]]


# -- small helpers ----------------------------------------------------------------------------------------


def _intent(intent_id: str, side: str) -> Any:
    from trader.broker.order import OrderIntent

    return OrderIntent(
        intent_id=intent_id,
        symbol=SYMBOL,
        side=side,
        quantity=1,
        created_at=dt.datetime.now(dt.UTC),
        source="bench",
    )


def _signed(intent_id: str, side: str) -> tuple[Any, Any]:
    from trader.broker.order import Approval

    intent = _intent(intent_id, side)
    return intent, Approval.sign(intent, SECRET, reason="bench", approver="bench-risk")


def _ms(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of durations given in seconds, reported in milliseconds."""
    import numpy as np

    if not seconds:
        return {"n": 0}
    a = np.asarray(seconds, dtype=float) * 1e3
    return {
        "n": int(a.size),
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
        "mean": round(float(a.mean()), 2),
    }


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps (seconds) falling in any half-open window of ``window`` seconds."""
    ordered, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _settings(port: int, client_id: int, library: str, pacing: float) -> Any:
    from trader.config import load_settings

    return load_settings(
        [],
        [
            f"ibkr.port={port}",
            f"ibkr.client_id={client_id}",
            f"ibkr.client_library={library}",
            f"ibkr.pacing_per_second={pacing}",
            f"ray.namespace={NAMESPACE}",
        ],
        env={},
    )


class GatewayDelta:
    """Counters the gateway bumped between construction and :meth:`read` (orders, fills, errors by code)."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.before = Counter(gw.events.counts())

    def read(self) -> dict[str, Any]:
        after = Counter(self.gw.events.counts())
        diff = {k: after[k] - self.before[k] for k in after if after[k] != self.before[k]}
        errors = {k.split(":", 1)[1]: v for k, v in sorted(diff.items()) if k.startswith("errors:")}
        return {
            "orders_received": diff.get("orders", 0),
            "fills": diff.get("fills", 0),
            "pacing_violations_error_100": errors.get("100", 0),
            "errors_by_code": errors,  # 2104/2106/2158 are the farm notices every connection gets
        }


class GatewayRate:
    """Samples the gateway's count of placeOrder messages handled every ``period`` seconds on a thread, to
    give the most orders the gateway received in any 1-s window (within one sampling period)."""

    def __init__(self, gw: Any, period: float = 0.05) -> None:
        self.gw, self.period = gw, period
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-rate", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), self.gw.events.count("orders")))
            # The sampling period of a measuring thread, not a wait for a condition.
            if self._stop.wait(self.period):
                self.samples.append((time.perf_counter(), self.gw.events.count("orders")))
                return

    def __enter__(self) -> GatewayRate:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def max_in_any_1s(self) -> int:
        best, lo = 0, 0
        for t, count in self.samples:
            while t - self.samples[lo][0] > 1.0:
                lo += 1
            best = max(best, count - self.samples[lo][1])
        return best


def journal_stats(path: Path, orders: int) -> dict[str, Any]:
    """Events by kind and file size of a closed journal; ``orders`` = orders sent (warm-up included)."""
    from trader.broker.journal import OrderJournal

    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    with OrderJournal(path, readonly=True) as journal:
        kinds = Counter(e.kind for e in journal.events())
    events = sum(kinds.values())
    return {
        "events": events,  # one SQLite transaction (fsync, synchronous=FULL) each
        "by_kind": dict(sorted(kinds.items())),
        "events_per_order": round(events / orders, 2) if orders else None,
        "bytes": size,
        "bytes_per_order": round(size / orders, 1) if orders else None,
    }


def journal_write_ms(folder: Path, n: int = 200) -> dict[str, float]:
    """Time of one journal record (one transaction + fsync) on the benchmark's disk, over ``n`` intents."""
    from trader.broker.journal import OrderJournal

    times = []
    with OrderJournal(folder / "write-probe.sqlite") as journal:
        for i in range(n):
            intent = _intent(f"probe-{i}", "BUY")
            t0 = time.perf_counter()
            journal.record_intent(intent)
            times.append(time.perf_counter() - t0)
    return _ms(times)


async def _status_ms(status: Callable[[], Any]) -> float:
    """Milliseconds of one status() call (the engine's, or the actor's through Ray): it derives the state of
    every journaled intent, so it grows with the journal."""
    t0 = time.perf_counter()
    result = status()
    if inspect.isawaitable(result):
        await result
    return round((time.perf_counter() - t0) * 1e3, 1)


# -- the two measurements, shared by both paths -----------------------------------------------------------


async def warm_up(submit: Submit, wait_filled: WaitFilled, prefix: str) -> None:
    for n in range(WARMUP_ORDERS):
        intent, approval = _signed(f"{prefix}-warm-{n}", "BUY" if n % 2 == 0 else "SELL")
        result = await submit(intent, approval)
        if not result["accepted"]:
            raise RuntimeError(f"warm-up order refused: {result.get('reason')}")
        await wait_filled(intent.intent_id, FILL_TIMEOUT)


async def measure_latency(
    submit: Submit, wait_filled: WaitFilled, prefix: str, orders: int, gap: float
) -> dict[str, Any]:
    """Sequential orders, one started at most every ``gap`` seconds (see the module docstring)."""
    sub, wait, total = [], [], []
    next_start = time.perf_counter()
    for n in range(orders):
        pause = next_start - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)  # open-loop spacing that keeps under the pacing bucket
        intent, approval = _signed(f"{prefix}-lat-{n}", "BUY" if n % 2 == 0 else "SELL")
        t0 = time.perf_counter()
        result = await submit(intent, approval)
        t1 = time.perf_counter()
        if not result["accepted"]:
            raise RuntimeError(f"order {intent.intent_id} refused: {result.get('reason')}")
        state = await wait_filled(intent.intent_id, FILL_TIMEOUT)
        t2 = time.perf_counter()
        if state["filled"] < 1:
            raise RuntimeError(f"order {intent.intent_id} not filled: {state}")
        sub.append(t1 - t0)
        wait.append(t2 - t1)
        total.append(t2 - t0)
        next_start = t0 + gap
    fifth = max(1, orders // 5)
    return {
        "submit_ms": _ms(sub),
        "fill_wait_ms": _ms(wait),
        "round_trip_ms": _ms(total),
        "round_trip_p50_first_fifth_ms": _ms(total[:fifth]).get("p50"),
        "round_trip_p50_last_fifth_ms": _ms(total[-fifth:]).get("p50"),
    }


async def measure_sustained(
    submit: Submit, wait_filled: WaitFilled, prefix: str, callers: int, seconds: float
) -> dict[str, Any]:
    """``callers`` tasks submit-and-wait back to back for ``seconds`` (see the module docstring)."""
    start = time.perf_counter()
    deadline = start + seconds
    submits: list[float] = []
    fills: list[float] = []
    round_trips: list[float] = []
    refused: Counter[str] = Counter()

    async def caller(c: int) -> None:
        n = 0
        while time.perf_counter() < deadline:
            intent, approval = _signed(f"{prefix}-sus-{c}-{n}", "BUY" if n % 2 == 0 else "SELL")
            n += 1
            t0 = time.perf_counter()
            result = await submit(intent, approval)
            submits.append(time.perf_counter() - start)
            if not result["accepted"]:
                refused[str(result.get("reason"))[:80]] += 1
                continue
            await wait_filled(intent.intent_id, FILL_TIMEOUT)
            t2 = time.perf_counter()
            fills.append(t2 - start)
            round_trips.append(t2 - t0)

    await asyncio.gather(*(caller(c) for c in range(callers)))
    elapsed = time.perf_counter() - start
    bins = [0] * math.ceil(elapsed)
    for t in fills:
        bins[min(int(t), len(bins) - 1)] += 1
    steady = [t for t in fills if 1.0 <= t < seconds]
    return {
        "callers": callers,
        "seconds": round(elapsed, 2),
        "orders_submitted": len(submits),
        "fills": len(fills),
        "fills_per_second": round(len(fills) / elapsed, 2),
        "steady_fills_per_second": round(len(steady) / (seconds - 1.0), 2) if seconds > 1 else None,
        "fills_per_1s_bin": bins,
        "max_submits_in_any_1s": _max_in_window(submits),
        "max_fills_in_any_1s": _max_in_window(fills),
        "round_trip_ms": _ms(round_trips),
        "refused": dict(refused),
    }


# -- the direct path --------------------------------------------------------------------------------------


async def run_direct(gw: Any, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from trader.broker.execution import ExecutionEngine
    from trader.broker.journal import OrderJournal

    settings = _settings(gw.port, 10, args.client_library, args.pacing)
    path = folder / "direct" / "orders.sqlite"
    journal = OrderJournal(path)
    delta = GatewayDelta(gw)
    t0 = time.perf_counter()
    engine = ExecutionEngine(settings.ibkr, journal, SECRET, name="bench-direct")
    await engine.start(wait=30)
    ready_s = time.perf_counter() - t0
    throttled = Counter[str]()
    client = engine.adapter.ib.client
    client.throttleStart += lambda: throttled.update(["episodes"])

    async def wait_filled(intent_id: str, timeout: float) -> dict[str, Any]:
        return await engine.wait_for(intent_id, timeout, filled=True)

    try:
        await warm_up(engine.submit, wait_filled, "direct")
        latency = await measure_latency(engine.submit, wait_filled, "direct", args.orders, args.gap_ms / 1e3)
        status_ms = {"after_latency": await _status_ms(engine.status)}
        with GatewayRate(gw) as rate:
            sustained = await measure_sustained(
                engine.submit, wait_filled, "direct", args.callers, args.seconds
            )
        sustained["gateway_max_orders_in_any_1s"] = rate.max_in_any_1s()
        status_ms["at_end"] = await _status_ms(engine.status)
    finally:
        await engine.close()
        journal.close()
    gateway = delta.read()
    orders = WARMUP_ORDERS + args.orders + sustained["orders_submitted"]
    return {
        "ready_s": round(ready_s, 2),
        "latency": latency,
        "sustained": sustained,
        "client_throttle_episodes": throttled["episodes"],
        "status_call_ms": status_ms,
        "journal": journal_stats(path, orders),
        "gateway": gateway,
    }


# -- the Ray path -----------------------------------------------------------------------------------------


async def _drive_actor(actor: Any, gw: Any, args: argparse.Namespace) -> dict[str, Any]:
    async def submit(intent: Any, approval: Any) -> dict[str, Any]:
        return await actor.submit.remote(intent, approval)

    async def wait_filled(intent_id: str, timeout: float) -> dict[str, Any]:
        return await actor.wait_for.remote(intent_id, timeout, filled=True)

    await warm_up(submit, wait_filled, "ray")
    # A call that does no work in the actor (a dict lookup): what one Ray actor call costs by itself.
    noop = []
    for _ in range(args.orders):
        t0 = time.perf_counter()
        await actor.last_price.remote(SYMBOL)
        noop.append(time.perf_counter() - t0)
    latency = await measure_latency(submit, wait_filled, "ray", args.orders, args.gap_ms / 1e3)
    status_ms = {"after_latency": await _status_ms(actor.status.remote)}
    with GatewayRate(gw) as rate:
        sustained = await measure_sustained(submit, wait_filled, "ray", args.callers, args.seconds)
    sustained["gateway_max_orders_in_any_1s"] = rate.max_in_any_1s()
    status_ms["at_end"] = await _status_ms(actor.status.remote)
    return {
        "noop_actor_call_ms": _ms(noop),
        "latency": latency,
        "sustained": sustained,
        "status_call_ms": status_ms,
    }


def run_ray(gw: Any, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import ray

    from cluster.actors.execution import execution_actor

    settings = _settings(gw.port, 9, args.client_library, args.pacing)
    path = folder / "ray" / "orders.sqlite"
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace=NAMESPACE,
        log_to_driver=False,
    )
    init_s = time.perf_counter() - t0
    delta = GatewayDelta(gw)
    try:
        t1 = time.perf_counter()
        actor = execution_actor(settings, journal=str(path), secret=SECRET, name="bench-execution")
        ray.get(actor.wait_ready.remote(30))
        ready_s = time.perf_counter() - t1
        try:
            out = asyncio.run(_drive_actor(actor, gw, args))
        finally:
            with contextlib.suppress(Exception):
                ray.get(actor.shutdown.remote(), timeout=30)
            ray.kill(actor, no_restart=True)
    finally:
        ray.shutdown()
    gateway = delta.read()
    orders = WARMUP_ORDERS + args.orders + out["sustained"]["orders_submitted"]
    return {
        "ray_init_s": round(init_s, 2),
        "ready_s": round(ready_s, 2),
        **out,
        "journal": journal_stats(path, orders),
        "gateway": gateway,
    }


# -- the report -------------------------------------------------------------------------------------------


def rate_bound(report: dict[str, Any], pacing: float, client_cap: float) -> dict[str, Any]:
    """Which limit held each path's sustained rate, or that the stack itself was slower than all of them.

    Over a window of ``T`` seconds the engine's bucket lets through its burst plus ``pacing * T`` messages,
    so its cap on the window's average is ``pacing * (1 + 1/T)`` (the burst is ``pacing`` tokens); the client
    library's throttle caps any 1-s window at ``client_cap``; the gateway's at 50. A rate within 10 % of the
    lowest cap is bound by that cap.
    """
    out: dict[str, Any] = {}
    for path in ("direct", "ray"):
        if path not in report:
            continue
        sustained = report[path]["sustained"]
        window = sustained["seconds"]
        caps = {
            "engine pacing bucket": round(pacing * (1.0 + 1.0 / window), 2),
            "client library throttle": client_cap,
            "gateway pacing": float(GATEWAY_PACING),
        }
        name, cap = min(caps.items(), key=lambda kv: kv[1])
        rate = sustained["fills_per_second"]
        held = name if rate >= 0.9 * cap else "the stack itself (below every pacing limit)"
        out[path] = {"bound_by": held, "fills_per_second": rate, "caps_per_second_over_window": caps}
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client-library", default="ib_insync", choices=sorted(SERVER_VERSION))
    parser.add_argument("--orders", type=int, default=200, help="sequential orders per path (latency)")
    parser.add_argument("--gap-ms", type=float, default=30.0, help="least ms between latency orders' starts")
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers (sustained)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the sustained phase")
    parser.add_argument("--pacing", type=float, default=40.0, help="ibkr.pacing_per_second (<= 50)")
    parser.add_argument("--paths", default="direct,ray", help="comma-separated: direct, ray")
    parser.add_argument(
        "--journal-dir", default=None, help="folder for the journals (default: the system temp folder)"
    )
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not set(paths) <= {"direct", "ray"}:
        parser.error(f"--paths takes direct and/or ray, got {args.paths!r}")

    from trader.broker.clients import load_client_library
    from trader.ibsim import GatewayConfig, run_gateway

    wall0 = time.perf_counter()
    # The client library's own throttle (messages per second beyond which it queues them client-side).
    lib_client = load_client_library(args.client_library).Client
    client_cap = lib_client.MaxRequests / lib_client.RequestsInterval
    limits = {
        "engine_pacing_bucket": float(args.pacing),  # ibkr.pacing_per_second, burst = the same number
        "client_library_throttle": client_cap,
        "gateway_error_100_beyond": float(GATEWAY_PACING),
    }
    config = GatewayConfig(
        symbols=(SYMBOL,),
        account="DU1234567",
        server_version=SERVER_VERSION[args.client_library],
        pacing_per_second=GATEWAY_PACING,
    )
    report: dict[str, Any] = {
        "client_library": args.client_library,
        "server_version": config.server_version,
        "orders": args.orders,
        "gap_ms": args.gap_ms,
        "callers": args.callers,
        "sustained_seconds": args.seconds,
        "limits_per_second": limits,
    }
    violations = 0
    with tempfile.TemporaryDirectory(prefix="exec-bench-", dir=args.journal_dir) as tmp:
        folder = Path(tmp)
        report["journal_folder"] = str(folder)
        report["journal_write_ms"] = journal_write_ms(folder)
        for path in paths:
            # A fresh gateway per path: at connect the engine journals every execution the gateway reports
            # (other clients' too), so a shared one would make the second path pay for the first's orders.
            with run_gateway(config) as gw:
                gw.set_price(SYMBOL, PRICE, volume=1e9)
                if path == "direct":
                    report["direct"] = asyncio.run(run_direct(gw, args, folder))
                else:
                    report["ray"] = run_ray(gw, args, folder)
                violations += gw.events.count("errors:100")
    report["gateway_pacing_violations_error_100"] = violations
    if "direct" in report and "ray" in report:
        d, r = report["direct"]["latency"]["round_trip_ms"], report["ray"]["latency"]["round_trip_ms"]
        report["actor_cost_round_trip_ms"] = {k: round(r[k] - d[k], 2) for k in ("p50", "p90", "p99")}
    report["rate_bound"] = rate_bound(report, float(args.pacing), client_cap)
    report["wall_s"] = round(time.perf_counter() - wall0, 1)
    report["cpu_count"] = os.cpu_count()
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
