"""The numba portfolio kernel: target weights in, trades, cash, positions and equity out.

Call it through :func:`trader.sim.simulate`, which checks and converts the inputs; the contract (timing,
fills, costs, risk rules) is stated there. This module holds the compiled loop and the commission formula.

numba caches compiled code per source file (``cache=True``; the Makefile points ``NUMBA_CACHE_DIR`` at
``.numba_cache``). The cache of :func:`simulate_kernel` is keyed on *this* file only: after editing a rule in
``trader/risk.py`` alone, clear the cache (``make clean``) or touch this file, or an old build is reused.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numba import njit

from trader.risk import (
    CAP_TOLERANCE,
    N_RULES,
    RULE_DAILY_LOSS,
    RULE_MAX_BUYING_POWER,
    RULE_MAX_DRAWDOWN,
    RULE_MAX_GROSS_LEVERAGE,
    RULE_MAX_OPEN_POSITIONS,
    RULE_MAX_PER_SYMBOL,
    RULE_MAX_PER_TRADE,
    RULE_MAX_POSITION,
    RULE_STOP_LOSS,
    RULE_VOL_TARGET,
    cap_abs,
    daily_loss_hit,
    drawdown_hit,
    gross_exposure,
    keep_largest,
    stop_hit,
    vol_target_scale,
)

__all__ = [
    "REASON_DAILY_LOSS",
    "REASON_DRIFT",
    "REASON_KILL_SWITCH",
    "REASON_SIGNAL",
    "REASON_STOP_LOSS",
    "TRADE_REASONS",
    "commission",
    "simulate_batch_kernel",
    "simulate_kernel",
]

# Why a trade happened; TRADE_REASONS[code] is the name shown in SimResult.trades.
REASON_SIGNAL: Final = 0  # the (risk-scaled) target weight changed
REASON_DRIFT: Final = 1  # rebalance_threshold: the held weight drifted from the target
REASON_STOP_LOSS: Final = 2
REASON_DAILY_LOSS: Final = 3
REASON_KILL_SWITCH: Final = 4
TRADE_REASONS: Final = ("signal", "rebalance", "stop_loss", "daily_loss", "kill_switch")

# Columns of the kernel's trade and event buffers (float64; the integer columns hold exact small integers).
TRADE_COLUMNS: Final = ("bar", "symbol", "qty", "price", "commission", "reason")
EVENT_COLUMNS: Final = ("bar", "symbol", "rule", "detail")


@njit(cache=True)
def commission(
    qty: float, price: float, commission_bps: float, commission_per_share: float, min_commission: float
) -> float:
    """Commission of one fill, account currency: ``max(min, bps/1e4 * |qty * price| + per_share * |qty|)``.

    ``price`` is the fill price (slippage included); a zero ``qty`` costs nothing (no minimum).

    >>> commission(100.0, 50.0, 1.0, 0.005, 1.0)  # 0.5 + 0.5
    1.0
    """
    if qty == 0.0:
        return 0.0
    size = abs(qty)
    return max(min_commission, commission_bps * 1e-4 * size * price + commission_per_share * size)


# Layout of the kernel's parameter vector (float64; flags are 0/1, counts exact small integers, NaN = off).
P_INITIAL_CASH: Final = 0
P_FRACTIONAL: Final = 1
P_COMMISSION_BPS: Final = 2
P_COMMISSION_PER_SHARE: Final = 3
P_MIN_COMMISSION: Final = 4
P_SLIPPAGE_BPS: Final = 5
P_MIN_HISTORY: Final = 6
P_REBALANCE_THRESHOLD: Final = 7
P_RISK_ON: Final = 8
P_VOL_TARGET: Final = 9
P_MAX_POSITION: Final = 10
P_MAX_OPEN: Final = 11  # 0 = off
P_MAX_GROSS: Final = 12
P_MAX_BUYING_POWER: Final = 13
P_MAX_PER_TRADE: Final = 14
P_MAX_PER_SYMBOL: Final = 15
P_STOP_LOSS: Final = 16
P_DAILY_LOSS: Final = 17
P_MAX_DRAWDOWN: Final = 18
N_PARAMS: Final = 19

# Scalar state carried between calls of _run_bars (the loop stops to let the driver grow the buffers).
_S_CASH: Final = 0
_S_PEAK: Final = 1
_S_SESSION_START: Final = 2
_S_PREV_EQUITY: Final = 3
_S_HALTED: Final = 4
_S_KILLED: Final = 5
_S_N_PENDING: Final = 6
_S_N_TRADES: Final = 7
_S_N_EVENTS: Final = 8
# The most events one bar can record: two fill caps, a stop and two decision caps per symbol, and three
# account-wide rules (vol target, gross leverage, buying power) plus a kill or daily halt.
_EVENTS_PER_SYMBOL: Final = 5
_SLACK: Final = 1.0 + CAP_TOLERANCE  # a cap binds only beyond cap * _SLACK (see trader.risk)
_EVENTS_PER_BAR: Final = 8


@njit(cache=True)
def _grow(buf: np.ndarray, rows: int) -> np.ndarray:
    """``buf`` copied into a buffer with at least ``rows`` rows (doubling)."""
    size = max(buf.shape[0], 16)
    while size < rows:
        size *= 2
    out = np.empty((size, buf.shape[1]))
    out[: buf.shape[0]] = buf
    return out


@njit(cache=True)
def _event(events: np.ndarray, n: int, bar: int, symbol: int, rule: int, detail: float) -> int:
    """Write one event row at ``n`` (room is reserved per bar); return the new count."""
    events[n, 0] = bar
    events[n, 1] = symbol
    events[n, 2] = rule
    events[n, 3] = detail
    return n + 1


@njit(cache=True)
def _mark_pending(pending: np.ndarray, reason: np.ndarray, j: int, why: int) -> int:
    """Flag symbol ``j`` for a trade at the next usable open; return 1 when it was not pending yet."""
    reason[j] = why
    if pending[j]:
        return 0
    pending[j] = True
    return 1


@njit(cache=True)
def _run_bars(
    t_start: int,
    open_: np.ndarray,
    close: np.ndarray,
    weights: np.ndarray,
    session: np.ndarray,
    vol: np.ndarray,
    params: np.ndarray,
    state: np.ndarray,
    shares: np.ndarray,
    last_px: np.ndarray,
    target: np.ndarray,
    raw: np.ndarray,
    pending: np.ndarray,
    reason: np.ndarray,
    entry: np.ndarray,
    latch: np.ndarray,
    bound: np.ndarray,
    work: np.ndarray,
    dropped: np.ndarray,
    trades: np.ndarray,
    events: np.ndarray,
    equity_out: np.ndarray,
    cash_out: np.ndarray,
    positions_out: np.ndarray,
    targets_out: np.ndarray,
) -> int:
    """Simulate bars from ``t_start`` on; return the bar to resume at (n_bars when done).

    Returns early, with ``state`` saved, when the trade or event buffer might not hold one more bar. The
    buffers are never replaced inside the loop: re-binding an array in a numba loop costs reference-count
    traffic on every iteration.
    """
    n_bars, n_symbols = open_.shape
    fractional = params[P_FRACTIONAL] != 0.0
    commission_bps = params[P_COMMISSION_BPS]
    commission_per_share = params[P_COMMISSION_PER_SHARE]
    min_commission = params[P_MIN_COMMISSION]
    buy_mult = 1.0 + params[P_SLIPPAGE_BPS] * 1e-4
    sell_mult = 1.0 - params[P_SLIPPAGE_BPS] * 1e-4
    min_history = int(params[P_MIN_HISTORY])
    rebalance_threshold = params[P_REBALANCE_THRESHOLD]
    drift_on = rebalance_threshold == rebalance_threshold
    risk_on = params[P_RISK_ON] != 0.0
    vol_target = params[P_VOL_TARGET]
    vol_on = vol_target == vol_target
    max_position = params[P_MAX_POSITION]
    max_open = int(params[P_MAX_OPEN])
    max_gross = params[P_MAX_GROSS]
    max_buying_power = params[P_MAX_BUYING_POWER]
    max_per_trade = params[P_MAX_PER_TRADE]
    max_per_symbol = params[P_MAX_PER_SYMBOL]
    stop_loss = params[P_STOP_LOSS]
    stop_on = stop_loss == stop_loss
    daily_loss = params[P_DAILY_LOSS]
    max_drawdown = params[P_MAX_DRAWDOWN]
    # Plain path: no rule and no drift check needs the close equity before deciding, so one pass per bar.
    fused = not risk_on and not drift_on

    cash = state[_S_CASH]
    peak = state[_S_PEAK]
    session_start = state[_S_SESSION_START]
    prev_equity = state[_S_PREV_EQUITY]
    halted = state[_S_HALTED] != 0.0  # daily loss: no new entries until the session changes
    killed = state[_S_KILLED] != 0.0  # max drawdown: no new entries for the rest of the run
    n_pending = int(state[_S_N_PENDING])
    n_trades = int(state[_S_N_TRADES])
    n_events = int(state[_S_N_EVENTS])

    t = t_start
    while t < n_bars:
        if (
            n_trades + n_symbols > trades.shape[0]
            or n_events + _EVENTS_PER_SYMBOL * n_symbols + _EVENTS_PER_BAR > events.shape[0]
        ):
            break

        # -- open of bar t: fill what was decided at earlier closes ------------------------------------
        if n_pending > 0:
            value = cash
            for j in range(n_symbols):
                s = shares[j]
                if s != 0.0:
                    o = open_[t, j]
                    value += s * (o if o == o else last_px[j])
            for j in range(n_symbols):
                if not pending[j]:
                    continue
                o = open_[t, j]
                if not (o > 0.0):  # NaN: the symbol does not trade this bar; the order waits
                    continue
                last_px[j] = o
                want = target[j] * value / o if value > 0.0 else 0.0
                # A NaN cap (off) compares False.
                if abs(want) * o > max_per_symbol * _SLACK:
                    n_events = _event(events, n_events, t, j, RULE_MAX_PER_SYMBOL, abs(want) * o)
                    want = math.copysign(max_per_symbol / o, want)
                if not fractional:
                    want = float(math.trunc(want))
                qty = want - shares[j]
                done = True
                if abs(qty) * o > max_per_trade * _SLACK:
                    n_events = _event(events, n_events, t, j, RULE_MAX_PER_TRADE, abs(qty) * o)
                    qty = math.copysign(max_per_trade / o, qty)
                    if not fractional:
                        qty = float(math.trunc(qty))
                    done = False  # the rest follows at the next open
                if done:
                    pending[j] = False
                    n_pending -= 1
                if qty == 0.0:
                    continue
                price = o * (buy_mult if qty > 0.0 else sell_mult)
                fee = commission(qty, price, commission_bps, commission_per_share, min_commission)
                cash -= qty * price + fee
                old = shares[j]
                new = want if done else old + qty
                if new == 0.0:
                    entry[j] = 0.0
                elif old == 0.0 or (old > 0.0) != (new > 0.0):
                    entry[j] = price  # opened or flipped: a fresh entry
                elif abs(new) > abs(old):
                    entry[j] = (entry[j] * abs(old) + price * abs(qty)) / abs(new)
                shares[j] = new
                trades[n_trades, 0] = t
                trades[n_trades, 1] = j
                trades[n_trades, 2] = qty
                trades[n_trades, 3] = price
                trades[n_trades, 4] = fee
                trades[n_trades, 5] = reason[j]
                n_trades += 1

        decide = t >= min_history
        if fused:
            # -- close of bar t: mark to market and take the decision in one pass -----------------------
            equity = cash
            for j in range(n_symbols):
                c = close[t, j]
                if c == c:
                    last_px[j] = c
                s = shares[j]
                equity += s * last_px[j]
                positions_out[t, j] = s
                x = weights[t, j]
                if decide and x == x and x != target[j]:
                    target[j] = x
                    n_pending += _mark_pending(pending, reason, j, REASON_SIGNAL)
                targets_out[t, j] = target[j]
            equity_out[t] = equity
            cash_out[t] = cash
            t += 1
            continue

        # -- close of bar t: mark to market ----------------------------------------------------------
        equity = cash
        for j in range(n_symbols):
            c = close[t, j]
            if c == c:
                last_px[j] = c
            s = shares[j]
            equity += s * last_px[j]
            positions_out[t, j] = s
        equity_out[t] = equity
        cash_out[t] = cash

        # -- account rules on the close ----------------------------------------------------------------
        if risk_on:
            if t > 0 and session[t] != session[t - 1]:
                session_start = prev_equity  # the previous session's last close
                halted = False
            peak = max(peak, equity)
            flatten = -1
            if not killed:
                if drawdown_hit(equity, peak, max_drawdown):
                    killed = True
                    n_events = _event(events, n_events, t, -1, RULE_MAX_DRAWDOWN, 1.0 - equity / peak)
                    flatten = REASON_KILL_SWITCH
                elif not halted and daily_loss_hit(equity, session_start, daily_loss):
                    halted = True
                    detail = 1.0 - equity / session_start
                    n_events = _event(events, n_events, t, -1, RULE_DAILY_LOSS, detail)
                    flatten = REASON_DAILY_LOSS
            if flatten >= 0:
                for j in range(n_symbols):
                    if shares[j] != 0.0 or target[j] != 0.0 or pending[j]:
                        target[j] = 0.0
                        n_pending += _mark_pending(pending, reason, j, flatten)
            elif stop_on and not (killed or halted):
                for j in range(n_symbols):
                    s = shares[j]
                    c = close[t, j]
                    if s != 0.0 and c == c and stop_hit(s, entry[j], c, stop_loss):
                        latch[j] = 1 if s > 0.0 else -1
                        n_events = _event(events, n_events, t, j, RULE_STOP_LOSS, c / entry[j] - 1.0)
                        target[j] = 0.0
                        n_pending += _mark_pending(pending, reason, j, REASON_STOP_LOSS)
            prev_equity = equity

        # -- decision at the close of bar t -----------------------------------------------------------
        if decide and not risk_on:
            for j in range(n_symbols):
                x = weights[t, j]
                if x == x and x != target[j]:
                    target[j] = x
                    n_pending += _mark_pending(pending, reason, j, REASON_SIGNAL)
        elif decide:
            for j in range(n_symbols):
                x = weights[t, j]
                if x == x:
                    raw[j] = x  # NaN: no new decision, the last one stands
            if not (killed or halted):
                for j in range(n_symbols):
                    x = raw[j]
                    if latch[j] != 0:
                        if x * latch[j] > 0.0:
                            x = 0.0  # still signalling the side that was stopped out
                        else:
                            latch[j] = 0
                    work[j] = x
                # Limits that shape weights: an event when a limit starts binding (column n_symbols = all).
                if vol_on:
                    scale = vol_target_scale(work, vol[t], vol_target)
                    fired = scale == scale
                    if fired and not bound[RULE_VOL_TARGET, n_symbols]:
                        n_events = _event(events, n_events, t, -1, RULE_VOL_TARGET, scale)
                    bound[RULE_VOL_TARGET, n_symbols] = fired
                if max_position == max_position:
                    for j in range(n_symbols):
                        size = abs(work[j])
                        fired = size > max_position * _SLACK
                        if fired:
                            if not bound[RULE_MAX_POSITION, j]:
                                n_events = _event(events, n_events, t, j, RULE_MAX_POSITION, size)
                            work[j] = cap_abs(work[j], max_position)
                        bound[RULE_MAX_POSITION, j] = fired
                if max_open > 0:
                    keep_largest(work, max_open, dropped)
                    for j in range(n_symbols):
                        fired = dropped[j]
                        if fired:
                            if not bound[RULE_MAX_OPEN_POSITIONS, j]:
                                size = abs(work[j])
                                n_events = _event(events, n_events, t, j, RULE_MAX_OPEN_POSITIONS, size)
                            work[j] = 0.0
                        bound[RULE_MAX_OPEN_POSITIONS, j] = fired
                gross = gross_exposure(work)
                fired = gross > max_gross * _SLACK
                if fired:
                    if not bound[RULE_MAX_GROSS_LEVERAGE, n_symbols]:
                        n_events = _event(events, n_events, t, -1, RULE_MAX_GROSS_LEVERAGE, gross)
                    for j in range(n_symbols):
                        work[j] *= max_gross / gross
                    gross = max_gross
                bound[RULE_MAX_GROSS_LEVERAGE, n_symbols] = fired
                notional = gross * equity
                fired = equity > 0.0 and notional > max_buying_power * _SLACK
                if fired:
                    if not bound[RULE_MAX_BUYING_POWER, n_symbols]:
                        n_events = _event(events, n_events, t, -1, RULE_MAX_BUYING_POWER, notional)
                    for j in range(n_symbols):
                        work[j] *= max_buying_power / notional
                bound[RULE_MAX_BUYING_POWER, n_symbols] = fired
                for j in range(n_symbols):
                    if work[j] != target[j]:
                        target[j] = work[j]
                        n_pending += _mark_pending(pending, reason, j, REASON_SIGNAL)
        if decide and drift_on and equity > 0.0:
            for j in range(n_symbols):
                if not pending[j] and abs(shares[j] * last_px[j] / equity - target[j]) > rebalance_threshold:
                    n_pending += _mark_pending(pending, reason, j, REASON_DRIFT)
        for j in range(n_symbols):
            targets_out[t, j] = target[j]
        t += 1

    state[_S_CASH] = cash
    state[_S_PEAK] = peak
    state[_S_SESSION_START] = session_start
    state[_S_PREV_EQUITY] = prev_equity
    state[_S_HALTED] = 1.0 if halted else 0.0
    state[_S_KILLED] = 1.0 if killed else 0.0
    state[_S_N_PENDING] = n_pending
    state[_S_N_TRADES] = n_trades
    state[_S_N_EVENTS] = n_events
    return t


@njit(cache=True)
def simulate_kernel(
    open_: np.ndarray,
    close: np.ndarray,
    weights: np.ndarray,
    session: np.ndarray,
    vol: np.ndarray,
    params: np.ndarray,
    equity_out: np.ndarray,
    cash_out: np.ndarray,
    positions_out: np.ndarray,
    targets_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the portfolio over bars x symbols; fill the ``*_out`` arrays and return ``(trades, events)``.

    Prices, weights and ``vol`` are bars x symbols float64 in C order (``vol`` is read only when vol
    targeting is on; pass a 1x1 array otherwise); ``session`` is one int64 per bar; ``params`` is the
    ``N_PARAMS`` vector laid out by the ``P_*`` indices (NaN = a limit off). Trade rows follow
    :data:`TRADE_COLUMNS` (signed qty), event rows :data:`EVENT_COLUMNS`. The rules are those stated in
    :func:`trader.sim.simulate`, which builds the arguments.
    """
    n_bars, n_symbols = open_.shape
    initial_cash = params[P_INITIAL_CASH]
    state = np.zeros(9)
    state[_S_CASH] = initial_cash
    state[_S_PEAK] = initial_cash
    state[_S_SESSION_START] = initial_cash
    state[_S_PREV_EQUITY] = initial_cash
    shares = np.zeros(n_symbols)
    last_px = np.zeros(n_symbols)  # latest finite price (open or close): values a symbol not trading
    target = np.zeros(n_symbols)  # target weight in force, after risk rules
    raw = np.zeros(n_symbols)  # latest non-NaN decided weight, before risk rules
    pending = np.zeros(n_symbols, np.bool_)  # target not reached yet: trade at the next usable open
    reason = np.zeros(n_symbols, np.int64)
    entry = np.zeros(n_symbols)  # average entry price of the open position (for the stop loss)
    latch = np.zeros(n_symbols, np.int64)  # side stopped out (+1/-1): no re-entry on that side yet
    bound = np.zeros((N_RULES, n_symbols + 1), np.bool_)  # limit binding at the last decision
    work = np.zeros(n_symbols)
    dropped = np.zeros(n_symbols, np.bool_)
    # Room for every possible fill (one per bar and symbol) up to 1M rows: pages are only touched when
    # written, and growing (copying into fresh memory) costs more than the fills themselves.
    trades = np.empty((max(1024, n_symbols, min(n_bars * n_symbols, 1 << 20)), 6))
    events = np.empty((max(256, 4 * (_EVENTS_PER_SYMBOL * n_symbols + _EVENTS_PER_BAR)), 4))
    t = 0
    while True:
        t = _run_bars(
            t, open_, close, weights, session, vol, params, state, shares, last_px, target, raw, pending,
            reason, entry, latch, bound, work, dropped, trades, events,
            equity_out, cash_out, positions_out, targets_out,
        )  # fmt: skip
        if t >= n_bars:
            break
        n_trades = int(state[_S_N_TRADES])
        n_events = int(state[_S_N_EVENTS])
        if n_trades + n_symbols > trades.shape[0]:
            trades = _grow(trades, n_trades + n_symbols)
        if n_events + _EVENTS_PER_SYMBOL * n_symbols + _EVENTS_PER_BAR > events.shape[0]:
            events = _grow(events, n_events + _EVENTS_PER_SYMBOL * n_symbols + _EVENTS_PER_BAR)
    return trades[: int(state[_S_N_TRADES])], events[: int(state[_S_N_EVENTS])]


# Columns of the batch kernel's buffers: the run index first, then the single-run columns.
BATCH_TRADE_COLUMNS: Final = ("run", *TRADE_COLUMNS)
BATCH_EVENT_COLUMNS: Final = ("run", *EVENT_COLUMNS)


@njit(cache=True)
def _append_rows(buf: np.ndarray, n: int, run: int, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Copy ``rows`` into ``buf`` from row ``n`` with the run index in column 0; grow ``buf`` when full."""
    if n + rows.shape[0] > buf.shape[0]:
        buf = _grow(buf, n + rows.shape[0])
    for i in range(rows.shape[0]):
        buf[n + i, 0] = run
        for k in range(rows.shape[1]):
            buf[n + i, k + 1] = rows[i, k]
    return buf, n + rows.shape[0]


@njit(cache=True)
def simulate_batch_kernel(
    open_t: np.ndarray,
    close_t: np.ndarray,
    weights_t: np.ndarray,
    column: np.ndarray,
    session: np.ndarray,
    vol_t: np.ndarray,
    params: np.ndarray,
    equity_out: np.ndarray,
    positions_out: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Run many independent single-symbol portfolios in one call; return ``(trades, events)``.

    Layouts are transposed so that each run reads contiguous memory: ``open_t``, ``close_t`` (and ``vol_t``
    when vol targeting is on, else 1x1) are symbols x bars; ``weights_t``, ``equity_out`` and
    ``positions_out`` are runs x bars; run ``r`` trades symbol row ``column[r]`` with its own cash
    (``params[P_INITIAL_CASH]``), under exactly the rules of :func:`simulate_kernel` (it is called per run).
    Trade rows follow :data:`BATCH_TRADE_COLUMNS`, event rows :data:`BATCH_EVENT_COLUMNS`.
    """
    n_runs, n_bars = weights_t.shape
    vol_on = vol_t.shape[0] == open_t.shape[0] and vol_t.shape[1] == n_bars  # else the 1x1 "off" array
    no_vol = np.zeros((1, 1))
    cash = np.empty(n_bars)
    targets = np.empty((n_bars, 1))
    trades = np.empty((max(1024, 4 * n_runs), 7))  # BATCH_TRADE_COLUMNS
    events = np.empty((256, 5))  # BATCH_EVENT_COLUMNS
    n_trades = 0
    n_events = 0
    for r in range(n_runs):
        c = column[r]
        vol = vol_t[c].reshape((n_bars, 1)) if vol_on else no_vol
        run_trades, run_events = simulate_kernel(
            open_t[c].reshape((n_bars, 1)),
            close_t[c].reshape((n_bars, 1)),
            weights_t[r].reshape((n_bars, 1)),
            session,
            vol,
            params,
            equity_out[r],
            cash,
            positions_out[r].reshape((n_bars, 1)),
            targets,
        )
        trades, n_trades = _append_rows(trades, n_trades, r, run_trades)
        events, n_events = _append_rows(events, n_events, r, run_events)
    return trades[:n_trades], events[:n_events]
