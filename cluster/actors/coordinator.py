"""The session coordinator: starts and supervises the live cluster, drives the sessions, fans bars out.

For a replay (``trader paper --replay START:END``) it runs a simulated IB gateway (``trader.ibsim``) in its
own process, so the whole path is exercised: the real ib_insync client in the execution actor, orders, fills
and commissions over a socket. It then

1. creates the execution actor (journal ``RUN_DIR/orders.sqlite``), the portfolio risk actor and the symbol
   session actors (``session.symbols_per_actor`` symbols each), all named in the Ray namespace;
2. warms every symbol with ``session.historical`` trading days of bars before the start (unless the actor
   restored a checkpoint);
3. for every trading session from the calendar (holidays skipped, early closes end early), takes the day's
   bars for all symbols (read on a thread ``session.prefetch_days`` sessions ahead, while earlier sessions
   play; 0 = read at the session's start) and, bar by bar: sets the gateway's price to the
   bar's open and lets the risk actor size, approve and send what the last close decided (the backtest fills
   at the next bar's open), then sets the close, sends the bar to the symbol actors, which decide, and gives
   their targets to the risk actor;
4. at each session's end, checkpoints every actor; at the end of the run (or on ``stop()``) writes
   ``trades.parquet`` (the backtest's trade columns), ``summary.json`` and the JSON event log
   ``events.jsonl`` (one line per decision, intent, approval or rejection, fill, risk event, gap, session
   transition).

Bars stream at ``session.speed_multiplier`` x real time (0 = as fast as possible). Timestamps are bar starts
(UTC); prices in the account currency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import math
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trader.rundir import RunDir, json_safe

__all__ = ["SessionCoordinator", "auto_symbols_per_actor"]


def auto_symbols_per_actor(n_symbols: int, cpus: int) -> int:
    """Symbols per session actor for about two actors per CPU (``session.symbols_per_actor: null``).

    >>> auto_symbols_per_actor(500, 2), auto_symbols_per_actor(500, 16), auto_symbols_per_actor(3, 8)
    (125, 16, 1)
    """
    return max(1, math.ceil(n_symbols / (2 * max(1, cpus))))


class SessionCoordinator:
    """See the module docstring. Build with ``ray.remote(SessionCoordinator).options(name=...)``."""

    def __init__(
        self,
        settings: Any,
        run_dir: str,
        *,
        symbols: list[str],
        store: str,
        interval: str,
        start: str,
        end: str,
        strategy: str | None = None,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        live: bool = False,
    ) -> None:
        self.settings, self.run = settings, RunDir(run_dir)
        self.live = bool(live)
        self._prev_ts_live: int | None = None
        self.feed_quality: dict[str, Any] = {}
        self.symbols, self.store_uri, self.interval = sorted(symbols), store, interval
        self.start, self.end = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
        self.strategy, self.params = strategy, params
        self.session_id = session_id or f"paper-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
        self.namespace = settings.ray.namespace
        self.state = "created"
        self.stopping = False
        self.sessions_done: list[str] = []
        self.bars_done = 0
        self.quality: dict[str, dict[str, Any]] = {}
        self.gateway: Any = None
        self._gateway_cm: Any = None
        self._events: list[dict[str, Any]] = []
        self._journal_dir = tempfile.mkdtemp(prefix="trader-paper-") if self.run.is_s3 else None
        self.started_at = dt.datetime.now(dt.UTC)
        self.error: str | None = None
        self._prev_ts: int | None = None
        self.timings: dict[str, list[float]] = {}
        # Replay: the next sessions' bars, read on a thread while one plays (session.prefetch_days).
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._prefetched: dict[dt.date, concurrent.futures.Future[pl.DataFrame]] = {}
        self.prefetched_sessions = 0
        self._alerted: set[str] = set()

    # -- set-up --------------------------------------------------------------------------------------------

    def _journal_path(self) -> str:
        if self._journal_dir is not None:
            return str(Path(self._journal_dir) / "orders.sqlite")
        path = Path(self.run.path("orders.sqlite"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _start_gateway(self) -> Any:
        from trader.ibsim import GatewayConfig, run_gateway

        costs, engine = self.settings.costs, self.settings.engine
        config = GatewayConfig(
            symbols=tuple(self.symbols),
            account=self.settings.ibkr.account or "DU0000001",
            initial_cash=float(engine.initial_cash),
            commission_per_share=float(costs.commission_per_share),
            min_commission=float(costs.min_commission),
            max_volume_share=None,
            allow_fractional=bool(engine.fractional_shares),
        )
        self._gateway_cm = run_gateway(config)
        return self._gateway_cm.__enter__()

    def _symbols_per_actor(self) -> int:
        """``session.symbols_per_actor``, or (null) about two actors per cluster CPU: each actor call costs
        about a millisecond of fixed overhead, so a few large shards decide a bar sooner than many small
        ones. The choice is kept in the run folder, so a restarted coordinator shards the same way."""
        import ray

        configured = self.settings.session.symbols_per_actor
        if configured is not None:
            return int(configured)
        saved = "checkpoints/actors.json"
        if self.run.exists(saved):
            return int(self.run.read_json(saved)["symbols_per_actor"])
        cpus = int(ray.cluster_resources().get("CPU", 1))
        per = auto_symbols_per_actor(len(self.symbols), cpus)
        self.run.write_json(saved, {"symbols_per_actor": per, "cluster_cpus": cpus})
        return per

    def _actors(self) -> tuple[Any, Any, list[tuple[Any, list[str]]]]:
        import ray

        from cluster.actors.execution import execution_actor
        from cluster.actors.portfolio_risk import PortfolioRiskActor
        from cluster.actors.symbol_session import SymbolSessionActor
        from trader.config import with_overrides

        settings = self.settings
        if self.gateway is not None:  # replay: the simulated gateway in this process
            settings = with_overrides(
                settings, {"ibkr.port": int(self.gateway.port), "ibkr.host": "127.0.0.1"}
            )
        secret = (
            self.settings.ibkr.approval_secret.get_secret_value()
            if self.settings.ibkr.approval_secret is not None
            else secrets.token_hex(32)
        )
        execution = execution_actor(
            settings, journal=self._journal_path(), secret=secret, name="execution", namespace=self.namespace
        )
        risk = (
            ray.remote(PortfolioRiskActor)
            .options(
                name="risk",
                namespace=self.namespace,
                get_if_exists=True,
                max_restarts=3,
                max_task_retries=3,
                num_cpus=0,
            )
            .remote(
                settings,
                self.symbols,
                secret,
                self.run.uri,
                session_id=self.session_id,
                namespace=self.namespace,
                interval=self.interval,
            )
        )
        per = self._symbols_per_actor()
        shards = [self.symbols[i : i + per] for i in range(0, len(self.symbols), per)]
        actors = []
        for k, shard in enumerate(shards):
            actor = (
                ray.remote(SymbolSessionActor)
                .options(
                    name=f"symbols-{k:03d}",
                    namespace=self.namespace,
                    get_if_exists=True,
                    max_restarts=3,
                    max_task_retries=3,
                    num_cpus=0,
                )
                .remote(
                    settings,
                    shard,
                    self.run.uri,
                    store=self.store_uri,
                    interval=self.interval,
                    strategy=self.strategy,
                    params=self.params,
                    checkpoint_phase=7 * k,
                )
            )
            actors.append((actor, shard))
        return execution, risk, actors

    # -- the run -------------------------------------------------------------------------------------------

    def _alerts(self, event: dict[str, Any]) -> None:
        """Alert (webhook) on the kill switch, a daily loss halt, and an order refused or not sent."""
        kind = None
        if event.get("kind") == "risk_event" and event.get("rule") in ("max_drawdown", "daily_loss_limit"):
            kind = "kill_switch" if event["rule"] == "max_drawdown" else "daily_loss_halt"
        elif event.get("kind") == "intent" and event.get("decision") in ("rejected", "not_sent"):
            kind = "order_" + event["decision"]
        if kind is None or (kind in self._alerted and kind != "order_rejected"):
            return
        self._alerted.add(kind)
        self._log({"kind": "alert", "alert": kind, "event": event})
        url = self.settings.session.webhook_url
        if url is None:
            return
        body = json.dumps(
            {"session": self.session_id, "alert": kind, "event": event}, sort_keys=True, default=str
        ).encode()

        def post() -> None:
            import urllib.request

            request = urllib.request.Request(
                url.get_secret_value(), data=body, headers={"Content-Type": "application/json"}
            )
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except OSError as exc:  # an alert must never stop trading; it is in the event log anyway
                self._log({"kind": "alert_failed", "alert": kind, "error": str(exc)[:200]})

        threading.Thread(target=post, name=f"alert-{kind}", daemon=True).start()

    def _transitions(self, moves: list[Any]) -> None:
        for move in moves:
            self._log(
                {"kind": "lifecycle", "from": move.from_state.value, "to": move.to_state.value,
                 "at": move.at.isoformat(), "date": str(move.session)}
            )  # fmt: skip

    def _log(self, event: dict[str, Any]) -> None:
        self._events.append(json_safe(event))
        if event.get("kind") in ("risk_event", "intent"):
            self._alerts(event)

    def _flush(self) -> None:
        if not self._events:
            return
        lines = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in self._events)
        path = self.run.path("events.jsonl")
        if self.run.is_s3:
            old = self.run.read_bytes("events.jsonl") if self.run.exists("events.jsonl") else b""
            self.run.write_bytes("events.jsonl", old + lines.encode())
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(lines)
        self._events.clear()

    async def run(self) -> dict[str, Any]:
        """Run the replay to its end (or until :meth:`stop`); returns the summary."""
        from trader.calendar import get_calendar
        from trader.data.store import BarStore
        from trader.session import SessionLifecycle

        self.state = "initialising"
        calendar = get_calendar(self.settings.data.exchange)
        store = BarStore(self.store_uri)
        sessions = list(calendar.sessions(self.start, self.end))
        if not sessions:
            raise ValueError(f"paper: no trading session between {self.start} and {self.end}")
        self.gateway = None if self.live else self._start_gateway()
        execution, risk, actors = self._actors()
        # Held by the coordinator: a named actor lives only while a handle to it does.
        self._handles = (execution, risk, actors)
        try:
            await execution.wait_ready.remote(30.0)
            history_days = int(self.settings.session.historical)
            first = sessions[0]
            warm_from = calendar.previous_trading_date(first)
            for _ in range(max(0, history_days - 1)):
                warm_from = calendar.previous_trading_date(warm_from)
            history = (
                self._session_bars(store, calendar, list(calendar.sessions(warm_from, sessions[0]))[:-1])
                if history_days > 0
                else None
            )
            for actor, shard in actors:
                frames = {
                    s: (history.filter(pl.col("symbol") == s) if history is not None else None) for s in shard
                }
                await actor.warm.remote(frames)
            # The sessions' life cycle, driven by the replay's clock (the bars' times), never the wall clock.
            lifecycle = SessionLifecycle(calendar, sessions[0], end_date=sessions[-1])
            first_open = calendar.open_close(sessions[0])[0].to_pydatetime()
            self._transitions(lifecycle.history_loaded(first_open - dt.timedelta(minutes=1)))
            self.state = "ready"
            t = 0
            if self.live:
                await self._run_live(calendar, sessions, lifecycle, risk, actors)
            for day_index, day in enumerate([] if self.live else sessions):
                if self.stopping:
                    break
                opened, closed = (x.to_pydatetime() for x in calendar.open_close(day))
                self._transitions(lifecycle.advance(opened))
                ahead = int(self.settings.session.prefetch_days)
                self._prefetch(store, calendar, sessions[day_index + 1 : day_index + 1 + ahead])
                t = await self._run_session(day, day_index, t, calendar, store, risk, actors)
                if self.stopping:
                    break
                # End of session: every actor checkpoints (open orders: market orders fill at once here).
                for actor, _ in actors:
                    await actor.end_session.remote()
                await risk.checkpoint.remote()
                self._transitions(lifecycle.advance(closed))
                self.sessions_done.append(str(day))
                self._log({"kind": "session", "transition": "closed", "date": str(day)})
                self._flush()
            if self.stopping:
                for actor, _ in actors:
                    await actor.end_session.remote()
                await risk.checkpoint.remote()
                self._transitions([lifecycle.stop(lifecycle.session_close)])
            self.state = "stopped" if self.stopping else "finished"
            return await self._finish(execution, risk, actors)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            self._flush()
            raise
        finally:
            if self._reader is not None:
                self._reader.shutdown(wait=False, cancel_futures=True)
            if self._gateway_cm is not None:
                self._gateway_cm.__exit__(None, None, None)

    def _prefetch(self, store: Any, calendar: Any, days: list[dt.date]) -> None:
        """Start reading these sessions' bars on a thread (one reader: reads stay in session order)."""
        for day in days:
            if day not in self._prefetched:
                if self._reader is None:
                    self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch")
                self._prefetched[day] = self._reader.submit(self._session_bars, store, calendar, [day])

    def _session_bars(self, store: Any, calendar: Any, days: list[dt.date]) -> pl.DataFrame:
        """The stored bars of these sessions: by the exchange's local date (after-hours bars past midnight
        UTC belong to their session; bars dated on non-trading days belong to none)."""
        if not days:
            return store.read_bars(self.symbols, self.interval, dt.datetime(1970, 1, 2, tzinfo=dt.UTC),
                                   dt.datetime(1970, 1, 3, tzinfo=dt.UTC))  # fmt: skip
        start = dt.datetime.combine(min(days) - dt.timedelta(days=1), dt.time(), dt.UTC)
        end = dt.datetime.combine(max(days) + dt.timedelta(days=2), dt.time(), dt.UTC)
        bars = store.read_bars(self.symbols, self.interval, start, end)
        if self.interval == "1d":
            return bars.filter(pl.col("ts").dt.date().is_in(days))
        local = pl.col("ts").dt.convert_time_zone(calendar.tz).dt.date()
        return bars.filter(local.is_in(days))

    async def _run_live(self, calendar: Any, sessions: list, lifecycle: Any, risk: Any, actors: list) -> None:
        """Live mode: bars from the gateway (:class:`cluster.marketdata.GatewayBars`) as they close.

        Each bar is decided at its close and what it decided is sent at once (the next bar's open, priced
        at this close), so a live order goes out within the bar close, not a bar later. Gaps are detected,
        back-filled and logged by the feed (``market_data`` events); the run ends at the last session's
        close or on :meth:`stop`.
        """
        from cluster.marketdata import GatewayBars
        from trader.data.schema import interval_ns

        ib = self.settings.ibkr
        feed = GatewayBars(
            ib.host, ib.port, int(ib.client_id) + 100, self.symbols, interval=self.interval,
            calendar=calendar, gap_filler=self.settings.session.gap_filler, client_library=ib.client_library,
        )  # fmt: skip
        await feed.start()
        step = interval_ns(self.interval)
        last_close = int(calendar.open_close(sessions[-1])[1].value)
        day: dt.date | None = None
        day_index = -1
        t = 0
        prev_ts: int | None = self._prev_ts
        self.state = "active"
        try:
            async for ts, rows, notes in feed.bars():
                for note in notes:
                    self._log({**note, "kind": "market_data", "note": note.get("kind")})
                bar_day = dt.datetime.fromtimestamp(ts / 1e9, dt.UTC).astimezone(feed._tz).date()
                if bar_day != day:
                    if day is not None:
                        await self._end_session(day, calendar, lifecycle, risk, actors)
                    day, day_index = bar_day, day_index + 1
                    opened = calendar.open_close(day)[0].to_pydatetime()
                    self._transitions(lifecycle.advance(max(opened, lifecycle.session_open)))
                if t == 0:
                    await self._open_half(0, ts, {s: r["open"] for s, r in rows.items()}, risk)
                await self._close_half(t, ts, rows, prev_ts, day_index, risk, actors)
                await self._open_half(t + 1, ts + step, {s: r["close"] for s, r in rows.items()}, risk)
                t += 1
                prev_ts = self._prev_ts_live = ts
                self.bars_done += 1
                if len(self._events) > 5000:
                    self._flush()
                if self.stopping or ts + step >= last_close:
                    break
        finally:
            self.feed_quality = {
                s: {iv: q.share for iv, q in streams.items()} for s, streams in feed.quality().items()
            }
            for note in feed.take_notes():
                self._log({**note, "kind": "market_data", "note": note.get("kind")})
            await feed.close()
        if day is not None and not self.stopping:
            await self._end_session(day, calendar, lifecycle, risk, actors)
        self._prev_ts = prev_ts

    async def _end_session(
        self, day: dt.date, calendar: Any, lifecycle: Any, risk: Any, actors: list
    ) -> None:
        for actor, _ in actors:
            await actor.end_session.remote()
        await risk.checkpoint.remote()
        self._transitions(lifecycle.advance(calendar.open_close(day)[1].to_pydatetime()))
        self.sessions_done.append(str(day))
        self._log({"kind": "session", "transition": "closed", "date": str(day)})
        self._flush()

    async def _run_session(
        self, day: dt.date, day_index: int, t: int, calendar: Any, store: Any, risk: Any, actors: list
    ) -> int:
        opened, closed = calendar.open_close(day)
        queued = self._prefetched.pop(day, None)
        if queued is not None:
            bars = await asyncio.wrap_future(queued)
            self.prefetched_sessions += 1
        else:
            bars = self._session_bars(store, calendar, [day])
        self.state = "active"
        self._log(
            {"kind": "session", "transition": "open", "date": str(day), "open": opened, "close": closed}
        )
        expected = max(1, round((closed - opened).total_seconds() / 60)) if self.interval == "1m" else 1
        counts = bars.group_by("symbol").len()
        for symbol in self.symbols:
            got = counts.filter(pl.col("symbol") == symbol)["len"]
            n = int(got[0]) if got.len() else 0
            self.quality.setdefault(symbol, {"bars": 0, "expected": 0})
            self.quality[symbol]["bars"] += n
            self.quality[symbol]["expected"] += expected
            if n < expected:
                self._log({"kind": "gap", "date": str(day), "symbol": symbol, "missing": expected - n})
        speed = float(self.settings.session.speed_multiplier)
        step = (60.0 if self.interval == "1m" else 86400.0) / speed if speed > 0 else 0.0
        wall0 = time.monotonic()
        prev_ts = self._prev_ts
        for k, (ts_key, group) in enumerate(bars.sort("ts").group_by("ts", maintain_order=True)):
            if self.stopping:
                break
            ts = int(ts_key[0].timestamp() * 1e9) if isinstance(ts_key[0], dt.datetime) else int(ts_key[0])
            rows = {r["symbol"]: r for r in group.iter_rows(named=True)}
            await self._bar(t, ts, rows, prev_ts, day_index, risk, actors)
            t += 1
            prev_ts = ts
            self.bars_done += 1
            if step > 0:
                # Replay pacing: hold each bar until its time at the configured speed.
                delay = wall0 + (k + 1) * step - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if len(self._events) > 5000:
                self._flush()
        self.state = "closing"
        self._prev_ts = prev_ts
        return t

    async def _bar(
        self, t: int, ts: int, rows: dict[str, dict[str, Any]], prev_ts: int | None, day_index: int,
        risk: Any, actors: list,
    ) -> None:  # fmt: skip
        """One replayed bar: orders at its open (sized from the last close's decisions), then decisions at
        its close."""
        started = time.perf_counter()
        opens = {s: r["open"] for s, r in rows.items()}
        self.gateway.set_prices(opens)
        await self._open_half(t, ts, opens, risk)
        self.gateway.set_prices({s: r["close"] for s, r in rows.items()})
        await self._close_half(t, ts, rows, prev_ts, day_index, risk, actors)
        self._timing("bar_ms", (time.perf_counter() - started) * 1e3)

    async def _open_half(self, t: int, ts: int, opens: dict[str, float], risk: Any) -> None:
        """Orders at bar ``t``'s open: the risk actor sizes, approves and sends what closes decided."""
        for event in await risk.on_open.remote(t, ts, opens):
            if "latency_ms" in event:
                self._timing("intent_to_fill_ms", event["latency_ms"])
            self._log(event)

    async def _close_half(
        self, t: int, ts: int, rows: dict[str, dict[str, Any]], prev_ts: int | None, day_index: int,
        risk: Any, actors: list,
    ) -> None:  # fmt: skip
        """Decisions at bar ``t``'s close: the symbol actors decide, the risk actor applies the rules."""
        closed = time.perf_counter()
        calls = []
        for actor, shard in actors:
            mine = {s: (r["open"], r["high"], r["low"], r["close"], r["volume"]) for s in shard
                    if (r := rows.get(s)) is not None}  # fmt: skip
            if mine:
                calls.append(actor.on_bars.remote(ts, mine, prev_ts))
        targets: dict[str, float] = {}
        results = await asyncio.gather(*calls)
        for result in results:
            targets.update(result["targets"])
        decided = time.perf_counter()
        closes = {s: r["close"] for s, r in rows.items()}
        events = await risk.on_close.remote(t, ts, closes, targets, day_index)
        done = time.perf_counter()
        # Bar close to intent: the symbols' decisions (their intents) and the risk actor's portfolio targets.
        self._timing("close_to_decision_ms", (decided - closed) * 1e3)
        self._timing("close_to_intent_ms", (done - closed) * 1e3)
        # Logged once the intents are out: the event log is not on the latency path.
        for result in results:
            for symbol in result["decided"]:
                self._log({"kind": "decision", "ts": ts, "symbol": symbol, "target": targets[symbol]})
        for event in events:
            self._log(event)

    def _timing(self, name: str, value: float) -> None:
        values = self.timings.setdefault(name, [])
        if len(values) < 1_000_000:  # bounded: a week of 1-minute bars for 500 symbols fits
            values.append(float(value))

    def _latency(self) -> dict[str, Any]:
        out = {}
        for name, values in self.timings.items():
            if values:
                arr = np.asarray(values)
                out[name] = {"n": int(arr.size), "max": round(float(arr.max()), 3)}
                for q in (50, 90, 99):
                    out[name][f"p{q}"] = round(float(np.percentile(arr, q)), 3)
        return out

    async def _finish(self, execution: Any, risk: Any, actors: list) -> dict[str, Any]:
        from trader.broker.journal import OrderJournal

        status = await risk.status.remote()
        exec_status = await execution.status.remote()
        await execution.shutdown.remote()
        journal_path = self._journal_path()
        with OrderJournal(journal_path, readonly=True) as journal:
            fills = journal.fills()
            states = journal.states()
        if self._journal_dir is not None:
            self.run.write_bytes("orders.sqlite", Path(journal_path).read_bytes())
        # A fill's bar is its intent's: the risk actor creates each intent at the open of the bar it trades.
        bar_of = {st.intent_id: st.intent.created_at for st in states}
        trades = pl.DataFrame(
            {
                "ts": pl.Series(
                    [bar_of.get(f.intent_id, f.time) for f in fills], dtype=pl.Datetime("ns", "UTC")
                ),
                "symbol": [f.symbol for f in fills],
                "side": [f.side.value.lower() for f in fills],
                "qty": [float(f.qty) for f in fills],
                "price": [float(f.price) for f in fills],
                "commission": [float(f.commission or 0.0) for f in fills],
                "reason": ["signal"] * len(fills),
            },
            schema={"ts": pl.Datetime("ns", "UTC"), "symbol": pl.String, "side": pl.String, "qty": pl.Float64,
                    "price": pl.Float64, "commission": pl.Float64, "reason": pl.String},
        )  # fmt: skip
        self.run.write_parquet("trades.parquet", trades)
        decisions = {}
        for actor, _ in actors:
            info = await actor.status.remote()
            decisions.update({s: v["decisions"] for s, v in info["symbols"].items()})
        per_symbol = {}
        for symbol in self.symbols:
            mine = trades.filter(pl.col("symbol") == symbol)
            signed = np.where(mine["side"].to_numpy() == "buy", 1.0, -1.0) * mine["qty"].to_numpy()
            per_symbol[symbol] = {
                "decisions": decisions.get(symbol, 0),
                "fills": mine.height,
                "position": float(signed.sum()),
                "commission": float(mine["commission"].sum()),
                "quality": self._quality(symbol),
            }
        initial = float(self.settings.engine.initial_cash)
        summary = {
            "session_id": self.session_id,
            "state": self.state,
            "start": str(self.start),
            "end": str(self.end),
            "sessions": self.sessions_done,
            "bars": self.bars_done,
            "symbols": self.symbols,
            "decisions": int(sum(decisions.values())),
            "intents": status["counts"]["intents"],
            "approved": status["counts"]["approved"],
            "rejected_by_rule": status["counts"]["rejected"],
            "orders": len([s for s in states if s.submitted]),
            "fills": len(fills),
            "equity": status["equity"],
            "pnl": status["equity"] - initial,
            "positions": status["positions"],
            "per_symbol": per_symbol,
            "killed": status["killed"],
            "reconnects": max(0, int(exec_status.get("connects", 1)) - 1),
            "latency_ms": self._latency(),
            "prefetched_sessions": self.prefetched_sessions,
            "started_at": self.started_at.isoformat(),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        self.run.write_json("summary.json", json_safe(summary))
        self._flush()
        return json_safe(summary)

    def _quality(self, symbol: str) -> float | None:
        if self.live:
            shares = list((self.feed_quality.get(symbol) or {}).values())
            return min(shares) if shares else None
        q = self.quality.get(symbol)
        return None if not q or not q["expected"] else min(1.0, q["bars"] / q["expected"])

    # -- controls ------------------------------------------------------------------------------------------

    async def fault(self, kind: str) -> None:
        """Inject a gateway fault (replay only): ``drop`` (cut every connection), ``lost`` (IBKR 1100) or
        ``restored`` (1102)."""
        if self.gateway is None:
            raise RuntimeError("no simulated gateway is running")
        action = {
            "drop": self.gateway.drop_connections,
            "lost": self.gateway.announce_connectivity_lost,
            "restored": self.gateway.announce_connectivity_restored,
        }.get(kind)
        if action is None:
            raise ValueError(f"fault {kind!r}: one of drop, lost, restored")
        action()
        self._log({"kind": "fault", "fault": kind, "bars": self.bars_done})

    async def stop(self) -> str:
        """End the replay cleanly after the current bar (checkpoints and summary are written)."""
        self.stopping = True
        return self.state

    async def status(self) -> dict[str, Any]:
        """State, sessions done, bars, data quality and the risk and execution actors' status."""
        import ray

        out: dict[str, Any] = {
            "session_id": self.session_id,
            "state": self.state,
            "sessions_done": self.sessions_done,
            "bars": self.bars_done,
            "last_ts": self._prev_ts_live if self.live else self._prev_ts,
            "quality": {s: self._quality(s) for s in self.symbols},
            "error": self.error,
            "pid": os.getpid(),
        }
        for name in ("risk", "execution"):
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
                out[name] = await actor.status.remote()
            except ValueError:
                out[name] = None
        return json_safe(out)
