"""Request handlers: one function per incoming message id, and market data fan-out.

Each handler reads the positional fields of its request (layouts as ib_insync / ib_async ``client.py`` write
them; the reader starts after the message id) and answers with the messages a real gateway sends. Requests
the simulator does not serve get error 321 addressed to their request id, so a waiting client call ends
instead of hanging.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import zoneinfo
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import polars as pl

from trader.errors import TraderError
from trader.ibsim import messages as msg
from trader.ibsim.contracts import ContractRequest, Stock
from trader.ibsim.messages import In
from trader.ibsim.protocol import FieldReader, ProtocolError

if TYPE_CHECKING:
    from trader.ibsim.market import Step
    from trader.ibsim.server import SimGateway
    from trader.ibsim.session import ClientSession

log = logging.getLogger("trader.ibsim")

Handler = Callable[["SimGateway", "ClientSession", FieldReader], None]

NO_SECURITY: Final = "No security definition has been found for the request"
BAR_SIZES: Final = {
    "1 min": "1m",
    "1 mins": "1m",
    "5 mins": "5m",
    "1 hour": "1h",
    "1 hours": "1h",
    "1 day": "1d",
    "1 days": "1d",
}
HISTORY_SOURCES: Final = frozenset({"TRADES", "MIDPOINT", "BID", "ASK", "BID_ASK", "ADJUSTED_LAST"})
_DURATION_RE: Final = re.compile(r"^\s*(\d+)\s*([SDWMY])\s*$", re.IGNORECASE)
_DURATION_UNIT: Final = {"S": 1, "D": 86_400, "W": 7 * 86_400, "M": 30 * 86_400, "Y": 365 * 86_400}
# Tick types: live (bid, ask, last, close, bidSize, askSize, lastSize, volume) and their delayed twins.
_TICKS_LIVE: Final = (1, 2, 4, 9, 0, 3, 5, 8)
_TICKS_DELAYED: Final = (66, 67, 68, 75, 69, 70, 71, 74)
QUOTE_SIZE: Final = 100.0  # shares shown at the bid and at the ask


def dispatch(gw: SimGateway, session: ClientSession, fields: list[str]) -> None:
    """Route one message to its handler; unknown or malformed requests get error 321."""
    try:
        msg_id = int(fields[0])
    except ValueError:
        session.error(-1, 321, f"Error validating request.-'{fields[0]}' : cause - not a message id")
        return
    if not session.ready and msg_id != In.START_API:
        log.warning("%s sent message %s before startApi; ignored", session, msg_id)
        return
    handler = HANDLERS.get(msg_id)
    if handler is None:
        session.error(
            _guess_req_id(msg_id, fields),
            321,
            f"Error validating request.-'{msg_id}' : cause - request {msg_id} is not supported by the "
            "simulated gateway",
        )
        return
    try:
        handler(gw, session, FieldReader(fields, 1))
    except ProtocolError as exc:
        session.error(
            _guess_req_id(msg_id, fields), 321, f"Error validating request.-'{msg_id}' : cause - {exc}"
        )
    except Exception:  # a bug here must not kill the connection; it is logged at ERROR for tests to see
        log.exception("request %s from %s failed inside the simulated gateway", msg_id, session)
        cause = "internal error of the simulated gateway"
        session.error(
            _guess_req_id(msg_id, fields), 321, f"Error validating request.-'{msg_id}' : cause - {cause}"
        )


def _guess_req_id(msg_id: int, fields: list[str]) -> int:
    pos = 1 if msg_id in msg.REQ_ID_FIRST else 2 if msg_id in msg.REQ_ID_AFTER_VERSION else None
    if pos is None or pos >= len(fields):
        return -1
    try:
        return int(fields[pos])
    except ValueError:
        return -1


# -- connection and account ------------------------------------------------------------------------


def start_api(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()  # message version (2)
    client_id = r.integer()
    if s.ready:
        s.error(-1, 321, "Error validating request.-'71' : cause - startApi sent twice")
        return
    gw.accept_client(s, client_id)


def req_ids(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    s.send(msg.next_valid_id(gw.next_order_id()))


def req_managed_accts(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    s.send(msg.managed_accounts(gw.accounts()))


def req_current_time(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    s.send(msg.current_time(int(gw.market.now().timestamp())))


def req_market_data_type(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    data_type = r.integer(1)
    if data_type not in (1, 2, 3, 4):
        s.error(-1, 321, f"Error validating request.-'59' : cause - market data type {data_type} is not 1-4")
        return
    s.market_data_type = data_type


def req_positions(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    s.subs.positions = True
    for symbol, pos in sorted(gw.account.positions.items()):
        stock = gw.book.get(symbol)
        if stock is not None and pos.quantity:
            s.send(msg.position(gw.config.account, stock, pos.quantity, pos.avg_cost))
    s.send(msg.position_end())


def cancel_positions(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    s.subs.positions = False


def req_positions_multi(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    req_id = r.integer()
    for symbol, pos in sorted(gw.account.positions.items()):
        stock = gw.book.get(symbol)
        if stock is not None and pos.quantity:
            s.send(msg.position_multi(req_id, gw.config.account, stock, pos.quantity, pos.avg_cost))
    s.send(msg.position_multi_end(req_id))


def _noop(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    """Requests that need no answer here (cancel of a one-shot multi request, auto-open-orders binding)."""


def req_account_updates(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    subscribe = r.flag()
    account = r.text() or gw.config.account
    if not subscribe:
        s.subs.account_updates = False
        return
    if account not in gw.accounts():
        s.error(-1, 321, f"Error validating request.-'6' : cause - unknown account {account}")
        return
    s.subs.account_updates = True
    for tag, value, currency in gw.account_rows():
        s.send(msg.account_value(tag, value, currency, gw.config.account))
    for symbol, pos, price, value, unrealized in gw.account.portfolio(gw.market.prices()):
        stock = gw.book.get(symbol)
        if stock is not None and pos.quantity:
            s.send(
                msg.portfolio_value(
                    stock,
                    pos.quantity,
                    price,
                    value,
                    pos.avg_cost,
                    unrealized,
                    gw.account.realized_pnl,
                    gw.config.account,
                )
            )
    s.send(msg.account_time(gw.market.now()))
    s.send(msg.account_download_end(gw.config.account))


def req_account_updates_multi(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    req_id = r.integer()
    account = r.text() or gw.config.account
    if account not in gw.accounts():
        s.error(req_id, 321, f"Error validating request.-'76' : cause - unknown account {account}")
        return
    s.subs.account_multi.add(req_id)
    for tag, value, currency in gw.account_rows():
        s.send(msg.account_update_multi(req_id, gw.config.account, tag, value, currency))
    s.send(msg.account_update_multi_end(req_id))


def cancel_account_updates_multi(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    s.subs.account_multi.discard(r.integer())


def req_account_summary(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    req_id = r.integer()
    r.skip()  # group name ("All")
    tags = {t.strip() for t in r.text().split(",") if t.strip()}
    s.subs.account_summary[req_id] = ",".join(sorted(tags))
    for tag, value, currency in gw.account_rows():
        if not tags or tag in tags:
            s.send(msg.account_summary(req_id, gw.config.account, tag, value, currency))
    s.send(msg.account_summary_end(req_id))


def cancel_account_summary(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    s.subs.account_summary.pop(r.integer(), None)


# -- orders ----------------------------------------------------------------------------------------


def place_order(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    gw.desk.place(s, msg.parse_place_order(list(r.fields), s.version))


def cancel_order(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    gw.desk.cancel(s, r.integer())


def req_global_cancel(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    gw.desk.cancel_all()


def _send_open_orders(gw: SimGateway, s: ClientSession, client_id: int | None) -> None:
    for order in gw.account.open_orders(client_id):
        stock = gw.book.get(order.symbol)
        if stock is not None:
            s.send(msg.open_order(s.version, order, stock))
            s.send(msg.order_status(order))
    s.send(msg.open_order_end())


def req_open_orders(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    # Client 0 is TWS's "master" view in spirit: it sees every client's orders.
    _send_open_orders(gw, s, None if s.client_id == 0 else s.client_id)


def req_all_open_orders(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    _send_open_orders(gw, s, None)


def req_completed_orders(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    for order in gw.account.completed_orders():
        stock = gw.book.get(order.symbol)
        if stock is not None:
            s.send(msg.completed_order(s.version, order, stock))
    s.send(msg.completed_orders_end())


def req_executions(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()  # version 3
    req_id = r.integer()
    client_id = r.integer()
    account = r.text()
    since = _parse_ib_time(r.text())
    symbol = r.text()
    r.skip(2)  # secType, exchange
    side = r.text()
    for ex in gw.account.executions_matching(
        client_id=client_id, account=account, since=since, symbol=symbol, side=side
    ):
        stock = gw.book.get(ex.symbol)
        if stock is not None:
            s.send(msg.exec_details(s.version, req_id, ex, stock))
            s.send(msg.commission_report(ex))
    s.send(msg.exec_details_end(req_id))


# -- contracts -------------------------------------------------------------------------------------


def req_contract_details(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()  # version 8
    req_id = r.integer()
    contract = ContractRequest.read(r)
    stock = gw.book.resolve(contract)
    if stock is None:
        s.error(req_id, 200, NO_SECURITY)
        return
    exchange = contract.exchange or stock.exchange
    s.send(msg.contract_details(s.version, req_id, stock, exchange, _trading_hours(gw.market.now())))
    s.send(msg.contract_details_end(req_id))


def _trading_hours(now: dt.datetime) -> str:
    """Regular hours of the next five weekdays in IB's ``yyyymmdd:hhmm-yyyymmdd:hhmm;`` form (US/Eastern)."""
    day = now.astimezone(zoneinfo.ZoneInfo("America/New_York")).date()
    parts = []
    while len(parts) < 5:
        if day.weekday() < 5:
            parts.append(f"{day:%Y%m%d}:0930-{day:%Y%m%d}:1600")
        day += dt.timedelta(days=1)
    return ";".join(parts)


# -- market data -----------------------------------------------------------------------------------


def req_mkt_data(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()  # version 11
    req_id = r.integer()
    contract = ContractRequest.read(r)
    if contract.sec_type.upper() == "BAG":
        s.error(req_id, 321, "Error validating request.-'1' : cause - combo market data is not simulated")
        return
    if r.flag():  # delta-neutral contract
        r.skip(3)
    r.skip()  # genericTickList
    snapshot = r.flag()
    stock = gw.book.resolve(contract)
    if stock is None:
        s.error(req_id, 200, NO_SECURITY)
        return
    s.send(msg.market_data_type(req_id, s.market_data_type))
    s.send(msg.tick_req_params(req_id, 0.01, "9c0001", 3))
    _send_ticks(gw, s, req_id, stock.symbol)
    if snapshot:
        s.send(msg.tick_snapshot_end(req_id))
    else:
        s.subs.market_data[req_id] = stock.symbol


def cancel_mkt_data(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    s.subs.market_data.pop(r.integer(), None)


def _send_ticks(gw: SimGateway, s: ClientSession, req_id: int, symbol: str) -> None:
    quote = gw.market.quote(symbol, gw.config.spread_bps)
    if quote is None:
        return
    bid, last, ask = quote
    bid_t, ask_t, last_t, close_t, bid_size_t, ask_size_t, last_size_t, volume_t = (
        _TICKS_DELAYED if s.market_data_type in (3, 4) else _TICKS_LIVE
    )
    bar = gw.market.current_bar(symbol)
    volume = bar.event.volume if bar is not None and bar.event.volume is not None else 0.0
    s.send(msg.tick_price(req_id, bid_t, bid, QUOTE_SIZE))
    s.send(msg.tick_size(req_id, bid_size_t, QUOTE_SIZE))
    s.send(msg.tick_price(req_id, ask_t, ask, QUOTE_SIZE))
    s.send(msg.tick_size(req_id, ask_size_t, QUOTE_SIZE))
    s.send(msg.tick_price(req_id, last_t, last, max(volume, 1.0)))
    s.send(msg.tick_size(req_id, last_size_t, max(volume, 1.0)))
    s.send(msg.tick_price(req_id, close_t, gw.market.previous_close(symbol) or last, 0.0))
    s.send(msg.tick_size(req_id, volume_t, volume))


def req_real_time_bars(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()  # version 3
    req_id = r.integer()
    stock = gw.book.resolve(ContractRequest.read(r))
    if stock is None:
        s.error(req_id, 200, NO_SECURITY)
        return
    s.subs.realtime_bars[req_id] = stock.symbol


def cancel_real_time_bars(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    s.subs.realtime_bars.pop(r.integer(), None)


def publish_market(gw: SimGateway, step: Step) -> None:
    """A market move reaches every client subscribed to the symbol: ticks, a real-time bar, and for
    keepUpToDate historical requests at the replay interval, a bar update.

    Real-time bars are the market events themselves (one per replayed bar, or per set price), stamped with
    the event's start floored to 5 s; they are not resampled into 5-second slices of the replayed bar. A bar
    marked with :meth:`SimGateway.skip_realtime_bar` is not sent as a real-time bar (its ticks still are).
    """
    event = step.event
    epoch = int(step.time.timestamp())
    if (step.symbol, epoch) in gw.skipped_realtime:
        gw.events.bump("realtime_skipped")  # a fault injected by SimGateway.skip_realtime_bar
    for s in gw.ready_sessions():
        for req_id, symbol in list(s.subs.market_data.items()):
            if symbol == step.symbol:
                _send_ticks(gw, s, req_id, symbol)
        for req_id, symbol in list(s.subs.realtime_bars.items()):
            if symbol == step.symbol and (symbol, epoch) not in gw.skipped_realtime:
                s.send(
                    msg.realtime_bar(
                        req_id,
                        epoch - epoch % 5,
                        event.open,
                        event.high,
                        event.low,
                        event.close,
                        event.volume or 0.0,
                        step.vwap,
                        step.trades,
                    )
                )
        for req_id, symbol in list(s.subs.history_updates.items()):
            if symbol == step.symbol:
                date = _bar_date(step.time, gw.config.interval, 1)
                s.send(
                    msg.historical_data_update(
                        req_id,
                        date,
                        event.open,
                        event.high,
                        event.low,
                        event.close,
                        event.volume or 0.0,
                        step.vwap,
                        step.trades,
                    )
                )


# -- historical data -------------------------------------------------------------------------------


def req_historical_data(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    req_id = r.integer()
    contract = ContractRequest.read(r)
    r.skip()  # includeExpired
    end_text = r.text()
    bar_size = r.text().strip()
    duration = r.text()
    r.skip()  # useRTH: the stored bars are what they are
    what = r.text().upper()
    format_date = r.integer(1)
    keep_up_to_date = False
    if contract.sec_type.upper() != "BAG":
        keep_up_to_date = r.flag() if len(r) else False
    stock = gw.book.resolve(contract)
    if stock is None:
        s.error(req_id, 200, NO_SECURITY)
        return
    interval = BAR_SIZES.get(bar_size.lower())
    gw.events.bump("history_requests")
    problem = ""
    if gw.history_refused:
        problem = "HMDS query refused: historical data is switched off (simulated outage)"
    elif interval is None:
        problem = f"Bar size {bar_size!r} is not served (use {', '.join(sorted(set(BAR_SIZES)))})"
    elif what not in HISTORY_SOURCES:
        problem = f"whatToShow {what!r} is not served (use {', '.join(sorted(HISTORY_SOURCES))})"
    elif gw.store is None:
        problem = "HMDS query returned no data: the simulated gateway has no bar store"
    if problem:
        s.error(req_id, 162, f"Historical Market Data Service error message:{problem}")
        return
    try:
        end = min(_parse_ib_time(end_text) or gw.market.now(), gw.market.now())
        seconds = _duration_seconds(duration)
    except ValueError as exc:
        s.error(req_id, 321, f"Error validating request.-'20' : cause - {exc}")
        return
    start = end - dt.timedelta(seconds=seconds)
    assert interval is not None
    task = asyncio.get_running_loop().create_task(
        _serve_history(gw, s, req_id, stock, interval, start, end, format_date, keep_up_to_date)
    )
    gw.background(task)


async def _serve_history(
    gw: SimGateway,
    s: ClientSession,
    req_id: int,
    stock: Stock,
    interval: str,
    start: dt.datetime,
    end: dt.datetime,
    format_date: int,
    keep_up_to_date: bool,
) -> None:
    try:
        bars = await asyncio.get_running_loop().run_in_executor(
            None, _read_history, gw.store, stock.symbol, interval, start, end
        )
    except TraderError as exc:
        s.error(
            req_id, 162, f"Historical Market Data Service error message:HMDS query returned no data: {exc}"
        )
        return
    except Exception:  # logged at ERROR; the client gets an answer instead of waiting for its timeout
        log.exception("historical request %s of %s failed inside the simulated gateway", req_id, s)
        s.error(req_id, 162, "Historical Market Data Service error message:internal error of the simulator")
        return
    if bars.is_empty():
        s.error(
            req_id,
            162,
            f"Historical Market Data Service error message:HMDS query returned no data: "
            f"{stock.symbol}@SMART Trades",
        )
        return
    rows: list[msg.HistoryRow] = []
    for ts, o, h, low, c, v, wap, count in bars.select(
        "ts", "open", "high", "low", "close", "volume", "wap", "count"
    ).iter_rows():
        rows.append((_bar_date(ts, interval, format_date), o, h, low, c, v, wap, count))
    s.send(msg.historical_data(req_id, msg.ib_time(start), msg.ib_time(end), rows))
    if keep_up_to_date and interval == gw.config.interval:
        s.subs.history_updates[req_id] = stock.symbol


def cancel_historical_data(gw: SimGateway, s: ClientSession, r: FieldReader) -> None:
    r.skip()
    s.subs.history_updates.pop(r.integer(), None)


def _read_history(
    store: object, symbol: str, interval: str, start: dt.datetime, end: dt.datetime
) -> pl.DataFrame:
    """Bars of ``symbol`` in [start, end) at ``interval``, resampled from 1m bars when the store has none."""
    from trader.data.store import BarStore

    assert isinstance(store, BarStore)
    try:
        bars = store.read_bars([symbol], interval, start, end)
    except TraderError:
        if interval == "1m":
            raise
        minutes = store.read_bars([symbol], "1m", start, end)
        bars = (
            minutes.sort("ts")
            .group_by_dynamic("ts", every=interval, label="left")
            .agg(
                pl.col("open").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").last(),
                pl.col("volume").sum(),
                ((pl.col("close") * pl.col("volume")).sum() / pl.col("volume").sum()).alias("vwap"),
                pl.len().cast(pl.Int64).alias("trades"),
            )
        )
    wap = (
        pl.col("vwap").fill_nan(None).fill_null((pl.col("high") + pl.col("low") + pl.col("close")) / 3)
        if "vwap" in bars.columns
        else (pl.col("high") + pl.col("low") + pl.col("close")) / 3
    )
    count = pl.col("trades").fill_null(0) if "trades" in bars.columns else pl.lit(0)
    return bars.sort("ts").with_columns(wap.alias("wap"), count.cast(pl.Int64).alias("count"))


def _bar_date(ts: dt.datetime, interval: str, format_date: int) -> str:
    """A bar's date as IB writes it: ``yyyymmdd`` for daily bars; intraday ``yyyymmdd hh:mm:ss UTC``
    (formatDate 1) or epoch seconds (formatDate 2)."""
    if interval == "1d":
        return f"{ts:%Y%m%d}"
    if format_date == 2:
        return str(int(ts.timestamp()))
    return ts.astimezone(dt.UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


def _parse_ib_time(text: str) -> dt.datetime | None:
    """``yyyymmdd hh:mm:ss [zone]``, ``yyyymmdd-hh:mm:ss`` or ``yyyymmdd`` (no zone: UTC); '' -> None."""
    text = text.strip()
    if not text:
        return None
    zone: dt.tzinfo = dt.UTC
    parts = text.replace("-", " ").split()
    if len(parts) >= 3:
        try:
            zone = zoneinfo.ZoneInfo(parts[2])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {parts[2]!r} in {text!r}") from exc
    try:
        if len(parts) == 1:
            naive = dt.datetime.strptime(parts[0], "%Y%m%d")
        else:
            naive = dt.datetime.strptime(parts[0] + " " + parts[1], "%Y%m%d %H:%M:%S")
    except ValueError as exc:
        raise ValueError(f"bad date/time {text!r}; use yyyymmdd hh:mm:ss [zone]") from exc
    return naive.replace(tzinfo=zone).astimezone(dt.UTC)


def _duration_seconds(text: str) -> int:
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"bad duration {text!r}; use '<n> S|D|W|M|Y', e.g. '2 D'")
    return int(match.group(1)) * _DURATION_UNIT[match.group(2).upper()]


HANDLERS: Final[dict[int, Handler]] = {
    In.REQ_MKT_DATA: req_mkt_data,
    In.CANCEL_MKT_DATA: cancel_mkt_data,
    In.PLACE_ORDER: place_order,
    In.CANCEL_ORDER: cancel_order,
    In.REQ_OPEN_ORDERS: req_open_orders,
    In.REQ_ACCOUNT_UPDATES: req_account_updates,
    In.REQ_EXECUTIONS: req_executions,
    In.REQ_IDS: req_ids,
    In.REQ_CONTRACT_DETAILS: req_contract_details,
    In.REQ_AUTO_OPEN_ORDERS: _noop,
    In.REQ_ALL_OPEN_ORDERS: req_all_open_orders,
    In.REQ_MANAGED_ACCTS: req_managed_accts,
    In.REQ_HISTORICAL_DATA: req_historical_data,
    In.CANCEL_HISTORICAL_DATA: cancel_historical_data,
    In.REQ_CURRENT_TIME: req_current_time,
    In.REQ_REAL_TIME_BARS: req_real_time_bars,
    In.CANCEL_REAL_TIME_BARS: cancel_real_time_bars,
    In.REQ_GLOBAL_CANCEL: req_global_cancel,
    In.REQ_MARKET_DATA_TYPE: req_market_data_type,
    In.REQ_POSITIONS: req_positions,
    In.REQ_ACCOUNT_SUMMARY: req_account_summary,
    In.CANCEL_ACCOUNT_SUMMARY: cancel_account_summary,
    In.CANCEL_POSITIONS: cancel_positions,
    In.START_API: start_api,
    In.REQ_POSITIONS_MULTI: req_positions_multi,
    In.CANCEL_POSITIONS_MULTI: _noop,
    In.REQ_ACCOUNT_UPDATES_MULTI: req_account_updates_multi,
    In.CANCEL_ACCOUNT_UPDATES_MULTI: cancel_account_updates_multi,
    In.REQ_COMPLETED_ORDERS: req_completed_orders,
}
