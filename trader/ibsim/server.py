"""SimGateway: a TWS API server on loopback backed by a simulated account and market.

Run it on your own asyncio loop (``await gw.start()`` ... ``await gw.stop()``) or on a background thread with
:func:`trader.ibsim.runner.run_gateway`. Every public method that is not a coroutine is thread-safe: called
from another thread it hops onto the gateway's loop and waits for the result; called on the loop it runs
directly. State that a real gateway keeps on IB's side (orders, executions, positions, cash, permIds) lives
in :class:`~trader.ibsim.account.Account` and survives :meth:`restart` and dropped connections.

Example (a background gateway and the real ib_insync client)::

    from ib_insync import IB, MarketOrder, Stock
    from trader.ibsim import GatewayConfig, run_gateway

    with run_gateway(GatewayConfig(symbols=("SPY",))) as gw:
        gw.set_price("SPY", 400.0)
        ib = IB()
        ib.connect("127.0.0.1", gw.port, clientId=1)
        trade = ib.placeOrder(Stock("SPY", "SMART", "USD"), MarketOrder("BUY", 10, orderRef="demo"))
        while not trade.isDone():
            ib.waitOnUpdate(timeout=5)
        ib.disconnect()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from trader.errors import ConfigError
from trader.ibsim import messages as msg
from trader.ibsim.account import Account, SimExecution, SimOrder, SimPosition
from trader.ibsim.config import GatewayConfig
from trader.ibsim.contracts import ContractBook, Stock
from trader.ibsim.events import GatewayEvents
from trader.ibsim.faults import StallGate
from trader.ibsim.handlers import dispatch
from trader.ibsim.market import Market, Step
from trader.ibsim.orders import OrderDesk
from trader.ibsim.session import ClientSession

log = logging.getLogger("trader.ibsim")

T = TypeVar("T")

FARM_NOTICES = (
    (2104, "Market data farm connection is OK:usfarm"),
    (2106, "HMDS data farm connection is OK:ushmds"),
    (2158, "Sec-def data farm connection is OK:secdefnj"),
)
LOST = "Connectivity between IB and Trader Workstation has been lost."
RESTORED_LOST = "Connectivity between IB and Trader Workstation has been restored - data lost."
RESTORED_KEPT = "Connectivity between IB and Trader Workstation has been restored - data maintained."


class SimGateway:
    """A simulated IB Gateway (see the module docstring). ``port`` is the bound port after :meth:`start`."""

    def __init__(self, config: GatewayConfig, account: Account | None = None) -> None:
        self.config = config
        self.account = account or Account(
            config.account,
            cash=config.initial_cash,
            commission_per_share=config.commission_per_share,
            min_commission=config.min_commission,
        )
        self.book = ContractBook(config.symbols, config.primary_exchange)
        self.market = Market(config.symbols, config.interval, config.max_volume_share)
        self.events = GatewayEvents()
        self.gate = StallGate()
        self.desk = OrderDesk(self)
        self.port = config.port
        self.connectivity_ok = True
        # Market-data faults (see skip_realtime_bar / refuse_history): (symbol, bar start epoch seconds).
        self.skipped_realtime: set[tuple[str, int]] = set()
        self.history_refused = False
        self._sessions: set[ClientSession] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._loaded = False
        self._store: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle (coroutines, on the gateway's loop) ---------------------------------------------

    async def start(self) -> None:
        """Load replay bars (first start only) and listen on ``config.host``:``port``."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if not self._loaded:
            await self._load_bars()
            self._loaded = True
        self._server = await asyncio.start_server(self._on_connect, self.config.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.config.speed > 0 and self.market.replaying:
            self._replay_task = asyncio.create_task(self._replay())
        log.info(
            "ibsim listening on %s:%s (server version <= %s, account %s, symbols %s)",
            self.config.host,
            self.port,
            self.config.server_version,
            self.config.account,
            ",".join(self.config.symbols),
        )

    async def stop(self) -> None:
        """Stop listening and drop every client; the account is kept."""
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
            self._replay_task = None
        if self._server is not None:
            self._server.close()
            self._drop_all()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        self._drop_all()
        log.info("ibsim on port %s stopped", self.port)

    async def restart_async(self, downtime: float = 0.0) -> None:
        """Stop, wait ``downtime`` seconds, start again on the same port with the same state."""
        await self.stop()
        if downtime > 0:
            await asyncio.sleep(downtime)
        await self.start()

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def _load_bars(self) -> None:
        if not self.config.store:
            return
        from trader.data.store import BarStore

        self._store = BarStore(self.config.store)
        cfg = self.config
        bars = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._store.read_bars(list(cfg.symbols), cfg.interval, cfg.start, cfg.end)
        )
        if bars.is_empty():
            raise ConfigError(
                f"ibsim: no {cfg.interval} bars of {','.join(cfg.symbols)} in {cfg.store} between "
                f"{cfg.start or 'the first bar'} and {cfg.end or 'the last bar'}; widen the window"
            )
        self.market.load(bars)
        self._apply_steps(self.market.step())  # the first bar has happened: there is a price

    @property
    def store(self) -> Any:
        """The BarStore behind historical data (None without ``config.store``)."""
        return self._store

    async def _replay(self) -> None:
        delay = self.market.interval_ns / 1e9 / self.config.speed
        while self.market.bars_left() > 0:
            await asyncio.sleep(delay)
            self._advance(1)
        log.info("ibsim replay finished at %s", self.market.now())

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ClientSession(self, reader, writer)
        self._sessions.add(session)
        await session.run()

    def _session_closed(self, session: ClientSession) -> None:
        if session in self._sessions:
            self._sessions.discard(session)
            if session.ready:
                log.info("client %s disconnected", session.client_id)
                self.events.bump("disconnects")
            self.events.poke()

    def _drop_all(self) -> None:
        for session in list(self._sessions):
            session.abort()

    # -- what handlers and the order desk use ------------------------------------------------------

    def background(self, task: asyncio.Task[None]) -> None:
        """Keep a reference to a request task until it ends (asyncio holds only weak ones)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handle(self, session: ClientSession, fields: list[str]) -> None:
        dispatch(self, session, fields)

    def accept_client(self, session: ClientSession, client_id: int) -> bool:
        """startApi: register ``client_id`` unless another live connection holds it (then error 326)."""
        if any(s.ready and s.client_id == client_id for s in self._sessions if s is not session):
            log.warning("refusing client id %s: already in use", client_id)
            session.error(
                -1,
                326,
                "Unable to connect as the client id is already in use. Retry with a unique client id.",
            )
            session.close_after_flush()
            return False
        session.client_id = client_id
        session.ready = True
        session.send(msg.managed_accounts(self.accounts()))
        session.send(msg.next_valid_id(self.next_order_id()))
        for code, text in FARM_NOTICES:
            session.error(-1, code, text)
        if not self.connectivity_ok:
            session.error(-1, 1100, LOST)
        log.info("client %s connected from %s (server version %s)", client_id, session.peer, session.version)
        self.events.bump("connections")
        return True

    def accounts(self) -> list[str]:
        return [self.config.account, *self.config.extra_accounts]

    def next_order_id(self) -> int:
        used = [o.order_id for o in self.account.orders.values()]
        return max([self.config.first_order_id - 1, *used]) + 1

    def sessions_of(self, client_id: int) -> list[ClientSession]:
        return [s for s in self._sessions if s.ready and s.client_id == client_id]

    def ready_sessions(self) -> list[ClientSession]:
        return [s for s in self._sessions if s.ready]

    def account_rows(self) -> list[tuple[str, str, str]]:
        """(tag, value, currency) rows of updateAccountValue / accountSummary."""
        rows = [
            ("AccountCode", self.config.account, ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("Currency", "USD", "USD"),
        ]
        values = self.account.values(self.market.prices())
        rows += [(tag, f"{value:.2f}", "USD") for tag, value in values.items()]
        return rows

    def publish_account(self, symbol: str) -> None:
        """After a fill: position, portfolio and account values to every client subscribed to them."""
        stock = self.book.get(symbol)
        pos = self.account.positions.get(symbol, SimPosition())
        if stock is None:
            return
        rows = self.account_rows()
        portfolio = [r for r in self.account.portfolio(self.market.prices()) if r[0] == symbol]
        now = self.market.now()
        for session in self.ready_sessions():
            if session.subs.positions:
                session.send(msg.position(self.config.account, stock, pos.quantity, pos.avg_cost))
            if session.subs.account_updates:
                for _, p, price, value, unrealized in portfolio:
                    session.send(
                        msg.portfolio_value(
                            stock,
                            p.quantity,
                            price,
                            value,
                            p.avg_cost,
                            unrealized,
                            self.account.realized_pnl,
                            self.config.account,
                        )
                    )
                for tag, value_text, currency in rows:
                    session.send(msg.account_value(tag, value_text, currency, self.config.account))
                session.send(msg.account_time(now))
            for req_id in session.subs.account_multi:
                for tag, value_text, currency in rows:
                    session.send(
                        msg.account_update_multi(req_id, self.config.account, tag, value_text, currency)
                    )

    def what_if(self, symbol: str, req: msg.PlaceOrder) -> msg.WhatIf:
        """Margin before/after and commission of an order that is not placed."""
        from trader.ibsim.account import INITIAL_MARGIN, MAINTENANCE_MARGIN

        price = req.lmt_price or self.market.last(symbol) or 0.0
        before = self.account.values(self.market.prices())
        change = req.quantity * price
        commission = max(self.account.min_commission, self.account.commission_per_share * req.quantity)
        init_b, maint_b, ewl = (
            before["InitMarginReq"],
            before["MaintMarginReq"],
            before["EquityWithLoanValue"],
        )
        init_c, maint_c = INITIAL_MARGIN * change, MAINTENANCE_MARGIN * change

        def text(x: float) -> str:
            return f"{x:.2f}"

        return msg.WhatIf(
            text(init_b),
            text(maint_b),
            text(ewl),
            text(init_c),
            text(maint_c),
            text(-commission),
            text(init_b + init_c),
            text(maint_b + maint_c),
            text(ewl - commission),
            commission,
        )

    # -- market moves ------------------------------------------------------------------------------

    def _advance(self, bars: int) -> int:
        done = 0
        for _ in range(bars):
            steps = self.market.step()
            if not steps:
                break
            self._apply_steps(steps)
            done += 1
        return done

    def _apply_steps(self, steps: list[Step]) -> None:
        from trader.ibsim.handlers import publish_market

        for step in steps:
            publish_market(self, step)
            self.desk.on_market(step.symbol, step.event, step.time)
        self.events.bump("market_steps", len(steps))

    def _set_price(self, symbol: str, price: float, volume: float | None) -> None:
        symbol = symbol.upper()
        if symbol not in self.book:
            raise KeyError(
                f"ibsim: unknown symbol {symbol!r}; configured symbols: {', '.join(self.book.symbols())}"
            )
        if not price > 0:
            raise ValueError(f"ibsim: price of {symbol} must be positive, got {price}")
        self._apply_steps([self.market.set_price(symbol, price, volume)])

    # -- thread-safe public API --------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = self._loop
        if loop is None or not loop.is_running() or threading.get_ident() == self._loop_thread:
            return fn(*args, **kwargs)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=30)

    def set_price(self, symbol: str, price: float, volume: float | None = None) -> None:
        """Set the last price of ``symbol`` (USD) and optionally the shares traded at it (caps fills at
        ``max_volume_share`` x volume); working orders are matched and ticks go to subscribers."""
        self._call(self._set_price, symbol, float(price), volume)

    def set_prices(self, prices: Mapping[str, float]) -> None:
        """:meth:`set_price` for many symbols in one call (one hop to the gateway's thread, not one each)."""
        self._call(self._set_prices, {s: float(p) for s, p in prices.items()})

    def _set_prices(self, prices: Mapping[str, float]) -> None:
        for symbol, price in prices.items():
            self._set_price(symbol, price, None)

    def advance(self, bars: int = 1) -> int:
        """Replay the next ``bars`` bar times (all symbols); returns how many happened (0 at the end)."""
        return self._call(self._advance, bars)

    def last_price(self, symbol: str) -> float | None:
        return self._call(self.market.last, symbol.upper())

    def now(self) -> dt.datetime:
        """The market clock (UTC): the close of the last replayed bar, else the wall clock."""
        return self._call(self.market.now)

    def orders_received(self) -> dict[str, int]:
        """placeOrder messages received so far per orderRef (rejected, modified and duplicate ones too)."""
        counts = self.events.counts("orders:")
        return {name.split(":", 1)[1]: n for name, n in counts.items()}

    def orders(self) -> list[SimOrder]:
        """Snapshots of every accepted order, oldest first."""
        return self._call(lambda: [o.snapshot() for o in self.account.orders.values()])

    def open_orders(self) -> list[SimOrder]:
        return self._call(lambda: [o.snapshot() for o in self.account.open_orders()])

    def executions(self) -> list[SimExecution]:
        return self._call(lambda: list(self.account.executions))

    def positions(self) -> dict[str, float]:
        """Shares held per symbol (non-zero positions only)."""
        return self._call(lambda: {s: p.quantity for s, p in self.account.positions.items() if p.quantity})

    def cash(self) -> float:
        return self._call(lambda: self.account.cash)

    def connected_clients(self) -> list[int]:
        """Client ids of the API connections that completed startApi."""
        return self._call(lambda: sorted(s.client_id or 0 for s in self.ready_sessions()))

    def drop_connections(self) -> None:
        """Cut every client connection at once (RST), as a crash or a network failure would."""
        self._call(self._drop_all)

    def restart(self, downtime: float = 0.0) -> None:
        """Stop listening, drop clients and listen again on the same port, keeping all state.

        From another thread this blocks until the gateway listens again; on the gateway's loop it schedules
        the restart (await :meth:`restart_async` there instead).
        """
        loop = self._loop
        if loop is None:
            raise RuntimeError("ibsim: restart() before start()")
        if threading.get_ident() == self._loop_thread:
            self.background(loop.create_task(self.restart_async(downtime)))
            return
        asyncio.run_coroutine_threadsafe(self.restart_async(downtime), loop).result(timeout=30 + downtime)

    def announce_connectivity_lost(self) -> None:
        """Error 1100 to every client; orders are held (not filled) until connectivity is restored."""
        self._call(self._connectivity, False, False)

    def announce_connectivity_restored(self, data_lost: bool = False) -> None:
        """Error 1102 (data maintained) or 1101 (data lost: market data subscriptions are dropped and must
        be requested again) to every client; held orders go back to work."""
        self._call(self._connectivity, True, data_lost)

    def _connectivity(self, ok: bool, data_lost: bool) -> None:
        self.connectivity_ok = ok
        code, text = (1100, LOST) if not ok else (1101, RESTORED_LOST) if data_lost else (1102, RESTORED_KEPT)
        for session in self.ready_sessions():
            if ok and data_lost:
                session.subs.clear_market_data()
            session.error(-1, code, text)
        if ok:
            self.desk.resume()

    def skip_realtime_bar(self, symbol: str, at: dt.datetime | str) -> None:
        """Fault: never send the real-time bar of ``symbol`` for the replayed bar starting at ``at`` (UTC; a
        datetime or ISO text). Ticks, historical data and the store keep the bar, so a client sees a gap in
        its real-time stream that it can back-fill. Counted as ``realtime_skipped`` events."""
        when = dt.datetime.fromisoformat(at) if isinstance(at, str) else at
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        key = (symbol.upper(), int(when.timestamp()))
        self._call(self.skipped_realtime.add, key)

    def refuse_history(self, refuse: bool = True) -> None:
        """Fault: while set, answer every historical-data request with error 162 (an HMDS outage) instead of
        bars. Requests are counted as ``history_requests`` events either way."""
        self._call(setattr, self, "history_refused", bool(refuse))

    def stall(self, seconds: float | None = None) -> None:
        """Hold every outgoing message for ``seconds`` (None = until :meth:`release`); requests are still
        acted on and their answers go out in order afterwards."""
        self._call(self.gate.stall, seconds)

    def release(self) -> None:
        """End a stall now."""
        self._call(self.gate.release)

    def fill_open_orders(
        self, price: float | None = None, symbol: str | None = None, order_ref: str | None = None
    ) -> int:
        """Fill every open order (of ``symbol`` / ``order_ref`` if given) completely at ``price`` (default:
        the symbol's last price), whether or not its client is connected. Returns the number of orders filled.
        """
        return self._call(self._fill_open_orders, price, symbol, order_ref)

    def _fill_open_orders(self, price: float | None, symbol: str | None, order_ref: str | None) -> int:
        filled = 0
        for order in list(self.account.open_orders()):
            if symbol is not None and order.symbol != symbol.upper():
                continue
            if order_ref is not None and order.order_ref != order_ref:
                continue
            fill_price = price if price is not None else self.market.last(order.symbol)
            if fill_price is None:
                raise ValueError(f"ibsim: no price for {order.symbol}; pass price= or call set_price first")
            self.desk.force_fill(order, fill_price, self.market.now())
            filled += 1
        return filled

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "a condition"
    ) -> None:
        """Block (from a thread other than the gateway's) until ``predicate()``; TimeoutError otherwise."""
        self.events.wait_for(predicate, timeout, what)

    def wait_for_orders(self, count: int = 1, order_ref: str | None = None, timeout: float = 5.0) -> None:
        """Wait until ``count`` placeOrder messages (with ``order_ref``, if given) have been received."""
        name = "orders" if order_ref is None else f"orders:{order_ref}"
        self.events.wait_for(
            lambda: self.events.count(name) >= count, timeout, f"{count} order(s) {order_ref or ''}".strip()
        )

    def wait_for_clients(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` API clients are connected (startApi done)."""
        self.events.wait_for(
            lambda: len(self.connected_clients()) >= count, timeout, f"{count} connected client(s)"
        )

    def stock(self, symbol: str) -> Stock | None:
        return self.book.get(symbol)
