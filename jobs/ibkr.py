"""`trader ibkr`: look at the IB paper account, and send one manual order through risk and execution.

``trader ibkr check`` connects with the async adapter (:class:`trader.broker.adapter.IBAdapter`), prints one
JSON object (server version, accounts, positions, cash, open orders of every client) and disconnects::

    trader ibkr check --port 4002 --client-id 9

``trader ibkr order`` is a manual order that takes the same road as a strategy's: it reads the account
(equity = NetLiquidation, positions, a price), asks :func:`trader.risk.approve_order` with the configured
limits, signs the answer (:class:`trader.broker.order.Approval`) and, when approved, hands intent and
approval to the execution actor (``cluster/actors/execution.py``), which checks the signature and owns the
gateway connection. It prints the final state as one JSON object::

    trader ibkr order --symbol SPY --side BUY --qty 10
    trader ibkr order --symbol SPY --side SELL --qty 5 --type LMT --limit 410 --tif GTC

Both refuse a live port (7496, 4001) or a live account (not DU...) while ``ibkr.paper_only`` is true.

Exit status: 0 checked / filled / (LMT, STP) still working; 1 the order was rejected (risk or broker),
cancelled, or a market order did not fill within ``--timeout``; 2 an error (gateway not there, paper-only
refusal, bad option), printed as one line. Units: quantities in shares, prices in the account currency.
Runs as ``python -m jobs.ibkr`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

from jobs.options import settings_options
from trader.broker.errors import BrokerConnectionError, BrokerError, PaperOnlyError

log = logging.getLogger(__name__)

#: Where the order journal goes when neither --journal nor ibkr.journal says (relative to the working dir).
DEFAULT_JOURNAL = os.path.join("runs", "ibkr", "orders.sqlite")
#: Account values ``check`` reports as cash (IBKR's tags; the account's base currency).
CASH_TAGS = ("TotalCashValue", "NetLiquidation", "AvailableFunds", "BuyingPower")
#: The session name intent ids of manual orders derive from (with the symbol and the time of the command).
MANUAL_SESSION = "manual"
# Seconds to wait, after a fill, for its commission report (IBKR sends it right after the execution).
_COMMISSION_WAIT = 5.0
# The client libraries log every gateway error on their own; the adapter turns the ones that matter into
# typed errors, so at the command line they would only repeat them (or print a connection failure twice).
_CLIENT_LOGGERS = ("ib_insync", "ib_async")


class OrderNotDoneError(BrokerError):
    """The order was rejected (risk or broker), cancelled, or did not fill in time: exit status 1.

    The JSON on stdout says what happened; this one line on stderr says why.
    """

    exit_code = 1


# -- settings ----------------------------------------------------------------------------------------------


def _ibkr_settings(settings: Any, host: str | None, port: int | None, client_id: int | None) -> Any:
    """``settings.ibkr`` with the command-line connection options applied, refused if it points at live."""
    update = {k: v for k, v in (("host", host), ("port", port), ("client_id", client_id)) if v is not None}
    ibkr = settings.ibkr.model_copy(update=update) if update else settings.ibkr
    _check_port(ibkr)
    return ibkr


def _check_port(ibkr: Any) -> None:
    from trader.config import LIVE_PORTS

    if ibkr.paper_only and int(ibkr.port) in LIVE_PORTS:
        raise PaperOnlyError(
            f"port {ibkr.port} is a live trading port (7496 TWS, 4001 Gateway) and ibkr.paper_only is true; "
            "refusing to connect. Use a paper port (7497 TWS, 4002 Gateway) or set ibkr.paper_only=false"
        )


def _pick_account(ibkr: Any, managed: list[str], *, required: bool) -> str | None:
    """The account in use (ibkr.account, else the only managed one); refused when live and paper_only.

    With several managed accounts and none configured, ``required`` raises; otherwise every managed account
    must be a paper one (a paper login manages only DU accounts).
    """
    account = ibkr.account or (managed[0] if len(managed) == 1 else None)
    if account is None and required:
        raise BrokerConnectionError(
            f"the gateway at {ibkr.host}:{ibkr.port} manages several accounts ({', '.join(managed)}); "
            "choose one with --set ibkr.account=DU..."
        )
    if ibkr.paper_only:
        for name in [account] if account else managed:
            if not name.startswith("DU"):
                raise PaperOnlyError(
                    f"account {name} at {ibkr.host}:{ibkr.port} is not a paper account (paper accounts "
                    "start with DU) and ibkr.paper_only is true; refusing. Log the gateway in to paper "
                    "trading, or set ibkr.paper_only=false to use a live account deliberately"
                )
    return account


@contextlib.contextmanager
def _quiet_client_library(settings: Any) -> Iterator[None]:
    """Silence the client library's own logging unless the user asked for DEBUG."""
    if str(settings.log_level).upper() == "DEBUG":
        yield
        return
    loggers = [logging.getLogger(name) for name in _CLIENT_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


# -- reading the account -----------------------------------------------------------------------------------


@dataclass
class AccountView:
    """What one read-only connection saw: versions, accounts, positions, cash, open orders and prices.

    ``positions`` maps symbols to signed shares of ``account``; ``prices`` holds a last price per symbol
    (account currency) for the held symbols the gateway marks (portfolio) and for any symbol asked for.
    """

    server_version: int | None
    accounts: list[str]
    account: str | None
    positions: list[dict[str, Any]] = field(default_factory=list)
    cash: dict[str, float | None] = field(default_factory=dict)
    currency: str | None = None
    open_orders: list[dict[str, Any]] = field(default_factory=list)
    prices: dict[str, float] = field(default_factory=dict)

    @property
    def equity(self) -> float | None:
        """NetLiquidation (account currency), None when the gateway did not report it."""
        return self.cash.get("NetLiquidation")

    def position_map(self) -> dict[str, float]:
        return {p["symbol"]: float(p["qty"]) for p in self.positions}

    def to_dict(self) -> dict[str, Any]:
        return {
            "server_version": self.server_version,
            "accounts": self.accounts,
            "account": self.account,
            "positions": self.positions,
            "cash": self.cash,
            "currency": self.currency,
            "open_orders": self.open_orders,
        }


def _finite_price(value: Any) -> float | None:
    try:
        price = float(value)
    except (TypeError, ValueError):
        return None
    # IBKR's "unset" is sys.float_info.max and the libraries' "no tick yet" is NaN: neither is a price.
    return price if math.isfinite(price) and 0 < price < 1e300 else None


def _ticker_price(ticker: Any) -> float | None:
    """Last trade, else the bid/ask midpoint, else the previous close (as the execution engine reads it)."""
    for read in (lambda: ticker.last, ticker.midpoint, lambda: ticker.close):
        with contextlib.suppress(Exception):
            price = _finite_price(read())
            if price is not None:
                return price
    return None


def _open_order_dict(trade: Any) -> dict[str, Any]:
    from trader.broker.adapter import map_status

    order, st = trade.order, trade.orderStatus
    filled = float(st.filled or 0.0)
    remaining = float(st.remaining or 0.0)
    return {
        "intent_id": order.orderRef or None,  # the orderRef: our intent id, empty for orders from elsewhere
        "order_id": int(order.orderId),
        "perm_id": int(st.permId or order.permId or 0),
        "client_id": int(order.clientId or 0),
        "symbol": str(trade.contract.symbol),
        "side": str(order.action),
        "qty": float(order.totalQuantity),
        "type": str(order.orderType),
        "limit": _finite_price(order.lmtPrice),
        "stop": _finite_price(order.auxPrice),
        "tif": str(order.tif or "DAY"),
        "status": map_status(str(st.status), filled, remaining).value,
        "ib_status": str(st.status),
        "filled": filled,
    }


async def _snapshot_price(adapter: Any, symbol: str) -> float | None:
    """One market-data snapshot of ``symbol``: live first, then delayed (accounts without a subscription)."""
    contract = await adapter.qualify(symbol)
    ib = adapter.ib
    for data_type in (None, 3):  # None: whatever the session has (live unless changed); 3: delayed
        if data_type is not None:
            ib.reqMarketDataType(data_type)
        try:
            tickers = await _request(adapter, ib.reqTickersAsync(contract), f"snapshot of {symbol}")
        except BrokerConnectionError:
            continue
        except Exception as exc:  # a request error (e.g. 354 not subscribed): try delayed data next
            log.debug("snapshot of %s (market data type %s) failed: %s", symbol, data_type, exc)
            continue
        price = _ticker_price(tickers[0]) if tickers else None
        if price is not None:
            return price
    return None


async def read_account(
    ibkr: Any, *, order_symbol: str | None = None, quote: bool = False, required: bool = False
) -> AccountView:
    """Connect once (read only), collect an :class:`AccountView`, disconnect.

    With ``order_symbol`` (an order is being sized) every held symbol gets a price in ``prices`` (the
    account's portfolio mark, else a snapshot), and with ``quote`` ``order_symbol`` gets a fresh snapshot
    price too. ``required``: the account must be unambiguous (ibkr.account, or one managed account).
    Raises BrokerConnectionError (naming host:port) when the gateway is not there, PaperOnlyError for a
    live account while ``ibkr.paper_only``.

    Example::

        view = asyncio.run(read_account(load_settings().ibkr))
        print(view.equity, view.position_map())
    """
    from trader.broker.adapter import IBAdapter

    adapter = IBAdapter.from_settings(ibkr, connect_timeout=float(ibkr.connect_timeout_seconds))
    await adapter.connect()
    try:
        managed = adapter.managed_accounts
        account = _pick_account(ibkr, managed, required=required)
        view = AccountView(server_version=adapter.server_version, accounts=managed, account=account)
        positions = await adapter.positions()
        view.positions = [
            {"symbol": p.symbol, "qty": p.quantity, "avg_cost": p.avg_cost, "account": p.account}
            for p in positions
            if p.quantity != 0 and (account is None or p.account == account)
        ]
        for value in await adapter.account_values():
            # One value per tag in the account's currency (IBKR repeats some per currency and as BASE).
            if (
                value.tag not in CASH_TAGS
                or value.currency in ("", "BASE")
                or view.cash.get(value.tag) is not None
            ):
                continue
            if account is None or value.account == account:
                view.cash[value.tag] = _number(value.value)
                view.currency = view.currency or value.currency
        for tag in CASH_TAGS:
            view.cash.setdefault(tag, None)
        trades = await _request(adapter, adapter.ib.reqAllOpenOrdersAsync(), "open orders")
        view.open_orders = [_open_order_dict(t) for t in trades if not t.isDone()]
        for item in adapter.ib.portfolio(account or ""):
            price = _finite_price(item.marketPrice)
            if price is not None:
                view.prices[str(item.contract.symbol)] = price
        if order_symbol is not None and quote:
            price = await _snapshot_price(adapter, order_symbol)
            if price is not None:
                view.prices[order_symbol] = price
        if order_symbol is not None:
            # Gross exposure needs every held symbol's price; a symbol the portfolio does not mark is quoted.
            for held in view.position_map():
                if held not in view.prices:
                    price = await _snapshot_price(adapter, held)
                    if price is not None:
                        view.prices[held] = price
        return view
    finally:
        adapter.disconnect()


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and abs(value) < 1e300 else None


async def _request(adapter: Any, awaitable: Any, what: str) -> Any:
    """Await a client-library request with the adapter's timeout; a timeout is one line naming host:port."""
    try:
        return await asyncio.wait_for(awaitable, adapter.request_timeout)
    except TimeoutError:
        raise BrokerConnectionError(
            f"{what}: no answer from the IB gateway at {adapter.host}:{adapter.port} within "
            f"{adapter.request_timeout:g} s"
        ) from None


def _emit(obj: dict[str, Any]) -> None:
    """One JSON object on one line of stdout (``jq`` reads it; Ray's worker output never shares its line)."""
    click.echo(json.dumps(obj, default=str))


# -- the commands ------------------------------------------------------------------------------------------


def _connection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--client-id", type=int, default=None, help="API client id (default: ibkr.client_id)."
    )(func)
    func = click.option("--port", type=int, default=None, help="Gateway port (default: ibkr.port, 4002).")(
        func
    )
    return click.option("--host", default=None, help="Gateway host (default: ibkr.host, 127.0.0.1).")(func)


@click.group("ibkr")
def ibkr() -> None:
    """Interactive Brokers (paper): check the account, send a manual order through risk and execution."""


@ibkr.command("check")
@_connection_options
@settings_options
def check(settings: Any, host: str | None, port: int | None, client_id: int | None) -> None:
    """Connect, print the account as one JSON object (version, positions, cash, open orders), disconnect."""
    conn = _ibkr_settings(settings, host, port, client_id)
    with _quiet_client_library(settings):
        view = asyncio.run(read_account(conn))
    out = {"host": conn.host, "port": int(conn.port), "client_id": int(conn.client_id), **view.to_dict()}
    _emit(out)


@ibkr.command("order")
@click.option("--symbol", required=True, help="Stock symbol, e.g. SPY (a USD stock on SMART).")
@click.option(
    "--side", required=True, type=click.Choice(["BUY", "SELL"], case_sensitive=False), help="BUY or SELL."
)
@click.option("--qty", required=True, type=click.IntRange(min=1), help="Shares (a whole number).")
@click.option(
    "--type",
    "order_type",
    default="MKT",
    show_default=True,
    type=click.Choice(["MKT", "LMT", "STP", "STP_LMT"], case_sensitive=False),
    help="Order type: market, limit (--limit), stop (--stop), stop-limit (--stop and --limit).",
)
@click.option("--limit", "limit_price", type=float, default=None, help="Limit price (LMT, STP_LMT).")
@click.option("--stop", "stop_price", type=float, default=None, help="Stop (trigger) price (STP, STP_LMT).")
@click.option(
    "--tif",
    default="DAY",
    show_default=True,
    type=click.Choice(["DAY", "GTC", "IOC"], case_sensitive=False),
    help="Time in force: the session, until cancelled, or immediate-or-cancel.",
)
@click.option(
    "--journal",
    default=None,
    help=f"Order journal, SQLite (default: ibkr.journal, else {DEFAULT_JOURNAL}).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the fill (LMT/STP: then report it as working).",
)
@_connection_options
@settings_options
def order(
    settings: Any,
    symbol: str,
    side: str,
    qty: int,
    order_type: str,
    limit_price: float | None,
    stop_price: float | None,
    tif: str,
    journal: str | None,
    timeout: float,
    host: str | None,
    port: int | None,
    client_id: int | None,
) -> None:
    """Send one manual order: account read, risk rules, signed approval, execution actor; print its state."""
    from trader.broker.order import Approval, OrderIntent, derive_intent_id

    started = time.monotonic()
    conn = _ibkr_settings(settings, host, port, client_id)
    symbol = symbol.strip().upper()
    now = dt.datetime.now(dt.UTC)
    intent = OrderIntent(
        intent_id=derive_intent_id(MANUAL_SESSION, symbol, now),
        symbol=symbol,
        side=side.upper(),
        quantity=qty,
        order_type=order_type.upper(),
        limit_price=limit_price,
        stop_price=stop_price,
        time_in_force=tif.upper(),
        created_at=now,
        source="trader ibkr order",
    )  # validates: a LMT needs --limit, a MKT must not have one, ...
    journal_path = os.path.abspath(journal or conn.journal or DEFAULT_JOURNAL)

    # The price risk values the order at: what it is expected to trade at (limit, else stop, else market).
    given = intent.limit_price if intent.limit_price is not None else intent.stop_price
    with _quiet_client_library(settings):
        view = asyncio.run(read_account(conn, order_symbol=symbol, quote=given is None, required=True))
    price, limits, decision = _risk_check(settings, conn, intent, view, given)
    secret = (
        conn.approval_secret.get_secret_value() if conn.approval_secret is not None else secrets.token_hex(32)
    )
    limit_snapshot = {k: v for k, v in vars(limits).items() if v is None or isinstance(v, str | int | float)}
    base = {
        "intent_id": intent.intent_id,
        "symbol": symbol,
        "side": intent.side.value,
        "qty": qty,
        "type": intent.order_type.value,
        "account": view.account,
        "equity": view.equity,
        "price_checked": price,
        "journal": journal_path,
    }

    if not decision.approved:
        rejection = Approval.sign(
            intent,
            secret,
            approved=False,
            reason=f"{decision.rule}: {decision.message}",
            approver="risk:manual",
            limits=limit_snapshot,
        )
        _journal_rejection(journal_path, intent, rejection)
        _emit({"status": "rejected", "rule": decision.rule, "reason": decision.message, **base})
        raise OrderNotDoneError(f"order rejected by risk rule {decision.rule}: {decision.message}")

    from trader.broker.journal import OrderJournal

    OrderJournal(journal_path).close()  # a bad path fails here, as one line, not inside the actor
    state, finished = _execute(
        settings, conn, intent, journal_path, secret, decision, limit_snapshot, timeout
    )
    out = {
        **base,
        "journal": state.get("journal") or journal_path,
        "status": state.get("status"),
        "filled": state.get("filled"),
        "avg_price": state.get("avg_price"),
        "commission": state.get("commission"),
        "order_id": state.get("order_id"),
        "perm_id": state.get("perm_id"),
        "remaining": state.get("remaining"),
        "last_error": state.get("last_error"),
        "seconds": round(time.monotonic() - started, 3),
    }
    if not state.get("accepted", True):
        out["status"] = "refused"
        out["reason"] = state.get("reason")
        _emit(out)
        raise OrderNotDoneError(f"the execution actor refused the order: {state.get('reason')}")
    if not finished:
        out["order_status"] = out["status"]
        out["status"] = "working"
        _emit(out)
        if intent.order_type.value == "MKT":
            raise OrderNotDoneError(
                f"market order {intent.intent_id} not filled within {timeout:g} s; it is still working at "
                "the gateway (see `trader ibkr check`)"
            )
        return
    _emit(out)
    if state.get("status") != "Filled":
        error = state.get("last_error")
        raise OrderNotDoneError(
            f"order {intent.intent_id} ended {state.get('status')}"
            + (f" (IBKR {error[0]}: {error[1]})" if error else "")
        )


def _risk_check(settings: Any, conn: Any, intent: Any, view: AccountView, given: float | None) -> Any:
    """Risk's verdict on ``intent`` against the account: (price it was valued at, limits, OrderDecision).

    The limits are ``risk.*`` of the settings (:meth:`trader.risk.RiskLimits.from_settings`); there is no
    session history here, so the account-level halts (daily loss, drawdown) are not applied.
    """
    from trader.risk import RiskLimits, approve_order

    symbol = intent.symbol
    price = given if given is not None else view.prices.get(symbol)
    if price is None:
        raise BrokerError(
            f"no market price for {symbol} from the gateway at {conn.host}:{conn.port} (no market data "
            "subscription?); give --type LMT --limit PRICE so risk can value the order"
        )
    if view.equity is None:
        raise BrokerError(
            f"the gateway at {conn.host}:{conn.port} reported no NetLiquidation for account {view.account}; "
            "cannot size the order against the risk limits"
        )
    signed_qty = float(intent.quantity) if intent.side.value == "BUY" else -float(intent.quantity)
    limits = RiskLimits.from_settings(settings)
    decision = approve_order(
        symbol,
        signed_qty,
        price,
        positions=view.position_map(),
        prices={**view.prices, symbol: price},
        equity=view.equity,
        limits=limits,
    )
    return price, limits, decision


def _journal_rejection(path: str, intent: Any, rejection: Any) -> None:
    """Record a risk rejection in the journal (the audit trail), without any actor."""
    from trader.broker.journal import OrderJournal

    journal = OrderJournal(path)
    try:
        journal.record_intent(intent)
        journal.record_approval(rejection)
    finally:
        journal.close()


# -- Ray -------------------------------------------------------------------------------------------------


def _ray_get(ref: Any, what: str) -> Any:
    """ray.get, with a TraderError raised in the actor re-raised as itself (one line at the command line)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from trader.errors import TraderError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, TraderError | TimeoutError):
            raise cause from None
        raise
    except RayActorError as exc:
        raise BrokerError(f"the execution actor died during {what}: {str(exc).splitlines()[0]}") from None


def _execute(
    settings: Any,
    conn: Any,
    intent: Any,
    journal_path: str,
    secret: str,
    decision: Any,
    limits: dict[str, Any],
    timeout: float,
) -> tuple[dict[str, Any], bool]:
    """Submit through the execution actor and wait; returns (last state, done within ``timeout``)."""
    from cluster.runtime import connect
    from trader.broker.order import Approval

    # The actor gets the connection options given on the command line as its settings.
    run_settings = settings.model_copy(update={"ibkr": conn})
    with connect(run_settings):
        import ray

        from cluster.actors.execution import execution_actor

        name, namespace = "execution", settings.ray.namespace
        try:
            ray.get_actor(name, namespace=namespace)
            created = False  # a running session's actor: use it, leave it running
        except ValueError:
            created = True
        actor = execution_actor(run_settings, journal=journal_path, secret=secret, name=name)
        try:
            ready_wait = float(conn.connect_timeout_seconds) + 5.0
            ready = _ray_get(actor.wait_ready.remote(ready_wait), "connecting")
            # Signed now, right before it is sent: an approval is good for ibkr.approval_max_age_seconds.
            approval = Approval.sign(
                intent, secret, approved=True, reason=decision.message, approver="risk:manual", limits=limits
            )
            result = _ray_get(actor.submit.remote(intent, approval), "submit")
            result["journal"] = ready.get("journal")  # a running actor may keep its journal elsewhere
            if not result.get("accepted"):
                if not created and conn.approval_secret is None:
                    result["reason"] = (
                        f"{result.get('reason')} (a running execution actor checks approvals with its own "
                        "key; set ibkr.approval_secret to the key it was started with)"
                    )
                return result, True
            state, done = _wait(actor, intent, timeout)
            return {**state, "journal": result["journal"]}, done
        finally:
            if created:
                with contextlib.suppress(Exception):
                    ray.get(actor.shutdown.remote(), timeout=10)
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)


def _wait(actor: Any, intent: Any, timeout: float) -> tuple[dict[str, Any], bool]:
    """Wait until the intent is done (filled, cancelled, rejected) or ``timeout`` s pass; then, for a fill,
    up to a few seconds more for its commission report. Returns (state, done)."""
    try:
        state = _ray_get(actor.wait_for.remote(intent.intent_id, timeout, filled=False), "waiting")
    except TimeoutError:
        return _ray_get(actor.state.remote(intent.intent_id), "reading the state"), False
    deadline = time.monotonic() + _COMMISSION_WAIT
    seq = int(state.get("seq") or 0)
    while state.get("filled") and state.get("commission") is None:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        # A long poll on the journal: returns as soon as any event after ``seq`` is recorded.
        events = _ray_get(actor.events.remote(seq, left), "waiting for the commission")
        if events:
            seq = max(seq, *(int(e["seq"]) for e in events))
        state = _ray_get(actor.state.remote(intent.intent_id), "reading the state")
    return state, True


if __name__ == "__main__":
    from jobs.cli import main

    sys.exit(main(["ibkr", *sys.argv[1:]]))
