"""TWS API message ids and the field layouts the simulated gateway reads and writes.

Layouts follow what the real gateway writes at each *server version* (157-178), which is what ib_insync's and
ib_async's ``decoder.py`` read positionally (a message with missing fields is dropped by the client with
"Error handling fields"). Each builder returns the list of field values of one message; the session frames
it with :func:`trader.ibsim.protocol.encode_message`. Version-dependent fields are noted where they occur:

==========  =====================  ========================================================================
id (out)    message                fields after the id
==========  =====================  ========================================================================
1           tickPrice              6, reqId, tickType, price, size, attrMask
2           tickSize               6, reqId, tickType, size
3           orderStatus            orderId, status, filled, remaining, avgFillPrice, permId, parentId,
                                   lastFillPrice, clientId, whyHeld, mktCapPrice
4           error                  2, reqId, code, text, [>=166: advancedOrderRejectJson]
5           openOrder              see :func:`open_order` (faProfile <177; duration >=158; postToAts
                                   >=160; autoCancelParent >=162; 5 peg fields >=170)
6           updateAccountValue     2, tag, value, currency, account
7           updatePortfolio        8, contract(11 incl. primaryExchange), position, marketPrice,
                                   marketValue, averageCost, unrealizedPNL, realizedPNL, account
8           updateAccountTime      1, HH:MM
9           nextValidId            1, orderId
10          contractDetails        [<164: 8,] reqId, ... see :func:`contract_details`
11          execDetails            reqId, orderId, contract(11), execId, time, account, exchange, side,
                                   shares, price, permId, clientId, liquidation, cumQty, avgPrice,
                                   orderRef, evRule, evMultiplier, modelCode, lastLiquidity,
                                   [>=178: pendingPriceRevision]
15          managedAccounts        1, comma-separated accounts
17          historicalData         reqId, start, end, n, n x (date, o, h, l, c, volume, wap, count)
49          currentTime            1, epoch seconds
50          realtimeBar            3, reqId, epoch, o, h, l, c, volume, wap, count
52/53/54    ...End                 1, reqId / 1 / 1, account
55          execDetailsEnd         1, reqId
57          tickSnapshotEnd        1, reqId
58          marketDataType         1, reqId, type (1 live, 2 frozen, 3 delayed, 4 delayed frozen)
59          commissionReport       1, execId, commission, currency, realizedPNL, yield, redemptionDate
61/62       position / End         3, account, contract(11), position, avgCost / 1
63/64       accountSummary / End   1, reqId, account, tag, value, currency / 1, reqId
71/72       positionMulti / End    1, reqId, account, contract(11), position, avgCost, modelCode / 1, reqId
73/74       accountUpdateMulti     1, reqId, account, modelCode, tag, value, currency / 1, reqId
81          tickReqParams          reqId, minTick, bboExchange, snapshotPermissions
90          historicalDataUpdate   reqId, barCount, date, o, c, h, l, wap, volume
101/102     completedOrder / End   see :func:`completed_order` / (no fields)
==========  =====================  ========================================================================

"contract(11)" is conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange (or
primaryExchange in updatePortfolio), currency, localSymbol, tradingClass.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from trader.ibsim.account import SimExecution, SimOrder
from trader.ibsim.contracts import ContractRequest, Stock
from trader.ibsim.protocol import UNSET_DOUBLE, UNSET_DOUBLE_TEXT, FieldReader

Fields = list[object]


class In(IntEnum):
    """Ids of the messages a client sends (ib_insync ``client.py``)."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DETAILS = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_HISTORICAL_DATA = 20
    CANCEL_HISTORICAL_DATA = 25
    REQ_CURRENT_TIME = 49
    REQ_REAL_TIME_BARS = 50
    CANCEL_REAL_TIME_BARS = 51
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_POSITIONS_MULTI = 74
    CANCEL_POSITIONS_MULTI = 75
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_COMPLETED_ORDERS = 99


class Out(IntEnum):
    """Ids of the messages the gateway sends (ib_insync ``decoder.py``)."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERROR = 4
    OPEN_ORDER = 5
    ACCOUNT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCOUNT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DETAILS = 10
    EXEC_DETAILS = 11
    MANAGED_ACCOUNTS = 15
    HISTORICAL_DATA = 17
    TICK_STRING = 46
    CURRENT_TIME = 49
    REAL_TIME_BAR = 50
    CONTRACT_DETAILS_END = 52
    OPEN_ORDER_END = 53
    ACCOUNT_DOWNLOAD_END = 54
    EXEC_DETAILS_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    POSITION_MULTI = 71
    POSITION_MULTI_END = 72
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    TICK_REQ_PARAMS = 81
    HISTORICAL_DATA_UPDATE = 90
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


# Incoming messages whose request id is the first field (no message version); the rest of the requests
# that carry an id have it after the version. Used to address error 321 for requests we do not serve.
REQ_ID_FIRST: Final = frozenset(
    {20, 22, 78, 79, 81, 83, 84, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98}
)
REQ_ID_AFTER_VERSION: Final = frozenset(
    {1, 2, 9, 10, 11, 21, 25, 50, 51, 52, 53, 54, 55, 56, 57, 62, 63, 67, 68, 69, 70, 74, 75, 76, 77}
)

# Server versions at which layouts change (names as in IB's ibapi/server_versions.py).
V_DURATION: Final = 158
V_POST_TO_ATS: Final = 160
V_AUTO_CANCEL_PARENT: Final = 162
V_SIZE_RULES: Final = 164
V_ADVANCED_ORDER_REJECT: Final = 166
V_MANUAL_ORDER_TIME: Final = 169
V_PEGBEST_PEGMID_OFFSETS: Final = 170
V_BOND_ISSUERID: Final = 176
V_FA_PROFILE_DESUPPORT: Final = 177
V_PENDING_PRICE_REVISION: Final = 178

EXECUTION_EXCHANGE: Final = "ISLAND"


def qty(value: float) -> str:
    """A share quantity as the gateway prints Decimals: ``100`` not ``100.0``.

    >>> qty(100.0), qty(0.5)
    ('100', '0.5')
    """
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def price_or_zero(value: float | None) -> float:
    return 0.0 if value is None else value


def ib_time(when: dt.datetime) -> str:
    """``yyyymmdd hh:mm:ss UTC``: the explicit-zone form both clients parse into an aware datetime."""
    return when.astimezone(dt.UTC).strftime("%Y%m%d %H:%M:%S") + " UTC"


def _contract11(stock: Stock, exchange: str) -> Fields:
    return [
        stock.con_id,
        stock.symbol,
        "STK",
        "",
        0.0,
        "",
        "",
        exchange,
        stock.currency,
        stock.local_symbol,
        stock.trading_class,
    ]


# -- connection ------------------------------------------------------------------------------------


def next_valid_id(order_id: int) -> Fields:
    return [Out.NEXT_VALID_ID, 1, order_id]


def managed_accounts(accounts: list[str]) -> Fields:
    return [Out.MANAGED_ACCOUNTS, 1, ",".join(accounts)]


def current_time(epoch: int) -> Fields:
    return [Out.CURRENT_TIME, 1, epoch]


def error(version: int, req_id: int, code: int, text: str, advanced: str = "") -> Fields:
    """Error / warning / notice ``code`` for request ``req_id`` (-1 = not about a request)."""
    fields: Fields = [Out.ERROR, 2, req_id, code, text]
    if version >= V_ADVANCED_ORDER_REJECT:
        fields.append(advanced)
    return fields


# -- orders ----------------------------------------------------------------------------------------


def order_status(order: SimOrder, status: str | None = None) -> Fields:
    return [
        Out.ORDER_STATUS,
        order.order_id,
        status or order.status,
        qty(order.filled),
        qty(order.remaining),
        order.avg_fill_price,
        order.perm_id,
        order.parent_id,
        order.last_fill_price,
        order.client_id,
        order.why_held,
        0.0,
    ]


@dataclass(frozen=True)
class WhatIf:
    """Margin and commission figures of a what-if order (strings as the gateway sends them)."""

    init_margin_before: str
    maint_margin_before: str
    equity_with_loan_before: str
    init_margin_change: str
    maint_margin_change: str
    equity_with_loan_change: str
    init_margin_after: str
    maint_margin_after: str
    equity_with_loan_after: str
    commission: float


def open_order(version: int, order: SimOrder, stock: Stock, what_if: WhatIf | None = None) -> Fields:
    """openOrder (5) for a STK order without combo legs, conditions, algo or delta-neutral parts."""
    lmt = price_or_zero(order.lmt_price)
    aux = price_or_zero(order.aux_price)
    f: Fields = [Out.OPEN_ORDER, order.order_id, *_contract11(stock, stock.exchange)]
    f += [
        order.action,
        qty(order.quantity),
        order.order_type,
        lmt,
        aux,
        order.tif,
        order.oca_group,
        order.account,
        "O",
        0,
        order.order_ref,
        order.client_id,
        order.perm_id,
        order.outside_rth,
        False,
        0.0,
        "",
        "",
    ]  # ... hidden, discretionaryAmt, goodAfterTime, sharesAllocation
    f += ["", "", ""]  # faGroup, faMethod, faPercentage
    if version < V_FA_PROFILE_DESUPPORT:
        f.append("")  # faProfile
    f += ["", "", "", "", "", 0, "", -1]  # modelCode goodTillDate rule80A percentOffset settlingFirm
    #                                     shortSaleSlot designatedLocation exemptCode
    f += [0, "", "", "", "", "", 0, False, False, False, "", 3]  # auctionStrategy startingPrice stockRefPrice
    # delta stockRangeLower stockRangeUpper displaySize blockOrder sweepToFill allOrNone minQty ocaType
    f += [False, False, "", order.parent_id, 0, "", "", "", ""]  # eTradeOnly firmQuoteOnly nbboPriceCap
    # parentId triggerMethod volatility volatilityType deltaNeutralOrderType deltaNeutralAuxPrice
    f += [False, "", "", "", "", "", ""]  # continuousUpdate referencePriceType trailStopPrice trailingPercent
    # basisPoints basisPointsType comboLegsDescrip
    f += [0, 0, 0]  # combo legs, order combo legs, smart combo routing params
    f += ["", "", ""]  # scaleInitLevelSize scaleSubsLevelSize scalePriceIncrement (unset: no scale block)
    f += [""]  # hedgeType (empty: no hedgeParam)
    f += [False, "", "IB", False, False]  # optOutSmartRouting clearingAccount clearingIntent notHeld dnc
    f += [""]  # algoStrategy (empty: no params)
    f += [False, what_if is not None, order.status]  # solicited whatIf status
    if what_if is None:
        f += [UNSET_DOUBLE_TEXT] * 9 + [UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE, ""]
    else:
        w = what_if
        f += [
            w.init_margin_before,
            w.maint_margin_before,
            w.equity_with_loan_before,
            w.init_margin_change,
            w.maint_margin_change,
            w.equity_with_loan_change,
            w.init_margin_after,
            w.maint_margin_after,
            w.equity_with_loan_after,
            w.commission,
            UNSET_DOUBLE,
            UNSET_DOUBLE,
            "USD",
        ]
    f += ["", False, False]  # warningText randomizeSize randomizePrice
    f += [0]  # conditions
    f += ["None", "", "", "", "", "", "", 0]  # adjustedOrderType triggerPrice trailStopPrice lmtPriceOffset
    # adjustedStopPrice adjustedStopLimitPrice adjustedTrailingAmount adjustableTrailingUnit
    f += ["", "", "", "", False, False, False, False]  # softDollarTier name/val/displayName cashQty
    # dontUseAutoPriceForHedge isOmsContainer discretionaryUpToLimitPrice usePriceMgmtAlgo
    if version >= V_DURATION:
        f.append("")  # duration
    if version >= V_POST_TO_ATS:
        f.append("")  # postToAts
    if version >= V_AUTO_CANCEL_PARENT:
        f.append(False)  # autoCancelParent
    if version >= V_PEGBEST_PEGMID_OFFSETS:
        f += ["", "", "", "", ""]  # minTradeQty minCompeteSize competeAgainstBestOffset midOffsetAtWhole/Half
    return f


def open_order_end() -> Fields:
    return [Out.OPEN_ORDER_END, 1]


def completed_order(version: int, order: SimOrder, stock: Stock) -> Fields:
    """completedOrder (101): a Filled, Cancelled or rejected (Inactive) order, without its order id."""
    status = order.status if order.status != "Inactive" else "Cancelled"
    done = order.completed_at or order.submitted_at
    f: Fields = [Out.COMPLETED_ORDER, *_contract11(stock, stock.exchange)]
    f += [
        order.action,
        qty(order.quantity),
        order.order_type,
        price_or_zero(order.lmt_price),
        price_or_zero(order.aux_price),
        order.tif,
        order.oca_group,
        order.account,
        "O",
        0,
        order.order_ref,
        order.perm_id,
        order.outside_rth,
        False,
        0.0,
        "",
    ]  # ... hidden discretionaryAmt goodAfterTime
    f += ["", "", ""]  # faGroup faMethod faPercentage
    if version < V_FA_PROFILE_DESUPPORT:
        f.append("")  # faProfile
    f += ["", "", "", "", "", 0, "", -1]  # modelCode goodTillDate rule80A percentOffset settlingFirm
    # shortSaleSlot designatedLocation exemptCode
    f += ["", "", "", "", "", 0, False, False, "", 3, 0, "", "", "", ""]  # startingPrice stockRefPrice delta
    # stockRangeLower stockRangeUpper displaySize sweepToFill allOrNone minQty ocaType triggerMethod
    # volatility volatilityType deltaNeutralOrderType deltaNeutralAuxPrice
    f += [False, "", "", "", ""]  # continuousUpdate referencePriceType trailStopPrice trailingPercent
    # comboLegsDescrip
    f += [0, 0, 0]  # combo legs, order combo legs, smart combo routing params
    f += ["", "", ""]  # scaleInitLevelSize scaleSubsLevelSize scalePriceIncrement
    f += [""]  # hedgeType
    f += ["", "IB", False, False]  # clearingAccount clearingIntent notHeld dnc
    f += [""]  # algoStrategy
    f += [False, status, False, False]  # solicited status randomizeSize randomizePrice
    f += [0]  # conditions
    f += ["", "", "", False, False, "", qty(order.filled), 0, False, "", False, False, 0]  # trailStopPrice
    # lmtPriceOffset cashQty dontUseAutoPriceForHedge isOmsContainer autoCancelDate filledQuantity
    # refFuturesConId autoCancelParent shareholder imbalanceOnly routeMarketableToBbo parentPermId
    f += [done.astimezone(dt.UTC).strftime("%Y%m%d %H:%M:%S") + " UTC", order.reason or status]
    if version >= V_PEGBEST_PEGMID_OFFSETS:
        f += ["", "", "", "", ""]
    return f


def completed_orders_end() -> Fields:
    return [Out.COMPLETED_ORDERS_END]


def exec_details(version: int, req_id: int, ex: SimExecution, stock: Stock) -> Fields:
    f: Fields = [Out.EXEC_DETAILS, req_id, ex.order_id, *_contract11(stock, EXECUTION_EXCHANGE)]
    f += [
        ex.exec_id,
        ib_time(ex.time),
        ex.account,
        EXECUTION_EXCHANGE,
        ex.side,
        qty(ex.shares),
        ex.price,
        ex.perm_id,
        ex.client_id,
        0,
        qty(ex.cum_qty),
        ex.avg_price,
        ex.order_ref,
        "",
        "",
        "",
        2,
    ]
    if version >= V_PENDING_PRICE_REVISION:
        f.append(False)  # pendingPriceRevision
    return f


def exec_details_end(req_id: int) -> Fields:
    return [Out.EXEC_DETAILS_END, 1, req_id]


def commission_report(ex: SimExecution) -> Fields:
    realized = UNSET_DOUBLE if ex.realized_pnl is None else round(ex.realized_pnl, 6)
    return [Out.COMMISSION_REPORT, 1, ex.exec_id, ex.commission, "USD", realized, UNSET_DOUBLE, ""]


# -- account ---------------------------------------------------------------------------------------


def position(account: str, stock: Stock, quantity: float, avg_cost: float) -> Fields:
    return [Out.POSITION, 3, account, *_contract11(stock, stock.primary_exchange), qty(quantity), avg_cost]


def position_end() -> Fields:
    return [Out.POSITION_END, 1]


def position_multi(req_id: int, account: str, stock: Stock, quantity: float, avg_cost: float) -> Fields:
    return [
        Out.POSITION_MULTI,
        1,
        req_id,
        account,
        *_contract11(stock, stock.primary_exchange),
        qty(quantity),
        avg_cost,
        "",
    ]


def position_multi_end(req_id: int) -> Fields:
    return [Out.POSITION_MULTI_END, 1, req_id]


def account_value(tag: str, value: str, currency: str, account: str) -> Fields:
    return [Out.ACCOUNT_VALUE, 2, tag, value, currency, account]


def portfolio_value(
    stock: Stock,
    quantity: float,
    market_price: float,
    market_value: float,
    avg_cost: float,
    unrealized: float,
    realized: float,
    account: str,
) -> Fields:
    return [
        Out.PORTFOLIO_VALUE,
        8,
        *_contract11(stock, stock.primary_exchange),
        qty(quantity),
        market_price,
        market_value,
        avg_cost,
        unrealized,
        realized,
        account,
    ]


def account_time(when: dt.datetime) -> Fields:
    return [Out.ACCOUNT_UPDATE_TIME, 1, when.strftime("%H:%M")]


def account_download_end(account: str) -> Fields:
    return [Out.ACCOUNT_DOWNLOAD_END, 1, account]


def account_update_multi(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", tag, value, currency]


def account_update_multi_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> Fields:
    return [Out.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> Fields:
    return [Out.ACCOUNT_SUMMARY_END, 1, req_id]


# -- contracts and market data ---------------------------------------------------------------------


def contract_details(version: int, req_id: int, stock: Stock, exchange: str, trading_hours: str) -> Fields:
    """contractDetails (10) of a US stock."""
    f: Fields = [Out.CONTRACT_DETAILS]
    if version < V_SIZE_RULES:
        f.append(8)  # message version, dropped at 164
    f += [
        req_id,
        stock.symbol,
        "STK",
        "",
        0.0,
        "",
        exchange,
        stock.currency,
        stock.local_symbol,
        stock.trading_class,
        stock.trading_class,
        stock.con_id,
        0.01,
    ]  # ... marketName tradingClass
    if version < V_SIZE_RULES:
        f.append(1)  # mdSizeMultiplier
    f += [
        "",
        "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,LMT,MKT,STP,STPLMT,TRAIL",
        "SMART,ARCA,NYSE,NASDAQ,ISLAND",
        1,
        0,
        stock.symbol,
        stock.primary_exchange,
        "",
        "",
        "",
        "",
        "US/Eastern",
        trading_hours,
        trading_hours,
        "",
        "",
    ]
    # multiplier orderTypes validExchanges priceMagnifier underConId longName primaryExchange contractMonth
    # industry category subcategory timeZoneId tradingHours liquidHours evRule evMultiplier
    f += [0]  # secIdList
    f += [1, "", "", "26", "", "COMMON"]  # aggGroup underSymbol underSecType marketRuleIds
    # realExpirationDate stockType
    if version == V_SIZE_RULES - 1:
        f.append(1.0)  # suggestedSizeIncrement alone at 163
    if version >= V_SIZE_RULES:
        f += [1.0, 1.0, 100.0]  # minSize sizeIncrement suggestedSizeIncrement
    return f


def contract_details_end(req_id: int) -> Fields:
    return [Out.CONTRACT_DETAILS_END, 1, req_id]


HistoryRow = tuple[str, float, float, float, float, float, float, int]


def historical_data(req_id: int, start: str, end: str, rows: list[HistoryRow]) -> Fields:
    """historicalData (17): rows of (date, open, high, low, close, volume, wap, count)."""
    f: Fields = [Out.HISTORICAL_DATA, req_id, start, end, len(rows)]
    for date, o, h, low, c, v, wap, count in rows:
        f += [date, o, h, low, c, qty(v), wap, int(count)]
    return f


def historical_data_update(
    req_id: int, date: str, o: float, h: float, low: float, c: float, v: float, wap: float, count: int
) -> Fields:
    return [Out.HISTORICAL_DATA_UPDATE, req_id, count, date, o, c, h, low, wap, qty(v)]


def realtime_bar(
    req_id: int, epoch: int, o: float, h: float, low: float, c: float, v: float, wap: float, count: int
) -> Fields:
    return [Out.REAL_TIME_BAR, 3, req_id, epoch, o, h, low, c, qty(v), wap, count]


def tick_price(req_id: int, tick_type: int, price: float, size: float, attr_mask: int = 0) -> Fields:
    return [Out.TICK_PRICE, 6, req_id, tick_type, price, qty(size), attr_mask]


def tick_size(req_id: int, tick_type: int, size: float) -> Fields:
    return [Out.TICK_SIZE, 6, req_id, tick_type, qty(size)]


def tick_string(req_id: int, tick_type: int, value: str) -> Fields:
    return [Out.TICK_STRING, 6, req_id, tick_type, value]


def tick_req_params(req_id: int, min_tick: float, bbo_exchange: str, snapshot_permissions: int) -> Fields:
    return [Out.TICK_REQ_PARAMS, req_id, min_tick, bbo_exchange, snapshot_permissions]


def market_data_type(req_id: int, data_type: int) -> Fields:
    return [Out.MARKET_DATA_TYPE, 1, req_id, data_type]


def tick_snapshot_end(req_id: int) -> Fields:
    return [Out.TICK_SNAPSHOT_END, 1, req_id]


# -- incoming --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceOrder:
    """The parts of a placeOrder (3) message the simulator acts on."""

    order_id: int
    contract: ContractRequest
    action: str
    quantity: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    what_if: bool


def parse_place_order(fields: list[str], version: int) -> PlaceOrder:
    """Read placeOrder as ib_insync / ib_async write it (no message version since server version 145).

    Layout: id, orderId, contract(12), secIdType, secId, action, totalQuantity, orderType, lmtPrice, auxPrice,
    tif, ocaGroup, account, openClose, origin, orderRef, transmit, parentId, blockOrder, sweepToFill,
    displaySize, triggerMethod, outsideRth, hidden, [BAG legs], "", discretionaryAmt, goodAfterTime,
    goodTillDate, faGroup, faMethod, faPercentage, [faProfile < 177], modelCode, ... whatIf (walked below).
    """
    r = FieldReader(fields, 1)
    order_id = r.integer()
    contract = ContractRequest.read(r)
    r.skip(2)  # secIdType, secId
    action = r.text().upper()
    quantity = r.number(0.0) or 0.0
    order_type = r.text().upper()
    lmt_price = r.number()
    aux_price = r.number()
    tif = r.text() or "DAY"
    oca_group = r.text()
    account = r.text()
    r.skip(2)  # openClose, origin
    order_ref = r.text()
    transmit = r.flag()
    parent_id = r.integer()
    r.skip(4)  # blockOrder, sweepToFill, displaySize, triggerMethod
    outside_rth = r.flag()
    r.skip(1)  # hidden
    what_if = _walk_to_what_if(r, contract.sec_type, version)
    return PlaceOrder(
        order_id,
        contract,
        action,
        quantity,
        order_type,
        lmt_price,
        aux_price,
        tif,
        oca_group,
        account,
        order_ref,
        transmit,
        parent_id,
        outside_rth,
        what_if,
    )


def _walk_to_what_if(r: FieldReader, sec_type: str, version: int) -> bool:
    """Skip the variable middle of placeOrder and read its whatIf flag (False if the message is short)."""
    try:
        if sec_type.upper() == "BAG":
            r.skip(8 * r.integer())
            r.skip(r.integer())
            r.skip(2 * r.integer())
        r.skip(7)  # "", discretionaryAmt, goodAfterTime, goodTillDate, faGroup, faMethod, faPercentage
        if version < V_FA_PROFILE_DESUPPORT:
            r.skip(1)  # faProfile
        # modelCode shortSaleSlot designatedLocation exemptCode ocaType rule80A settlingFirm allOrNone minQty
        # percentOffset eTradeOnly firmQuoteOnly nbboPriceCap auctionStrategy startingPrice stockRefPrice
        # delta stockRangeLower stockRangeUpper overridePercentageConstraints volatility volatilityType
        r.skip(22)
        if r.text():  # deltaNeutralOrderType
            r.skip(1 + 8)
        else:
            r.skip(1)  # deltaNeutralAuxPrice
        r.skip(
            6
        )  # continuousUpdate referencePriceType trailStopPrice trailingPercent scaleInit/SubsLevelSize
        increment = r.number()
        if increment is not None and 0 < increment < UNSET_DOUBLE:
            r.skip(7)
        r.skip(3)  # scaleTable activeStartTime activeStopTime
        if r.text():  # hedgeType
            r.skip(1)
        r.skip(4)  # optOutSmartRouting clearingAccount clearingIntent notHeld
        if r.flag():  # delta-neutral contract
            r.skip(3)
        if r.text():  # algoStrategy
            r.skip(2 * r.integer())
        r.skip(1)  # algoId
        return r.flag()
    except Exception:  # a short or odd message: treat as a plain order, the fields we act on are read
        return False
