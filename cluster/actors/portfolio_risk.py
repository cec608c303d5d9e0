"""The portfolio risk actor: the single approval point between the symbol sessions and the execution actor.

Symbol session actors send, at each bar close, every symbol's target weight (their order *intent*: what to
hold). The risk actor turns the portfolio's targets into orders exactly as the backtest's simulator does
(:class:`trader.live.portfolio.PortfolioStepper`: position and per-symbol caps, gross leverage, max open
positions, vol targeting, stop losses, the daily loss halt and the drawdown kill switch, sizing at the next
open from the portfolio's value), each one of them the backtest's rule functions from :mod:`trader.risk`, then
applies the manual kill switch and paces the order rate, signs an
:class:`~trader.broker.order.Approval` (or a rejection naming the rule) that the execution actor verifies, and
forwards approved orders. Fills come back from the execution actor and update the stepper, so the next
decision sizes from the broker's positions and cash.

The kill switch (the drawdown rule, or :meth:`PortfolioRiskActor.kill_switch`) flattens every symbol and halts
new entries for all of them; only ``kill_switch(reset=True)`` re-arms trading. State (the stepper, kill
switch, counters) is checkpointed to the run directory and restored in ``__init__``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from typing import Any

from trader.broker.execution import TokenBucket
from trader.rundir import RunDir, json_safe

__all__ = ["PortfolioRiskActor"]

#: Orders per second the risk actor sends on (paced: a burst waits, it is never refused).
MAX_ORDERS_PER_SECOND = 40.0
#: How long an order may take to finish before its unfilled rest is cancelled (seconds).
FILL_WAIT_SECONDS = 30.0
#: How long orders wait for a disconnected broker to come back before they are reported not sent (seconds).
READY_WAIT_SECONDS = 60.0


class PortfolioRiskActor:
    """See the module docstring. Methods are coroutines; build it through the session coordinator."""

    def __init__(
        self,
        settings: Any,
        symbols: list[str],
        secret: str,
        run_dir: str,
        *,
        session_id: str,
        execution: str = "execution",
        namespace: str | None = None,
        interval: str = "1m",
    ) -> None:
        from trader.live.portfolio import PortfolioStepper
        from trader.metrics import periods_per_year
        from trader.risk import RiskLimits
        from trader.sim import SimConfig

        self.settings, self.symbols, self._secret = settings, list(symbols), secret
        self.session_id, self.interval = session_id, interval
        self.run = RunDir(run_dir)
        self.ppy = periods_per_year(interval)
        self.limits = RiskLimits.from_settings(settings, periods_per_year=self.ppy)
        # The symbols' history covers the warm-up (they decide from their first live bar), so the portfolio
        # trades from its first bar: min_history_bars is the backtest's warm-up, counted in history here.
        config = dataclasses.replace(SimConfig.from_settings(settings), min_history_bars=0)
        self.stepper = PortfolioStepper(self.symbols, config, self.limits)
        self._execution_name = execution
        self._namespace = namespace or settings.ray.namespace
        self.manual_kill = False
        self.counts: dict[str, Any] = {"intents": 0, "approved": 0, "rejected": {}, "fills": 0, "orders": 0}
        self._bucket = TokenBucket(MAX_ORDERS_PER_SECOND)
        self.last_bar: int = -1
        self._restore()

    # -- checkpoints ---------------------------------------------------------------------------------------

    def _restore(self) -> None:
        if self.run.exists("checkpoints/risk.json"):
            from trader.live.portfolio import PortfolioStepper

            saved = self.run.read_json("checkpoints/risk.json")
            self.stepper = PortfolioStepper.from_state(saved["stepper"])
            self.manual_kill = bool(saved["manual_kill"])
            self.counts = saved["counts"]
            self.last_bar = int(saved["last_bar"])

    def checkpoint(self) -> None:
        """Write the stepper, kill switch and counters to ``checkpoints/risk.json`` (atomic)."""
        # The stepper's state is JSON-safe already; its trades and rule firings are in the journal and the
        # event log, so the checkpoint stays the same size however long the session runs.
        self.run.write_json(
            "checkpoints/risk.json",
            {
                "stepper": self.stepper.state(history=False),
                "manual_kill": self.manual_kill,
                "counts": json_safe(self.counts),
                "last_bar": self.last_bar,
                "at": dt.datetime.now(dt.UTC).isoformat(),
            },
        )

    def _execution(self) -> Any:
        import ray

        return ray.get_actor(self._execution_name, namespace=self._namespace)

    # -- the bar cycle -------------------------------------------------------------------------------------

    async def on_open(self, t: int, ts: int, opens: dict[str, float]) -> list[dict[str, Any]]:
        """Orders at bar ``t``'s open: size what earlier closes decided, approve or reject, send, wait for
        the fills, apply them. Returns one event per order (intent, decision, fill)."""
        from trader.broker.order import Approval, OrderIntent, derive_intent_id

        if t <= self.last_bar:  # a replayed call after a restart: this open was already handled
            return []
        prices = [float(opens.get(s, math.nan)) for s in self.symbols]
        plans = self.stepper.on_open(t, prices)
        events: list[dict[str, Any]] = []
        execution = self._execution()
        if any(plan.qty != 0.0 for plan in plans):
            # Orders wait for the broker (a reconnect and its reconciliation) rather than being lost.
            await execution.wait_ready.remote(READY_WAIT_SECONDS)
        when = dt.datetime.fromtimestamp(ts / 1e9, dt.UTC)
        pending = []
        for plan in plans:
            symbol = self.symbols[plan.symbol]
            qty = float(plan.qty)
            if qty == 0.0:
                continue
            intent = OrderIntent(
                intent_id=derive_intent_id(self.session_id, symbol, when),
                symbol=symbol,
                side="BUY" if qty > 0 else "SELL",
                quantity=round(abs(qty)),
                created_at=when,
                source=f"risk:{self.session_id}",
            )
            self.counts["intents"] += 1
            held = float(self.stepper.shares[plan.symbol])
            reason = None
            if self.manual_kill and abs(held + qty) > abs(held):
                reason = "kill_switch: trading halted until `trader paper kill-switch --reset`"
            else:
                # The order rate is paced, not refused: a refused order would trade a bar late.
                await self._bucket.acquire()
            approval = Approval.sign(
                intent, self._secret, approved=reason is None, reason=reason or "", approver="portfolio-risk",
                limits={"equity": float(self.stepper.equity)},
            )  # fmt: skip
            event = {"kind": "intent", "ts": ts, "symbol": symbol, "intent_id": intent.intent_id, "qty": qty}
            if reason is not None:
                rule = reason.split(":", 1)[0]
                self.counts["rejected"][rule] = self.counts["rejected"].get(rule, 0) + 1
                events.append({**event, "decision": "rejected", "reason": reason})
                continue
            self.counts["approved"] += 1
            sent_at = time.perf_counter()
            pending.append(
                (plan, intent, {**event, "sent_at": sent_at}, execution.submit.remote(intent, approval))
            )
        for plan, intent, event, ref in pending:
            sent = await ref
            if not sent.get("accepted"):
                event.pop("sent_at", None)
                events.append({**event, "decision": "not_sent", "reason": sent.get("reason")})
                continue
            self.counts["orders"] += 1
            try:
                state = await execution.wait_for.remote(intent.intent_id, FILL_WAIT_SECONDS, False)
            except Exception:  # not done in time: take what filled, cancel the rest (it re-plans next open)
                state = await execution.cancel.remote(intent.intent_id)
            filled = float(state.get("filled") or 0.0)
            if filled > 0:
                fill_qty = math.copysign(filled, float(plan.qty))
                commission = float(state["commission"] or 0.0)
                self.stepper.apply_fill(plan.symbol, fill_qty, float(state["avg_price"]), commission)
                self.counts["fills"] += 1
            sent_at = event.pop("sent_at")
            events.append(
                {**event, "latency_ms": round((time.perf_counter() - sent_at) * 1e3, 3),
                 "decision": "approved", "filled": math.copysign(filled, float(plan.qty)),
                 "price": state.get("avg_price"), "commission": state.get("commission"),
                 "order_id": state.get("order_id"), "status": state.get("status")}
            )  # fmt: skip
        return events

    async def on_close(
        self, t: int, ts: int, closes: dict[str, float], targets: dict[str, float], session: int
    ) -> list[dict[str, Any]]:
        """Mark to market at bar ``t``'s close; decide the portfolio's targets from the symbols' weights."""
        if t <= self.last_bar:
            return []
        prices = [float(closes.get(s, math.nan)) for s in self.symbols]
        weights = [float(targets.get(s, math.nan)) for s in self.symbols]
        if self.manual_kill:
            weights = [0.0 if w == w else w for w in weights]
        report = self.stepper.on_close(t, prices, weights, session)
        self.last_bar = t
        self.checkpoint()  # every bar: a restarted risk actor resumes exactly here
        events = []
        for firing in getattr(report, "events", []) or []:
            symbol = self.symbols[firing.symbol] if firing.symbol >= 0 else None
            events.append({"kind": "risk_event", "ts": ts, "rule": firing.rule, "symbol": symbol,
                           "detail": firing.detail})  # fmt: skip
        return events

    # -- controls ------------------------------------------------------------------------------------------

    async def kill_switch(self, reset: bool = False) -> dict[str, Any]:
        """Halt (flatten every symbol at the next open, no new entries) or, with ``reset``, re-arm trading."""
        self.manual_kill = not reset
        if reset and hasattr(self.stepper, "reset_kill"):
            self.stepper.reset_kill()
        self.checkpoint()
        return await self.status()

    async def status(self) -> dict[str, Any]:
        """Equity, cash, positions, targets, halts and counters (JSON-safe)."""
        return json_safe(
            {
                "equity": float(self.stepper.equity),
                "cash": float(self.stepper.cash),
                "positions": {s: float(q) for s, q in zip(self.symbols, self.stepper.shares, strict=True)},
                "targets": {s: float(q) for s, q in zip(self.symbols, self.stepper.targets, strict=True)},
                "halted": bool(self.stepper.halted),
                "killed": bool(self.stepper.killed) or self.manual_kill,
                "manual_kill": self.manual_kill,
                "counts": self.counts,
                "last_bar": self.last_bar,
            }
        )
