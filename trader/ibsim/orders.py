"""The order desk: accept, reject, modify, cancel and fill orders, and tell the clients what happened.

Message sequences (what the owning client sees; ``position`` / ``updatePortfolio`` / account values go to
every client subscribed to them):

* accepted: ``openOrder`` + ``orderStatus`` with ``Submitted`` (``PreSubmitted`` while a stop waits for its
  trigger, a bracket child waits for its parent, an order is not transmitted yet, or IB connectivity is down);
* each fill: ``execDetails`` (reqId -1, a unique execId, the orderRef), ``commissionReport``, then
  ``orderStatus`` (``Submitted`` with remaining > 0 for a partial fill, else ``Filled``), then ``position``,
  ``updatePortfolio`` and account values;
* cancelled: ``orderStatus Cancelled`` and error 202; rejected: error 201 ``Order rejected - reason:...``;
  an order id already used by a finished order: error 103; cancelling a finished or unknown order: 10148/135.

Orders in an OCA group cancel their siblings when one fills; bracket children (``parentId``) start working
once their parent has filled and are cancelled with it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from trader.ibsim import messages as msg
from trader.ibsim.account import SimExecution, SimOrder
from trader.ibsim.matching import ORDER_TYPES, MarketEvent, WorkingOrder, match_order

if TYPE_CHECKING:
    import datetime as dt

    from trader.ibsim.account import Account
    from trader.ibsim.server import SimGateway
    from trader.ibsim.session import ClientSession

log = logging.getLogger("trader.ibsim")


class OrderDesk:
    """Order handling of one gateway; runs on the gateway's loop."""

    def __init__(self, gateway: SimGateway) -> None:
        self.gw = gateway

    @property
    def account(self) -> Account:
        return self.gw.account

    # -- placing -----------------------------------------------------------------------------------

    def place(self, session: ClientSession, req: msg.PlaceOrder) -> None:
        client_id = session.client_id or 0
        events = self.gw.events
        events.bump("orders")
        events.bump(f"orders:{req.order_ref}")
        log.info(
            "order from client %s: id %s %s %g %s %s lmt=%s aux=%s ref=%r",
            client_id,
            req.order_id,
            req.action,
            req.quantity,
            req.contract.describe(),
            req.order_type,
            req.lmt_price,
            req.aux_price,
            req.order_ref,
        )
        existing = self.account.find(client_id, req.order_id)
        if existing is not None and not existing.is_active:
            session.error(req.order_id, 103, "Duplicate order id")
            return
        reason = self._refusal(req)
        if reason:
            log.info("order %s of client %s rejected: %s", req.order_id, client_id, reason)
            events.bump("rejections")
            session.error(req.order_id, 201, f"Order rejected - reason:{reason}")
            return
        stock = self.gw.book.resolve(req.contract)
        assert stock is not None  # _refusal checked it
        if req.what_if:
            session.send(
                msg.open_order(
                    session.version,
                    self._what_if_order(req, client_id),
                    stock,
                    self.gw.what_if(stock.symbol, req),
                )
            )
            return
        if existing is not None:
            self._modify(session, existing, req)
            return
        order = self.account.new_order(
            client_id=client_id,
            order_id=req.order_id,
            symbol=stock.symbol,
            con_id=stock.con_id,
            action=req.action,
            quantity=req.quantity,
            order_type=req.order_type,
            lmt_price=req.lmt_price,
            aux_price=req.aux_price,
            tif=req.tif,
            order_ref=req.order_ref,
            account=req.account or self.account.account_id,
            parent_id=req.parent_id,
            oca_group=req.oca_group,
            transmit=req.transmit,
            outside_rth=req.outside_rth,
            submitted_at=self.gw.market.now(),
        )
        order.status = self._resting_status(order)
        self._notify_order(order)
        if req.transmit and req.parent_id:  # the last leg of a bracket sends the whole bracket
            self._transmit_family(order)
        events.poke()
        self._try_fill(order, self.gw.market.current_event(order.symbol), self.gw.market.now())

    def _refusal(self, req: msg.PlaceOrder) -> str:
        """Why the order cannot be accepted, or ''."""
        cfg = self.gw.config
        if self.gw.book.resolve(req.contract) is None:
            return f"Unknown contract {req.contract.describe()} ({req.contract.sec_type or 'STK'})"
        if req.action not in ("BUY", "SELL"):
            return f"Invalid action {req.action!r}: use BUY or SELL"
        if req.order_type not in ORDER_TYPES:
            return f"Order type {req.order_type!r} is not supported here (MKT, LMT, STP, STP LMT)"
        if req.quantity <= 0:
            return f"Order quantity must be positive, got {req.quantity:g}"
        if not cfg.allow_fractional and not float(req.quantity).is_integer():
            return f"Fractional-sized order {req.quantity:g} cannot be placed via API"
        if cfg.max_order_qty is not None and req.quantity > cfg.max_order_qty:
            return f"Order size {req.quantity:g} exceeds the maximum order size {cfg.max_order_qty:g}"
        if req.order_type in ("LMT", "STP LMT") and (req.lmt_price is None or req.lmt_price <= 0):
            return "Limit price must be set and positive"
        if req.order_type in ("STP", "STP LMT") and (req.aux_price is None or req.aux_price <= 0):
            return "Stop price (auxPrice) must be set and positive"
        if req.account and req.account not in self.gw.accounts():
            return f"Account {req.account} is not managed by this login"
        return ""

    def _what_if_order(self, req: msg.PlaceOrder, client_id: int) -> SimOrder:
        stock = self.gw.book.resolve(req.contract)
        assert stock is not None
        return SimOrder(
            perm_id=0,
            client_id=client_id,
            order_id=req.order_id,
            symbol=stock.symbol,
            con_id=stock.con_id,
            action=req.action,
            quantity=req.quantity,
            order_type=req.order_type,
            lmt_price=req.lmt_price,
            aux_price=req.aux_price,
            tif=req.tif,
            order_ref=req.order_ref,
            account=self.account.account_id,
            status="PreSubmitted",
        )

    def _modify(self, session: ClientSession, order: SimOrder, req: msg.PlaceOrder) -> None:
        if req.quantity < order.filled:
            session.error(
                req.order_id, 201, f"Order rejected - reason:Quantity below the {order.filled:g} filled"
            )
            return
        with self.account.lock:
            order.quantity = req.quantity
            order.lmt_price = req.lmt_price
            order.aux_price = req.aux_price
            order.order_ref = req.order_ref
            order.order_type = req.order_type
            if req.transmit and not order.transmit:
                order.transmit = True
                self._transmit_family(order)
            order.status = self._resting_status(order)
        log.info("order %s of client %s modified", order.order_id, order.client_id)
        self._notify_order(order)
        self._try_fill(order, self.gw.market.current_event(order.symbol), self.gw.market.now())

    def _transmit_family(self, order: SimOrder) -> None:
        """A transmitted bracket child transmits its parent and siblings (how IB sends a bracket at once)."""
        parent = self.account.find(order.client_id, order.parent_id)
        family = [o for o in self.account.open_orders(order.client_id) if o.parent_id == order.parent_id]
        for member in ([parent] if parent is not None else []) + family:
            if member.is_active and not member.transmit:
                member.transmit = True
                if member is not order:
                    member.status = self._resting_status(member)
                    self._notify_status(member)
                    if member is parent:
                        self._try_fill(
                            member, self.gw.market.current_event(member.symbol), self.gw.market.now()
                        )

    # -- working state -----------------------------------------------------------------------------

    def _parent_done(self, order: SimOrder) -> bool:
        if not order.parent_id:
            return True
        parent = self.account.find(order.client_id, order.parent_id)
        return parent is None or parent.status == "Filled"

    def _working(self, order: SimOrder) -> bool:
        return (
            order.status in ("PreSubmitted", "Submitted")
            and order.transmit
            and self.gw.connectivity_ok
            and self._parent_done(order)
        )

    def _resting_status(self, order: SimOrder) -> str:
        if not self._working(order):
            return "PreSubmitted"
        if order.order_type in ("STP", "STP LMT") and not order.triggered:
            return "PreSubmitted"  # IB holds simulated stops until they trigger
        return "Submitted"

    # -- fills -------------------------------------------------------------------------------------

    def on_market(self, symbol: str, event: MarketEvent, when: dt.datetime) -> None:
        """The market moved: try every working order on ``symbol``, oldest first."""
        for order in list(self.account.open_orders()):
            if order.symbol == symbol:
                self._try_fill(order, event, when)

    def resume(self) -> None:
        """Connectivity came back: held orders go to work against the current prices."""
        for order in list(self.account.open_orders()):
            if order.status == "PreSubmitted" and self._resting_status(order) == "Submitted":
                order.status = "Submitted"
                self._notify_status(order)
            self._try_fill(order, self.gw.market.current_event(order.symbol), self.gw.market.now())

    def _try_fill(self, order: SimOrder, event: MarketEvent | None, when: dt.datetime) -> None:
        if event is None or not order.is_active or not self._working(order):
            return
        market = self.gw.market
        working = WorkingOrder(
            order.action, order.order_type, order.remaining, order.lmt_price, order.aux_price, order.triggered
        )
        result = match_order(working, event, market.available(order.symbol))
        if result.triggered and not order.triggered:
            order.triggered = True
            if order.status == "PreSubmitted":
                order.status = "Submitted"
                self._notify_status(order)
        if result.quantity <= 0 or result.price is None:
            return
        market.consume(order.symbol, result.quantity)
        self._book_fill(order, result.quantity, result.price, when)

    def force_fill(self, order: SimOrder, price: float, when: dt.datetime) -> None:
        """Fill all that is left of ``order`` at ``price``, whatever its type and the volume cap."""
        if order.is_active and order.remaining > 0:
            self._book_fill(order, order.remaining, price, when)

    def _book_fill(self, order: SimOrder, quantity: float, price: float, when: dt.datetime) -> None:
        execution = self.account.fill(order, quantity, price, when)
        log.info(
            "fill: client %s order %s %s %g %s @ %.4f (%g/%g) ref=%r",
            order.client_id,
            order.order_id,
            execution.side,
            quantity,
            order.symbol,
            price,
            order.filled,
            order.quantity,
            order.order_ref,
        )
        self._notify_fill(order, execution)
        self.gw.events.bump("fills")
        self.gw.events.bump(f"fills:{order.order_ref}")
        for other in self._oca_siblings(order):
            self._cancel(other, "OCA group fill", announce=False)
        if order.status == "Filled":
            for child in self.account.open_orders(order.client_id):
                if child.parent_id == order.order_id:
                    child.status = self._resting_status(child)
                    self._notify_status(child)
                    self._try_fill(child, self.gw.market.current_event(child.symbol), when)
        self.gw.publish_account(order.symbol)

    def _oca_siblings(self, order: SimOrder) -> list[SimOrder]:
        """Orders cancelled by a fill of ``order``: its OCA group, and the other children of its bracket
        parent (IB treats a bracket's take-profit and stop-loss as one-cancels-all)."""
        siblings = []
        for other in self.account.open_orders(order.client_id):
            if other is order:
                continue
            same_oca = bool(order.oca_group) and other.oca_group == order.oca_group
            same_bracket = bool(order.parent_id) and other.parent_id == order.parent_id
            if same_oca or same_bracket:
                siblings.append(other)
        return siblings

    # -- cancelling --------------------------------------------------------------------------------

    def cancel(self, session: ClientSession, order_id: int) -> None:
        order = self.account.find(session.client_id or 0, order_id)
        if order is None:
            session.error(order_id, 135, f"Can't find order with id ={order_id}")
            return
        if not order.is_active:
            session.error(
                order_id,
                10148,
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {order.status}.",
            )
            return
        self._cancel(order, "", announce=True)

    def cancel_all(self) -> None:
        for order in list(self.account.open_orders()):
            self._cancel(order, "global cancel", announce=True)

    def _cancel(self, order: SimOrder, reason: str, *, announce: bool) -> None:
        self.account.close_order(order, "Cancelled", reason)
        log.info("order %s of client %s cancelled %s", order.order_id, order.client_id, reason)
        self._notify_status(order)
        if announce:
            for session in self.gw.sessions_of(order.client_id):
                session.error(order.order_id, 202, f"Order Canceled - reason:{reason}")
        self.gw.events.bump("cancels")
        for child in list(self.account.open_orders(order.client_id)):
            if child.parent_id == order.order_id:
                self._cancel(child, "parent cancelled", announce=announce)

    # -- telling the clients -----------------------------------------------------------------------

    def _notify_order(self, order: SimOrder) -> None:
        stock = self.gw.book.get(order.symbol)
        for session in self.gw.sessions_of(order.client_id):
            if stock is not None:
                session.send(msg.open_order(session.version, order, stock))
            session.send(msg.order_status(order))

    def _notify_status(self, order: SimOrder) -> None:
        for session in self.gw.sessions_of(order.client_id):
            session.send(msg.order_status(order))

    def _notify_fill(self, order: SimOrder, execution: SimExecution) -> None:
        stock = self.gw.book.get(order.symbol)
        for session in self.gw.sessions_of(order.client_id):
            if stock is not None:
                session.send(msg.exec_details(session.version, -1, execution, stock))
            session.send(msg.commission_report(execution))
            session.send(msg.order_status(order))
