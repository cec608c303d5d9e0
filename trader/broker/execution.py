"""The execution engine: the one owner of the broker connection, and the policy around it.

It runs inside any asyncio event loop (the execution Ray actor in ``cluster/actors/execution.py`` wraps it)
and decides what the adapter (:mod:`trader.broker.adapter`) does not:

* **Approvals are checked, not trusted.** :meth:`ExecutionEngine.submit` verifies the risk approval's HMAC
  signature, that it approves exactly this intent, and its age (``ibkr.approval_max_age_seconds``) before
  anything is sent; a bad one is journaled as a rejection with the reason.
* **At most one broker order per intent.** Submissions of one intent are serialised; an intent the journal
  shows as submitted, or whose ``orderRef`` the gateway already shows, is never sent again (the caller gets
  its current state back). The journal records intent, approval and submission, so after a restart the
  engine knows what it sent, and reconciliation fills in what happened while it was away.
* **Reconnection.** A disconnect or IBKR's 1100 (connectivity lost) stops new orders. One supervisor task
  reconnects with capped exponential backoff (``reconnect_initial_seconds`` doubling to
  ``reconnect_max_seconds``); it is the only place that connects, so reconnection never re-enters itself.
  After a new connection, or 1101/1102 (restored), the engine reconciles open orders, completed orders and
  executions with its journal (by orderRef = intent id, and exec id, so a fill made while disconnected is
  recorded exactly once) and re-subscribes the market data it owned, and only then accepts orders again.
* **Paper only.** With ``ibkr.paper_only`` (the default) it refuses a live port (7496, 4001) before
  connecting and a managed account that does not start with ``DU`` after, with a PaperOnlyError.
* **Pacing.** Every message it sends waits on a token bucket of ``ibkr.pacing_per_second`` whose burst is
  what the gateway's 50 per second leaves (50 - rate, at least 1): a burst plus a second's refill stays
  within 50 messages in any 1-second window.
* **Health.** :meth:`status` reports connected, accepting, last heartbeat (a current-time round trip every
  ``heartbeat_seconds``), account, open and pending intents and the last error; ``healthy`` is never true
  while disconnected, reconciling, or with a stale heartbeat.

Times are UTC; quantities are shares; prices per share in the account currency.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from trader.broker.adapter import IBAdapter
from trader.broker.errors import (
    ApprovalError,
    BrokerConnectionError,
    BrokerError,
    DuplicateIntentError,
    JournalError,
    OrderNotOpenError,
    PaperOnlyError,
    UnknownIntentError,
)
from trader.broker.events import (
    BrokerEvent,
    CommissionEvent,
    ConnectionEvent,
    ConnectionState,
    ErrorEvent,
    FillEvent,
    StatusEvent,
)
from trader.broker.journal import IntentState, JournalEvent, OrderJournal
from trader.broker.order import Approval, OrderIntent
from trader.config import LIVE_PORTS

__all__ = ["ExecutionEngine", "TokenBucket", "event_dict", "state_dict"]

log = logging.getLogger(__name__)


#: IB Gateway's message limit (messages per second, client to gateway); beyond it, error 100.
GATEWAY_MESSAGES_PER_SECOND = 50.0


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts up to ``burst`` (default ``rate``)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"pacing rate must be > 0 per second, got {rate}")
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else max(1.0, rate))
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a token is free and take it (FIFO among waiters)."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                # Pacing is a rate limit: waiting for the next token is the behaviour, not a test sleep.
                await asyncio.sleep((1.0 - self._tokens) / self.rate)


def state_dict(state: IntentState) -> dict[str, Any]:
    """An intent's derived state as plain JSON-safe values (what callers and subscribers receive)."""
    intent = state.intent
    return {
        "intent_id": intent.intent_id,
        "symbol": intent.symbol,
        "side": intent.side.value,
        "quantity": intent.quantity,
        "order_type": intent.order_type.value,
        "approved": state.approved,
        "rejection_reason": state.rejection_reason,
        "submitted": state.submitted,
        "order_id": state.order_id,
        "perm_id": state.perm_id,
        "status": state.status.value if state.status is not None else None,
        "filled": state.filled,
        "avg_price": state.avg_price,
        "remaining": state.remaining,
        "commission": state.commission,
        "last_error": list(state.last_error) if state.last_error else None,
        "done": state.done,
        "seq": state.last_seq,
    }


def event_dict(event: JournalEvent) -> dict[str, Any]:
    """A journal event as plain values: seq, ts (ISO), intent_id, kind, order_id, perm_id, payload."""
    return {
        "seq": event.seq,
        "ts": event.ts.isoformat(),
        "intent_id": event.intent_id,
        "kind": event.kind,
        "order_id": event.order_id,
        "perm_id": event.perm_id,
        "payload": event.payload,
    }


class ExecutionEngine:
    """See the module docstring. Build it, ``await start()``, then submit; ``await close()`` at the end.

    ``ibkr``: the settings section (:class:`trader.config.IbkrSettings`); ``journal``: the order journal;
    ``secret``: the HMAC key risk signs approvals with; ``adapter``: for tests (default: from ``ibkr``).
    """

    def __init__(
        self,
        ibkr: Any,
        journal: OrderJournal,
        secret: bytes | str,
        *,
        adapter: IBAdapter | None = None,
        name: str = "execution",
    ) -> None:
        self.ibkr = ibkr
        self.journal = journal
        self.name = name
        self._secret = secret
        self.adapter = adapter or IBAdapter.from_settings(
            ibkr, connect_timeout=float(ibkr.connect_timeout_seconds)
        )
        rate = float(ibkr.pacing_per_second)
        # Any 1-second window holds at most burst + rate messages: keep that within the gateway's limit.
        self._bucket = TokenBucket(rate, burst=max(1.0, GATEWAY_MESSAGES_PER_SECOND - rate))
        self._intent_locks: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        self._subscribers: list[Callable[[dict[str, Any]], Any]] = []
        self._last_seq = self._journal_seq()
        self._market_data: dict[str, Any] = {}  # symbol -> the library's Ticker we subscribed
        self._wake = asyncio.Event()  # set on disconnect / 1100 / 1101 / 1102: the supervisor looks again
        self._supervisor: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False
        self._started = False
        self._link_lost = False  # IBKR's 1100 seen, no 1101/1102 since
        self._reconcile_needed = True
        self._accepting = False
        self._fatal: BrokerError | None = None
        self.account: str | None = None
        self.server_version: int | None = None
        self.last_heartbeat: dt.datetime | None = None
        self.last_error: str | None = None
        self.connects = 0
        self.reconciliations = 0
        self.last_reconcile: dict[str, Any] | None = None
        # Intents not done yet, with their derived state: status() and the event path touch only these,
        # never every intent ever journaled.
        self._open: dict[str, IntentState] = {s.intent_id: s for s in journal.open_intents()}
        self.adapter.add_listener(self._on_broker_event)

    @property
    def accepting(self) -> bool:
        """True while orders are accepted (connected, reconciled, IBKR link up). Cheap: no journal read."""
        return self._accepting

    @property
    def fatal(self) -> BrokerError | None:
        """The refusal that stopped the engine for good (a PaperOnlyError), else None."""
        return self._fatal

    # -- life cycle ----------------------------------------------------------------------------------------

    async def start(self, *, wait: float | None = None) -> None:
        """Start the supervisor (it connects, reconciles and keeps the connection). Idempotent.

        ``wait``: seconds to wait for the first connection and reconciliation (None: do not wait). Raises
        PaperOnlyError at once for a live port or account, and BrokerConnectionError when ``wait`` passes
        without a connection (the supervisor keeps trying).
        """
        self._check_port()
        # ib_insync looks its loop up through the policy (util.getLoop), which knows only the main thread's:
        # in a Ray actor's loop thread it finds none. Register the running loop for this thread.
        asyncio.set_event_loop(asyncio.get_running_loop())
        if not self._started:
            self._started = True
            self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-supervisor")
            self._heartbeat = asyncio.create_task(self._beat(), name=f"{self.name}-heartbeat")
        if wait is not None:
            await self.wait_ready(wait)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until orders are accepted (connected and reconciled); raise if not within ``timeout`` s."""
        try:
            await asyncio.wait_for(self._wait(lambda: self._accepting or self._fatal is not None), timeout)
        except TimeoutError:
            raise BrokerConnectionError(
                f"{self.name}: not ready within {timeout:g} s ({self.last_error or 'no connection yet'})"
            ) from None
        if self._fatal is not None:
            raise self._fatal

    async def close(self) -> None:
        """Stop the supervisor and heartbeat and disconnect. The journal stays open (the owner closes it)."""
        self._closed = True
        self._accepting = False
        self._wake.set()
        for task in (self._supervisor, self._heartbeat):
            if task is not None:
                task.cancel()
        for task in (self._supervisor, self._heartbeat):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        # Events the disconnect itself raises are not journaled: the owner may close the journal next.
        self.adapter.remove_listener(self._on_broker_event)
        self.adapter.disconnect()
        await self._notify()

    def _check_port(self) -> None:
        if self.ibkr.paper_only and int(self.ibkr.port) in LIVE_PORTS:
            raise PaperOnlyError(
                f"port {self.ibkr.port} is a live trading port (7496 TWS, 4001 Gateway) and ibkr.paper_only "
                "is true; refusing to trade. Use a paper port or set ibkr.paper_only=false deliberately"
            )

    def _check_accounts(self, accounts: list[str]) -> str:
        wanted = self.ibkr.account
        account = wanted or (accounts[0] if len(accounts) == 1 else None)
        if account is None:
            raise BrokerConnectionError(
                f"the gateway manages several accounts ({', '.join(accounts)}); set ibkr.account to one"
            )
        if self.ibkr.paper_only and not account.startswith("DU"):
            raise PaperOnlyError(
                f"account {account} is not a paper account (paper accounts start with DU) and "
                "ibkr.paper_only is true; refusing to trade"
            )
        return account

    async def _supervise(self) -> None:
        """The only task that connects: (re)connect with backoff, reconcile, then wait for trouble."""
        delay = float(self.ibkr.reconnect_initial_seconds)
        while not self._closed:
            try:
                if not self.adapter.connected:
                    self._accepting = False
                    await self.adapter.connect()
                    self.account = self._check_accounts(self.adapter.managed_accounts)
                    self.server_version = self.adapter.server_version
                    self.connects += 1
                    self._reconcile_needed = True
                    self._link_lost = False
                    self.last_heartbeat = dt.datetime.now(dt.UTC)
                if self._reconcile_needed and not self._link_lost:
                    self._accepting = False
                    await self._reconcile("connect" if self.reconciliations == 0 else "reconnect")
                    await self._resubscribe()
                    self._reconcile_needed = False
                if self.adapter.connected and not self._link_lost:
                    self._accepting = True
                    delay = float(self.ibkr.reconnect_initial_seconds)
                    await self._notify()
                self._wake.clear()
                if self.adapter.connected and not self._reconcile_needed:
                    await self._wake.wait()
                continue
            except PaperOnlyError as exc:
                self._fatal = exc
                self.last_error = str(exc)
                self._accepting = False
                self.adapter.disconnect()
                await self._notify()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble of any kind: back off and try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._accepting = False
                log.warning("%s: %s; retrying in %.1f s", self.name, self.last_error, delay)
                if self.adapter.connected and not isinstance(exc, BrokerError):
                    self.adapter.disconnect()
                await self._notify()
            # Backoff between attempts: a wait for time is the point here; a wake-up cuts it short.
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            delay = min(delay * 2.0, float(self.ibkr.reconnect_max_seconds))

    async def _beat(self) -> None:
        """Heartbeat: a current-time round trip every ``heartbeat_seconds`` while connected."""
        period = float(self.ibkr.heartbeat_seconds)
        while not self._closed:
            await asyncio.sleep(period)  # the heartbeat's period, not a test wait
            if not self.adapter.connected:
                continue
            try:
                await self._bucket.acquire()
                await asyncio.wait_for(self.adapter.ib.reqCurrentTimeAsync(), period)
                self.last_heartbeat = dt.datetime.now(dt.UTC)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"heartbeat failed: {type(exc).__name__}: {exc}"

    # -- broker events -------------------------------------------------------------------------------------

    def _on_broker_event(self, event: BrokerEvent) -> None:
        """Journal every broker fact as it arrives, and track the connection (in the loop's thread)."""
        try:
            if isinstance(event, StatusEvent):
                self.journal.record_status(
                    event.intent_id, event.order_id, event.perm_id, event.status, event.filled,
                    event.remaining, event.avg_price,
                )  # fmt: skip
            elif isinstance(event, FillEvent):
                if self._ours(event.fill.intent_id):
                    self.journal.record_fill(event.fill)
            elif isinstance(event, CommissionEvent):
                # Other clients' executions, and the reports the library replays for past executions on
                # every connect, are not this journal's business (or already in it).
                if self._ours(event.fill.intent_id):
                    new = self.journal.record_fill(event.fill)  # False when its execDetails was recorded
                    if new or self._commission_changed(event.fill.intent_id, event.exec_id, event.commission):
                        self.journal.record_commission(event.exec_id, event.commission, event.currency)
            elif isinstance(event, ErrorEvent):
                if event.intent_id is not None:
                    self.journal.record_error(event.intent_id, event.code, event.message, event.order_id)
                elif not event.warning:
                    self.last_error = f"IBKR error {event.code}: {event.message}"
            elif isinstance(event, ConnectionEvent):
                self._on_connection(event)
        except Exception:  # a journal failure must be loud, never lose the event silently
            log.exception("%s: could not journal %r", self.name, event)
            self.last_error = f"journal write failed for {type(event).__name__}"
        self._schedule_notify()

    def _ours(self, intent_id: str | None) -> bool:
        return intent_id is not None and (intent_id in self._open or self.journal.has_intent(intent_id))

    def _commission_changed(self, intent_id: str | None, exec_id: str, commission: float) -> bool:
        known = {f.exec_id: f.commission for f in self.journal.fills(intent_id)}
        return known.get(exec_id) != commission

    def _on_connection(self, event: ConnectionEvent) -> None:
        if event.state is ConnectionState.DISCONNECTED:
            self._accepting = False
            self.last_error = self.last_error or "disconnected from the gateway"
            self._wake.set()
        elif event.state is ConnectionState.CONNECTIVITY_LOST:
            self._accepting = False
            self._link_lost = True
            self.last_error = f"IBKR {event.code}: {event.message}"
        elif event.state in (
            ConnectionState.CONNECTIVITY_RESTORED,
            ConnectionState.CONNECTIVITY_RESTORED_DATA_LOST,
        ):
            self._link_lost = False
            self._reconcile_needed = True
            self._wake.set()

    def _schedule_notify(self) -> None:
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # no running loop (closing): nothing waits
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        seq = self._journal_seq()
        new: list[JournalEvent] = []
        if seq > self._last_seq:
            new = self.journal.events(after_seq=self._last_seq)
        self._last_seq = max(self._last_seq, seq)
        for intent_id in {e.intent_id for e in new if e.intent_id is not None}:
            if intent_id in self._open or any(e.kind == "intent" and e.intent_id == intent_id for e in new):
                state = self.journal.state(intent_id)
                if state.done:
                    self._open.pop(intent_id, None)
                else:
                    self._open[intent_id] = state
        for event in new:
            for callback in list(self._subscribers):
                try:
                    result = callback(event_dict(event))
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("%s: subscriber %r failed", self.name, callback)
        async with self._changed:
            self._changed.notify_all()

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    def _journal_seq(self) -> int:
        return self.journal.last_seq()

    # -- reconciliation ------------------------------------------------------------------------------------

    async def _reconcile(self, reason: str) -> dict[str, Any]:
        """Bring the journal up to date with the gateway (see the module docstring); returns the summary."""
        for _ in range(3):
            await self._bucket.acquire()
        open_orders = await self.adapter.open_orders()
        completed = await self.adapter.completed_orders()
        fills = await self.adapter.executions()
        known = {i.intent_id for i in self.journal.intents()}
        recovered = updated = foreign = new_fills = 0
        for source, snapshots in (("open", open_orders), ("completed", completed)):
            for snap in snapshots:
                if snap.intent_id is None or snap.intent_id not in known:
                    foreign += 1
                    continue
                state = self.journal.state(snap.intent_id)
                if not state.submitted:
                    # Sent before a crash that came before the submission was journaled.
                    self.journal.record_submission(snap.intent_id, snap.order_id, snap.client_id)
                    recovered += 1
                if state.status != snap.status or state.reported_filled != snap.filled:
                    self.journal.record_reconcile(
                        snap.intent_id,
                        {
                            "source": source,
                            "status": snap.status.value,
                            "filled": snap.filled,
                            "remaining": snap.remaining,
                            "avg_price": snap.avg_price,
                        },
                        snap.order_id,
                        snap.perm_id or None,
                    )
                    updated += 1
        for fill in fills:
            if fill.intent_id is None or fill.intent_id not in known:
                continue
            if self.journal.record_fill(fill):
                new_fills += 1
            changed = self._commission_changed(fill.intent_id, fill.exec_id, fill.commission or 0.0)
            if fill.commission is not None and changed:
                self.journal.record_commission(fill.exec_id, fill.commission, "USD")
        self._open = {s.intent_id: s for s in self.journal.open_intents()}
        unsent = [s.intent_id for s in self._open.values() if s.approved and not s.submitted]
        summary = {
            "reason": reason,
            "open_orders": len(open_orders),
            "completed_orders": len(completed),
            "executions": len(fills),
            "new_fills": new_fills,
            "recovered_submissions": recovered,
            "status_updates": updated,
            "foreign_orders": foreign,
            "unsent_intents": unsent,
        }
        self.journal.record_reconcile(None, summary)
        self.reconciliations += 1
        self.last_reconcile = summary
        await self._notify()
        return summary

    async def _resubscribe(self) -> None:
        for symbol in list(self._market_data):
            await self._bucket.acquire()
            contract = await self.adapter.qualify(symbol)
            self._market_data[symbol] = self.adapter.ib.reqMktData(contract, "", False, False)

    # -- orders --------------------------------------------------------------------------------------------

    async def submit(self, intent: OrderIntent, approval: Approval) -> dict[str, Any]:
        """Send ``intent``'s order if ``approval`` checks out; returns the intent's state.

        The result's ``accepted`` is False with a ``reason`` when the approval is invalid (journaled as a
        rejection) or the engine is not accepting orders (disconnected, reconciling, IBKR link lost: nothing
        is journaled, retry later with the same intent). A repeated intent returns its state with
        ``duplicate`` True and sends nothing.
        """
        lock = self._intent_locks.setdefault(intent.intent_id, asyncio.Lock())
        async with lock:
            # A repeat of a sent intent (a retry, a restarted caller) gets its state, whatever its approval.
            if self._known(intent.intent_id) and self.journal.submitted(intent.intent_id):
                return self._result(intent.intent_id, accepted=True, duplicate=True)
            try:
                approval.verify(intent, self._secret, max_age=float(self.ibkr.approval_max_age_seconds))
                self.journal.record_intent(intent)
            except (ApprovalError, JournalError) as exc:
                if isinstance(exc, ApprovalError) and not self._conflicting(intent):
                    self.journal.record_intent(intent)
                    self.journal.record_rejection(intent.intent_id, str(exc), by=self.name)
                    await self._notify()
                return {
                    "intent_id": intent.intent_id,
                    "accepted": False,
                    "reason": f"refused: {exc}",
                    "duplicate": False,
                }
            if not self._accepting:
                return {
                    "intent_id": intent.intent_id,
                    "accepted": False,
                    "reason": self._not_ready_reason(),
                    "duplicate": False,
                }
            self.journal.record_approval(approval)
            await self._bucket.acquire()
            try:
                order_id = await self.adapter.place(intent)
            except DuplicateIntentError:
                # The gateway has it (sent before a crash, not journaled yet): reconcile, never resend.
                await self._reconcile("duplicate intent")
                return self._result(intent.intent_id, accepted=True, duplicate=True)
            except BrokerError as exc:
                self.journal.record_error(intent.intent_id, 0, f"not sent: {exc}")
                await self._notify()
                return self._result(intent.intent_id, accepted=False, reason=str(exc))
            self.journal.record_submission(intent.intent_id, order_id, self.adapter.client_id)
            await self._notify()
            return self._result(intent.intent_id, accepted=True)

    async def cancel(self, intent_id: str) -> dict[str, Any]:
        """Ask the gateway to cancel ``intent_id``'s order; returns its state (Cancelled follows)."""
        if not self._known(intent_id):
            raise UnknownIntentError(f"intent {intent_id!r} is not in the journal; nothing to cancel")
        if not self._accepting:
            return self._result(intent_id, accepted=False, reason=self._not_ready_reason())
        await self._bucket.acquire()
        try:
            await self.adapter.cancel(intent_id)
        except (OrderNotOpenError, UnknownIntentError) as exc:
            return self._result(intent_id, accepted=False, reason=str(exc))
        return self._result(intent_id, accepted=True)

    async def wait_for(self, intent_id: str, timeout: float, *, filled: bool = False) -> dict[str, Any]:
        """Wait until the intent is done (or, with ``filled``, fully filled); returns its state.

        Raises TimeoutError after ``timeout`` seconds with the state it was left in.
        """

        def ready() -> bool:
            if not self._known(intent_id):
                return False
            state = self.journal.state(intent_id)
            return state.filled >= state.intent.quantity if filled else state.done

        try:
            await asyncio.wait_for(self._wait(ready), timeout)
        except TimeoutError:
            last = self.state(intent_id) if self._known(intent_id) else None
            raise TimeoutError(
                f"intent {intent_id} not done within {timeout:g} s; last state: {last}"
            ) from None
        return self.state(intent_id)

    async def events(self, after_seq: int = 0, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Journal events after ``after_seq``, waiting up to ``timeout`` s for the first (a long poll)."""
        if timeout > 0:
            try:
                await asyncio.wait_for(self._wait(lambda: self._last_seq > after_seq), timeout)
            except TimeoutError:
                return []
        return [event_dict(e) for e in self.journal.events(after_seq=after_seq)]

    def subscribe(self, callback: Callable[[dict[str, Any]], Any]) -> None:
        """Call ``callback(event_dict)`` for every journal event from now on (it may be a coroutine)."""
        self._subscribers.append(callback)

    def state(self, intent_id: str) -> dict[str, Any]:
        """The journal's derived state of one intent (UnknownIntentError when never recorded)."""
        return state_dict(self.journal.state(intent_id))

    def _known(self, intent_id: str) -> bool:
        return self.journal.has_intent(intent_id)

    def _conflicting(self, intent: OrderIntent) -> bool:
        """Is another intent with this id (different fields) already journaled?"""
        if not self._known(intent.intent_id):
            return False
        return self.journal.state(intent.intent_id).intent != intent

    def _result(
        self, intent_id: str, *, accepted: bool, reason: str = "", duplicate: bool = False
    ) -> dict[str, Any]:
        out = self.state(intent_id)
        out.update(accepted=accepted, reason=reason, duplicate=duplicate)
        return out

    def _not_ready_reason(self) -> str:
        if self._fatal is not None:
            return str(self._fatal)
        if self._link_lost:
            return "IBKR connectivity lost (1100); orders resume after the gateway reports it restored"
        if not self.adapter.connected:
            return f"not connected to the gateway ({self.last_error or 'connecting'}); retry shortly"
        return "reconciling with the gateway after a reconnect; retry shortly"

    # -- market data ---------------------------------------------------------------------------------------

    async def subscribe_market_data(self, symbol: str) -> None:
        """Stream ``symbol``'s quotes (re-subscribed after every reconnect); read them with last_price."""
        if symbol in self._market_data:
            return
        await self._bucket.acquire()
        contract = await self.adapter.qualify(symbol)
        self._market_data[symbol] = self.adapter.ib.reqMktData(contract, "", False, False)

    def last_price(self, symbol: str) -> float | None:
        """The last traded price (else the mid or close) of a subscribed symbol; None when none yet."""
        ticker = self._market_data.get(symbol)
        if ticker is None:
            return None
        for value in (ticker.last, ticker.midpoint(), ticker.close):
            if value is not None and isinstance(value, float) and math.isfinite(value) and value > 0:
                return float(value)
        return None

    # -- health --------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Health and state (JSON-safe): see the module docstring. ``healthy`` is False when disconnected."""
        now = dt.datetime.now(dt.UTC)
        stale = float(self.ibkr.heartbeat_seconds) * 3
        fresh = self.last_heartbeat is not None and (now - self.last_heartbeat).total_seconds() <= stale
        connected = self.adapter.connected
        states = list(self._open.values())
        return {
            "name": self.name,
            "connected": connected,
            "accepting": self._accepting,
            "healthy": bool(connected and self._accepting and fresh and self._fatal is None),
            "link_lost": self._link_lost,
            "account": self.account,
            "server_version": self.server_version,
            "host": self.ibkr.host,
            "port": int(self.ibkr.port),
            "client_id": int(self.ibkr.client_id),
            "last_heartbeat": self.last_heartbeat.isoformat() if self.last_heartbeat else None,
            "open_orders": [s.intent_id for s in states if s.submitted],
            "pending_intents": [s.intent_id for s in states if not s.submitted],
            "last_error": self.last_error,
            "fatal": str(self._fatal) if self._fatal else None,
            "connects": self.connects,
            "reconciliations": self.reconciliations,
            "last_reconcile": self.last_reconcile,
            "market_data": sorted(self._market_data),
            "journal": str(self.journal.path),
            "journal_seq": self._journal_seq(),
        }
